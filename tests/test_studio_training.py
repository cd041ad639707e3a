"""Studio training and model changes, called directly (no browser): a new model never throws edits away, it waits
for "Use the new model"; Stop works when training runs in another process, as on ZeroGPU."""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import threading
from pathlib import Path

import gradio as gr
import pytest

from distill import Codec
from distill_studio import handlers, opening, training
from distill_studio.state import Limits, PendingModel

SR = 48000
EDIT = "reverse Structure@0.0-1.0"


def _dataset(corpus_dir) -> list[str]:
    return [str(p) for p in sorted(corpus_dir.iterdir())]


def test_training_finishing_while_a_has_edits_keeps_them_and_offers_the_new_model(session, corpus_dir):
    limits = Limits(preset="tiny")
    s, _ = handlers.run_operation(session, EDIT)
    old_codec, a, b, grid, labels, clip_list = s.codec, s.a, s.b, s.grid, list(s.history.labels), dict(s.clips)
    s, _, _, _ = training.scan(s, _dataset(corpus_dir), None, limits)
    last = list(training.train_stream(s, training.Settings(levels=2, budget="epochs", amount=2, batch_size=4), limits))[-1]

    assert s.codec is old_codec and s.a is a and s.b is b and s.grid == grid and s.history.labels == labels
    assert s.clips == clip_list
    assert isinstance(s.pending_model, PendingModel) and s.pending_model.codec.config.num_quantizers == 2
    assert s.pending_model.path == last.model_file and Path(last.model_file).is_file()
    assert "Model ready" in last.status and "Use the new model" in last.status
    note = training.pending_note(s)
    assert "Use the new model" in note and "re-encodes" in note and "export" in note

    s, status = training.use_pending_model(s)
    assert s.pending_model is None and training.pending_note(s) == ""
    assert s.codec.config.num_quantizers == 2 and s.a.name == a.name and s.a.grid.num_levels == 2
    assert not s.history.labels                                  # a new history on the new model
    assert set(clip_list) <= set(s.clips) and "clip0.wav" in s.clips  # the training set joins the clip list
    assert "re-encoded" in status
    with pytest.raises(gr.Error, match="No new model is waiting"):
        training.use_pending_model(s)


def test_a_model_arriving_with_no_edits_is_used_at_once(session, trained):
    new = Codec.load(trained[1])
    s = training.offer_model(session, new, "trained here", str(trained[1]), {"x": "x.wav"}, fresh_clips=True)
    assert s.codec is new and s.pending_model is None and s.model_label == "trained here"
    assert s.a is None and s.clips == {"x": "x.wav"}               # as before: the training set's clips replace the open ones
    s = training.load_model_file(s, str(trained[1]))              # an upload with nothing edited: also at once
    assert s.codec is not new and s.pending_model is None and s.model_label == f"uploaded {Path(trained[1]).name}"


def test_an_uploaded_model_waits_while_a_has_edits(session, trained, tmp_path):
    s, _ = handlers.run_operation(session, EDIT)
    codec, grid = s.codec, s.grid
    s = training.load_model_file(s, str(trained[1]))
    assert s.codec is codec and s.grid == grid and len(s.history.labels) == 1
    assert s.pending_model is not None and s.pending_model.label.startswith("uploaded")
    broken = tmp_path / "broken.distill"
    broken.write_bytes(b"not a model")
    with pytest.raises(gr.Error, match="broken.distill"):
        training.load_model_file(s, str(broken))
    assert s.pending_model is not None and s.codec is codec          # a bad file changes nothing


def test_a_model_that_cannot_be_opened_says_why_and_changes_nothing(session, trained, monkeypatch):
    def broken_set_model(s, codec, label, path):
        s.codec, s.b = codec, None       # half a switch, then a failure
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(opening, "set_model", broken_set_model)
    codec, a, b = session.codec, session.a, session.b
    with pytest.raises(gr.Error, match="could not be opened: encoder exploded"):
        training.offer_model(session, Codec.load(trained[1]), "uploaded x.distill", str(trained[1]))
    assert session.codec is codec and session.a is a and session.b is b

    s, _ = handlers.run_operation(session, EDIT)
    training.offer_model(s, Codec.load(trained[1]), "uploaded x.distill", str(trained[1]))
    with pytest.raises(gr.Error, match="encoder exploded"):
        training.use_pending_model(s)
    assert s.codec is codec and s.pending_model is not None and len(s.history.labels) == 1  # still offered


