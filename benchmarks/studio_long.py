"""Studio on long recordings: time to open, to move the viewport, and edit -> audio latency by clip length, with
torch thread settings measured on a quiet and on a busy machine.

    python benchmarks/studio_long.py /usr/share/lmms/samples --model assets/demo.distill --lengths 10 600

Each clip is the folder's files concatenated to the given seconds (real recordings), written to a WAV and
opened through the studio's own handlers (read, encode with the default search, reconstruction of the
viewport). Then, far from the start (80% into the clip): move the viewport there, select 2 s of Timbre, "Set
to code", undo: the handler's wall time is what the page waits for before the edited audio is playable
(render of the viewport span, heatmaps, spectrogram pictures, int16 audio). Each arm runs in its own process
with torch.set_num_threads(N); "busy" runs a CPU burner process beside it (a second user training).

    python benchmarks/studio_long.py /usr/share/lmms/samples --lengths 1800 --history 0 400 --threads 1

--history N (issue 25) first pushes N edits on the session (2 s set / copy / reverse / swap with clip B, the
same file opened as B, anywhere in the clip), then measures as above; the row adds the history's own costs:
active_donors (what every render calls) beside the algorithm it replaced, measured in the same process,
the session's donors, and the bytes the history holds (EditHistory.nbytes).
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def push_history(edit, steps: int, seed: int = 0) -> None:
    """`steps` edits of 2 s (12 columns) anywhere in the clip, pushed on the session without rendering: set,
    copy within A, reverse, swap with B in turn, random levels and bands."""
    from distill.edits import Region, copy_region, reverse_region, set_codes, swap_regions

    rng = np.random.default_rng(seed)
    for k in range(steps):
        a, b = edit.current, edit.partner_grid
        n = min(a.num_columns, b.num_columns)
        levels = tuple(sorted(rng.choice(a.num_levels, int(rng.integers(1, a.num_levels + 1)), replace=False).tolist()))
        r0 = int(rng.integers(0, a.num_bands))
        r1 = int(rng.integers(r0, a.num_bands))
        c0, c1 = (int(c) for c in rng.integers(0, n - 12, 2))
        here, there = Region(levels, r0, r1, c0, c0 + 11), Region(levels, r0, r1, c1, c1 + 11)
        kind = k % 4
        if kind == 0:
            result = set_codes(a, here, int(rng.integers(0, edit.codec.codebook_size)), edit.codec.codebook_size)
        elif kind == 1:
            result = copy_region(a, there, a, c0, same_clip=True)
        elif kind == 2:
            result = reverse_region(a, here)
        else:
            result = swap_regions(a, here, b, there, same_clip=False)
        edit.apply(result)


def history_costs(edit) -> dict:
    """What the history costs each render: active_donors (new and the replaced algorithm, same results), the
    session's donors (active_donors + render.donors_from_active), and what it holds."""
    from test_history_long import reference_active_donors  # the replaced algorithm, kept once, in its test

    h = edit.history
    h.active_donors()
    t0 = time.perf_counter()
    new = h.active_donors()
    new_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    old = reference_active_donors(h)
    old_s = time.perf_counter() - t0
    same = [(a.patch, a.partner) for a in new] == [(a.patch, a.partner) for a in old] and all(
        np.array_equal(a.cells, b.cells) for a, b in zip(new, old, strict=True))
    t0 = time.perf_counter()
    edit.donors()
    donors_s = time.perf_counter() - t0
    return {"history_steps": h.position, "active_records": len(new), "active_donors_s": round(new_s, 4),
            "active_donors_before_s": round(old_s, 3), "same_records": same, "session_donors_s": round(donors_s, 3),
            "history_mb": round(h.nbytes() / 2**20, 1)}


def burn() -> None:
    """Keep one core busy with torch work (as a training run beside the studio would)."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while True:
        a = torch.tanh(a @ a.T / 256)


def arm(root: str, model: str, seconds: float, threads: int, repeats: int, history: int = 0) -> dict:
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
    costs = {}
    if history:
        s, _ = handlers.open_clip(s, "B", None, str(path), Limits())
        push_history(s.edit, history)
        costs = history_costs(s.edit)
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
            "undo_s": round(statistics.median(undos), 3), "heatmap_cells": cells, **costs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--model", default="assets/demo.distill")
    ap.add_argument("--lengths", type=float, nargs="+", default=[10.0, 600.0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--history", type=int, nargs="+", default=[0], help="edits pushed before measuring (issue 25)")
    ap.add_argument("--arm", nargs=3, type=float, help=argparse.SUPPRESS)   # seconds threads history
    ap.add_argument("--burn", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.burn:
        burn()
        return 0
    if args.arm:
        print(json.dumps(arm(args.root, args.model, args.arm[0], int(args.arm[1]), args.repeats, int(args.arm[2]))))
        return 0
    for busy in (False, True):
        burner = subprocess.Popen([sys.executable, __file__, args.root, "--burn"]) if busy else None
        try:
            for seconds in args.lengths:
                for steps in args.history:
                    for threads in args.threads:
                        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                        done = subprocess.run([sys.executable, __file__, args.root, "--model", args.model, "--repeats",
                                               str(args.repeats), "--arm", str(seconds), str(threads), str(steps)],
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
