"""Busy moments: N concurrent gradio_client sessions editing while another session trains, against a real studio.

    python benchmarks/load.py [--url URL] [--sessions 8] [--edits 5] [--clips DIR_OR_FILE ...]
                              [--model M.distill ...] [--train DIR_OR_FILE ...] [--train-minutes 1]
                              [--preset tiny] [--json out.json]

Without --url the studio is started as `python app.py` on a free local port (the Space's own entry point,
its own process, so the load is the server's, not this script's); --train-minutes becomes its
DISTILL_MAX_TRAIN_MINUTES and --preset its DISTILL_STUDIO_PRESET.

Each session is its own gradio_client.Client (its own session hash) in its own thread:
/encode clip A and clip B -> --edits x (/edit in the CLI's syntax with B's codes, then /decode with A's audio:
one "edit -> audio" step, timed from the /edit call to the /decode reply) . Meanwhile one more client calls
/train on the --train files. Printed: p50 / p95 / max of the edit -> audio steps, and every check:

- every codes file names the model the session sent (fingerprint) and the session's own clip (the SHA-256
  of its samples), with the grid shape that clip's length implies;
- every edited grid equals what distill.apply_operation gives locally for that session's own inputs, and
  records that session's clip A as its original;
- every decoded file has clip A's rate and exact length and is finite;
- the trained model opens, has a fingerprint of its own, and the edits kept going while it trained.

Sessions get different clips and, round-robin, different models, and their operations differ (the code a
`set` writes is the session's own), so any mix-up between sessions fails a check. Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from distill import Codec, CodeGrid, apply_operation, load_audio  # noqa: E402
from distill.audio import audio_sha256  # noqa: E402

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
LMMS = Path("/usr/share/lmms/samples")


# ---------------------------------------------------------------------- operations
def session_ops(index: int, seconds: float, codebook_size: int, count: int) -> list[str]:
    """`count` operations for session `index` on clips at least `seconds` long (CLI syntax, B = the session's clip B).

    Integer-only operations (set, swap, reverse, copy, repeat, shift), so the local check is exact; the code
    `set` writes depends on the session, so two sessions' results never coincide by chance.
    """
    h, q, e = round(seconds * 0.5, 4), round(seconds * 0.25, 4), round(seconds * 0.9, 4)
    code = (7 * index + 3) % codebook_size
    base = [f"set Timbre@0-{h}={code}",
            f"swap Structure@0-{h} B:Structure@0-{h}",
            f"reverse Detail@0-{e}",
            f"copy B:Timbre@0-{q} --to {h}",
            f"repeat Structure@0-{q} --times 2",
            f"shift Detail@0-{q} --by {q}"]
    return [base[k % len(base)] for k in range(count)]


# ---------------------------------------------------------------------- local truth
class Truth:
    """What each session's results must be, computed here from its own inputs (models loaded once, thread-safe)."""

    def __init__(self) -> None:
        self._codecs: dict[str, Codec] = {}
        self._audio: dict[str, tuple[str, int, int]] = {}
        self._lock = threading.Lock()

    def codec(self, model: str) -> Codec:
        with self._lock:
            if model not in self._codecs:
                self._codecs[model] = Codec.load(model)
            return self._codecs[model]

    def audio(self, path: str) -> tuple[str, int, int]:
        """(sha256 of the samples as the studio hashes them, rate, frames) of one file."""
        with self._lock:
            if path not in self._audio:
                wave, sr = load_audio(path)
                self._audio[path] = (audio_sha256(wave, sr), int(sr), int(len(wave)))
            return self._audio[path]


def check_codes(truth: Truth, model: str, clip: str, path: str, what: str) -> tuple[CodeGrid, list[str]]:
    """A codes file from /encode or /edit: right model, right clip, right shape."""
    problems = []
    grid = CodeGrid.load(path)
    codec = truth.codec(model)
    sha, rate, frames = truth.audio(clip)
    if grid.model != codec.fingerprint:
        problems.append(f"{what}: codes of model {grid.model}, the session sent {codec.fingerprint}")
    if grid.source_sha256 != sha:
        problems.append(f"{what}: codes of other audio (sha256 {str(grid.source_sha256)[:12]}, "
                        f"{Path(clip).name} is {sha[:12]})")
    if grid.source_rate != rate or grid.source_samples != frames:
        problems.append(f"{what}: codes record {grid.source_samples} samples at {grid.source_rate} Hz, "
                        f"{Path(clip).name} has {frames} at {rate} Hz")
    try:
        codec.check(grid)  # levels, bands, codebook range, columns for num_samples
    except Exception as exc:  # noqa: BLE001 - any refusal is a failed check
        problems.append(f"{what}: {exc}")
    return grid, problems


def check_audio(path: str, clip: str, truth: Truth, what: str) -> list[str]:
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    _, rate, frames = truth.audio(clip)
    problems = []
    if sr != rate or len(data) != frames:
        problems.append(f"{what}: {len(data)} samples at {sr} Hz, clip A has {frames} at {rate} Hz")
    if not np.all(np.isfinite(data)):
        problems.append(f"{what}: non-finite samples")
    return problems


# ---------------------------------------------------------------------- one session
@dataclass
class SessionResult:
    index: int
    model: str
    clip_a: str
    clip_b: str
    ops: list[str] = field(default_factory=list)
    encode_s: list[float] = field(default_factory=list)
    steps: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each edit -> audio step
    problems: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.problems and bool(self.steps)


def run_session(url: str, index: int, model: str, clip_a: str, clip_b: str, edits: int, truth: Truth,
                start: threading.Event | None = None) -> SessionResult:
    """One client: encode A and B, then `edits` x (edit, decode), checking every reply against local truth."""
    from gradio_client import Client, handle_file

    res = SessionResult(index, model, clip_a, clip_b)
    try:
        client = Client(url, verbose=False)
        if start is not None:
            start.wait()
        codes = {}
        for tag, clip in (("A", clip_a), ("B", clip_b)):
            t0 = time.perf_counter()
            codes[tag] = client.predict(handle_file(model), handle_file(clip), api_name="/encode")
            res.encode_s.append(time.perf_counter() - t0)
        grid_a, p = check_codes(truth, model, clip_a, codes["A"], f"session {index} /encode A")
        res.problems += p
        grid_b, p = check_codes(truth, model, clip_b, codes["B"], f"session {index} /encode B")
        res.problems += p
        codec = truth.codec(model)
        res.ops = session_ops(index, min(grid_a.duration_s, grid_b.duration_s), codec.codebook_size, edits)
        current, current_path = grid_a, codes["A"]
        for k, op in enumerate(res.ops):
            t0 = time.perf_counter()
            edited = client.predict(handle_file(model), handle_file(current_path), op, handle_file(codes["B"]),
                                    api_name="/edit")
            wav = client.predict(handle_file(model), handle_file(edited), handle_file(clip_a), api_name="/decode")
            res.steps.append((t0, time.perf_counter()))
            what = f"session {index} edit {k + 1} ({op})"
            got, p = check_codes(truth, model, clip_a, edited, what)
            res.problems += p
            want = apply_operation(codec, current, op, other=grid_b).grid
            if not np.array_equal(got.codes, want.codes):
                res.problems.append(f"{what}: the edited grid differs from this session's own result "
                                    f"({int((got.codes != want.codes).sum())} cells)")
            if got.original is None or not np.array_equal(np.asarray(got.original), grid_a.codes):
                res.problems.append(f"{what}: the edited codes do not record this session's clip A as their original")
            res.problems += check_audio(wav, clip_a, truth, what)
            current, current_path = got, edited
    except Exception as exc:  # noqa: BLE001 - reported per session, never lost
        res.error = f"{type(exc).__name__}: {exc}"
    return res


# ---------------------------------------------------------------------- training
@dataclass
class TrainRun:
    files: int
    submitted: float = 0.0
    started: float | None = None      # when the server began processing it
    finished: float | None = None
    fingerprint: str = ""
    steps: str = ""
    error: str = ""


def run_training(url: str, files: Sequence[str], minutes: float, run: TrainRun, started: threading.Event) -> None:
    """/train on `files`; `started` is set once the job is processing (or has failed)."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    try:
        client = Client(url, verbose=False)
        run.submitted = time.perf_counter()
        job = client.submit([handle_file(f) for f in files], minutes, api_name="/train")
        while not job.done():
            if run.started is None and job.status().code in (Status.PROCESSING, Status.ITERATING, Status.PROGRESS):
                run.started = time.perf_counter()
                started.set()
            time.sleep(0.05)
        model, summary = job.result()
        run.finished = time.perf_counter()
        if run.started is None:
            run.started = run.submitted
        run.fingerprint = Codec.load(model).fingerprint
        run.steps = summary.split(" steps", 1)[0].replace("trained ", "")
        if run.fingerprint not in summary:
            run.error = f"/train's summary names another model than the file it returned ({run.fingerprint})"
    except Exception as exc:  # noqa: BLE001
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        started.set()


# ---------------------------------------------------------------------- the whole run
@dataclass
class LoadReport:
    sessions: list[SessionResult]
    training: TrainRun | None
    wall_s: float
    model_fingerprints: tuple[str, ...] = ()   # of the models the editing sessions sent

    @property
    def latencies(self) -> list[float]:
        return [b - a for s in self.sessions for a, b in s.steps]

    def steps_during_training(self) -> int:
        """Edit -> audio steps that began after training started and finished before it did."""
        t = self.training
        if t is None or t.started is None or t.finished is None:
            return 0
        return sum(1 for s in self.sessions for a, b in s.steps if a >= t.started and b <= t.finished)

    def failures(self) -> list[str]:
        out = [f"session {s.index}: {s.error}" for s in self.sessions if s.error]
        out += [p for s in self.sessions for p in s.problems]
        out += [f"session {s.index}: no edit finished" for s in self.sessions if not s.error and not s.steps]
        t = self.training
        if t is not None:
            if t.error:
                out.append(f"training: {t.error}")
            elif t.fingerprint in self.model_fingerprints:
                out.append("training returned one of the editing sessions' models")
            elif self.steps_during_training() == 0:
                out.append("no edit -> audio step began and ended while the other session trained")
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    v = sorted(values)
    return v[max(0, min(len(v) - 1, int(np.ceil(q / 100 * len(v))) - 1))] if v else float("nan")


def run_load(url: str, pairs: Sequence[tuple[str, str]], models: Sequence[str], edits: int,
             train_files: Sequence[str] = (), train_minutes: float = 0.0, edit_while_training: bool = True) -> LoadReport:
    """len(pairs) sessions at once (session i: clips pairs[i], model models[i % len(models)]), plus /train if any files.

    With `edit_while_training` the sessions start editing only once the server is processing the training job,
    so the run shows whether training blocks editing."""
    truth = Truth()
    for m in models:
        truth.codec(m)
    for a, b in pairs:
        truth.audio(a), truth.audio(b)
    t0 = time.perf_counter()
    go = threading.Event()
    training = TrainRun(len(train_files)) if train_files else None
    threads = []
    if training is not None:
        threads.append(threading.Thread(target=run_training, args=(url, list(train_files), train_minutes, training, go),
                                        daemon=True))
    else:
        go.set()
    results: list[SessionResult | None] = [None] * len(pairs)

    def one(i: int) -> None:
        results[i] = run_session(url, i, models[i % len(models)], pairs[i][0], pairs[i][1], edits, truth,
                                 go if edit_while_training else None)

    threads += [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadReport([r for r in results if r is not None], training, time.perf_counter() - t0,
                      tuple(truth.codec(m).fingerprint for m in models))


def summary_lines(report: LoadReport) -> list[str]:
    lat = report.latencies
    enc = [x for s in report.sessions for x in s.encode_s]
    lines = [f"{len(report.sessions)} sessions x {max((len(s.steps) for s in report.sessions), default=0)} edits "
             f"in {report.wall_s:.1f} s ({os.cpu_count()} CPUs)",
             f"edit -> audio (/edit + /decode): p50 {percentile(lat, 50):.3f} s, p95 {percentile(lat, 95):.3f} s, "
             f"max {max(lat, default=float('nan')):.3f} s over {len(lat)} steps",
             f"encode: p50 {percentile(enc, 50):.3f} s, p95 {percentile(enc, 95):.3f} s over {len(enc)} clips"]
    t = report.training
    if t is not None and t.finished is not None and t.started is not None:
        lines.append(f"training: {t.files} files, {t.steps} steps, {t.finished - t.started:.1f} s of processing; "
                     f"{report.steps_during_training()} edit -> audio steps began and ended during it")
    return lines


# ---------------------------------------------------------------------- inputs and the server
def audio_files(items: Sequence[str]) -> list[str]:
    """Files and folders (recursively) -> readable audio files, sorted."""
    out = []
    for item in items:
        p = Path(item)
        paths = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in paths:
            if q.suffix.lower() in AUDIO_SUFFIXES and not q.name.startswith("."):
                try:
                    sf.info(str(q))
                except Exception:  # noqa: BLE001 - unreadable files are skipped
                    continue
                out.append(str(q))
    return out


def longest(files: Sequence[str], n: int) -> list[str]:
    return sorted(files, key=lambda f: (-sf.info(f).duration, f))[:n]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def studio_process(train_minutes: float, preset: str, timeout_s: float = 180.0) -> Iterator[str]:
    """`python app.py` on a free port with the given limits; yields its URL."""
    import httpx

    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               DISTILL_MAX_TRAIN_MINUTES=f"{train_minutes:g}", DISTILL_STUDIO_PRESET=preset,
               GRADIO_ANALYTICS_ENABLED="False")
    log = tempfile.NamedTemporaryFile("w+", prefix="distill-load-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the studio exited ({proc.returncode}); see {log.name}")
            try:
                if httpx.get(url + "config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the studio did not answer within {timeout_s:.0f} s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running studio (default: start `python app.py` here)")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--edits", type=int, default=5)
    ap.add_argument("--clips", nargs="*", default=[str(LMMS / "drums"), str(LMMS / "basses")],
                    help="files or folders; the 2 x sessions longest readable files become the clips")
    ap.add_argument("--model", action="append", help="model(s) the sessions edit with, round-robin "
                                                     "(default: assets/demo.distill)")
    ap.add_argument("--train", nargs="*", default=[str(LMMS / "beats"), str(LMMS / "bassloops")],
                    help="files or folders the training session uploads (none: no training)")
    ap.add_argument("--train-minutes", type=float, default=1.0)
    ap.add_argument("--preset", default="", help="DISTILL_STUDIO_PRESET for a studio started here (tiny: small net)")
    ap.add_argument("--json", help="write every session's figures here")
    args = ap.parse_args(argv)

    models = args.model or [str(ROOT / "assets" / "demo.distill")]
    clips = longest(audio_files(args.clips), 2 * args.sessions)
    if len(clips) < 2 * args.sessions:
        ap.error(f"{len(clips)} readable clips found; {2 * args.sessions} needed for {args.sessions} sessions")
    pairs = [(clips[2 * i], clips[2 * i + 1]) for i in range(args.sessions)]
    train_files = audio_files(args.train) if args.train else []
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(studio_process(args.train_minutes, args.preset))
        report = run_load(url, pairs, models, args.edits, train_files, args.train_minutes)
    for line in summary_lines(report):
        print(line)
    failures = report.failures()
    for f in failures:
        print("FAIL:", f)
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary_lines(report), "failures": failures,
                                               "sessions": [asdict(s) for s in report.sessions],
                                               "training": asdict(report.training) if report.training else None},
                                              indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