def test_a_model_arriving_during_an_edit_waits_for_it_then_keeps_it(session, trained):
    new = Codec.load(trained[1])
    holding, release = threading.Event(), threading.Event()

    def slow_edit():
        with session.lock:                      # what every guarded edit handler holds
            holding.set()
            release.wait(30)
            handlers.run_operation(session, EDIT)

    editor = threading.Thread(target=slow_edit)
    editor.start()
    assert holding.wait(30)
    offer = threading.Thread(target=training.offer_model, args=(session, new, "trained here", str(trained[1])))
    offer.start()
    offer.join(0.3)
    assert offer.is_alive() and session.pending_model is None and session.codec is not new   # waiting for the edit
    release.set()
    editor.join(60)
    offer.join(60)
    assert session.codec is not new and len(session.history.labels) == 1 and session.pending_model.codec is new


def _run_in_worker(args: tuple, out) -> None:
    try:
        for item in training.train_events(*args):
            out.put(pickle.dumps(item))   # plain pickle, as ZeroGPU sends results (no shared tensor storage)
    except BaseException as exc:  # reported to the test, not just printed by the worker
        out.put(pickle.dumps(RuntimeError(f"training process failed: {exc!r}")))
    out.put(None)


def _events_in_another_process(report, cfg, minutes, epochs, stop_file=None):
    """What spaces.GPU does on ZeroGPU: the training generator runs in a separate process."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_run_in_worker, args=((report, cfg, minutes, epochs, None, stop_file), out), daemon=True)
    proc.start()
    try:
        while True:
            try:
                item = out.get(timeout=180)
            except queue.Empty:
                raise AssertionError("the training process went silent") from None
            if item is None:
                return
            item = pickle.loads(item)
            if isinstance(item, RuntimeError):
                raise item
            yield item
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()


def test_stop_works_when_training_runs_in_another_process(corpus_dir, monkeypatch):
    monkeypatch.setattr(training, "on_zero_gpu", lambda: True)
    monkeypatch.setattr(training, "train_events_gpu", _events_in_another_process)
    limits = Limits(preset="tiny")
    s, _, _, _ = training.scan(None, _dataset(corpus_dir), None, limits)
    gen = training.train_stream(s, training.Settings(levels=2, budget="epochs", amount=500, batch_size=4), limits)
    next(gen)
    assert s.trainer is None and s.stop_file is not None     # nothing in this process to cancel
    stop_file = s.stop_file
    assert "Stop requested" in training.stop(s)
    last = list(gen)[-1]
    assert "stopped" in last.status and s.codec is not None and s.codec.config.num_quantizers == 2
    assert s.stop_file is None and not Path(stop_file).exists()
    assert training.stop(s) == "Nothing is training."


def test_a_folder_upload_with_two_files_of_the_same_name_keeps_both(tmp_path):
    """A folder upload arrives flattened (Gradio keeps file names, not folders): drums/kick.wav and fx/kick.wav,
    and a file Gradio hands over twice (same content, so one cached path), each stay their own row and clip."""
    import numpy as np
    import soundfile as sf
    from conftest import tone

    seconds = {"drums/kick.wav": 0.5, "fx/kick.wav": 1.0, "snare.wav": 0.7, "a/hat.wav": 0.3}
    for rel, secs in seconds.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, tone(secs, 110 / secs, seed=int(secs * 10)), SR)
    paths = [str(tmp_path / rel) for rel in seconds] + [str(tmp_path / "a/hat.wav")]
    limits = Limits(preset="tiny")
    s, table, summary, _ = training.scan(None, paths, None, limits)

    names = list(table["file"])
    assert len(names) == len(set(names)) == 5 and "5 of 5 files accepted" in summary
    kicks = table[table["file"].str.startswith("kick")]
    assert sorted(kicks["seconds"]) == [0.5, 1.0] and (kicks["verdict"] == "accepted").all()
    assert (table["file"].str.startswith("hat")).sum() == 2

    list(training.train_stream(s, training.Settings(levels=2, budget="epochs", amount=1, batch_size=4), limits))
    assert set(s.clips) == set(names)
    lengths = sorted(round(sf.info(s.clips[n]).duration, 2) for n in names if n.startswith("kick"))
    assert lengths == [0.5, 1.0]                                 # two different files, not one twice
    assert np.array_equal(sf.read(s.clips[names[3]])[0], sf.read(s.clips[names[4]])[0])  # hat and its twin


@pytest.fixture(scope="module")
def sabotaged_run(tmp_path_factory):
    """Three good clips and five that change between the scan and pressing Train (two vanish, two turn to
    garbage, one loses its samples): the session and every streamed update of the training panel."""
    import numpy as np
    import soundfile as sf
    from conftest import tone

    root = tmp_path_factory.mktemp("sabotaged")
    good = [f"good{i}.wav" for i in range(3)]
    bad = ["gone1.wav", "gone2.wav", "garbage1.wav", "garbage2.wav", "emptied.wav"]
    for i, name in enumerate(good + bad):
        sf.write(root / name, tone(0.6, 150 + 50 * i, seed=i), SR)
    limits = Limits(preset="tiny")
    s, _, _, _ = training.scan(None, [str(root / n) for n in good + bad], None, limits)
    (root / "gone1.wav").unlink()
    (root / "gone2.wav").unlink()
    (root / "garbage1.wav").write_bytes(b"\x13\x37" * 3000)
    (root / "garbage2.wav").write_text("not audio any more")
    sf.write(root / "emptied.wav", np.zeros(0, np.float32), SR)
    updates = list(training.train_stream(s, training.Settings(levels=2, budget="epochs", amount=1, batch_size=4),
                                         limits))
    return s, updates, good, bad


def test_after_training_the_clip_list_offers_only_the_files_it_trained_on(sabotaged_run):
    s, updates, good, bad = sabotaged_run
    assert "Model ready" in updates[-1].status and s.codec is not None
    assert sorted(s.clips) == good                              # nothing that vanished or was skipped
    said = updates[-1].status
    assert "Not in the clip list" in said and all(name in said for name in bad)


def test_the_training_status_says_how_many_warnings_it_does_not_show(sabotaged_run):
    """Five files skipped = five warnings, then the start message: three lines are shown, the rest counted."""
    _, updates, _, bad = sabotaged_run
    during = [u.status for u in updates[:-1]]
    assert during and all("… and 3 more warnings" in text for text in during[5:])
    assert sum(name in during[-1] for name in bad) == 2           # the two latest warnings are still shown


def _folder(root: Path, names: list[str]) -> list[str]:
    import soundfile as sf
    from conftest import tone

    root.mkdir()
    for i, name in enumerate(names):
        sf.write(root / name, tone(0.6, 150 + 60 * i, seed=i), SR)
    return [str(root / n) for n in names]


def test_a_dataset_uploaded_during_training_is_for_the_next_run(tmp_path):
    """Issue 25.8: a folder uploaded while training runs used to replace the run's report, so the clip list came
    out empty and the status named the new folder's files as skipped. The run keeps the report it started with;
    the new one waits for the next run."""
    limits = Limits(preset="tiny")
    first = _folder(tmp_path / "first", ["a1.wav", "a2.wav", "a3.wav"])
    second = _folder(tmp_path / "second", ["b1.wav", "b2.wav"])
    s, _, _, _ = training.scan(None, first, None, limits)
    gen = training.train_stream(s, training.Settings(levels=2, budget="epochs", amount=1, batch_size=4), limits)
    next(gen)                                                   # training has started
    training.scan(s, second, None, limits)                      # another upload meanwhile
    last = list(gen)[-1]
    assert "Model ready" in last.status and "Not in the clip list" not in last.status
    assert sorted(s.clips) == ["a1.wav", "a2.wav", "a3.wav"]
    assert not any(name in last.status for name in ("b1.wav", "b2.wav"))
    assert sorted(v.name for v in s.report.accepted) == ["b1.wav", "b2.wav"]   # kept for the next run


def test_a_scan_changes_the_session_under_the_tabs_lock(tmp_path):
    """The report and the settings it implies change together, while no other event of the tab holds its lock."""
    limits = Limits(preset="tiny")
    s, _, _, _ = training.scan(None, _folder(tmp_path / "first", ["a1.wav"]), None, limits)
    before = s.report
    second = _folder(tmp_path / "second", ["b1.wav", "b2.wav"])
    with s.lock:
        worker = threading.Thread(target=training.scan, args=(s, second, None, limits))
        worker.start()
        worker.join(timeout=3)
        assert worker.is_alive() and s.report is before          # waiting for the lock
    worker.join(timeout=30)
    assert not worker.is_alive() and len(s.report.accepted) == 2 and s.config is not None
