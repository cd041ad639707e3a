"""Atomic file writes: every file Distill writes (model, checkpoint, codes, history, WAV) goes through here.

A write goes to a temporary file in the same folder and is renamed over the target, so an
interrupted write (Ctrl+C, kill -9, full disk) leaves the old file as it was, never half a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import soundfile as sf


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), then rename tmp_path over `path`; the temporary file is removed on failure."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def pcm16(wave: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 by round(x * 32768), clipped.

    The inverse of how soundfile reads 16-bit PCM (i / 32768), so samples read from a 16-bit file
    and written back here are bit-identical (soundfile's own float writer scales by 32767).
    """
    x = np.asarray(wave, dtype=np.float64)
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def atomic_write_wav(path: str | os.PathLike, wave: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV of a float waveform ([samples] or [samples, channels]), written atomically."""
    data = pcm16(wave)
    atomic_write(path, lambda tmp: sf.write(tmp, data, int(rate), subtype="PCM_16", format="WAV"))
