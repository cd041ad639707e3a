"""The training corpus's log-mels on disk: computed once (in worker processes), read back crop by crop.

Why: in memory a corpus costs 128 mels x 94 frames/s x 4 bytes ~ 170 MB per hour of audio (100 hours ~ 17 GB),
and every run recomputes it. Here each accepted file's log-mel is written once into one data file
(`mels.f32`, float32, frame-major: a file's frames are rows [frames, n_mels], so a crop is one contiguous read)
with an index (`index.json`: per file its path, size, mtime, a hash of its first and last 64 KiB, frames and
first row), in a folder next to the model (`distill train` uses OUTPUT.cache). A second run, `--resume`,
`distill prior` and every rank of a distributed run read the same cache; a file whose size, mtime or hashed bytes
changed is computed again, a different front end (MelConfig) starts the cache over. Crops are read with
`os.pread`, never mapped, so the process's memory does not grow with the corpus (a mapped file's touched
pages count as the process's own).

Computed in this process, the values are the very floats `MelFrontEnd.logmel` returns: crops from the cache are
bit-identical to crops from the in-memory clips (`MemoryClip`) for the same seed (tests/test_melcache.py).
Worker processes compute with one thread each; their floats matched here, and are only checked to 1e-5 (a
many-core BLAS may sum in another order).

The index is the commit point: it names the data file and how many of its rows are committed, and it is
written after the data (every COMMIT_EVERY_S during a build, and at its end, also when it is stopped). A run holds
its data file open: another run that compacts the cache or starts it over writes a new data file, so the rows a
running trainer reads never change under it. Entries of files no run uses any more stay (a cache shared by
several corpora only grows; delete the folder to reclaim it).
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from .audio import AudioError, FileVerdict, content_problem, load_accepted
from .fileio import atomic_write_text
from .spectrogram import MelConfig, MelFrontEnd

CACHE_FORMAT = "distill-mel-cache"
CACHE_VERSION = 2   # 2: the index names its data file and its committed rows
INDEX_NAME, LOCK_NAME = "index.json", "lock"   # the data file's name is in the index (mels-XXXXXXXX.f32)
COMMIT_EVERY_S = 30.0         # a build commits its index this often: an interrupted build keeps what it computed
HEAD_BYTES = 1 << 16          # the bytes hashed at each end of a file (with its size and mtime: the cache key)
PARALLEL_MIN_FILES = 16       # fewer files than this to compute: in this process (a worker costs ~2 s to start)
PARALLEL_MIN_SECONDS = 300.0  # ... or less audio than this
# A worker's memory grows with the files it has decoded (0.85-0.93 GiB after ~370 files each, 1.02-1.18 GiB after
# ~1450, benchmarks/README.md "Scale"): the pool is replaced every this many files per worker, so the peak no longer
# grows with the corpus. (ProcessPoolExecutor's max_tasks_per_child deadlocks on Python 3.11-3.13: gh-115634.)
FILES_PER_WORKER = 400
MAX_IN_FLIGHT_PER_WORKER = 2  # finished log-mels waiting to be written, per worker (bounds the parent's memory)
COMPACT_SHARE = 0.5           # rewrite the data file once over half of it belongs to no file in the index

log = logging.getLogger("distill.melcache")


@dataclass(frozen=True)
class MemoryClip:
    """One file's log-mel held in memory (the studio's training, small runs without a cache)."""

    name: str
    mel: torch.Tensor  # [n_mels, frames]

    @property
    def frames(self) -> int:
        return int(self.mel.shape[-1])

    def window(self, start: int, length: int) -> torch.Tensor:
        """[n_mels, min(length, frames - start)] from frame `start` (a view)."""
        return self.mel[:, start:start + length]


class MelData:
    """A cache's data file, opened once (while the cache was locked) and read with os.pread. Held open, it stays
    the file this run loaded: a later run that compacts or starts the cache over writes a new file and removes
    this one's name, and these rows stay readable until the run ends."""

    def __init__(self, path: str, n_mels: int):
        self.path, self.n_mels = path, n_mels
        self.fd = os.open(path, os.O_RDONLY)

    def rows(self, row: int, n: int, name: str) -> np.ndarray:
        """Rows row..row+n as float32 [n, n_mels]; AudioError naming the clip when the file is short."""
        size = n * self.n_mels * 4
        buf = os.pread(self.fd, size, row * self.n_mels * 4)
        if len(buf) != size:
            raise AudioError(f"{name}: the mel cache {self.path} is truncated (read {len(buf)} of {size} bytes); "
                             "delete the cache folder and train again")
        return np.frombuffer(buf, dtype=np.float32).reshape(n, self.n_mels)

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.close(self.fd)


