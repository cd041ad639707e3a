"""Codec: a trained model plus its front end -> encode audio to a CodeGrid, decode a grid to audio.

Long clips are processed in pieces of CHUNK_COLUMNS columns with CONTEXT_COLUMNS of overlap on
each side (more than the network's receptive field), so the code grid and the decoded mel of a
30-minute recording are the same as if it had been processed in one go: no seams.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .audio import audio_sha256, prepare, resample
from .bundle import (
    BundleError,
    BundleInfo,
    fingerprint,
    load_prior_tensors,
    load_weights,
    save_bundle,
    state_to_tensors,
)
from .codes import CodeGrid, CodesError
from .dsp import DEFAULT_GL_ITERS
from .health import LevelHealth, health_from_counts
from .model import DOWNSAMPLE, ConvVQVAE, grid_width
from .prior import NO_PRIOR_HELP, CodePrior, PriorConfig, PriorError, build_prior, prior_tensors
from .spectrogram import MelConfig, MelFrontEnd

CHUNK_COLUMNS = 256   # ~44 s of audio per network pass
CONTEXT_COLUMNS = 8   # 128 frames each side; the encoder's receptive field is ~166 frames in all
SEARCH_LR = 0.01  # Adam step on the latent for an explicit N-step search, `search_codes` (benchmarks/README.md)
# The default encode's search, `fast_search_codes`: one sign step of the latent per entry, each coordinate moved
# by that much. On held-out lmms audio 3 decaying steps decode within 2% of 20 Adam steps (2 steps did not on
# every model), and the decay beat constant steps of 0.06-0.16 (benchmarks/README.md, benchmarks/encode.py).
FAST_SEARCH_SCHEDULE = (0.12, 0.08, 0.06)
FAST_SEARCH_MARGIN = 0.05  # a later point's tile wins unless >5% further; 0 (the closest) was 0.2-0.8% worse on drums
FAST_SEARCH = "fast"  # CodeGrid.search_method of the default encode
ADAM_SEARCH = "adam"  # ... and of an explicit N-step search (N > 0); the encoder alone records none
KEEP_FREED_BYTES = 1 << 30  # keep_freed_memory: freed memory glibc keeps for reuse (and blocks it allocates itself)
PREVIEW_SECONDS = 0.5  # code audition length
Progress = Callable[[float], None]  # told the fraction done (0..1] as a long encode goes
PREVIEW_RMS = 0.1      # -20 dBFS: every previewed code plays at the same loudness...
PREVIEW_PEAK = 0.89    # ...unless that would push a peak over -1 dBFS
PREVIEW_GL_ITERS = 16


@dataclass(frozen=True)
class DecodeResult:
    """Audio plus how long it took (the studio shows the latency)."""

    audio: np.ndarray  # float32 [num_samples] at the model rate
    seconds: float


class Codec:
    """Model + front end. Stateless per call, so one Codec can serve several sessions/threads."""

    def __init__(self, model: ConvVQVAE, mel: MelConfig, info: BundleInfo | None = None,
                 prior: CodePrior | None = None):
        self.model = model.eval()
        self.front = MelFrontEnd(mel)
        self.mel_cfg = mel
        if info is None:
            fp = fingerprint(state_to_tensors(model), model.cfg, mel)
            info = BundleInfo(config=model.cfg, mel=mel, fingerprint=fp)
        self.info = info
        self.prior = prior
        self.prior_note = "" if prior is not None else NO_PRIOR_HELP  # why regenerate is unavailable

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Codec:
        """The model file's codec (load_bundle), and its prior when it has one. A damaged prior never blocks the codec:
        the codec loads, `prior` is None and `prior_note` says what went wrong."""
        model, info = load_bundle(path, device=device)
        codec = cls(model, info.mel, info)
        if info.prior.get("error"):
            codec.prior_note = (f"the prior in this model file cannot be used ({info.prior['error']}); retrain it "
                                "with `distill prior`")
        elif info.prior:
            try:
                cfg = PriorConfig.from_dict(info.prior["config"])
                codec.check_prior_grid(cfg)  # before its weights are read: a prior for another grid is no prior
                codec.prior = build_prior(cfg, load_prior_tensors(path, info))
                codec.prior_note = ""
            except (BundleError, PriorError) as exc:
                codec.prior_note = f"the prior in this model file cannot be used ({exc}); retrain it with `distill prior`"
        return codec

    def with_prior(self, prior: CodePrior, record: dict) -> Codec:
        """This codec with a (new) prior; `record` is what the model file keeps about it (settings, training).
        The fingerprint does not change: codes and histories made before stay valid."""
        self.check_prior_grid(prior.cfg)
        info = replace(self.info, prior={**record, "config": prior.cfg.to_dict(), "codec": self.fingerprint})
        return Codec(self.model, self.mel_cfg, info, prior.eval())

    def check_prior_grid(self, cfg: PriorConfig) -> None:
        """PriorError naming what differs when a prior's grid (levels, bands, codebook size) is not this codec's."""
        ours = {"levels": len(self.level_names), "bands": self.num_bands, "codebook size": self.codebook_size}
        theirs = {"levels": cfg.levels, "bands": cfg.bands, "codebook size": cfg.codebook_size}
        wrong = [f"{k} {theirs[k]} vs {v}" for k, v in ours.items() if theirs[k] != v]
        if wrong:
            raise PriorError(f"the prior was made for another grid ({', '.join(wrong)} in this codec)")

    def save(self, path: str | os.PathLike) -> None:
        """Write the model (and its prior, if any) as one .distill file, atomically (an unusable prior is dropped)."""
        info = self.info if self.prior is not None else replace(self.info, prior={})
        save_bundle(path, self.model, info, prior_tensors(self.prior) if self.prior is not None else None)

    # ------------------------------------------------------------------ properties
    @property
    def config(self):
        return self.model.cfg

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def level_names(self) -> tuple[str, ...]:
        return self.model.cfg.level_names

    @property
    def codebook_size(self) -> int:
        return self.model.cfg.codebook_size

    @property
    def num_bands(self) -> int:
        return self.model.num_bands

    @property
    def band_ranges_hz(self) -> list[tuple[float, float]]:
        """(low, high) Hz each code band covers, row 0 (lowest) first."""
        return self.mel_cfg.band_ranges_hz(self.num_bands)

    @property
    def sample_rate(self) -> int:
        return self.mel_cfg.sample_rate

    @property
    def codebooks(self) -> np.ndarray:
        """float64 [levels, codebook_size, D]: every level's codewords (latent space)."""
        return self.model.codebooks.detach().cpu().numpy().astype(np.float64)

    @property
    def frames_per_column(self) -> int:
        """STFT frames (hops) per code column: the encoder's time reduction."""
        return DOWNSAMPLE

    @property
    def seconds_per_column(self) -> float:
        return DOWNSAMPLE * self.mel_cfg.hop_length / self.mel_cfg.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ encode
    def load_wave(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Any array at any rate -> mono float32 at the model rate."""
        return prepare(wave, sr, self.sample_rate)

    def logmel(self, wave: np.ndarray) -> torch.Tensor:
        """Model-rate waveform -> log-mel [n_mels, frames]."""
        return self.front.logmel(wave)

    @torch.no_grad()
    def encode_mel(self, logmel: torch.Tensor, search_steps: int | None = None,
                   progress: Progress | None = None) -> np.ndarray:
        """log-mel [n_mels, F] -> codes [levels, bands, ceil(F/16)], chunked without seams.

        search_steps None (the default) refines the encoder's choice by the fast search
        (`fast_search_codes`); N > 0 by exactly N Adam steps (`search_codes`, ~5x slower for N = 20);
        0 takes the encoder's codes as they are. `progress(fraction)` is called after each piece
        (a long recording takes a minute: the studio shows how far it is)."""
        mel = logmel.to(self.device)[None, None]

        def run(piece: torch.Tensor) -> torch.Tensor:
            if search_steps is None:
                return fast_search_codes(self.model, piece)[0]
            if int(search_steps) > 0:
                return search_codes(self.model, piece, int(search_steps))[0]
            _, codes, _ = self.model.quantize(self.model.encode(piece))
            return codes[0]

        cols = grid_width(logmel.shape[-1])
        return _chunked_over_columns(run, mel, cols, in_scale=DOWNSAMPLE, out_scale=1, progress=progress).cpu().numpy()

    def encode(self, wave: np.ndarray, sr: int | None = None, search_steps: int | None = None,
               progress: Progress | None = None) -> CodeGrid:
        """Waveform (any channels/rate when sr is given) -> CodeGrid.

        With `sr`, the grid also records the source rate and length, so `at_source_rate` can give
        a decoded clip back at the rate and sample count it came in with. By default the codes are
        refined by the fast search (3 sign steps, `fast_search_codes`): on held-out recordings they
        decode about as close as 20 Adam steps did (benchmarks/README.md) at ~1/5 of the time.
        `search_steps=N`: exactly N Adam steps (`search_codes`); 0: the encoder alone. The grid
        records which (`search_steps`, `search_method`). `progress(fraction)`: see `encode_mel`."""
        model_wave = self.load_wave(wave, sr) if sr is not None else np.asarray(wave, dtype=np.float32)
        codes = self.encode_mel(self.logmel(model_wave), search_steps, progress)
        rate = self.sample_rate if sr is None else int(sr)
        steps, method = search_record(search_steps)
        # load_wave checked the layout ([samples] or [samples, channels]): the length is its first axis
        grid = replace(self.grid(codes, len(model_wave)), search_steps=steps, search_method=method,
                       source_sha256=audio_sha256(wave if sr is not None else model_wave, rate))
        return replace(grid, source_rate=int(sr), source_samples=np.shape(wave)[0]) if sr is not None else grid

    def at_source_rate(self, wave: np.ndarray, grid: CodeGrid) -> tuple[np.ndarray, int]:
        """A decoded model-rate waveform -> (waveform, rate) of the clip the grid was encoded from:
        resampled to its rate and cut or padded to its exact length. Unchanged when not recorded."""
        if not grid.source_rate:
            return wave, self.sample_rate
        out = resample(np.asarray(wave, dtype=np.float32), self.sample_rate, grid.source_rate)
        n = grid.source_samples or len(out)
        out = out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))
        return out.astype(np.float32, copy=False), grid.source_rate

    def grid(self, codes: np.ndarray, num_samples: int) -> CodeGrid:
        return CodeGrid(codes=codes, level_names=self.level_names, seconds_per_column=self.seconds_per_column,
                        sample_rate=self.sample_rate, num_samples=int(num_samples), model=self.fingerprint)

    def check(self, grid: CodeGrid) -> None:
        """Refuse grids from another model or with impossible codes (CodesError says which)."""
        grid.validate(codebook_size=self.codebook_size, num_bands=self.num_bands, level_names=self.level_names,
                      sample_rate=self.sample_rate, model=self.fingerprint)
        if abs(grid.seconds_per_column - self.seconds_per_column) > 1e-9:
            raise CodesError(f"codes have {grid.seconds_per_column:g} s per column, the model "
                             f"{self.seconds_per_column:g} s")
        expected = grid_width(self.mel_cfg.num_frames(grid.num_samples))
        if grid.num_columns != expected:
            raise CodesError(f"{grid.num_columns} columns cannot describe {grid.num_samples} samples "
                             f"(expected {expected})")

    # ------------------------------------------------------------------ latent space
    @torch.no_grad()
    def codes_to_latent(self, codes: np.ndarray) -> torch.Tensor:
        """codes [levels, bands, cols] (-1 = level off) -> quantized latent [D, bands, cols]."""
        t = torch.tensor(np.array(codes), dtype=torch.long, device=self.device)[None]
        return self.model.codes_to_latent(t)[0]

    @torch.no_grad()
    def latent_to_codes(self, latent: torch.Tensor) -> np.ndarray:
        """Re-quantize a latent [D, bands, cols] through the residual levels -> codes [levels, bands, cols]."""
        _, codes, _ = self.model.quantize(latent.to(self.device)[None])
        return codes[0].cpu().numpy()

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode_mel(self, grid: CodeGrid | np.ndarray, frames: int | None = None) -> torch.Tensor:
        """codes -> log-mel [n_mels, frames] (frames defaults to the grid's source length)."""
        if isinstance(grid, CodeGrid):
            codes = grid.codes
            frames = self.mel_cfg.num_frames(grid.num_samples) if frames is None else frames
        else:
            codes = np.asarray(grid)
            frames = codes.shape[-1] * DOWNSAMPLE if frames is None else frames
        latent = self.codes_to_latent(codes)[None]

        def run(piece: torch.Tensor) -> torch.Tensor:
            return self.model.decode(piece, piece.shape[-1] * DOWNSAMPLE)[0, 0]

        mel = _chunked_over_columns(run, latent, codes.shape[-1], in_scale=1, out_scale=DOWNSAMPLE)
        return mel[:, :frames].cpu()

    def decode(self, grid: CodeGrid, phase_from: np.ndarray | None = None, phase_sr: int | None = None,
               n_iter: int = DEFAULT_GL_ITERS) -> np.ndarray:
        """CodeGrid -> float32 waveform of exactly grid.num_samples samples at the model rate.

        With `phase_from` (the clip the codes came from), its STFT phase is reused: much closer
        to the original than Griffin-Lim from random phase, and ~10x faster.
        """
        self.check(grid)
        mel = self.decode_mel(grid)
        ref = None
        if phase_from is not None:
            ref = prepare(phase_from, phase_sr, self.sample_rate) if phase_sr else np.asarray(phase_from, np.float32)
        wave = self.front.invert(mel, grid.num_samples, n_iter=n_iter, phase_from=ref)
        return wave.numpy().astype(np.float32, copy=False)

    def timed_decode(self, grid: CodeGrid, **kwargs) -> DecodeResult:
        t0 = time.perf_counter()
        audio = self.decode(grid, **kwargs)
        return DecodeResult(audio, time.perf_counter() - t0)

    def reconstruct(self, wave: np.ndarray, sr: int, use_phase: bool = True) -> np.ndarray:
        """Encode then decode a clip (plain reconstruction), optionally with its own phase."""
        wave = self.load_wave(wave, sr)
        return self.decode(self.encode(wave), phase_from=wave if use_phase else None)

    # ------------------------------------------------------------------ audition
    def preview_code(self, level: int | str, code: int, seconds: float = PREVIEW_SECONDS,
                     band: int | None = None) -> np.ndarray:
        """The sound of code `code` on one level: float32 [round(seconds * rate)] at PREVIEW_RMS loudness.

        Neutral context, matching what the decoder saw in training (quantizer dropout keeps a prefix
        of levels): lower levels hold their most used training code, higher levels are off (-1).
        With `band`, only that row carries the code and the other rows keep the context.
        Phase comes from a short Griffin-Lim run; silence stays silence (never amplified).
        """
        names = self.level_names
        q = level if isinstance(level, (int, np.integer)) else next(
            (i for i, n in enumerate(names) if n.lower() == str(level).strip().lower()), -1)
        if not 0 <= int(q) < len(names):
            raise ValueError(f"unknown level {level!r}; levels are {', '.join(names)} (0-{len(names) - 1})")
        q = int(q)
        if isinstance(code, bool) or not 0 <= int(code) < self.codebook_size:
            raise ValueError(f"code {code!r} is out of range; codes are 0-{self.codebook_size - 1}")
        if not 0.05 <= float(seconds) <= 10.0:
            raise ValueError(f"preview length {seconds} s must be within 0.05-10 s")
        if band is not None and not 0 <= int(band) < self.num_bands:
            raise ValueError(f"band {band} is outside 0-{self.num_bands - 1}")
        n = int(round(float(seconds) * self.sample_rate))
        cols = grid_width(self.mel_cfg.num_frames(n))
        usage = self.info.usage
        codes = np.full((len(names), self.num_bands, cols), -1, dtype=np.int64)
        for lower in range(q + 1):
            counts = np.asarray(usage[lower]) if len(usage) > lower else np.zeros(0)
            codes[lower] = int(counts.argmax()) if counts.size and counts.sum() > 0 else 0
        if band is None:
            codes[q] = int(code)
        else:
            codes[q, int(band)] = int(code)
        mel = self.decode_mel(codes, frames=self.mel_cfg.num_frames(n))
        wave = self.front.invert(mel, n, n_iter=PREVIEW_GL_ITERS).numpy().astype(np.float64)
        rms = float(np.sqrt(np.mean(wave ** 2))) if wave.size else 0.0
        if rms < 1e-6:
            return np.zeros(n, dtype=np.float32)
        wave *= PREVIEW_RMS / rms
        peak = float(np.abs(wave).max())
        if peak > PREVIEW_PEAK:
            wave *= PREVIEW_PEAK / peak
        return wave.astype(np.float32)

    def usage_health(self) -> list[LevelHealth]:
        """Per level, a LevelHealth from the training-set code counts (codec.info.usage); [] when none were saved.

        Verdicts (distill.health.health_verdict): Healthy when >= 60% of the codes are used,
        Some codes unused at 30-60%, Collapsed below 30%.
        """
        usage = self.info.usage or []
        return [health_from_counts(np.asarray(usage[q]), name) for q, name in enumerate(self.level_names)
                if q < len(usage)]


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ConvVQVAE, BundleInfo]:
    """The codec's network and record from a .distill file (the prior's weights load with the prior: Codec.load);
    BundleError for anything foreign, corrupt or mismatched (distill.bundle.load_weights checks it all)."""
    model, info = load_weights(path, lambda info: ConvVQVAE(info.config, n_mels=info.mel.n_mels), device)
    return model, info


def keep_freed_memory(limit: int = KEEP_FREED_BYTES) -> bool:
    """Ask glibc to keep up to `limit` bytes of freed memory for reuse, and to serve blocks up to that size
    itself, instead of handing them back to the OS (mallopt M_TRIM_THRESHOLD, M_MMAP_THRESHOLD).

    Why: a search pass allocates and frees ~4 MB of activations per code column in blocks of up to ~35 MB;
    by default glibc returns those to the OS and the next pass page-faults them in again, which took ~25%
    of a 3-minute encode's time on a 2-core VM (benchmarks/README.md). It is process-wide (the process keeps
    its peak memory), so it is an application's choice, not the library's: `distill encode` makes it.
    False where the C library is not glibc (macOS, Windows, musl), which then behaves as before."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_trim_threshold, int(limit))) and bool(mallopt(m_mmap_threshold, int(limit)))


def search_record(search_steps: int | None) -> tuple[int, str | None]:
    """What an encode with `search_steps` does, as a CodeGrid records it: (steps, method).
    None -> the fast search's sign steps; N > 0 -> N Adam steps; 0 -> the encoder alone (no method)."""
    if search_steps is None:
        return len(FAST_SEARCH_SCHEDULE), FAST_SEARCH
    steps = int(search_steps)
    return steps, (ADAM_SEARCH if steps > 0 else None)


def fast_search_codes(model: ConvVQVAE, mel: torch.Tensor, schedule: tuple[float, ...] = FAST_SEARCH_SCHEDULE,
                      margin: float = FAST_SEARCH_MARGIN) -> torch.Tensor:
    """Codes [1, Q, H, W] for mel [1, 1, M, F] by the default search: `search_codes` in len(schedule) steps.

    Adam's steps on the latent are nearly sign steps of size lr, so this takes plain sign steps, large
    first and decaying (schedule[k] per coordinate): 3 of them reach what 20 Adam steps of 0.01 reach
    (benchmarks/README.md). Each code position keeps the codes of the point whose decoded tile was
    closest, a later point winning unless its tile is more than `margin` further: a tile's error also
    depends on its neighbours, which move on with the later point (this did better than `search_codes`'
    check of the whole mixed grid, and saves its decoder pass).
    Cost: len(schedule) + 1 decoder passes and len(schedule) backward passes (20 steps: 22 and 20);
    quantization by `quantize_nearest`. Only the latent gets gradients; the model is untouched.
    """
    frames = mel.shape[-1]
    with torch.no_grad():
        z = model.encode(mel)
    best = best_err = None
    for step in range(len(schedule) + 1):
        last = step == len(schedule)
        with torch.set_grad_enabled(not last):
            z = z.detach().requires_grad_(not last)
            q, codes = model.quantize_nearest(z)
            err = (model.decode(z + (q - z).detach(), frames) - mel).abs()  # the error of `codes`
            grad = None if last else torch.autograd.grad(err.mean(), z)[0]
        with torch.no_grad():
            tiles = _tile_error(err, codes.shape[-2:])  # [1, H, W]
            if best is None or best_err is None:
                best, best_err = codes, tiles
            else:
                newer = tiles <= best_err * (1 + margin)
                best, best_err = torch.where(newer[:, None], codes, best), torch.where(newer, tiles, best_err)
            if grad is not None:
                z = z - schedule[step] * grad.sign()
    return best


def search_codes(model: ConvVQVAE, mel: torch.Tensor, steps: int, lr: float = SEARCH_LR) -> torch.Tensor:
    """Codes for mel [1, 1, M, F] found by analysis-by-synthesis, not by the encoder alone.

    On clips it never trained on, the encoder's latent is the weak link (benchmarks/README.md: the
    decoder can do far better from a better latent). Starting from the encoder's latent, `steps`
    Adam steps move it to lower the decoded mel's L1 through the quantizer (straight-through), so
    the codes stay codebook entries. Each code position keeps the codes of the step whose decoded
    tile was closest; that mix is returned unless one step's whole grid was closer (the encoder's
    own codes when the search never beat them). Only the latent gets gradients; the model is untouched.
    """
    frames = mel.shape[-1]
    z = model.encode(mel).detach().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best, best_err, best_tiles = None, math.inf, None
    with torch.enable_grad():
        for step in range(steps + 1):
            q, codes, _ = model.quantize(z)
            err = (model.decode(z + (q - z).detach(), frames) - mel).abs()  # the error of `codes`
            loss = err.mean()
            with torch.no_grad():
                tiles = _tile_error(err, codes.shape[-2:])
                if best is None:
                    best, best_tiles = codes.clone(), tiles
                else:
                    better = tiles < best_tiles
                    best = torch.where(better[:, None], codes, best)
                    best_tiles = torch.minimum(tiles, best_tiles)
                value = float(loss.detach())
                if value < best_err:
                    whole, best_err = codes.clone(), value
            if step < steps:
                (z.grad,) = torch.autograd.grad(loss, z)
                opt.step()
    with torch.no_grad():
        mixed_err = float((model.decode_codes(best, frames) - mel).abs().mean())
    return best if mixed_err < best_err else whole


def _tile_error(err: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, 1, M, F] absolute error -> [B, H, W] mean over each code's tile (with its padding)."""
    h, w = grid
    e = torch.nn.functional.pad(err, (0, w * DOWNSAMPLE - err.shape[-1], 0, 0))
    return e.reshape(e.shape[0], h, e.shape[-2] // h, w, DOWNSAMPLE).mean(dim=(2, 4))


def _chunked_over_columns(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, columns: int,
                          in_scale: int, out_scale: int, progress: Progress | None = None) -> torch.Tensor:
    """Apply `fn` over the last axis of x in overlapping pieces and stitch the centres.

    x has `columns * in_scale` (or fewer) steps on its last axis; fn maps a piece of k columns
    to an output with k * out_scale steps on its last axis. `progress(fraction of columns done)`
    after each piece, ending at 1.0.
    """
    if columns <= CHUNK_COLUMNS + 2 * CONTEXT_COLUMNS:
        y = fn(x)
        if progress is not None:
            progress(1.0)
        return y
    outs = []
    for c0 in range(0, columns, CHUNK_COLUMNS):
        c1 = min(columns, c0 + CHUNK_COLUMNS)
        a, b = max(0, c0 - CONTEXT_COLUMNS), min(columns, c1 + CONTEXT_COLUMNS)
        y = fn(x[..., a * in_scale:b * in_scale])
        outs.append(y[..., (c0 - a) * out_scale:(c1 - a) * out_scale])
        if progress is not None:
            progress(c1 / columns)
    return torch.cat(outs, dim=-1)
