"""A code corpus from audio: the training clips' log-mels encoded as the editor encodes them, and shifted copies
of them for the context part. `CorpusCodec` is what of a codec this needs (distill.codec.Codec is one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from .corpus import CodeCorpus

DEFAULT_SEARCH_SECONDS_PER_SECOND = 0.02  # the default encode's cost per second of audio, two cores: ~1/5 of 20 Adam steps' 0.1
MAX_CORPUS_SECONDS_PER_FILE = 120.0   # longer files add their first two minutes: enough context, bounded time


class CorpusCodec(Protocol):
    """What the prior's training needs of a codec (distill.codec.Codec): its front end, its encoder, and the
    codewords, grid and record the prior is made for."""

    mel_cfg: object            # the front end's MelConfig: hop_length, num_frames(samples)
    info: object               # the model file's BundleInfo: its dataset's held-out files
    sample_rate: int
    codebook_size: int
    fingerprint: str
    frames_per_column: int
    codebooks: np.ndarray      # float [levels, codebook_size, D]

    def logmel(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor: ...
    def encode_mel(self, logmel: torch.Tensor, search_steps: int | None = None) -> np.ndarray: ...


def silence_frame(codec: CorpusCodec) -> torch.Tensor:
    """The log-mel column [n_mels, 1] the codec's front end makes of silence."""
    return codec.logmel(torch.zeros(4 * codec.mel_cfg.hop_length))[:, :1]


def shifted_items(items: Sequence[tuple[str, torch.Tensor]], shifts: int, frames_per_column: int,
                  silence: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Each (name, log-mel [n_mels, frames]) again `shifts` times, starting 1/(shifts+1), 2/(shifts+1), ... of a
    column later (whole mel frames of `silence` [n_mels, 1] before it). The same sounds then fall across other
    column boundaries and the codec codes them anew: a 0.17 s column cuts a hit or a loop's period where it
    happens to, so one encoding shows the context part one of many ways its sounds are coded. Fitted on the
    clips and two such copies, the part scored 0.5 bits/code better on held-out drums (benchmarks/README.md)."""
    out = []
    for s in range(1, shifts + 1):
        frames = int(round(frames_per_column * s / (shifts + 1)))
        if frames <= 0:
            continue
        out += [(name, torch.cat([silence.expand(-1, frames), mel], 1)) for name, mel in items]
    return out


def encode_corpus(codec: CorpusCodec, items: Sequence[tuple[str, torch.Tensor]], search_steps: int | None = None
                  ) -> CodeCorpus:
    """(name, log-mel [n_mels, frames]) pairs -> their code grids, as the editor's encoder makes them.

    search_steps None = the codec's default search (the codes people edit); 0 = the encoder alone."""
    limit = codec.mel_cfg.num_frames(int(MAX_CORPUS_SECONDS_PER_FILE * codec.sample_rate))
    grids = [codec.encode_mel(mel[:, :limit], search_steps) for _, mel in items]
    return CodeCorpus(tuple(name for name, _ in items), tuple(np.asarray(g, dtype=np.int64) for g in grids))


def corpus_search_steps(total_seconds: float, budget_s: float) -> int | None:
    """The search the corpus is encoded with: None, the codec's default (the codes people edit: the encoder's
    own codes are distributed differently, and a prior trained on them scored ~0.5 bits/code worse on searched
    codes, benchmarks/README.md) unless that would take over half of the prior's budget; then 0, the encoder
    alone (~4x faster; benchmarks/README.md, `encode.py`)."""
    cost = total_seconds * DEFAULT_SEARCH_SECONDS_PER_SECOND
    return None if cost <= 0.5 * budget_s else 0
