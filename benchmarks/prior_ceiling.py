"""How much do a cell's own coarser codes tell about its finer ones? Smoothed count tables, no network.

    python benchmarks/prior_ceiling.py /usr/share/lmms/samples --model M.distill --folders drums,beats,bassloops

The regenerate benchmark (`prior.py`) scores the prior on edit-shaped masks: Structure visible, Timbre + Detail
hidden in a 1-16-column span. One of its strongest cues is the visible Structure code of the same cell. This
script measures that cue alone with count tables on the corpus' codes (default encode, every 5th file held
out): cross-entropy in bits per code on the held-out cells of

- the per-(level, band) code frequencies (prior.py's baseline (a), what `randomize` draws from);
- P(code | the same cell's Structure code), P(code | the level just above), P(code | every coarser level),
  each with and without the band in the context, smoothed toward the frequencies by add-alpha backoff with
  the best alpha of (1, 4, 16, 64) chosen on the held-out cells themselves (so optimistic).

If even these optimistic tables stay far from a target (e.g. 25% below the frequencies), the cue is weak in
the codes themselves, not only in what a small network learns in two minutes.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from distill import Codec, load_audio
from distill.audio import scan_folder

ALPHAS = (1, 4, 16, 64)


def corpus_cells(codec: Codec, files: list[str], seconds: float) -> np.ndarray:
    """[cells, levels + 1]: each cell's code at every level, then its band."""
    rows = []
    for path in files:
        wave, sr = load_audio(path)
        codes = codec.encode(wave[: int(seconds * sr)], sr).codes          # [levels, bands, columns]
        q, b, n = codes.shape
        rows.append(np.concatenate([codes.transpose(2, 1, 0).reshape(-1, q), np.tile(np.arange(b), n)[:, None]], 1))
    return np.concatenate(rows)


def bits(p: np.ndarray) -> float:
    return float(-np.log2(np.maximum(p, 1e-12)).mean())


def conditional_bits(train: np.ndarray, test: np.ndarray, level: int, context: list[int], with_band: bool,
                     freq: np.ndarray, codebook: int, bands: int) -> float:
    """Held-out bits of P(code at `level` | codes at `context` levels [, band]), backed off to `freq`."""
    def keys(cells: np.ndarray) -> np.ndarray:
        k = np.zeros(len(cells), np.int64)
        for c in context:
            k = k * codebook + cells[:, c]
        return k * bands + cells[:, -1] if with_band else k
    k_train, k_test = keys(train), keys(test)
    pairs = Counter(zip(k_train.tolist(), train[:, level].tolist(), strict=True))
    totals = Counter(k_train.tolist())
    seen = np.array([pairs.get((k, t), 0) for k, t in zip(k_test.tolist(), test[:, level].tolist(), strict=True)], dtype=float)
    total = np.array([totals.get(k, 0) for k in k_test.tolist()], dtype=float)
    prior = freq[test[:, -1], test[:, level]]
    return min(bits((seen + a * prior) / (total + a)) for a in ALPHAS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="/usr/share/lmms/samples")
    ap.add_argument("--model", required=True)
    ap.add_argument("--folders", default="drums,beats,bassloops")
    ap.add_argument("--seconds", type=float, default=30.0, help="at most this much of each file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    codec = Codec.load(args.model)
    files = sorted(v.path for f in args.folders.split(",") for v in scan_folder(Path(args.root) / f).accepted)
    test_files = files[4::5]
    train_files = [f for f in files if f not in set(test_files)]
    train, test = corpus_cells(codec, train_files, args.seconds), corpus_cells(codec, test_files, args.seconds)
    k, b = codec.codebook_size, codec.num_bands
    print(f"{args.folders}: {len(train_files)} training files ({len(train)} cells), {len(test_files)} held out "
          f"({len(test)} cells); codebook {k}, {b} bands; bits per code on the held-out cells")
    print("| level | frequencies | given Structure | + band | given the level above | + band | given all coarser | + band |")
    print("|---|---|---|---|---|---|---|---|")
    for level in range(1, codec.config.num_quantizers):
        freq = np.full((b, k), 0.5)
        np.add.at(freq, (train[:, -1], train[:, level]), 1)
        freq /= freq.sum(1, keepdims=True)
        base = bits(freq[test[:, -1], test[:, level]])
        cells = [f"{base:.3f}"]
        for context in ([0], [level - 1], list(range(level))):
            for with_band in (False, True):
                h = conditional_bits(train, test, level, context, with_band, freq, k, b)
                cells.append(f"{h:.3f} ({1 - h / base:.1%})")
        print(f"| {codec.level_names[level]} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
