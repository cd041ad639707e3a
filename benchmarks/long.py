"""Long recordings: decode without a phase source (Griffin-Lim) in pieces vs in one go, time and peak memory.

    python benchmarks/long.py /usr/share/lmms/samples --model assets/demo.distill --minutes 3

The recording is the folder's loops concatenated to --minutes. Each arm runs in its own process (so its
peak resident memory is its own): "pieces" is the shipped decode, "whole" the same with the piece size
raised past the clip's length (Griffin-Lim over the whole clip at once, as before). Both encode with
--search 0 first (not timed). Prints seconds, peak RSS and log-mel L1 of each decode against the recording.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def recording(root: str, minutes: float, rate: int) -> np.ndarray:
    """--minutes of the folder's files concatenated (edit_latency.clip_audio, repeated until long enough)."""
    import edit_latency

    edit_latency.SECONDS = minutes * 60
    return edit_latency.clip_audio(root, 0, rate)


def arm(root: str, model: str, minutes: float, whole: bool) -> dict:
    import torch

    from distill import Codec, spectrogram

    torch.set_num_threads(2)
    codec = Codec.load(model)
    wave = recording(root, minutes, codec.sample_rate)
    grid = codec.encode(wave, search_steps=0)
    if whole:
        spectrogram.GL_PIECE_FRAMES = 10**9
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = codec.decode(grid)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    l1 = float((codec.logmel(out) - codec.logmel(wave)).abs().mean())
    return {"arm": "whole" if whole else "pieces", "seconds": round(seconds, 1), "peak_rss_gb": round(peak / 2**20, 2),
            "rss_before_gb": round(base / 2**20, 2), "logmel_l1": round(l1, 4), "samples_exact": len(out) == len(wave)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--model", default="assets/demo.distill")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--arm", choices=["pieces", "whole"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.arm:
        print(json.dumps(arm(args.root, args.model, args.minutes, args.arm == "whole")))
        return 0
    rows = []
    for name in ("pieces", "whole"):
        done = subprocess.run([sys.executable, __file__, args.root, "--model", args.model, "--minutes",
                               str(args.minutes), "--arm", name], capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                    else {"arm": name, "error": done.stderr.strip().splitlines()[-1:]})
    print(f"decode of {args.minutes:g} min without a phase source (Griffin-Lim, 2 threads)")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
