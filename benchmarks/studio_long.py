"""Studio on long recordings: time to open, to move the viewport, and edit -> audio latency by clip length, with
torch thread settings measured on a quiet and on a busy machine.

    python benchmarks/studio_long.py /usr/share/lmms/samples --model assets/demo.distill --lengths 10 600

Each clip is the folder's files concatenated to the given seconds (real recordings), written to a WAV and
opened through the studio's own handlers (read, encode with the default search, reconstruction of the
viewport). Then, far from the start (80% into the clip): move the viewport there, select 2 s of Timbre, "Set
to code", undo: the handler's wall time is what the page waits for before the edited audio is playable
(render of the viewport span, heatmaps, spectrogram pictures, int16 audio). Each arm runs in its own process
with torch.set_num_threads(N); "busy" runs a CPU burner process beside it (a second user training).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))


def burn() -> None:
    """Keep one core busy with torch work (as a training run beside the studio would)."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while True:
        a = torch.tanh(a @ a.T / 256)


def arm(root: str, model: str, seconds: float, threads: int, repeats: int) -> dict:
    import edit_latency
    import gradio as gr
    import torch

    from distill import Codec
    from distill_studio import handlers
    from distill_studio.state import Limits

    torch.set_num_threads(threads)
    codec = Codec.load(model)
    edit_latency.SECONDS = seconds
    wave = edit_latency.clip_audio(root, 0, 44100)
    path = Path(tempfile.mkdtemp()) / f"take{int(seconds)}.wav"
    sf.write(path, wave, 44100)
    s = handlers.new_session(codec, "bench", None, {})
    t0 = time.perf_counter()
    s, _ = handlers.open_clip(s, "A", None, str(path), Limits())
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    s, _ = handlers.move_view(s, gr.EventData(None, {"value": 0.8, "grid": "A"}))
    move_s = time.perf_counter() - t0
    grid = s.grid
    c0 = s.view_a.c0 + 5
    width = max(1, int(round(2.0 / grid.seconds_per_column)))
    s, _ = handlers.select(s, gr.EventData(None, {"index": [[0, c0], [grid.num_bands - 1, min(s.view_a.c1 - 1, c0 + width)]],
                                                  "value": 1, "grid": "A"}))
    edits, undos = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        s, view = handlers.edit(s, "set", code=(3 + i) % codec.codebook_size)
        edits.append(time.perf_counter() - t0)
        assert view.edited is not None
        t0 = time.perf_counter()
        s, view = handlers.undo(s)
        undos.append(time.perf_counter() - t0)
    cells = sum(h.count('class="hm-c"') for h in view.heat_a if h)
    return {"seconds": seconds, "threads": threads, "open_s": round(open_s, 2), "move_view_s": round(move_s, 3),
            "edit_to_audio_s": round(statistics.median(edits), 3), "edit_max_s": round(max(edits), 3),
            "undo_s": round(statistics.median(undos), 3), "heatmap_cells": cells}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--model", default="assets/demo.distill")
    ap.add_argument("--lengths", type=float, nargs="+", default=[10.0, 600.0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--arm", nargs=2, type=float, help=argparse.SUPPRESS)   # seconds threads
    ap.add_argument("--burn", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.burn:
        burn()
        return 0
    if args.arm:
        print(json.dumps(arm(args.root, args.model, args.arm[0], int(args.arm[1]), args.repeats)))
        return 0
    for busy in (False, True):
        burner = subprocess.Popen([sys.executable, __file__, args.root, "--burn"]) if busy else None
        try:
            for seconds in args.lengths:
                for threads in args.threads:
                    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                    done = subprocess.run([sys.executable, __file__, args.root, "--model", args.model, "--repeats",
                                           str(args.repeats), "--arm", str(seconds), str(threads)],
                                          capture_output=True, text=True, env=env)
                    row = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                           else {"error": done.stderr.strip().splitlines()[-3:]})
                    print(json.dumps({"machine": "busy" if busy else "quiet", **row}), flush=True)
        finally:
            if burner is not None:
                burner.kill()
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
