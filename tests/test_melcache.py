"""The disk-backed corpus (distill.melcache): the same crops as in memory, reused when nothing changed,
recomputed when a file or the front end did, and a file that disappears is one skipped file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone, write_corpus

from distill import melcache
from distill.audio import scan_paths
from distill.melcache import DiskClip, load_cached, load_in_memory
from distill.spectrogram import MelConfig
from distill.train import Trainer, fixed_crops, random_crop


@pytest.fixture()
def folder(tmp_path):
    write_corpus(tmp_path / "audio", n=6)
    return tmp_path / "audio"


def accepted(folder):
    return scan_paths(sorted(folder.iterdir())).accepted


def test_crops_from_the_cache_are_bit_identical_to_crops_in_memory(folder, tmp_path):
    verdicts = accepted(folder)
    memory = load_in_memory(verdicts, MelConfig())
    disk = load_cached(tmp_path / "cache", verdicts, MelConfig())
    assert [c.name for c in disk.clips] == [c.name for c in memory.clips]
    assert all(isinstance(c, DiskClip) for c in disk.clips)
    for length in (16, 48, 400):   # shorter than every clip, in between, longer than every clip (padded)
        rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
        for _ in range(20):
            i = int(rng_a.integers(len(memory.clips)))
            assert i == int(rng_b.integers(len(disk.clips)))
            a, b = random_crop(memory.clips[i], length, rng_a), random_crop(disk.clips[i], length, rng_b)
            assert a.shape == b.shape == (128, length)
            assert torch.equal(a, b)
    va, ma = fixed_crops(memory.clips, 48)
    vb, mb = fixed_crops(disk.clips, 48)
    assert torch.equal(va, vb) and torch.equal(ma, mb)


def test_training_from_the_cache_trains_the_same_model_as_from_memory(folder, tmp_path, tiny_config):
    runs = []
    for cache in (None, tmp_path / "cache"):
        trainer = Trainer(sorted(folder.iterdir()), tiny_config, epochs=2, cache_dir=cache)
        for _ in trainer.run():
            pass
        runs.append(trainer.result.codec.model.state_dict())
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_a_second_run_reuses_the_cache_and_a_changed_file_alone_is_computed_again(folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_cached(cache, accepted(folder), MelConfig())
    assert first.cache["computed"] == 6 and first.cache["reused"] == 0
    second = load_cached(cache, accepted(folder), MelConfig())
    assert second.cache["computed"] == 0 and second.cache["reused"] == 6
    assert [c.row for c in second.clips] == [c.row for c in first.clips]

    changed = folder / "clip1.wav"                 # same length, other sound, mtime kept as it was
    st = os.stat(changed)
    sf.write(changed, np.stack([tone(0.65, 500.0, 44100, seed=9)] * 2, axis=1), 44100)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(changed) == st.st_size
    third = load_cached(cache, accepted(folder), MelConfig())
    assert third.cache["computed"] == 1 and third.cache["reused"] == 5
    fresh = load_in_memory(accepted(folder), MelConfig())
    i = [c.name for c in third.clips].index("clip1.wav")
    assert torch.equal(third.clips[i].mel, fresh.clips[i].mel)          # the new sound, not the cached one
    assert not torch.equal(third.clips[i].mel[:, :10], first.clips[i].mel[:, :10])


def test_another_front_end_starts_the_cache_over_and_says_why(folder, tmp_path):
    cache = tmp_path / "cache"
    load_cached(cache, accepted(folder), MelConfig())
    other = load_cached(cache, accepted(folder), MelConfig(f_min=30.0))
    assert other.cache["computed"] == 6
    assert any("started over" in w and "front-end settings" in w for w in other.warnings)
    assert torch.equal(other.clips[0].mel, load_in_memory(accepted(folder), MelConfig(f_min=30.0)).clips[0].mel)
    index = json.loads((cache / melcache.INDEX_NAME).read_text())
    assert json.loads(index["mel"])["f_min"] == 30.0


def test_a_file_that_disappears_after_the_scan_is_skipped_with_a_warning_and_training_goes_on(folder, tmp_path,
                                                                                             tiny_config):
    report = scan_paths(sorted(folder.iterdir()))
    (folder / "clip2.flac").unlink()
    trainer = Trainer(report, tiny_config, epochs=1, cache_dir=tmp_path / "cache")
    warnings = [ev.message for ev in trainer.run() if ev.kind == "warning"]
    assert any(w.startswith("clip2.flac changed since the scan") and "training goes on" in w for w in warnings)
    assert trainer.result is not None and "clip2.flac" not in trainer.result.info.dataset["train_files"]
    assert trainer.result.info.dataset["corpus"]["files"] == 5


def test_the_cache_is_computed_in_worker_processes_with_the_same_values(folder, tmp_path, monkeypatch):
    """...with fresh workers every few files (their memory grows with the files they decode): three pools here."""
    monkeypatch.setattr(melcache, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(melcache, "PARALLEL_MIN_SECONDS", 0.0)
    monkeypatch.setattr(melcache, "FILES_PER_WORKER", 1)
    pools = []
    real = melcache.futures.ProcessPoolExecutor
    monkeypatch.setattr(melcache.futures, "ProcessPoolExecutor", lambda *a, **k: pools.append(1) or real(*a, **k))
    seen = []
    out = load_cached(tmp_path / "cache", accepted(folder), MelConfig(), workers=2,
                      progress=lambda done, total: seen.append((done, total)))
    assert out.cache["workers"] == 2 and seen[-1] == (6, 6) and len(pools) == 3
    memory = load_in_memory(accepted(folder), MelConfig())
    for a, b in zip(memory.clips, out.clips, strict=True):
        assert a.name == b.name and a.frames == b.frames
        assert torch.allclose(a.mel, b.mel, atol=1e-5)   # one thread there, this process's threads here


def test_a_truncated_cache_is_started_over_not_read_past_its_end(folder, tmp_path):
    cache = tmp_path / "cache"
    load_cached(cache, accepted(folder), MelConfig())
    data = cache / json.loads((cache / melcache.INDEX_NAME).read_text())["data"]
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    again = load_cached(cache, accepted(folder), MelConfig())
    assert again.cache["computed"] == 6
    assert any("shorter than its index" in w for w in again.warnings)


def test_a_second_scan_takes_the_verdicts_of_unchanged_cached_files_and_inspects_the_rest(folder, tmp_path,
                                                                                           monkeypatch):
    from distill import audio

    cache = tmp_path / "cache"
    first = scan_paths(sorted(folder.iterdir()))
    load_cached(cache, first.accepted, MelConfig())
    (folder / "clip3.wav").write_bytes((folder / "clip0.wav").read_bytes())   # changed since it was cached
    decoded = []
    real = audio.inspect_file
    monkeypatch.setattr(audio, "inspect_file", lambda p, *a, **k: decoded.append(os.path.basename(p)) or real(p, *a, **k))
    again = scan_paths(sorted(folder.iterdir()), known=melcache.known_verdicts(cache, MelConfig()))
    assert decoded == ["clip3.wav"]
    assert [(v.name, v.accepted, round(v.duration_s, 3)) for v in again.verdicts if v.name != "clip3.wav"] == \
        [(v.name, v.accepted, round(v.duration_s, 3)) for v in first.verdicts if v.name != "clip3.wav"]
    limited = scan_paths(sorted(folder.iterdir()), max_seconds=0.5, known=melcache.known_verdicts(cache, MelConfig()))
    assert [v.name for v in limited.accepted] == [v.name for v in again.accepted if v.duration_s <= 0.5] == \
        ["clip0.wav", "clip3.wav"]   # a cached verdict over the limit is refused as a decode would refuse it


def test_a_run_reading_the_cache_keeps_its_rows_when_another_run_starts_it_over_or_compacts_it(folder, tmp_path):
    cache = tmp_path / "cache"
    reading = load_cached(cache, accepted(folder), MelConfig())
    truth = [c.mel.clone() for c in reading.clips]
    load_cached(cache, accepted(folder), MelConfig(f_min=30.0))          # started over: a new data file
    assert all(torch.equal(c.mel, t) for c, t in zip(reading.clips, truth, strict=True))
    names = []
    for seed in (1, 2):                                                   # every file changed twice: compaction
        for i, p in enumerate(sorted(folder.iterdir())):
            sf.write(p, tone(0.4 + 0.25 * i, 300.0 + seed, 44100, seed=seed), 44100)
        second = load_cached(cache, accepted(folder), MelConfig(f_min=30.0))
        names.append(json.loads((cache / melcache.INDEX_NAME).read_text())["data"])
    assert second.cache["computed"] == 6 and names[0] != names[1]      # the second round compacted into a new file
    assert all(torch.equal(c.mel, t) for c, t in zip(reading.clips, truth, strict=True))
    assert len([p for p in cache.iterdir() if p.suffix == ".f32"]) == 1
    fresh = load_in_memory(accepted(folder), MelConfig(f_min=30.0))
    assert all(torch.equal(a.mel, b.mel) for a, b in zip(second.clips, fresh.clips, strict=True))


def test_a_stopped_build_keeps_what_it_computed_and_the_next_run_computes_only_the_rest(folder, tmp_path):
    cache = tmp_path / "cache"
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(melcache.BuildStopped, match="2 of 6 files computed"):
        load_cached(cache, accepted(folder), MelConfig(), stop=stop)
    again = load_cached(cache, accepted(folder), MelConfig())
    assert again.cache["reused"] == 2 and again.cache["computed"] == 4
    fresh = load_in_memory(accepted(folder), MelConfig())
    assert all(torch.equal(a.mel, b.mel) for a, b in zip(again.clips, fresh.clips, strict=True))
