"""Busy moments: several sessions editing at once while another trains (the real app, gradio_client), one tab
training and editing at once, and the limits a shared Space sets (each message names the limit and its variable)."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import running_studio, tone
from gradio_client import Client

from distill import EditHistory, apply_operation
from distill.train import train
from distill_studio import handlers, training
from distill_studio.app import launch_kwargs
from distill_studio.state import Limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import load  # noqa: E402  (benchmarks/load.py: the same load test, small)

SR = 48000


@pytest.fixture(scope="module")
def second_model(corpus_dir, tiny_config, tmp_path_factory) -> Path:
    """Another tiny model (another seed, a few epochs): sessions on different models must never mix."""
    result = train(sorted(corpus_dir.iterdir()), config=dataclasses.replace(tiny_config, seed=1), epochs=3,
                   validate_every=10)
    path = tmp_path_factory.mktemp("model2") / "other.distill"
    result.save(path)
    return path


@pytest.mark.slow
def test_sessions_editing_while_another_trains_each_get_their_own_results(trained, second_model, corpus_dir, tmp_path):
    pairs = []
    for i in range(4):  # every session its own two clips: other pitches, lengths, rates and noise
        a, b = tmp_path / f"s{i}_a.wav", tmp_path / f"s{i}_b.flac"
        sf.write(a, tone(0.5 + 0.1 * i, 110.0 * (i + 1), sr=44100, seed=10 + i), 44100)   # short: encode
        sf.write(b, tone(0.6 + 0.05 * i, 97.0 * (i + 2), sr=SR, noise=0.1, seed=20 + i), SR)  # by search is slow
        pairs.append((str(a), str(b)))
    models = [str(trained[1]), str(second_model)]
    with running_studio(trained[1], corpus_dir, max_train_minutes=0.4) as url:
        report = load.run_load(url, pairs, models, edits=2,
                               train_files=[str(p) for p in sorted(corpus_dir.iterdir())], train_minutes=5.0)
    print("\n".join(load.summary_lines(report)))
    # every reply checked against this session's own inputs (clip hash, model, shape, local apply_operation)
    assert report.failures() == []
    assert len(report.sessions) == 4 and all(len(s.steps) == 2 for s in report.sessions)
    assert len({s.ops[0] for s in report.sessions}) == 4        # four different edits: a mix-up could not pass
    t = report.training
    assert t.fingerprint and t.fingerprint not in report.model_fingerprints
    # editing went on while the other session trained: whole edit -> audio steps inside the training
    assert report.steps_during_training() >= 1
    first_edit_done = min(b for s in report.sessions for _, b in s.steps)
    assert t.started <= first_edit_done < t.finished


@pytest.fixture
def tab(codec, tmp_path):
    clips = {}
    for name, freq in (("low", 110.0), ("bright", 660.0)):
        path = tmp_path / f"{name}.wav"
        sf.write(path, tone(2.0, freq, decay=0.3), SR)
        clips[name] = str(path)
    s, _ = handlers.start(codec, "tiny", None, clips, Limits(), "low", "bright")
    return s


@pytest.mark.slow
def test_one_tab_training_and_editing_at_once_keeps_every_step(tab, codec, corpus_dir):
    """train_stream runs in one thread while the same tab edits and undoes in another: every step lands,
    in order, and the trained model waits (A has edits) instead of replacing the clips under the editor."""
    limits = Limits(preset="tiny", max_train_minutes=0.1)
    s, _, _, _ = training.scan(tab, [str(p) for p in sorted(corpus_dir.iterdir())], None, limits)
    progress, done, errors = [], threading.Event(), []

    def run_training():
        try:
            st = training.Settings(levels=2, budget="minutes", amount=5, batch_size=4)
            for p in training.train_stream(s, st, limits):
                progress.append((time.perf_counter(), p))
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            errors.append(exc)
        finally:
            done.set()

    trainer = threading.Thread(target=run_training)
    trainer.start()
    deadline = time.time() + 60
    while not progress and not done.is_set() and time.time() < deadline:
        time.sleep(0.02)
    ops = ("reverse Structure@0.0-1.0", "set Timbre@0.2-0.6=5", "shift Detail@0-0.5 --by 0.3",
           "repeat Structure@0-0.3 --times 2", "set Detail@1.0-1.5=9")
    stack, pos, k, during = [s.grid], 0, 0, 0
    while (not done.is_set() or k < 6) and k < 300:
        if k % 3 == 2:                      # edit, edit, undo: the redo tail is cut by the next edit
            handlers.undo(s)
            pos -= 1
        else:
            op = ops[k % len(ops)]
            handlers.run_operation(s, op)
            stack = stack[:pos + 1] + [apply_operation(codec, stack[pos], op).grid]
            pos += 1
        during += not done.is_set()
        k += 1
    trainer.join(120)
    assert not errors and not trainer.is_alive()
    assert during >= 3                                          # the tab kept editing while it trained

    h = s.history
    assert h.position == pos and len(h.labels) == len(stack) - 1
    assert np.array_equal(s.grid.codes, stack[pos].codes)
    replay = EditHistory.from_json(h.to_json(), codec.fingerprint)  # refuses steps that do not replay
    for i in range(pos, 0, -1):
        assert np.array_equal(replay.current.codes, stack[i].codes)
        replay.undo()
    assert np.array_equal(replay.current.codes, stack[0].codes)
    assert s.codec is codec and s.pending_model is not None     # the new model waits for "Use the new model"
    statuses = [p.status for _, p in progress]
    assert "DISTILL_MAX_TRAIN_MINUTES" in statuses[0] and "capped at 0.1 minutes" in statuses[0]
    assert "Model ready" in statuses[-1]


def test_upload_limits_name_the_limit_and_its_variable(corpus_dir, tmp_path, monkeypatch):
    paths = [str(p) for p in sorted(corpus_dir.iterdir())]
    report = training.limited_scan(paths, Limits(max_files=4))
    over = [v.reason for v in report.verdicts if not v.accepted]
    assert len(over) == 2 and all("limit of 4 files" in r and "DISTILL_MAX_FILES" in r for r in over)

    big = tmp_path / "big.wav"
    sf.write(big, tone(3.0, 220.0), SR, subtype="FLOAT")   # ~0.55 MB
    report = training.limited_scan([str(big), *paths[:2]], Limits(max_file_mb=0.5))
    (v,) = [v for v in report.verdicts if v.name == "big.wav"]
    assert not v.accepted and "0.5 MB per file" in v.reason and "DISTILL_MAX_FILE_MB" in v.reason
    assert len(report.accepted) == 2

    report = training.limited_scan(paths, Limits(max_total_minutes=0.03))   # 1.8 s of audio in all
    late = [v.reason for v in report.verdicts if not v.accepted]
    assert late and all("0.03 minutes" in r and "DISTILL_MAX_TOTAL_MINUTES" in r for r in late)
    assert report.total_duration_s <= 1.8

    for name, value in (("DISTILL_MAX_FILE_MB", "0.25"), ("DISTILL_MAX_FILES", "7"),
                        ("DISTILL_MAX_TOTAL_MINUTES", "3"), ("DISTILL_QUEUE_SIZE", "5")):
        monkeypatch.setenv(name, value)
    lim = Limits.from_env()
    assert "0.25 MB" in lim.file_too_big(1.0) and "7 files" in lim.too_many_files()
    assert "3 minutes" in lim.over_total_minutes() and "5 requests" in lim.queue_full()
    note = lim.upload_note()
    assert all(v in note for v in ("DISTILL_MAX_FILES", "DISTILL_MAX_FILE_MB", "DISTILL_MAX_TOTAL_MINUTES"))
    assert launch_kwargs(lim) == {"max_file_size": 262144}       # bytes: Gradio refuses "0.25mb"


def test_a_full_queue_and_an_oversized_upload_are_refused_with_the_limit():
    """Queue limit 0 (every request finds it full) and a 0.01 MB upload limit, on the real app (bundled demo model)."""
    import socket

    from distill_studio import build_app

    limits = Limits(queue_size=0, max_file_mb=0.01)
    demo = build_app(limits)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(limits))
    url = f"http://127.0.0.1:{port}/"
    try:
        client = Client(url, verbose=False)
        fn = client._infer_fn_index("/encode", None)
        r = httpx.post(url + "gradio_api/queue/join", json={"data": [None, None], "fn_index": fn,
                                                             "session_hash": "busy-test"})
        assert r.status_code == 503
        assert "DISTILL_QUEUE_SIZE" in r.json()["detail"] and "0 requests" in r.json()["detail"]
        with pytest.raises(Exception, match="(?i)queue is full"):   # gradio_client's own fixed text
            client.predict(None, None, api_name="/encode")
        r = httpx.post(url + "gradio_api/upload", files={"files": ("big.wav", b"0" * 20000)})
        assert r.status_code == 413 and "10485 bytes" in r.text    # Gradio's own text: 0.01 MiB
    finally:
        demo.close()
