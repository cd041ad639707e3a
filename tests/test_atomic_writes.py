"""Issue 13, crash points: every file Distill writes (model, checkpoint, codes, history, WAV) goes through
distill.fileio, and a write that fails midway leaves the old file intact and no temporary file behind."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import distill.fileio as fileio
import distill.train as train_mod
from distill import CodeGrid, MelConfig
from distill.bundle import BundleInfo, save_bundle
from distill.fileio import atomic_write_bytes, atomic_write_text, atomic_write_wav
from distill.model import ConvVQVAE

SRC = Path(__file__).resolve().parents[1] / "src"


def _disk_full(*_args, **_kwargs):
    return OSError(errno.ENOSPC, "No space left on device")


class _HalfFile:
    """A file object that writes half of what it is given, then fails like a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: max(1, len(data) // 2)])
        self.f.flush()
        raise _disk_full()

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def fail_midway(monkeypatch):
    """Every inner writer (open().write, soundfile.write, torch.save) writes some bytes, then raises."""
    real_open, real_sf_write, real_torch_save = open, sf.write, torch.save

    def half_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return _HalfFile(f) if any(c in mode for c in "wax") else f

    def half_sf_write(file, data, rate, *args, **kwargs):
        real_sf_write(file, data[: len(data) // 2], rate, *args, **kwargs)
        raise _disk_full()

    def half_torch_save(obj, f, *args, **kwargs):
        real_torch_save(obj, f, *args, **kwargs)
        with real_open(f, "r+b") as h:
            h.truncate(max(1, h.seek(0, 2) // 2))
        raise _disk_full()

    monkeypatch.setattr(fileio, "open", half_open, raising=False)  # fileio's own open()
    monkeypatch.setattr(sf, "write", half_sf_write)
    monkeypatch.setattr(torch, "save", half_torch_save)


def _model(tiny_config):
    torch.manual_seed(0)
    return ConvVQVAE(tiny_config)


def _write_model(path, tiny_config, version):
    model = _model(tiny_config)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float(version)
    save_bundle(path, model, BundleInfo(tiny_config, MelConfig(), f"v{version}"))


def _write_checkpoint(path, tiny_config, version):
    model = _model(tiny_config)
    train_mod._save_checkpoint(path, model, torch.optim.AdamW(model.parameters()), np.random.default_rng(0),
                               train_mod._RunState(step=version), {"config_json": tiny_config.to_json()})


def _write_codes(path, _cfg, version):
    codes = np.full((3, 16, 4), version, dtype=np.int64)
    CodeGrid(codes, ("Structure", "Timbre", "Detail"), 0.17066666666666666, 48000, 32768).save(path)


def _write_history(path, _cfg, version):  # the CLI's --history and the studio's export write it this way
    atomic_write_text(path, json.dumps({"format": "distill-history", "steps": [version] * 1000}))


def _write_wav(path, _cfg, version):
    atomic_write_wav(path, np.full(48000, 0.01 * version, dtype=np.float32), 48000)


WRITERS = {"model": _write_model, "checkpoint": _write_checkpoint, "codes": _write_codes,
           "history": _write_history, "wav": _write_wav}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_write_that_fails_midway_leaves_the_old_file(kind, tmp_path, tiny_config, request):
    path = tmp_path / f"out.{kind}"
    WRITERS[kind](path, tiny_config, 1)
    before = path.read_bytes()
    request.getfixturevalue("fail_midway")
    with pytest.raises(OSError, match="No space left"):
        WRITERS[kind](path, tiny_config, 2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_failed_first_write_leaves_nothing(tmp_path, fail_midway):
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "new.bin", b"x" * 10000)
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_killed_writers_are_cleaned_up(tmp_path):
    """kill -9 during a write leaves `.NAME.PID.XXXXXXXX.tmp`: the next write of NAME removes it once that
    process is gone, and never touches a live writer's temporary file or anything else."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f".m.distill.{dead.pid}.0123abcd.tmp", tmp_path / f".m.distill.tmp{dead.pid}"]
    keep = [tmp_path / f".m.distill.{os.getppid()}.0123abcd.tmp",  # a live process's write
            tmp_path / f".other.distill.{dead.pid}.0123abcd.tmp",  # another file's
            tmp_path / f".m.distill.{dead.pid}"]  # not one of ours
    for p in stale + keep:
        p.write_bytes(b"partial")
    atomic_write_bytes(tmp_path / "m.distill", b"model")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.distill", *(p.name for p in keep)])


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    """Studio sessions are threads of one process: their temporary files must differ."""
    path, errors = tmp_path / "shared.json", []

    def write(i):
        try:
            for _ in range(20):
                atomic_write_text(path, json.dumps({"writer": i, "pad": "x" * 20000}))
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and json.loads(path.read_text())["writer"] in range(4)
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


# Writing calls that bypass distill.fileio (a write to a fresh temporary folder, or to memory, is no risk).
RAW_WRITE = re.compile(r"""open\([^)]*["'][wax]b?["']|\.write_(text|bytes)\(|\bsf\.write\(|torch\.save\(|"""
                       r"""save_file\(|np\.save|shutil\.(copy|move)|os\.(replace|rename)\(|\.to_csv\(""")
ALLOWED = {
    ("distill/fileio.py", "os.replace(tmp, path)"),
    ("distill/fileio.py", 'with open(tmp, "wb") as f:'),
    ("distill/fileio.py", "sf.write(tmp, data"),
    ("distill/train.py", "atomic_write(path, lambda tmp: torch.save(payload, tmp))"),
    ("distill_studio/app.py", "shutil.copyfile(path, dst)"),  # into a fresh tempfile.mkdtemp() folder
    ("distill_studio/training.py", "shutil.copyfile(path, alias)"),  # likewise (a renamed duplicate upload)
    # the mel cache's append-only data file: rows past the index's committed count (written atomically) are
    # truncated when it is next opened, so a crash mid-append loses only uncommitted rows (tests/test_melcache.py)
    ("distill/melcache.py", 'with open(data, "ab") as f:'),
}


def test_every_writer_goes_through_fileio():
    raw = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if RAW_WRITE.search(line) and not any(rel == f and s in line for f, s in ALLOWED):
                raw.append(f"{rel}:{n}: {line.strip()}")
    assert not raw, "writes that bypass distill.fileio (not atomic):\n" + "\n".join(raw)


def test_16_bit_conversion_in_pieces_is_the_one_shot_conversion(monkeypatch):
    """A 30-minute export converts to 16-bit a piece at a time (bounded memory): the same samples as converting
    it at once, mono and stereo, clipping and rounding included."""
    from distill import fileio
    rng = np.random.default_rng(0)
    for shape in ((10_001,), (10_001, 2)):
        wave = (rng.standard_normal(shape) * 0.7).astype(np.float32)
        wave.reshape(-1)[:6] = [1.5, -1.5, 0.5 / 32768, -0.5 / 32768, 32767.5 / 32768, -1.0]
        whole = np.clip(np.round(wave.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
        monkeypatch.setattr(fileio, "PCM_CHUNK", 1000)
        pieces = fileio.pcm16(wave)
        assert pieces.dtype == np.int16 and pieces.shape == wave.shape and np.array_equal(pieces, whole)
