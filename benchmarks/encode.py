"""Encode by search: quality and speed of the default (fast) search against the 20-step Adam search.

    python benchmarks/encode.py --eval /tmp/enc/drums.distill=drums:held-out,beats,bassloops \\
        --eval assets/demo.distill=beats,bassloops,instruments --minutes 10

Quality, per model and folder: every readable file of the folder (`FOLDER:held-out`: only the files the
model held out for validation) is encoded with `Codec.encode(wave, sr, search_steps=...)` for each search
arm and scored as the model-domain log-mel L1, `codec.decode_mel(grid)` against
`codec.logmel(codec.load_wave(wave, sr))`, averaged over frames, then over files (each file counts once).
Arms: `0` (the encoder alone), `20` (20 Adam steps, the default before the fast search), `fast` (the
default now), and with `--schedules` fast searches with other step sizes or margins (`fast_search_codes`).

Speed: `--minutes` of the --speed folders' files (44.1 kHz ones) concatenated and repeated, encoded whole by
`Codec.encode(wave, 44100, search_steps=...)`, and a 10 s clip of it, each arm in turn, --repeats times,
torch on --threads threads; the minimum is reported (the machine may be shared: the least disturbed run).
`--keep-freed-memory` first makes the process-wide malloc setting `distill encode` makes (keep_freed_memory).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from distill import Codec
from distill.audio import AudioError, load_source
from distill.codec import FAST_SEARCH_MARGIN, _chunked_over_columns, fast_search_codes, keep_freed_memory
from distill.model import DOWNSAMPLE, grid_width

ARMS = ("0", "20", "fast")


def folder_files(root: Path, spec: str, codec: Codec) -> list[tuple[str, np.ndarray, int]]:
    """(name, samples, rate) of every readable file of root/FOLDER (`*`: of every folder under root);
    `FOLDER:held-out` keeps only the files the model held out (the model records names, not paths: a name
    found twice under root, such as basses/ and bassloops/rave_bass02.ogg, is left out)."""
    folder, _, which = spec.partition(":")
    held = set((codec.info.dataset or {}).get("val_files") or []) if which == "held-out" else None
    paths = sorted(p for d in (root.iterdir() if folder == "*" else [root / folder]) if d.is_dir() for p in d.iterdir())
    names = Counter(p.name for p in root.rglob("*"))
    out = []
    for path in paths:
        if held is not None and (path.name not in held or names[path.name] > 1):
            continue
        try:
            src = load_source(path)
        except AudioError:  # some lmms .ogg files are corrupt
            continue
        out.append((path.name, src.samples, src.rate))
    return out


def encode_codes(codec: Codec, wave: np.ndarray, sr: int, arm: str) -> np.ndarray:
    """codes [levels, bands, columns] of one arm: "0", "20", "fast" via Codec.encode, or a fast search with
    another schedule and margin, "0.16,0.08" or "0.16,0.08@0" (the margin defaults to FAST_SEARCH_MARGIN)."""
    if arm in ARMS:
        return codec.encode(wave, sr, search_steps=None if arm == "fast" else int(arm)).codes
    steps, _, margin = arm.partition("@")
    schedule = tuple(float(a) for a in steps.split(","))
    m = float(margin) if margin else FAST_SEARCH_MARGIN
    mel = codec.logmel(codec.load_wave(wave, sr))
    return _chunked_over_columns(lambda piece: fast_search_codes(codec.model, piece, schedule, m)[0], mel[None, None],
                                 grid_width(mel.shape[-1]), in_scale=DOWNSAMPLE, out_scale=1).numpy()


def quality(codec: Codec, files: list[tuple[str, np.ndarray, int]], arms: list[str]) -> dict[str, float]:
    """arm -> mean over files of the decoded log-mel L1 against the clip's own log-mel."""
    errs: dict[str, list[float]] = {a: [] for a in arms}
    for _, wave, sr in files:
        mel = codec.logmel(codec.load_wave(wave, sr))
        for arm in arms:
            decoded = codec.decode_mel(encode_codes(codec, wave, sr, arm), frames=mel.shape[-1])
            errs[arm].append(float((decoded - mel).abs().mean()))
    return {a: float(np.mean(v)) for a, v in errs.items()}


