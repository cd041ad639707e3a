"""Tuning sweep: train config variants for the same minutes, two at a time on one thread each, and
print each one's held-out model-domain mel L1 and per-level codebook use.

    python benchmarks/sweep.py DATA_DIR --minutes 3 base='{}' band='{"band_embedding": false}' seed=seed

Each variant is NAME=JSON (overrides for adaptive_config) or NAME=seed (the seed design). The split is
quality.py's (every 5th sorted file held out). Cheaper than quality.py (no decoded-audio metrics), so
it is the tool for choosing defaults; quality.py is the one for reporting them. Differences below
~0.005 are within run-to-run noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import MAX_EVAL_SECONDS, holdout_split, select_files  # noqa: E402

from distill.audio import load_audio  # noqa: E402
from distill.config import VQVAEConfig, adaptive_config, seed_config  # noqa: E402
from distill.health import code_counts, health_from_counts  # noqa: E402
from distill.train import Trainer  # noqa: E402


def run_variant(name: str, config: dict, train: list[str], test: list[str], minutes: float,
                keep: str | None) -> tuple[str, float, list[float], int]:
    """Train one variant on one thread; held-out model-domain L1 and per-level use."""
    torch.set_num_threads(1)
    cfg = VQVAEConfig.from_dict(config)
    trainer = Trainer(train, config=cfg.replace(val_fraction=0.0), minutes=minutes, log_every_s=1e9)
    for _ in trainer.run():
        pass
    codec = trainer.result.codec
    if keep:
        trainer.result.save(os.path.join(keep, f"{name}.distill"))
    err, n = 0.0, 0
    counts = np.zeros((len(codec.level_names), codec.codebook_size), dtype=np.int64)
    with torch.no_grad():
        for path in test:
            wave, _ = load_audio(path, codec.sample_rate)
            wave = wave[: int(MAX_EVAL_SECONDS * codec.sample_rate)]
            mel, grid = codec.logmel(wave), codec.encode(wave)
            err += float((codec.decode_mel(grid) - mel).abs().sum())
            n += mel.numel()
            counts += code_counts(grid.codes, codec.codebook_size)
    use = [health_from_counts(c, level).utilization for c, level in zip(counts, codec.level_names, strict=True)]
    return name, err / max(n, 1), use, trainer.result.steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("variants", nargs="+", help="NAME=JSON overrides, or NAME=seed")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--subdirs", default="")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--keep", default=None, help="save each trained model in this folder")
    args = ap.parse_args(argv)
    paths = select_files(args.data_dir, [s for s in args.subdirs.split(",") if s], args.files)
    train, test = holdout_split(paths, 5)
    jobs = []
    for spec in args.variants:
        name, _, js = spec.partition("=")
        cfg = seed_config(len(train)) if js == "seed" else adaptive_config(len(train), **json.loads(js or "{}"))
        jobs.append((name, cfg.to_dict()))
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    print(f"{len(train)} train / {len(test)} held out; {args.minutes} min each, two at a time, one thread each")
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_variant, name, cfg, train, test, args.minutes, args.keep) for name, cfg in jobs]
        for f in futures:
            name, l1, use, steps = f.result()
            print(f"{name:24s} held-out model-domain L1 {l1:.4f}  use {' / '.join(f'{u:.0%}' for u in use)}  "
                  f"steps {steps}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
