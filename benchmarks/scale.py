"""Scale (issue 27): a synthetic 2 / 5 / 20 hour corpus, training's memory and start-up at each size, and
one process vs two torch.distributed ranks on the same CPU.

    python benchmarks/scale.py make /usr/share/lmms/samples --out /tmp/scale_corpus --hours 2 3 15 [--seed 0] [--processes 2]
    python benchmarks/scale.py memory --corpus /tmp/scale_corpus --minutes 1 [--sets 2 5 20] [--json mem.json]
    python benchmarks/scale.py ddp --corpus /tmp/scale_corpus --hours 2 --minutes 2 [--json ddp.json]
    python benchmarks/scale.py small /usr/share/lmms/samples/drums /usr/share/lmms/samples/beats [--rounds 3]

**make** cuts real recordings (every .wav/.ogg/.flac under the source folder that soundfile opens) into
clips of 10-40 s: random crops of random samples, some looped, reversed, sped up or slowed down by
resampling (pitch with them, 0.5-2x), at a random gain, with fades, short silences between them and
some layered over each other; each clip peak-normalised to a random level. 16-bit PCM WAV at 44.1 kHz
or 48 kHz (a few at 22.05 kHz), 30% stereo. Every clip is a function of (seed, part, index) alone, so the
corpus is the same whatever the number of processes. `--hours 2 3 15` writes part1/ (2 h), part2/ (3 h)
and part3/ (15 h): part1 is the 2 h corpus, part1+part2 the 5 h one, all three the 20 h one. Each part
ends with its manifest beside it, partN.manifest.json (complete: true; outside the folder, so
training sees audio alone); a complete part is skipped, an interrupted one resumes
(each clip is written to a temporary name and renamed). It refuses to start with less than twice the
estimated size free.

**memory** trains on each cumulative set (2, 5, 20 h) twice, one after the other:

    python -m distill.cli train PART1 [PART2 ...] -o /tmp/scale_out/<h>h.distill --minutes M --prior-share 0

the first after deleting the log-mel cache (CACHE_PATH below), so it scans the audio and builds the
cache, the second reusing it. Peak RSS is the sum over the whole process tree (the CLI and every child;
shared pages count once per process), sampled every 0.2 s; wall time and the time to the first training
step line are timed here. The rest comes from `distill info OUT --json`: dataset.corpus (files, hours,
bytes, built_s = seconds to scan + compute log-mels, 0 when reused, reused, workers) and dataset.training
(world_size, backend, devices, batch_per_rank, steps, seconds) where the CLI writes them (top level is
looked at too), else dataset.steps / dataset.train_seconds; what is missing prints n/a.

**ddp** trains on one set, same wall-clock budget, one after the other on this machine:

    (a) OMP_NUM_THREADS=2 python -m distill.cli train PARTS -o /tmp/scale_out/ddp_single.distill --minutes M --device cpu --prior-share 0
    (b) OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 -m distill.cli train PARTS -o /tmp/scale_out/ddp_2ranks.distill --minutes M --device cpu --prior-share 0

and prints steps/s, crops/s (steps/s x batch per rank x world size) and held-out quality
(dataset.best_val_loss, the trainer's validation files) of both, and (b)/(a). When `distill train --help`
offers --cache, both arms are given one cache (the first arm builds it). A CLI that does not record
training.world_size shows n/a for (b)'s world size and crops/s (it ran two independent copies).

Every train command also gets `--checkpoint OUT.ckpt` (removed after the run) and, where the CLI has
the flag, `--cache DIR`. steps/s = training.steps / training.seconds (the training loop's own time).
A run is ended (and marked so) past --timeout-min (60) or when its tree holds over --max-rss-gb (80% of
the machine's memory). The runs use the `distill` that `python -m distill.cli` imports here (set
PYTHONPATH to measure another checkout). Every run's output, time-stamped, goes to --out-dir/*.log;
`--json PATH` writes every figure and command line. (Over 600 lines: three subcommands in one file, as
issue 27 asks, sharing the code that runs and measures `distill train`.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from multiprocessing import Pool
from multiprocessing.pool import Pool as PoolType
from pathlib import Path

import numpy as np

try:
    import psutil
except ImportError:  # not a dependency of distill: fall back to reading /proc
    psutil = None

OUT_DIR = "/tmp/scale_out"
CACHE_PATH = "{output}.cache"  # the log-mel cache `distill train -o OUTPUT` keeps (deleted before a first run)
POLL_S = 0.2
MANIFEST = "{folder}.manifest.json"  # beside the part's folder, not in it
MAKE_VERSION = 1
SOURCE_SUFFIXES = (".wav", ".ogg", ".flac")
RATES = ((44100, 0.45), (48000, 0.45), (22050, 0.10))  # output sample rates and their shares
STEREO_SHARE = 0.3
CLIP_SECONDS = (10.0, 40.0)
BYTES_PER_SECOND = sum(r * p for r, p in RATES) * (1 + STEREO_SHARE) * 2  # the mix's mean, 16-bit

# ---------------------------------------------------------------------------------------------- make


@dataclass
class Source:
    name: str
    audio: np.ndarray  # (frames, channels) float32
    rate: int


_SOURCES: list[Source] = []  # each make worker's copy, set by _init_worker


def find_sources(root: str) -> list[str]:
    import soundfile as sf

    paths = sorted(str(p) for p in Path(root).rglob("*") if p.suffix.lower() in SOURCE_SUFFIXES)
    usable = []
    for p in paths:
        try:
            sf.info(p)
            usable.append(p)
        except Exception:  # a mislabelled or broken file: leave it out
            pass
    return usable


def load_sources(paths: list[str]) -> list[Source]:
    import soundfile as sf

    out = []
    for p in paths:
        audio, rate = sf.read(p, dtype="float32", always_2d=True)
        if audio.shape[0] >= 0.05 * rate and np.abs(audio).max() > 1e-4:
            out.append(Source(os.path.basename(p), audio[:, :2], rate))
    return out


def plan_part(seed: int, part: int, hours: float) -> list[tuple[float, int, int]]:
    """(seconds, rate, channels) of each clip of a part: lengths drawn until they add up to the hours."""
    rng = np.random.default_rng([seed, part])
    left, plan = hours * 3600.0, []
    rates, shares = zip(*RATES, strict=True)
    while left > 0:
        seconds = round(min(float(rng.uniform(*CLIP_SECONDS)), max(left, CLIP_SECONDS[0])), 2)
        plan.append((seconds, int(rng.choice(rates, p=shares)), 2 if rng.random() < STEREO_SHARE else 1))
        left -= seconds
    return plan


def resample(x: np.ndarray, ratio: float) -> np.ndarray:
    """Resample (frames, ch) by `ratio` output samples per input sample (speed and rate change in one)."""
    from scipy.signal import resample_poly

    frac = Fraction(ratio).limit_denominator(64)
    if frac == 1:
        return x
    if frac.numerator == 0 or frac.numerator > 64:  # outside what limit_denominator keeps cheap: interpolate
        n = max(1, round(x.shape[0] * ratio))
        pos = np.linspace(0, x.shape[0] - 1, n)
        return np.stack([np.interp(pos, np.arange(x.shape[0]), x[:, c]) for c in range(x.shape[1])], axis=1)
    return resample_poly(x, frac.numerator, frac.denominator, axis=0)


def to_channels(x: np.ndarray, channels: int, rng: np.random.Generator) -> np.ndarray:
    if channels == 1:
        return x.mean(axis=1, keepdims=True)
    if x.shape[1] == 2:
        return x[:, ::-1] if rng.random() < 0.5 else x
    pan = rng.uniform(0, np.pi / 2)  # constant-power pan of a mono source
    return x * np.array([np.cos(pan), np.sin(pan)], dtype=np.float32)


def fade(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    fade_in = min(n // 2, int(rate * (rng.uniform(0, 0.5) if rng.random() < 0.3 else rng.uniform(0, 0.03))))
    fade_out = min(n // 2, int(rate * rng.uniform(0.005, 0.3)))
    env = np.ones(n, dtype=np.float32)
    if fade_in:
        env[:fade_in] = np.linspace(0, 1, fade_in)
    if fade_out:
        env[n - fade_out:] *= np.linspace(1, 0, fade_out) ** rng.uniform(1, 3)
    return x * env[:, None]


def segment(rng: np.random.Generator, rate: int, channels: int) -> np.ndarray:
    """One transformed piece of a random source: crop, loop, reverse, speed, gain, fades."""
    src = _SOURCES[int(rng.integers(len(_SOURCES)))]
    n = src.audio.shape[0]
    length = int(min(n, rng.uniform(0.25, 8.0) * src.rate))
    start = int(rng.integers(0, n - length + 1))
    x = src.audio[start:start + length]
    if rng.random() < 0.3:
        x = np.tile(x, (int(rng.integers(2, 5)), 1))
    if rng.random() < 0.2:
        x = x[::-1]
    speed = 2.0 ** rng.uniform(-1, 1) if rng.random() < 0.5 else 1.0
    x = resample(to_channels(x, channels, rng), rate / (src.rate * speed))
    x = x * np.float32(10 ** (rng.uniform(-15, 0) / 20))
    return fade(x.astype(np.float32), rate, rng)


def render_clip(rng: np.random.Generator, seconds: float, rate: int, channels: int) -> np.ndarray:
    """Pieces one after another (gaps of silence, small overlaps) with some layered over earlier ones."""
    n = int(round(seconds * rate))
    buf = np.zeros((n, channels), dtype=np.float32)
    cursor = 0
    while cursor < n:
        seg = segment(rng, rate, channels)
        if cursor > 0 and rng.random() < 0.2:
            pos = int(rng.integers(0, cursor))  # layered over what is there
        else:
            gap = rng.uniform(0, 1.0) if rng.random() < 0.25 else -rng.uniform(0, min(0.1, seg.shape[0] / rate / 2))
            pos = max(0, cursor + int(gap * rate))
            cursor = max(cursor + 1, pos + seg.shape[0])
            if pos >= n:  # the last gap ran past the end: silence to the end
                break
        end = min(n, pos + seg.shape[0])
        buf[pos:end] += seg[:end - pos]
    peak = float(np.abs(buf).max())
    if peak > 0:
        buf *= np.float32(10 ** (rng.uniform(-12, -1) / 20) / peak)
    return buf


def _init_worker(paths: list[str]) -> None:
    global _SOURCES
    _SOURCES = load_sources(paths)


def _make_clip(task: tuple[str, int, int, int, float, int, int]) -> dict:
    import soundfile as sf

    folder, seed, part, index, seconds, rate, channels = task
    name = f"p{part}_{index:05d}.wav"
    path = os.path.join(folder, name)
    if not os.path.exists(path):  # written under a temporary name and renamed: an existing one is complete
        audio = render_clip(np.random.default_rng([seed, part, index]), seconds, rate, channels)
        sf.write(path + ".tmp", audio, rate, subtype="PCM_16", format="WAV")
        os.replace(path + ".tmp", path)
    return {"name": name, "seconds": seconds, "rate": rate, "channels": channels, "bytes": os.path.getsize(path)}


def read_manifest(folder: str) -> dict | None:
    try:
        return json.loads(Path(MANIFEST.format(folder=folder)).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def part_is_complete(folder: str, seed: int, hours: float) -> bool:
    m = read_manifest(folder)
    if not (m and m.get("complete") and same_plan(m, seed, hours)):
        return False
    paths = [(os.path.join(folder, f["name"]), f["bytes"]) for f in m["files"]]
    return all(os.path.exists(p) and os.path.getsize(p) == size for p, size in paths)


def same_plan(manifest: dict, seed: int, hours: float) -> bool:
    return (manifest.get("version"), manifest.get("seed"), manifest.get("hours")) == (MAKE_VERSION, seed, hours)


def start_part(folder: str, seed: int, hours: float) -> None:
    """An unfinished manifest; clips of another seed/hours/version are removed, this plan's are kept."""
    os.makedirs(folder, exist_ok=True)
    m = read_manifest(folder)
    if not (m and same_plan(m, seed, hours)):
        for p in Path(folder).glob("p*_*.wav*"):
            p.unlink()
    stamp = {"version": MAKE_VERSION, "seed": seed, "hours": hours, "complete": False}
    Path(MANIFEST.format(folder=folder)).write_text(json.dumps(stamp))