@dataclass(frozen=True)
class DiskClip:
    """One file's log-mel in a MelCache's data file: rows `row`..`row + frames` of [*, n_mels] float32."""

    name: str
    frames: int
    row: int
    data: MelData

    def window(self, start: int, length: int) -> torch.Tensor:
        """[n_mels, min(length, frames - start)] from frame `start`, read from disk (a fresh tensor)."""
        start = max(0, min(int(start), self.frames))
        n = max(0, min(int(length), self.frames - start))
        if n == 0:
            return torch.zeros(self.data.n_mels, 0)
        return torch.from_numpy(self.data.rows(self.row + start, n, self.name).T.copy())

    @property
    def mel(self) -> torch.Tensor:
        """The whole log-mel [n_mels, frames] (for the passes that encode a whole file)."""
        return self.window(0, self.frames)


Clip = MemoryClip | DiskClip


@dataclass
class CorpusLoad:
    """What loading a corpus left: the clips in the order of the accepted verdicts that loaded, those verdicts,
    the ones skipped (changed since the scan), one warning per skipped file, and (with a cache) what it did."""

    clips: list[Clip]
    used: list[FileVerdict]
    skipped: list[FileVerdict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cache: dict = field(default_factory=dict)   # {} in memory; else path, files, hours, bytes, built_s, ...


@lru_cache(maxsize=4)
def _front(mel_json: str) -> MelFrontEnd:
    return MelFrontEnd(MelConfig.from_dict(json.loads(mel_json)))


def _mel_json(mel: MelConfig) -> str:
    return json.dumps(mel.to_dict(), sort_keys=True)


def file_logmel(v: FileVerdict, mel_json: str, max_seconds: float | None,
                variable: str) -> tuple[torch.Tensor | None, str]:
    """(log-mel [n_mels, frames], "") of an accepted file, or (None, why it is no longer usable)."""
    sr = MelConfig.from_dict(json.loads(mel_json)).sample_rate
    try:
        wave = load_accepted(v, sr, max_seconds, variable)
        why = content_problem(len(wave), sr, float(np.abs(wave).max()) if wave.size else 0.0)
    except AudioError as exc:
        text = str(exc)
        why = text[len(v.name) + 2:] if text.startswith(f"{v.name}: ") else text
    if why:
        return None, why
    return _front(mel_json).logmel(wave), ""


def _worker_logmel(v: FileVerdict, mel_json: str, max_seconds: float | None,
                   variable: str) -> tuple[np.ndarray | None, str]:
    """file_logmel in a worker process, frame-major [frames, n_mels] float32 (the layout written). Never raises:
    a file that breaks the decoder is one skipped file, not a failed build."""
    try:
        mel, why = file_logmel(v, mel_json, max_seconds, variable)
    except Exception as exc:  # noqa: BLE001 - the reason is shown to the user with the file's name
        return None, f"could not be read ({type(exc).__name__}: {exc})"
    return (None, why) if mel is None else (np.ascontiguousarray(mel.T.numpy(), dtype=np.float32), "")


def _worker_init() -> None:
    torch.set_num_threads(1)   # one core per worker; the parent's threads stay the parent's
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl+C is the parent's: it stops the build and keeps what is done


def skip_warning(v: FileVerdict, why: str) -> tuple[FileVerdict, str]:
    """The verdict and warning of an accepted file that can no longer be used (one text for both loaders)."""
    return (FileVerdict(v.path, False, f"changed since the scan: {why}", v.duration_s, v.sample_rate, v.channels),
            f"{v.name} changed since the scan: {why}; skipped, training goes on without it")


def load_in_memory(accepted: Sequence[FileVerdict], mel: MelConfig, max_seconds: float | None = None,
                   variable: str = "") -> CorpusLoad:
    """Every accepted file's log-mel in memory, one after another (today's small-folder path)."""
    out = CorpusLoad([], [])
    key = _mel_json(mel)
    for v in accepted:
        m, why = file_logmel(v, key, max_seconds, variable)
        if m is None:
            verdict, text = skip_warning(v, why)
            out.skipped.append(verdict)
            out.warnings.append(text)
            continue
        out.clips.append(MemoryClip(v.name, m))
        out.used.append(v)
    return out


def file_key(path: str) -> dict:
    """What says a file is the one cached: size, mtime (ns) and a SHA-1 of its first and last HEAD_BYTES.
    OSError when it cannot be read (e.g. it disappeared)."""
    st = os.stat(path)
    h = hashlib.sha1()
    with open(path, "rb") as f:
        h.update(f.read(HEAD_BYTES))
        if st.st_size > 2 * HEAD_BYTES:
            f.seek(st.st_size - HEAD_BYTES)
        h.update(f.read(HEAD_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head": h.hexdigest()}


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    """One process at a time builds or updates the cache (the other ranks of a distributed run wait here, then
    find it complete)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_NAME), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_index(folder: str, mel: MelConfig) -> tuple[dict, str]:
    """(the index, "") when it is this version's and this front end's and its data file holds every row it names;
    ({}, why it starts over) otherwise. The index is the commit point: rows past its `rows` are from a build
    that was interrupted and are written over."""
    path = os.path.join(folder, INDEX_NAME)
    if not os.path.exists(path):
        return {}, ""
    try:
        index = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        return {}, f"its index could not be read ({exc})"
    if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
        return {}, "it was written by another version"
    if index.get("mel") != _mel_json(mel):
        return {}, "the front-end settings (MelConfig) differ"
    data = os.path.join(folder, str(index.get("data", "")))
    rows = int(index.get("rows", -1))
    have = os.path.getsize(data) // (4 * mel.n_mels) if os.path.isfile(data) else -1
    if have < rows or rows < 0 or any(e["row"] + e["frames"] > rows for e in index.get("files", {}).values()):
        return {}, "its data file is shorter than its index says"
    return index, ""


def _new_data_name() -> str:
    return f"mels-{uuid.uuid4().hex[:8]}.f32"


def _commit(folder: str, index: dict, f) -> None:
    """Make everything written to the data file `f` so far part of the cache: data to disk first, then the index."""
    f.flush()
    os.fsync(f.fileno())
    index["rows"] = f.tell() // (4 * index["n_mels"])
    atomic_write_text(os.path.join(folder, INDEX_NAME), json.dumps(index))


def _remove_other_data(folder: str, keep: str) -> None:
    """Data files no index names any more (a run that still has one open reads it to its end)."""
    for name in os.listdir(folder):
        if name.startswith("mels") and name.endswith(".f32") and name != keep:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))


def _compact(folder: str, index: dict, n_mels: int) -> None:
    """Write the rows the index names into a new data file, commit it, then remove the old one's name."""
    old = os.path.join(folder, index["data"])
    name = _new_data_name()
    row = 0
    with open(old, "rb") as src, open(os.path.join(folder, name), "wb") as dst:
        for entry in sorted(index["files"].values(), key=lambda e: e["row"]):
            src.seek(entry["row"] * n_mels * 4)
            dst.write(src.read(entry["frames"] * n_mels * 4))
            entry["row"] = row
            row += entry["frames"]
        index["data"] = name
        _commit(folder, index, dst)
    _remove_other_data(folder, name)


def in_workers(todo: Sequence[tuple[int, FileVerdict]], workers: int) -> bool:
    """Whether computing these files pays for starting worker processes (else: in this process, one by one)."""
    return (workers > 1 and len(todo) >= PARALLEL_MIN_FILES
            and sum(v.duration_s for _, v in todo) >= PARALLEL_MIN_SECONDS)


def _compute(todo: list[tuple[int, FileVerdict]], mel: MelConfig, max_seconds: float | None, variable: str,
             workers: int) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """(position, log-mel [frames, n_mels] or None, why) for each file to compute, in worker processes when the
    work is large enough to pay for starting them, in this process otherwise; in any order."""
    key = _mel_json(mel)
    if not in_workers(todo, workers):
        for i, v in todo:
            yield (i, *_worker_logmel(v, key, max_seconds, variable))
        return
    ctx = multiprocessing.get_context("spawn")   # never fork a process whose torch has started threads
    per_pool = workers * FILES_PER_WORKER
    for start in range(0, len(todo), per_pool):   # fresh workers every so many files (see FILES_PER_WORKER)
        with futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            pending: dict[futures.Future, int] = {}
            limit = workers * MAX_IN_FLIGHT_PER_WORKER
            for i, v in todo[start:start + per_pool]:
                pending[pool.submit(_worker_logmel, v, key, max_seconds, variable)] = i
                if len(pending) < limit:
                    continue
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for f in done:
                    yield (pending.pop(f), *f.result())
            for f in futures.as_completed(list(pending)):
                yield (pending.pop(f), *f.result())


def known_verdicts(folder: str | os.PathLike, mel: MelConfig) -> Callable[[str], FileVerdict | None]:
    """A lookup for scan_paths(known=...): the accepted verdict the scan gave a file the cache in `folder` holds,
    when the file is unchanged since (file_key); None for any other (it is decoded and inspected). A second run
    over a large library then scans in the time it takes to read each file's ends, not to decode it all."""
    index, _ = _read_index(os.path.abspath(os.fspath(folder)), mel) if os.path.isdir(folder) else ({}, "")
    entries = index.get("files", {})

    def known(path: str) -> FileVerdict | None:
        e = entries.get(os.path.abspath(path))
        if e is None or "verdict" not in e:
            return None
        try:
            key = file_key(os.path.abspath(path))
        except OSError as exc:   # the scan decodes it instead, and its verdict names the file and the reason
            log.info("%s: its cached verdict is not used (%s); inspecting the file", path, exc)
            return None
        if any(e.get(k) != key[k] for k in key):
            return None
        v = e["verdict"]
        return FileVerdict(path, True, v["reason"], v["duration_s"], v["sample_rate"], v["channels"])

    return known


class BuildStopped(AudioError):
    """The build was stopped (Stop / Ctrl+C) or lost a worker; what it computed is kept for the next run."""


def load_cached(folder: str | os.PathLike, accepted: Sequence[FileVerdict], mel: MelConfig,
                max_seconds: float | None = None, variable: str = "", workers: int | None = None,
                progress: Callable[[int, int], None] | None = None,
                stop: Callable[[], bool] | None = None) -> CorpusLoad:
    """The accepted files' log-mels through the cache in `folder`: cached ones are reused, the rest computed
    (`workers` processes; default: the cores, at most 8) and appended. `progress(done, total)` after each file
    computed. A file that vanished or changed into something unusable is skipped with a warning. `stop()` true
    (or a worker process that dies) ends the build with BuildStopped; the files computed so far stay cached."""
    folder = os.path.abspath(os.fspath(folder))
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    t0 = time.perf_counter()
    with _locked(folder):
        index, why_new = _read_index(folder, mel)
        if not index:
            index = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "mel": _mel_json(mel), "n_mels": mel.n_mels,
                     "data": _new_data_name(), "rows": 0, "files": {}}
        data = os.path.join(folder, index["data"])
        entries: dict[str, dict] = index["files"]
        out = CorpusLoad([], [])
        found: dict[int, dict] = {}
        todo: list[tuple[int, FileVerdict]] = []
        keys: dict[int, dict] = {}
        for i, v in enumerate(accepted):
            path = os.path.abspath(v.path)
            try:
                keys[i] = file_key(path)
            except OSError as exc:
                keys[i] = {}
                found[i] = {"why": f"it can no longer be read ({exc.strerror or exc})"}
                continue
            e = entries.get(path)
            if e is not None and all(e.get(k) == keys[i][k] for k in keys[i]):
                found[i] = e
            else:
                todo.append((i, v))
        reused = len(found)
        with open(data, "ab") as f:
            f.truncate(index["rows"] * 4 * mel.n_mels)   # rows an interrupted build left past the commit point
            f.seek(0, os.SEEK_END)
            if not entries:
                _commit(folder, index, f)
                _remove_other_data(folder, index["data"])
            row, last_commit, done = index["rows"], time.perf_counter(), 0
            jobs = _compute(todo, mel, max_seconds, variable, workers)
            try:
                for done, (i, m, why) in enumerate(jobs, 1):
                    if m is None:
                        found[i] = {"why": why}
                    else:
                        f.write(m.tobytes())
                        v = accepted[i]
                        entries[os.path.abspath(v.path)] = found[i] = {
                            **keys[i], "frames": int(m.shape[0]), "row": row,
                            "verdict": {"duration_s": v.duration_s, "sample_rate": v.sample_rate,
                                        "channels": v.channels, "reason": v.reason}}
                        row += int(m.shape[0])
                    if progress:
                        progress(done, len(todo))
                    if time.perf_counter() - last_commit >= COMMIT_EVERY_S:
                        _commit(folder, index, f)
                        last_commit = time.perf_counter()
                    if stop is not None and stop() and done < len(todo):
                        raise BuildStopped(f"stopped while computing the log-mels: {done} of {len(todo)} files "
                                           f"computed, kept in {folder} for the next run")
            except futures.process.BrokenProcessPool as exc:
                raise BuildStopped(f"a worker process computing the log-mels died ({exc}; out of memory?) after "
                                   f"{done} of {len(todo)} files, kept in {folder}; run again, or with --workers 1"
                                   ) from exc
            finally:
                jobs.close()
                _commit(folder, index, f)
        total_rows = index["rows"]
        live = sum(e["frames"] for e in entries.values())
        if total_rows and (total_rows - live) > COMPACT_SHARE * total_rows:
            _compact(folder, index, mel.n_mels)
        store = MelData(os.path.join(folder, index["data"]), mel.n_mels)
        for i, v in enumerate(accepted):
            e = found[i]
            if "why" in e:
                verdict, text = skip_warning(v, e["why"])
                out.skipped.append(verdict)
                out.warnings.append(text)
                continue
            out.clips.append(DiskClip(v.name, int(e["frames"]), int(e["row"]), store))
            out.used.append(v)
    frames = sum(c.frames for c in out.clips)
    out.cache = {"cache": folder, "files": len(out.clips), "computed": len(todo), "reused": reused,
                 "hours": round(frames * mel.hop_length / mel.sample_rate / 3600, 3),
                 "bytes": os.path.getsize(store.path), "built_s": round(time.perf_counter() - t0, 1),
                 "workers": workers if in_workers(todo, workers) else 1,
                 **({"started_over": why_new} if why_new else {})}
    if why_new:
        out.warnings.insert(0, f"the mel cache in {folder} was started over: {why_new}")
    return out
