"""Held-out reconstruction of one trained model on real recordings, by decode path, plus decode speed.

    python benchmarks/reconstruction.py DATA_DIR --minutes 4 [--holdout-every 5]    # trains, then scores
    python benchmarks/reconstruction.py DATA_DIR --model M.distill                 # scores an existing model
    python benchmarks/reconstruction.py DATA_DIR --model M.distill --folders drums,beats --mel-nnls-steps 0 5

Every `holdout-every`-th accepted file (sorted) is held out of training. Prints, over the held-out
files: model-domain log1p-mel L1, and DAC-style log-mel L1 / MR-STFT of the decoded audio for three
decode paths (the clip's own phase, Griffin-Lim 32 from random phase, surgical render of the unedited
grid), training steps/s, and seconds to decode a 10 s clip. `--mel-nnls-steps A B ...` scores the decode paths
once per number of non-negative least-squares steps after the mel pseudo-inverse (MEL_NNLS_STEPS; 0 = the
clipped pseudo-inverse alone), side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from metrics import AudioMetrics, Distances  # noqa: E402
from quality import MAX_EVAL_SECONDS, holdout_split, select_files, ten_second_clip  # noqa: E402

import distill.spectrogram as spectrogram  # noqa: E402
from distill import Codec, Trainer, load_audio  # noqa: E402
from distill.render import render_edit  # noqa: E402


def score(codec: Codec, test: list[str]) -> dict[str, float]:
    metrics = AudioMetrics(codec.sample_rate)
    paths = {"own phase": Distances(), "Griffin-Lim 32": Distances(), "surgical, unedited": Distances()}
    mel_err = mel_n = 0.0
    for path in test:
        wave, _ = load_audio(path, codec.sample_rate)
        wave = wave[: int(MAX_EVAL_SECONDS * codec.sample_rate)]
        grid = codec.encode(wave)
        mel = codec.logmel(wave)
        mel_err += float((codec.decode_mel(grid) - mel).abs().sum())
        mel_n += mel.numel()
        paths["own phase"] += metrics.distances(wave, codec.decode(grid, phase_from=wave))
        paths["Griffin-Lim 32"] += metrics.distances(wave, codec.decode(grid))
        paths["surgical, unedited"] += metrics.distances(wave, render_edit(codec, grid, wave))
    out = {"model-domain log1p-mel L1": mel_err / max(mel_n, 1)}
    for name, d in paths.items():
        m = d.mean()
        out[f"log-mel L1, {name}"] = m["logmel_l1"]
        out[f"MR-STFT, {name}"] = m["mrstft"]
    return out


def decode_seconds(codec: Codec, wave: np.ndarray, repeats: int = 5) -> dict[str, float]:
    grid = codec.encode(wave)
    edited = grid.codes.copy()
    mid = grid.num_columns // 2
    edited[1, :, mid:mid + 6] = edited[1, :, :6]  # a 1 s Timbre copy in the middle
    edited_grid = grid.with_codes(edited)
    timings = {}
    for name, fn in (("decode, own phase", lambda: codec.decode(edited_grid, phase_from=wave)),
                     ("decode, Griffin-Lim 32", lambda: codec.decode(edited_grid)),
                     ("surgical render", lambda: render_edit(codec, edited_grid, wave, grid))):
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        timings[name] = float(np.median(runs))
    return timings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--model", help="score this model instead of training one")
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--holdout-every", type=int, default=5)
    p.add_argument("--save", help="where to keep the trained model")
    p.add_argument("--folders", default="", help="comma-joined top-level folders (default: all)")
    p.add_argument("--mel-nnls-steps", type=int, nargs="+", default=[spectrogram.MEL_NNLS_STEPS])
    args = p.parse_args(argv)

    folders = [f for f in args.folders.split(",") if f]
    train, test = holdout_split(select_files(args.data, folders, None), args.holdout_every)
    if args.model:
        codec = Codec.load(args.model)
    else:
        trainer = Trainer(train, minutes=args.minutes)
        for ev in trainer.run():
            if ev.kind in ("start", "done"):
                print(f"{ev.kind}: step {ev.step} {ev.message}", file=sys.stderr)
        codec = trainer.result.codec
        if args.save:
            trainer.result.save(args.save)
    ds = codec.info.dataset
    print(f"{len(train)} train / {len(test)} held-out files; codebook {codec.codebook_size}; torch threads "
          f"{torch.get_num_threads()}")
    if ds.get("train_seconds"):
        print(f"training: {ds['steps']} steps in {ds['train_seconds']} s = {ds['steps'] / ds['train_seconds']:.2f} steps/s")
    steps = args.mel_nnls_steps
    scores, times = [], []
    clip = ten_second_clip(test, codec.sample_rate)
    for n in steps:
        spectrogram.MEL_NNLS_STEPS = n
        scores.append(score(codec, test))
        times.append(decode_seconds(codec, clip))
    head = " | ".join(f"mel NNLS steps {n}" for n in steps)
    print(f"\n| held-out metric | {head} |\n|---|{'---|' * len(steps)}")
    for k in scores[0]:
        print(f"| {k} | " + " | ".join(f"{s[k]:.4f}" for s in scores) + " |")
    print(f"\n| 10 s clip, 1 s Timbre edit -> waveform, median seconds | {head} |\n|---|{'---|' * len(steps)}")
    for k in times[0]:
        print(f"| {k} | " + " | ".join(f"{t[k]:.3f}" for t in times) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
