"""Long recordings: time and peak memory of encode, decode (with and without a phase source) and render.

    python benchmarks/long.py /usr/share/lmms/samples --model assets/demo.distill --minutes 30
    python benchmarks/long.py /usr/share/lmms/samples --minutes 3 --arms decode-pieces decode-whole

The recording is the folder's loops concatenated to --minutes. Each arm runs in its own process (so its peak
resident memory is its own) and reports the peak added over what the process held once the recording and the
model were loaded ("peak_added_gb") and the process's whole peak ("peak_rss_gb"):
  encode         Codec.encode with its default
  encode-0       the encoder alone (--search 0)
  decode-phase   Codec.decode with the recording's own phase (what `distill decode --phase-from` does)
  decode-pieces  Codec.decode without a phase source: Griffin-Lim in pieces (shipped)
  decode-whole   the same with the piece size past the clip's length (Griffin-Lim at once, as before)
  render         surgical render of the whole clip with two edits far apart, then the export at the file's rate
Arms other than the encodes encode with --search 0 first (not timed). Log-mel L1 is against the recording.
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

ARMS = ("encode", "encode-0", "decode-phase", "decode-pieces", "decode-whole", "render")


def recording(root: str, minutes: float, rate: int) -> np.ndarray:
    """--minutes of the folder's files concatenated (edit_latency.clip_audio, repeated until long enough)."""
    import edit_latency

    edit_latency.SECONDS = minutes * 60
    return edit_latency.clip_audio(root, 0, rate)


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def arm(root: str, model: str, minutes: float, name: str, threads: int) -> dict:
    import torch

    from distill import Codec, EditSession, SourceAudio, clip_from_source, spectrogram

    torch.set_num_threads(threads)
    codec = Codec.load(model)
    wave = recording(root, minutes, 44100)
    model_wave = codec.load_wave(wave, 44100)
    grid = None if name.startswith("encode") else codec.encode(model_wave, search_steps=0)
    if name == "decode-whole":
        spectrogram.GL_PIECE_FRAMES = 10**9
    base = _rss_gb()
    t0 = time.perf_counter()
    if name.startswith("encode"):
        grid = codec.encode(model_wave, search_steps=0 if name == "encode-0" else None)
        out = None
    elif name == "decode-phase":
        out = codec.decode(grid, phase_from=model_wave)
    elif name.startswith("decode"):
        out = codec.decode(grid)
    else:
        session = EditSession(codec, clip_from_source(codec, SourceAudio("long", wave, 44100), search_steps=0))
        n = session.current.num_columns
        session.apply(f"set Timbre@{0.1 * n * codec.seconds_per_column:.2f}-{0.1 * n * codec.seconds_per_column + 2:.2f}=3")
        session.apply(f"reverse Structure@{0.8 * n * codec.seconds_per_column:.2f}-"
                      f"{0.8 * n * codec.seconds_per_column + 3:.2f}")
        t0 = time.perf_counter()
        rendered = session.render()
        exported, rate = session.export_audio(rendered)
        out = rendered.wave
        assert len(exported) == len(wave) and rate == 44100
    seconds = time.perf_counter() - t0
    row = {"arm": name, "minutes": minutes, "threads": threads, "seconds": round(seconds, 1),
           "peak_added_gb": round(_rss_gb() - base, 2), "peak_rss_gb": round(_rss_gb(), 2)}
    if out is not None:
        row["logmel_l1"] = round(float((codec.logmel(out) - codec.logmel(model_wave)).abs().mean()), 4)
        row["samples_exact"] = len(out) == len(model_wave)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--model", default="assets/demo.distill")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.arm:
        print(json.dumps(arm(args.root, args.model, args.minutes, args.arm, args.threads)))
        return 0
    print(f"{args.minutes:g} min of {args.root} concatenated, {args.threads} threads, each arm in its own process")
    for name in args.arms:
        done = subprocess.run([sys.executable, __file__, args.root, "--model", args.model, "--minutes",
                               str(args.minutes), "--threads", str(args.threads), "--arm", name],
                              capture_output=True, text=True)
        row = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
               else {"arm": name, "error": done.stderr.strip().splitlines()[-1:]})
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
