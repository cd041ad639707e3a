"""Edit -> audio latency of the studio's render path, this tree vs another (the baseline), side by side.

    python benchmarks/edit_latency.py DATA_DIR --model M.distill [--baseline-src /path/to/old/src] [--repeats 3]

Clips A and B are 10 s of real recordings (loops under DATA_DIR concatenated). For each edit (set one
level for 1 s, copy 1 s from B, swap 1 s with B) the surgical render that the Edited player plays is
timed (median of --repeats). This tree renders through distill.EditSession; with --baseline-src the
same edits run in a subprocess on that tree's code path (apply_operation + render_edit with the
edit's donor patches, as its studio did), so both columns come from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OPS = ("set Timbre@4.0-5.0=3", "copy B:Timbre@1.0-2.0 --to 4.0", "swap Timbre@2.0-3.0 B:Timbre@2.0-3.0")
SECONDS = 10.0


def clip_audio(data_dir: str, offset: int, rate: int) -> np.ndarray:
    """SECONDS of audio at `rate`: the folder's files from the `offset`-th on, concatenated."""
    from distill import load_audio

    files = sorted(p for p in Path(data_dir).rglob("*") if p.suffix.lower() in (".wav", ".ogg", ".flac"))
    parts, total = [], 0
    for p in files[offset:] + files[:offset]:
        try:
            wave, _ = load_audio(p, rate)
        except Exception:  # noqa: BLE001 - a benchmark skips what it cannot read
            continue
        parts.append(wave)
        total += len(wave)
        if total >= SECONDS * rate:
            break
    return np.concatenate(parts)[: int(SECONDS * rate)].astype(np.float32)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first calls of a new shape are slow on CPU
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_current(data_dir: str, model: str, repeats: int) -> dict[str, float]:
    from distill import Codec, EditSession, SourceAudio, clip_from_source

    codec = Codec.load(model)
    a = clip_from_source(codec, SourceAudio("A", clip_audio(data_dir, 0, codec.sample_rate), codec.sample_rate))
    b = clip_from_source(codec, SourceAudio("B", clip_audio(data_dir, 7, codec.sample_rate), codec.sample_rate))
    out = {}
    for op in OPS:
        s = EditSession(codec, a, b)
        s.apply(op)
        out[op] = timed(s.render, repeats)
    return out


def run_baseline(data_dir: str, model: str, repeats: int) -> dict[str, float]:
    """The old studio path: apply_operation, then render_edit with the edit's donor patches."""
    from distill import Codec
    from distill.edits import apply_operation
    from distill.render import donors_from_patches, render_edit

    codec = Codec.load(model)
    wa, wb = clip_audio(data_dir, 0, codec.sample_rate), clip_audio(data_dir, 7, codec.sample_rate)
    ga, gb = codec.encode(wa), codec.encode(wb)
    out = {}
    for op in OPS:
        result = apply_operation(codec, ga, op, other=gb)
        donors = donors_from_patches(result.donors, wa, wb)
        out[op] = timed(lambda r=result, d=donors: render_edit(codec, r.grid, wa, ga, donors=d), repeats)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--model", required=True)
    p.add_argument("--baseline-src", help="src/ folder of the tree to compare against")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--as-baseline", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.as_baseline:
        print(json.dumps(run_baseline(args.data, args.model, args.repeats)))
        return
    base = None
    if args.baseline_src:
        env = {**os.environ, "PYTHONPATH": args.baseline_src}
        cmd = [sys.executable, __file__, args.data, "--model", args.model, "--repeats", str(args.repeats),
               "--as-baseline"]
        base = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    cur = run_current(args.data, args.model, args.repeats)
    print(f"edit -> surgical render of a {SECONDS:.0f} s clip, median of {args.repeats} (seconds)")
    print(f"{'edit':<42} {'baseline':>9} {'this tree':>9}")
    for op in OPS:
        b = f"{base[op]:.3f}" if base else "-"
        print(f"{op:<42} {b:>9} {cur[op]:>9.3f}")


if __name__ == "__main__":
    main()
