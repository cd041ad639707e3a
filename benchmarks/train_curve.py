"""Held-out quality against training minutes: train config variants for given minutes, two at a time
(one torch thread each, so both see the same load), and score each on held-out files.

    python benchmarks/train_curve.py DATA_DIR NAME[@MINUTES]=JSON ... [--minutes 8] [--jobs 2] [--json out.json]

Each variant is NAME=JSON (overrides for `adaptive_config`; `{}` is the shipped default), optionally with
its own minutes: `default@2={}  default@30={}`. The split is quality.py's (every 5th sorted file held
out). Score: model-domain log1p-mel L1, `codec.decode_mel(codec.encode(wave))` vs `codec.logmel(wave)`
(encode's default search), clips capped at 30 s; printed both as the mean over held-out files and
weighted by each clip's length (sweep.py's and quality.py's figure). Also the training steps and
crops (steps x batch) each run took. Jobs start in the order given, `--jobs` at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import MAX_EVAL_SECONDS, holdout_split, select_files  # noqa: E402

from distill.audio import load_audio  # noqa: E402
from distill.config import VQVAEConfig, adaptive_config  # noqa: E402
from distill.train import Trainer  # noqa: E402


def run_variant(name: str, config: dict, minutes: float, train: list[str], test: list[str]) -> dict:
    """Train one variant for `minutes` on one thread; held-out model-domain L1."""
    torch.set_num_threads(1)
    cfg = VQVAEConfig.from_dict(config)
    t0 = time.time()
    trainer = Trainer(train, config=cfg.replace(val_fraction=0.0), minutes=minutes, log_every_s=1e9)
    for _ in trainer.run():
        pass
    codec = trainer.result.codec
    per_file, err, n = [], 0.0, 0
    with torch.no_grad():
        for path in test:
            wave, sr = load_audio(path, codec.sample_rate)
            wave = wave[: int(MAX_EVAL_SECONDS * sr)]
            mel = codec.logmel(codec.load_wave(wave, sr))
            grid = codec.encode(wave, sr)
            diff = (codec.decode_mel(grid) - mel).abs()
            per_file.append(float(diff.mean()))
            err += float(diff.sum())
            n += diff.numel()
    steps = trainer.result.steps
    return {"name": name, "minutes": minutes, "channels": list(cfg.channels), "batch": cfg.batch_size,
            "steps": steps, "crops": steps * cfg.batch_size,
            "train_s": float(trainer.result.info.dataset.get("train_seconds", 0.0)),
            "l1_file_mean": sum(per_file) / max(len(per_file), 1), "l1_weighted": err / max(n, 1),
            "start": time.strftime("%H:%M:%S", time.gmtime(t0)), "end": time.strftime("%H:%M:%S", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("variants", nargs="+", help="NAME[@MINUTES]=JSON (adaptive_config overrides)")
    ap.add_argument("--minutes", type=float, default=8.0, help="for variants without @MINUTES")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--holdout-every", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    paths = select_files(args.data_dir, [], None)
    train, test = holdout_split(paths, args.holdout_every)
    jobs = []
    for spec in args.variants:
        head, _, js = spec.partition("=")
        name, _, mins = head.partition("@")
        jobs.append((head, adaptive_config(len(train), **json.loads(js or "{}")).to_dict(),
                     float(mins) if mins else args.minutes))
    print(f"{len(train)} train / {len(test)} held out; {args.jobs} at a time, one thread each", flush=True)
    results = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_variant, name, cfg, mins, train, test) for name, cfg, mins in jobs]
        for f in futures:
            r = f.result()
            results.append(r)
            print(f"{r['name']:20s} {r['minutes']:g} min  channels {r['channels']}  steps {r['steps']}  "
                  f"crops {r['crops']}  held-out L1 file-mean {r['l1_file_mean']:.4f}  "
                  f"length-weighted {r['l1_weighted']:.4f}  ({r['start']}-{r['end']} UTC)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
