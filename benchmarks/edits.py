"""Plain codec decode after a region edit: latency for a 10 s clip, and how far the change spreads.

    python benchmarks/edits.py [DATA_DIR] [--model M.distill] [--epochs 30]

Without --model, a tiny model (the test suite's size) is trained on DATA_DIR (default assets/demo)
for --epochs. A 10 s clip is made by joining the folder's clips. The edit sets Timbre at 4.0-5.0 s
to the level's most used code. Reported, decoding with the clip's own phase (`phase_from`):
- decode latency (median of 5) for the tiny model and for the default-size model (untrained: same cost);
- sample-domain difference between the edited and the unedited decode, as RMS relative to the
  unedited decode's RMS, inside the edit and outside it beyond +-0, 1, 2 columns.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from distill import Codec, ConvVQVAE, MelConfig, VQVAEConfig, load_audio
from distill.edits import Region, set_codes
from distill.train import train as train_model

TINY = VQVAEConfig(codebook_size=32, codebook_dim=32, channels=(8, 16, 16, 32), res_blocks=1, batch_size=4,
                   warmup_steps=2, decay=0.8)


def clip_10s(folder: Path, sr: int) -> np.ndarray:
    parts, n = [], 0
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() in (".wav", ".flac") and n < 10 * sr:
            w, _ = load_audio(f, sr)
            parts.append(w)
            n += len(w)
    wave = np.concatenate(parts)[: 10 * sr]
    return np.pad(wave, (0, 10 * sr - len(wave))).astype(np.float32)


def timed(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def spread(codec: Codec, wave: np.ndarray) -> None:
    grid = codec.encode(wave)
    region = Region.from_seconds(grid, "Timbre", 4.0, 5.0)
    usage = np.asarray(codec.info.usage[1]) if codec.info.usage else np.ones(codec.codebook_size)
    edited = set_codes(grid, region, int(usage.argmax()), codec.codebook_size).grid
    changed = int((edited.codes != grid.codes).sum())
    plain = codec.decode(grid, phase_from=wave)
    after = codec.decode(edited, phase_from=wave)
    latency = timed(lambda: codec.decode(edited, phase_from=wave))
    spc = 16 * codec.mel_cfg.hop_length
    ref = float(np.sqrt(np.mean(plain.astype(np.float64) ** 2)))
    diff = (after - plain).astype(np.float64)
    inside = slice(region.c0 * spc, (region.c1 + 1) * spc)
    print(f"  edit: {region.describe(grid)}, {changed} cells changed; decode with phase_from: {latency * 1000:.0f} ms")
    print(f"  |edited - unedited| RMS / unedited RMS: inside {np.sqrt(np.mean(diff[inside] ** 2)) / ref:.4f}", end="")
    for margin in (0, 1, 2):
        mask = np.ones(len(diff), bool)
        mask[max(0, (region.c0 - margin) * spc):(region.c1 + 1 + margin) * spc] = False
        print(f"; outside +-{margin} col {np.sqrt(np.mean(diff[mask] ** 2)) / ref:.2e}", end="")
        if margin == 2:
            print(f" (max |diff| {np.abs(diff[mask]).max():.2e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", default="assets/demo")
    ap.add_argument("--model")
    ap.add_argument("--epochs", type=float, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.model:
        codec = Codec.load(args.model)
    else:
        t0 = time.perf_counter()
        files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in (".wav", ".flac"))
        result = train_model(files, config=TINY, epochs=args.epochs, validate_every=10)
        codec = result.codec
        print(f"trained tiny model on {len(files)} clips in {time.perf_counter() - t0:.0f} s")
    wave = clip_10s(Path(args.data), codec.sample_rate)
    print(f"model {codec.config.codebook_size} x {codec.config.num_quantizers}, channels {codec.config.channels}:")
    spread(codec, wave)
    big = Codec(ConvVQVAE(VQVAEConfig()).eval(), MelConfig())
    grid = big.encode(wave)
    edited = set_codes(grid, Region.from_seconds(grid, "Timbre", 4.0, 5.0), 0, big.codebook_size).grid
    print(f"default-size model (untrained), channels {big.config.channels}: decode with phase_from "
          f"{timed(lambda: big.decode(edited, phase_from=wave)) * 1000:.0f} ms, "
          f"decode_mel only {timed(lambda: big.decode_mel(edited)) * 1000:.0f} ms, "
          f"without phase (Griffin-Lim 32) {timed(lambda: big.decode(edited), 2) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
