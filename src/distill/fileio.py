"""Atomic file writes: every file Distill writes (model, checkpoint, codes, history, WAV) goes through here.

A write goes to a temporary file in the same folder and is renamed over the target, so an
interrupted write (Ctrl+C, kill -9, full disk) leaves the old file as it was, never half a file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
from collections.abc import Callable

import numpy as np
import soundfile as sf

log = logging.getLogger("distill.fileio")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), flush it to disk, then rename it over `path`.

    Until the rename the old file is untouched: a write that fails or is interrupted (an exception, a full
    disk, Ctrl+C) leaves the old file as it was and removes its temporary file. A process killed outright
    (kill -9, power loss) cannot clean up: its temporary file (`.NAME.PID.XXXXXXXX.tmp`, next to the target)
    is removed by the next successful write of the same file once that process is gone.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    # unique per call: two threads (studio sessions) or processes writing the same file never share one
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(folder)
    _remove_stale_temps(folder, name)


def _fsync_file(path: str) -> None:
    """The data must be on disk before the rename, or a power cut can leave an empty file under the new name."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    except OSError as exc:  # a file system that cannot fsync (some network mounts): the rename is still atomic
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable (POSIX only; best effort)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        log.warning("could not open %s to make a rename durable (%s); the file is written", folder, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("could not fsync folder %s (%s); the file is written", folder, exc)
    finally:
        os.close(fd)


def _remove_stale_temps(folder: str, name: str) -> None:
    """Remove temporary files of `name` left by writers that were killed (their process no longer exists)."""
    if os.name != "posix":  # os.kill(pid, 0) is a liveness check only on POSIX
        return
    # .NAME.PID.XXXXXXXX.tmp (this module), .NAME.tmpPID (before it)
    pattern = re.compile(r"\." + re.escape(name) + r"\.(?:(\d+)\.[0-9a-f]{8}\.tmp|tmp(\d+))$")
    try:
        entries = os.listdir(folder)
    except OSError as exc:
        log.warning("could not list %s to clean up stale temporary files (%s)", folder, exc)
        return
    for entry in entries:
        m = pattern.match(entry)
        pid = int(m.group(1) or m.group(2)) if m else 0
        if not m or pid == os.getpid() or _alive(pid):
            continue
        try:
            os.unlink(os.path.join(folder, entry))
        except OSError as exc:
            log.warning("could not remove the stale temporary file %s (%s)", entry, exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


PCM_CHUNK = 1 << 20  # samples converted to 16-bit at a time


def pcm16(wave: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 by round(x * 32768), clipped.

    The inverse of how soundfile reads 16-bit PCM (i / 32768), so samples read from a 16-bit file
    and written back here are bit-identical (soundfile's own float writer scales by 32767).
    """
    x = np.asarray(wave)
    out = np.empty(x.shape, dtype=np.int16)
    for a in range(0, len(x), PCM_CHUNK):  # in pieces: float64 temporaries of a 30-minute clip would be ~2 GB
        out[a:a + PCM_CHUNK] = np.clip(np.round(x[a:a + PCM_CHUNK].astype(np.float64) * 32768.0), -32768, 32767)
    return out


def atomic_write_wav(path: str | os.PathLike, wave: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV of a float waveform ([samples] or [samples, channels]), written atomically."""
    data = pcm16(wave)
    atomic_write(path, lambda tmp: sf.write(tmp, data, int(rate), subtype="PCM_16", format="WAV"))