def recording(root: Path, folders: list[str], seconds: float, rate: int = 44100) -> np.ndarray:
    """`seconds` of the folders' files at `rate` (others skipped), concatenated and repeated."""
    parts = []
    for folder in folders:
        for path in sorted((root / folder).iterdir()):
            try:
                src = load_source(path)
            except AudioError:
                continue
            if src.rate == rate:
                parts.append(src.samples)
    loop = np.concatenate(parts)
    return np.tile(loop, int(np.ceil(seconds * rate / len(loop))))[: int(seconds * rate)].astype(np.float32)


def timings(codec: Codec, waves: dict[str, np.ndarray], arms: list[str], repeats: int
            ) -> dict[str, dict[str, tuple[float, float]]]:
    """clip -> arm -> (wall, cpu): the least of `repeats` wall times of Codec.encode, the arms taking turns,
    and the least process CPU time (all threads; on a shared machine the less disturbed figure of the work)."""
    times: dict[str, dict[str, list[tuple[float, float]]]] = {c: {a: [] for a in arms} for c in waves}
    for _ in range(repeats):
        for clip, wave in waves.items():
            for arm in arms:
                t0, c0 = time.perf_counter(), time.process_time()
                codec.encode(wave, 44100, search_steps=None if arm == "fast" else int(arm))
                times[clip][arm].append((time.perf_counter() - t0, time.process_time() - c0))
                print(f"  {clip} {arm}: {times[clip][arm][-1][0]:.2f} s, cpu {times[clip][arm][-1][1]:.2f} s",
                      file=sys.stderr, flush=True)
    return {c: {a: (min(w for w, _ in v), min(u for _, u in v)) for a, v in t.items()} for c, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/usr/share/lmms/samples")
    ap.add_argument("--eval", action="append", default=[], metavar="MODEL=FOLDER[:held-out],...",
                    help="a model and the folders to score it on (repeatable)")
    ap.add_argument("--schedules", default="", help="extra fast searches to score, SCHEDULE[@MARGIN];...: '0.16,0.08;0.12,0.08,0.06@0'")
    ap.add_argument("--speed-model", default="assets/demo.distill")
    ap.add_argument("--speed", default="beats,bassloops", help="folders the long recording is made of")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the timed recording (0: no timing)")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-arms", default="fast,20,0", help="searches to time, of fast, 20, 0")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="first call Codec's keep_freed_memory(), as `distill encode` does")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    root = Path(args.root)
    arms = [*ARMS, *(s for s in args.schedules.split(";") if s.strip())]
    report: dict = {"threads": args.threads, "keep_freed_memory": kept, "quality": [], "speed": {}}

    for spec in args.eval:
        model, _, folders = spec.partition("=")
        codec = Codec.load(model)
        for folder in folders.split(","):
            files = folder_files(root, folder, codec)
            t0 = time.perf_counter()
            q = quality(codec, files, arms)
            row = {"model": Path(model).name, "folder": folder, "files": len(files), "l1": q,
                   "vs_20": {a: q[a] / q["20"] for a in arms}, "seconds": round(time.perf_counter() - t0, 1)}
            report["quality"].append(row)
            print(f"{row['model']:>16} {folder:<18} {len(files):3d} files  " + "  ".join(
                f"{a}: {q[a]:.4f} ({q[a] / q['20']:.3f}x)" for a in arms), flush=True)

    if args.minutes > 0:
        codec = Codec.load(args.speed_model)
        long = recording(root, args.speed.split(","), args.minutes * 60)
        clip = long[: int(args.clip_seconds * 44100)]
        speed_arms = args.speed_arms.split(",")
        codec.encode(clip, 44100)  # warm-up: first calls of a shape are slow
        t = timings(codec, {f"{args.minutes:g} min": long, f"{args.clip_seconds:g} s": clip}, speed_arms, args.repeats)
        report["speed"] = t
        report["load_average"] = os.getloadavg()
        print(f"(load average over the last 1 / 5 / 15 minutes: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}; "
              "this process keeps it at ~2)", flush=True)
        for name, row in t.items():
            secs = args.minutes * 60 if "min" in name else args.clip_seconds
            ratio = (f"  20-step / fast: {row['20'][0] / row['fast'][0]:.2f}x (cpu {row['20'][1] / row['fast'][1]:.2f}x)"
                     if {"20", "fast"} <= set(row) else "")
            print(f"encode {name:>7}{' (freed memory kept)' if kept else ''}: " + "  ".join(
                f"{a}: {row[a][0]:.2f} s ({row[a][0] / secs:.4f} s/s, cpu {row[a][1]:.2f} s)" for a in speed_arms)
                + ratio, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