def check_disk(out: str, hours: float) -> None:
    need = hours * 3600 * BYTES_PER_SECOND
    os.makedirs(out, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < 2 * need:
        sys.exit(f"scale.py make: {hours:g} h still to write is about {need / 1e9:.1f} GB; {out} has "
                 f"{free / 1e9:.1f} GB free, and make wants twice the estimate free. Free space or choose --out.")
    print(f"disk: about {need / 1e9:.1f} GB to write, {free / 1e9:.1f} GB free at {out}", flush=True)


def make_part(pool: PoolType, out: str, seed: int, part: int, hours: float) -> dict:
    folder = os.path.join(out, f"part{part}")
    plan = plan_part(seed, part, hours)
    start_part(folder, seed, hours)
    tasks = [(folder, seed, part, i, s, r, c) for i, (s, r, c) in enumerate(plan)]
    files, done_s, done_b, t0, last = [], 0.0, 0, time.time(), 0.0
    for entry in pool.imap_unordered(_make_clip, tasks, chunksize=2):
        files.append(entry)
        done_s, done_b = done_s + entry["seconds"], done_b + entry["bytes"]
        if time.time() - last > 15 or len(files) == len(tasks):
            last, rate = time.time(), done_s / max(time.time() - t0, 1e-6)
            eta = max(0.0, hours * 3600 - done_s) / rate if rate else 0
            print(f"  part{part}: {len(files)}/{len(tasks)} files, {done_s / 3600:.2f}/{hours:g} h, "
                  f"{done_b / 1e9:.2f} GB, {rate:.0f}x real time, ETA {eta / 60:.0f} min", flush=True)
    files.sort(key=lambda f: f["name"])
    manifest = {"version": MAKE_VERSION, "seed": seed, "hours": hours, "complete": True, "part": part,
                "files": files, "seconds": round(done_s, 2), "bytes": done_b,
                "build_s": round(time.time() - t0, 1)}
    Path(MANIFEST.format(folder=folder)).write_text(json.dumps(manifest, indent=1))
    return manifest


def cmd_make(args: argparse.Namespace) -> dict:
    todo = [(i + 1, h) for i, h in enumerate(args.hours)
            if not part_is_complete(os.path.join(args.out, f"part{i + 1}"), args.seed, h)]
    for i, h in enumerate(args.hours):
        if (i + 1, h) not in todo:
            print(f"part{i + 1} ({h:g} h) is complete: skipped", flush=True)
    if todo:
        check_disk(args.out, sum(h for _, h in todo))
        paths = find_sources(args.source)
        print(f"{len(paths)} source files under {args.source}; {args.processes} processes", flush=True)
        with Pool(args.processes, initializer=_init_worker, initargs=(paths,)) as pool:
            for part, hours in todo:
                print(f"part{part}: {hours:g} h", flush=True)
                make_part(pool, args.out, args.seed, part, hours)
    manifests = [read_manifest(os.path.join(args.out, f"part{i + 1}")) or {} for i in range(len(args.hours))]
    files = sum(len(m.get("files", [])) for m in manifests)
    seconds = sum(m.get("seconds", 0) for m in manifests)
    size = sum(m.get("bytes", 0) for m in manifests)
    print(f"corpus {args.out}: {files} files, {seconds / 3600:.2f} h, {size / 1e9:.2f} GB")
    return {"out": args.out, "files": files, "hours": seconds / 3600, "bytes": size,
            "parts": [{k: v for k, v in m.items() if k != "files"} for m in manifests]}


# ------------------------------------------------------------------------------------- running train


@dataclass
class Run:
    command: list[str]
    env: dict
    rc: int | None = None
    wall_s: float = 0.0
    peak_rss: int = 0
    first_step_s: float | None = None
    killed: str = ""
    log: str = ""
    info: dict = field(default_factory=dict)
    cache_bytes: int | None = None


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, summed (psutil, else /proc)."""
    if psutil is not None:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except GONE:
            return 0
        return sum(_quiet(lambda p=p: p.memory_info().rss) for p in procs)
    parents = {int(d): _quiet(lambda d=d: int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]))
               for d in os.listdir("/proc") if d.isdigit()}
    tree = {pid}
    while grown := {c for c, p in parents.items() if p in tree} - tree:
        tree |= grown
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(_quiet(lambda p=p: int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page) for p in tree)


GONE = (OSError, IndexError, ValueError, *((psutil.Error,) if psutil else ()))  # a process ended while read


def _quiet(read: Callable[[], int]) -> int:
    """read(), or 0 when the process has gone meanwhile."""
    try:
        return read()
    except GONE:
        return 0


def kill_tree(proc: subprocess.Popen) -> None:
    """End the run we started: its process group (start_new_session) and so every rank."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass


STEP_LINE = re.compile(r"(?<!prior )\bstep (\d+)\b")


def measure(run: Run, log_path: str, timeout_s: float, max_rss: int) -> Run:
    """Run the command; poll its tree's RSS every POLL_S; time it and its first training-step line."""
    env = {**os.environ, **run.env}
    t0 = time.time()
    proc = subprocess.Popen(run.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    with open(log_path, "w") as log:
        def pump() -> None:
            for line in proc.stdout:
                log.write(f"{time.time() - t0:8.2f} {line}")
                m = STEP_LINE.search(line)
                if run.first_step_s is None and m and int(m.group(1)) >= 1:
                    run.first_step_s = time.time() - t0
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while proc.poll() is None:
            run.peak_rss = max(run.peak_rss, tree_rss(proc.pid))
            if time.time() - t0 > timeout_s:
                run.killed = f"timeout after {timeout_s / 60:g} min"
            elif run.peak_rss > max_rss:
                run.killed = f"RSS over {max_rss / 2**30:.1f} GiB"
            if run.killed:
                kill_tree(proc)
                break
            time.sleep(POLL_S)
        run.rc = proc.wait()
        reader.join(timeout=5)
    run.wall_s = time.time() - t0
    run.log = log_path
    return run


def read_info(model: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "distill.cli", "info", model, "--json"], capture_output=True,
                         text=True)
    try:
        return json.loads(out.stdout) if out.returncode == 0 else {}
    except json.JSONDecodeError:
        return {}


def section(info: dict, name: str) -> dict:
    """info['dataset'][name], or info[name]: where the CLI puts corpus / training."""
    found = (info.get("dataset") or {}).get(name, info.get(name))
    return found if isinstance(found, dict) else {}


def train_help() -> str:
    return subprocess.run([sys.executable, "-m", "distill.cli", "train", "--help"], capture_output=True,
                          text=True).stdout


def train_args(parts: list[str], output: str, minutes: float, cache: str | None) -> list[str]:
    args = ["train", *parts, "-o", output, "--minutes", f"{minutes:g}", "--prior-share", "0",
            "--checkpoint", output + ".ckpt"]
    return args + (["--cache", cache] if cache else [])


def dir_bytes(path: str) -> int | None:
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def train_once(command: list[str], env: dict, output: str, log: str, args: argparse.Namespace,
               cache: str) -> Run:
    remove(output)
    run = measure(Run(command, env), log, args.timeout_min * 60, int(args.max_rss_gb * 2**30))
    run.info = read_info(output) if run.rc == 0 else {}
    run.cache_bytes = dir_bytes(cache)
    for ckpt in Path(output).parent.glob(Path(output).name + ".ckpt*"):
        remove(str(ckpt))
    status = f"rc {run.rc}" + (f", killed: {run.killed}" if run.killed else "")
    print(f"  {status}, wall {run.wall_s:.1f} s, peak RSS {gib(run.peak_rss)}, log {log}", flush=True)
    return run


def print_keys(info: dict) -> None:
    if not info:
        print("  info: none (the run failed or wrote no model)")
        return
    ds = info.get("dataset") or {}
    print(f"  info keys: {sorted(info)}; dataset: {sorted(ds)}")
    for name in ("corpus", "training"):
        sec = section(info, name)
        print(f"  {name}: {json.dumps(sec) if sec else 'n/a'}")


# ------------------------------------------------------------------------------------------- figures


def na(value: object, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def gib(n: int | None) -> str:
    if not n:
        return "n/a"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def steps_and_seconds(info: dict) -> tuple[int | None, float | None]:
    tr, ds = section(info, "training"), info.get("dataset") or {}
    steps = tr.get("steps", ds.get("steps"))
    seconds = tr.get("seconds", ds.get("train_seconds"))
    return steps, seconds


def steps_per_s(info: dict) -> float | None:
    steps, seconds = steps_and_seconds(info)
    return steps / seconds if steps is not None and seconds else None


def corpus_sets(corpus: str) -> list[tuple[float, list[str], int]]:
    """(cumulative hours, part folders, files) of each complete prefix part1, part1+part2, ..."""
    parts = sorted((p for p in Path(corpus).glob("part*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    sets, folders, hours, files = [], [], 0.0, 0
    for p in parts:
        m = read_manifest(str(p))
        if not (m and m.get("complete")):
            print(f"note: {p} is not complete (no finished manifest): sets stop before it")
            break
        folders, hours, files = [*folders, str(p)], hours + m["seconds"] / 3600, files + len(m["files"])
        sets.append((hours, folders, files))
    if not sets:
        sys.exit(f"scale.py: no complete parts under {corpus}; build it with `scale.py make`")
    return sets


def pick_sets(corpus: str, wanted: list[float] | None) -> list[tuple[float, list[str], int]]:
    sets = corpus_sets(corpus)
    if not wanted:
        return sets
    chosen = []
    for h in wanted:
        match = [s for s in sets if abs(s[0] - h) <= 0.02 * h + 0.01]
        if not match:
            sys.exit(f"scale.py: no prefix of parts adds up to {h:g} h (have {[round(s[0], 2) for s in sets]})")
        chosen.append(match[0])
    return chosen


def label(hours: float) -> str:
    return f"{hours:.3g}".replace(".", "_")


# -------------------------------------------------------------------------------------------- memory


def cmd_memory(args: argparse.Namespace) -> dict:
    os.makedirs(args.out_dir, exist_ok=True)
    has_cache_flag = "--cache" in train_help()
    rows = []
    for hours, parts, files in pick_sets(args.corpus, args.sets):
        output = os.path.join(args.out_dir, f"{label(hours)}h.distill")
        cache = CACHE_PATH.format(output=output)
        remove(cache)
        command = [sys.executable, "-m", "distill.cli",
                   *train_args(parts, output, args.minutes, cache if has_cache_flag else None)]
        runs = []
        for attempt in (1, 2):
            print(f"{hours:.2f} h, run {attempt} ({'cache deleted' if attempt == 1 else 'reusing the cache'}): "
                  f"{' '.join(command)}", flush=True)
            runs.append(train_once(command, {}, output, output + f".run{attempt}.log", args, cache))
            print_keys(runs[-1].info)
        rows.append({"hours": hours, "files": files, "parts": parts, "runs": [asdict(r) for r in runs]})
    print()
    print(memory_table(rows))
    return {"cache_flag": has_cache_flag, "minutes": args.minutes, "sets": rows}


def build_s(run: dict) -> str:
    c = section(run["info"], "corpus")
    if "built_s" not in c:
        return "n/a"
    reused = c.get("reused")
    if isinstance(reused, bool):  # reused: a flag, or how many files' log-mels came from the cache
        note = " (reused)" if reused else ""
    else:
        note = f" ({reused} of {c.get('files', '?')} reused)" if reused else ""
    return f"{c['built_s']:.1f} s{note}"


def memory_table(rows: list[dict]) -> str:
    head = ("| hours | files | peak RSS 1st run | peak RSS 2nd run | scan+cache 1st run | scan+cache 2nd run "
            "| cache size | to 1st step 1st / 2nd | wall 1st / 2nd | steps 1st / 2nd | steps/s 1st / 2nd |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        a, b = row["runs"]
        c = section(b["info"], "corpus") or section(a["info"], "corpus")
        files = c.get("files", row["files"])
        hours = c.get("hours", row["hours"])

        def pair(key: str, fmt: str, runs: tuple[dict, dict] = (a, b)) -> str:
            return " / ".join(na(r[key], fmt) for r in runs)

        steps = " / ".join(na(steps_and_seconds(r["info"])[0]) for r in (a, b))
        rate = " / ".join(na(steps_per_s(r["info"]), "{:.2f}") for r in (a, b))
        rss = [gib(r["peak_rss"]) + (f" ({r['killed']})" if r["killed"] else "") for r in (a, b)]
        cache = gib(c.get("bytes", a["cache_bytes"]))
        lines.append(f"| {hours:.2f} | {files} | {rss[0]} | {rss[1]} | {build_s(a)} | {build_s(b)} | {cache} "
                     f"| {pair('first_step_s', '{:.1f} s')} | {pair('wall_s', '{:.1f} s')} | {steps} | {rate} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- ddp


def ddp_arm(name: str, info: dict, world_default: int | None) -> dict:
    tr, cfg = section(info, "training"), info.get("config") or {}
    rate = steps_per_s(info)
    batch = tr.get("batch_per_rank", cfg.get("batch_size"))
    world = tr.get("world_size", world_default)
    per_step = tr.get("crops_per_step", batch * world if None not in (batch, world) else None)
    crops = rate * per_step if None not in (rate, per_step) else None
    best = (info.get("dataset") or {}).get("best_val_loss")
    steps, seconds = steps_and_seconds(info)
    return {"arm": name, "steps": steps, "seconds": seconds, "steps_per_s": rate, "batch_per_rank": batch,
            "world_size": world, "backend": tr.get("backend"), "crops_per_step": per_step, "crops_per_s": crops, "best_val_loss": best}


def ratio(b: float | None, a: float | None) -> str:
    return f"{b / a:.2f}x" if a and b is not None else "n/a"


def cmd_ddp(args: argparse.Namespace) -> dict:
    os.makedirs(args.out_dir, exist_ok=True)
    hours, parts, files = pick_sets(args.corpus, [args.hours])[0]
    shared = os.path.join(args.out_dir, f"ddp_{label(hours)}h.cache") if "--cache" in train_help() else None
    if shared:
        remove(shared)
    single = os.path.join(args.out_dir, "ddp_single.distill")
    ranks = os.path.join(args.out_dir, "ddp_2ranks.distill")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
              str(args.nproc), "-m", "distill.cli"]
    arms = [("single process, 2 threads", single, [sys.executable, "-m", "distill.cli"], {"OMP_NUM_THREADS": "2"}, 1),
            (f"torchrun, {args.nproc} ranks x 1 thread", ranks, launch, {"OMP_NUM_THREADS": "1"}, None)]
    results, runs = [], []
    for name, output, prefix, env, world in arms:
        cache = shared or CACHE_PATH.format(output=output)
        command = [*prefix, *train_args(parts, output, args.minutes, shared), "--device", "cpu"]
        print(f"{name}: {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(command)}", flush=True)
        run = train_once(command, env, output, output + ".log", args, cache)
        print_keys(run.info)
        runs.append(asdict(run))
        results.append(ddp_arm(name, run.info, world))
    a, b = results
    if b["world_size"] is None and runs[1]["rc"] == 0:
        print("note: (b)'s model records no training.world_size: this CLI did not train distributed "
              "(torchrun started independent copies)")
    print(f"\n{hours:.2f} h ({files} files), {args.minutes:g} min each, this machine: {os.cpu_count()} CPUs\n")
    print("| arm | world | backend | batch/rank | steps | steps/s | crops/s | best_val_loss (lower is better) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['arm']} | {na(r['world_size'])} | {na(r['backend'])} | {na(r['batch_per_rank'])} | {na(r['steps'])} "
              f"| {na(r['steps_per_s'], '{:.2f}')} | {na(r['crops_per_s'], '{:.1f}')} "
              f"| {na(r['best_val_loss'], '{:.4f}')} |")
    print(f"| (b)/(a) | | | | | {ratio(b['steps_per_s'], a['steps_per_s'])} "
          f"| {ratio(b['crops_per_s'], a['crops_per_s'])} | {ratio(b['best_val_loss'], a['best_val_loss'])} |")
    return {"hours": hours, "files": files, "parts": parts, "minutes": args.minutes, "shared_cache": shared,
            "arms": results, "runs": runs}


# ---------------------------------------------------------------------------------------------- main


def machine() -> dict:
    load = os.getloadavg()
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load[0]:.2f} on {os.cpu_count()} CPUs: timings share the machine")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    return {"cpus": os.cpu_count(), "load": load, "git": rev, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def cmd_small(args: argparse.Namespace) -> dict:
    """A small folder keeps its speed: time to the first training step with the log-mels in memory
    (--no-cache, as before the cache), through a cache built on the way, and through the cache reused;
    `--rounds` rounds of the three in turn (a busy moment falls on all of them alike), medians."""
    os.makedirs(args.out_dir, exist_ok=True)
    output = os.path.join(args.out_dir, "small.distill")
    cache = CACHE_PATH.format(output=output)
    arms = {"in memory (--no-cache)": ["--no-cache"], "cache, built": [], "cache, reused": []}
    times: dict[str, list[float]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for arm, extra in arms.items():
            if arm == "cache, built":
                remove(cache)
            command = [sys.executable, "-m", "distill.cli", "train", *args.folders, "-o", output, "--epochs", "0.2",
                       "--prior-share", "0", "--checkpoint", output + ".ckpt", *extra]
            print(f"round {r + 1}, {arm}: {' '.join(command)}", flush=True)
            run = train_once(command, {}, output, output + ".small.log", args, cache)
            times[arm].append(run.first_step_s if run.first_step_s is not None else math.nan)
    rows = {a: float(np.median(t)) for a, t in times.items()}
    print("\n| arm | time to the first step, median of "
          f"{args.rounds} (s) | each round (s) |\n|---|---|---|")
    for a, t in times.items():
        print(f"| {a} | {rows[a]:.2f} | {', '.join(f'{x:.2f}' for x in t)} |")
    return {"folders": args.folders, "times": times, "medians": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Issue 27: build a 2/5/20 h corpus; training memory; one process vs DDP.")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="build the synthetic corpus")
    m.add_argument("source", help="folder of recordings (e.g. /usr/share/lmms/samples)")
    m.add_argument("--out", required=True)
    m.add_argument("--hours", type=float, nargs="+", default=[2, 3, 15], help="hours of each part")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--processes", type=int, default=2)
    for name, help_ in (("memory", "peak RSS and start-up at each corpus size"),
                        ("ddp", "one process vs torchrun ranks, same budget")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--corpus", required=True)
        s.add_argument("--minutes", type=float, default=1.0 if name == "memory" else 2.0)
        s.add_argument("--out-dir", default=OUT_DIR)
        s.add_argument("--timeout-min", type=float, default=60.0, help="end a run that takes longer (default 60)")
        s.add_argument("--max-rss-gb", type=float, default=0.8 * total_memory() / 2**30,
                       help="end a run whose tree holds more (default 80%% of this machine's memory)")
        if name == "memory":
            s.add_argument("--sets", type=float, nargs="+", help="cumulative hours to run (default: every prefix)")
        else:
            s.add_argument("--hours", type=float, default=2.0, help="cumulative hours of the set to train on")
            s.add_argument("--nproc", type=int, default=2, help="torchrun ranks (default 2)")
    sm = sub.add_parser("small", help="time to the first step on a small folder: in memory vs the cache")
    sm.add_argument("folders", nargs="+")
    sm.add_argument("--rounds", type=int, default=3)
    sm.add_argument("--out-dir", default=OUT_DIR)
    sm.add_argument("--timeout-min", type=float, default=10.0)
    sm.add_argument("--max-rss-gb", type=float, default=0.8 * total_memory() / 2**30)
    for s in sub.choices.values():
        s.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = machine()
    result = {"make": cmd_make, "memory": cmd_memory, "ddp": cmd_ddp, "small": cmd_small}[args.cmd](args)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv, "machine": info, **result}, indent=1,
                                              default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
