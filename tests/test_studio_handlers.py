"""Studio event functions called directly: open, heatmap select/cell events (gr.EventData), edits, undo/redo, files, training."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from distill import CodeGrid, TrainResult
from distill_studio import handlers, training
from distill_studio.heatmap import heatmap_html, hz_label, palette
from distill_studio.state import Limits

SR = 48000


def drag(s, level: int, r0: int, c0: int, r1: int, c1: int, grid: str = "A", shift: bool = False):
    evt = gr.EventData(None, {"index": [[r0, c0], [r1, c1]], "value": level, "shift": shift, "grid": grid})
    return handlers.select(s, evt)


def test_page_load_opens_demo_clips_with_one_heatmap_per_level(codec, clips):
    s, view = handlers.start(codec, "tiny", None, clips, Limits(), "low", "bright")
    assert s.a.name == "low" and s.b.name == "bright"
    grid = s.a.grid
    shown = [h for h in view.heat_a if h is not None]
    assert len(shown) == grid.num_levels
    for q, html in enumerate(shown):
        assert html.count('class="hm-c"') == grid.num_bands * grid.num_columns
        assert f'data-level="{q}"' in html and grid.level_names[q] in html
    sr, audio = view.edited
    assert sr == SR and audio.dtype == np.int16 and len(audio) == grid.num_samples
    assert view.original[1].dtype == np.int16 and view.recon is not None


def test_select_event_sets_region_and_shift_adds_a_level(session):
    s, view = drag(session, 1, 5, 4, 2, 1)          # dragged bottom-right to top-left
    r = s.sel_a
    assert (r.levels, r.r0, r.r1, r.c0, r.c1) == ((1,), 2, 5, 1, 4)
    spc = s.a.grid.seconds_per_column
    assert f"{1 * spc:.2f}–{5 * spc:.2f} s" in view.selection
    assert view.levels[1] == ["Timbre"]
    assert 'class="hm-sel on"' in view.heat_a[1] and 'hm-sel' not in view.heat_a[0]
    s, view = drag(s, 0, 2, 1, 5, 4, shift=True)
    assert s.sel_a.levels == (0, 1)
    assert view.levels[1] == ["Structure", "Timbre"]
    s, view = handlers.set_levels(s, ["Detail"])
    assert s.sel_a.levels == (2,)


def test_select_out_of_range_is_refused_and_keeps_the_old_selection(session):
    s, _ = drag(session, 1, 0, 0, 1, 1)
    with pytest.raises(gr.Error, match="columns"):
        drag(s, 1, 0, 0, 1, 10_000)
    assert (s.sel_a.c0, s.sel_a.c1) == (0, 1)


def test_swap_with_b_then_undo_redo_restore_both_clips(session):
    s = session
    a0, b0 = s.grid.codes.copy(), s.b_grid.codes.copy()
    s, _ = drag(s, 1, 0, 1, s.grid.num_bands - 1, 4)  # every band of columns 1-4
    s, view = handlers.edit(s, "swap")
    assert np.array_equal(s.grid.codes[1, :, 1:5], b0[1, :, 1:5])
    assert np.array_equal(s.b_grid.codes[1, :, 1:5], a0[1, :, 1:5])
    assert np.array_equal(s.grid.codes[0], a0[0])               # other levels untouched
    assert "swap" in view.history and "Decoded in" in view.status
    assert s.rendered is not None and s.rendered.seconds < 5
    assert view.edited[1].dtype == np.int16 and len(view.edited[1]) == s.a.grid.num_samples
    s, view = handlers.undo(s)
    assert np.array_equal(s.grid.codes, a0) and np.array_equal(s.b_grid.codes, b0)
    assert "undone" in view.history
    s, view = handlers.redo(s)
    assert np.array_equal(s.grid.codes[1, :, 1:5], b0[1, :, 1:5])
    assert np.array_equal(s.b_grid.codes[1, :, 1:5], a0[1, :, 1:5])


def test_copy_paste_set_reverse_and_reset(session, codec):
    s, _ = drag(session, 2, 0, 0, 1, 1)
    src = s.grid.codes[2, 0:2, 0:2].copy()
    s, _ = handlers.copy(s, "A")
    s, _ = drag(s, 2, 3, 5, 3, 5)
    s, _ = handlers.edit(s, "paste")
    assert np.array_equal(s.grid.codes[2, 3:5, 5:7], src)
    s, _ = handlers.edit(s, "set", code=codec.codebook_size - 1)
    assert (s.grid.codes[2, 3:5, 5:7] == codec.codebook_size - 1).all()
    s, _ = drag(s, 0, 0, 0, s.grid.num_bands - 1, 3)
    before = s.grid.codes[0, :, 0:4].copy()
    s, _ = handlers.edit(s, "reverse")
    assert np.array_equal(s.grid.codes[0, :, 0:4], before[:, ::-1])
    assert len(s.history.labels) == 3
    s, view = handlers.reset(s)
    assert s.grid == s.a.grid and s.history.can_undo


def test_bad_edit_gives_a_clear_message_and_changes_nothing(session, codec):
    s = session
    with pytest.raises(gr.Error, match="Select a region"):
        handlers.edit(s, "set", code=1)
    s, _ = drag(s, 1, 0, 0, 0, 0)
    with pytest.raises(gr.Error, match=f"0-{codec.codebook_size - 1}"):
        handlers.edit(s, "set", code=codec.codebook_size + 5)
    with pytest.raises(gr.Error, match="unknown operation|cannot read"):
        handlers.run_operation(s, "explode Timbre@0-1")
    assert s.history.labels == [] and s.grid == s.a.grid


def test_cli_syntax_operation_with_clip_b(session):
    s = session
    b_cells = s.b_grid.codes[1, :, 0:2].copy()
    s, view = handlers.run_operation(s, "copy B:Timbre@0.0-0.3 --to 0.0")
    assert np.array_equal(s.grid.codes[1, :, 0:2], b_cells)
    assert "copy" in view.history


def test_cell_click_plays_that_code(session):
    s = session
    evt = gr.EventData(None, {"r": 2, "c": 3, "level": 1, "grid": "A"})
    s, view = handlers.cell_preview(s, evt)
    code = int(s.grid.codes[1, 2, 3])
    assert f"code {code}" in view.status
    sr, audio = view.preview
    assert sr == SR and audio.dtype == np.int16 and len(audio) > SR // 10


def test_export_and_import_round_trip(session, tmp_path):
    s, _ = drag(session, 1, 0, 0, 7, 2)
    s, _ = handlers.edit(s, "randomize", seed=3)
    edited = s.grid
    s, files, _ = handlers.export(s)
    wav, codes, hist = (Path(f) for f in files)
    data, sr = sf.read(wav)
    assert sr == SR and len(data) == edited.num_samples
    assert CodeGrid.load(codes) == edited
    s, _ = handlers.reset(s)
    s, view = handlers.import_codes(s, str(hist), Limits())
    assert s.grid == edited and s.history.labels[0].startswith("randomize")
    s, view = handlers.import_codes(s, str(codes), Limits())
    assert s.grid == edited and "audio from" in view.status and s.a.has_audio


def test_bad_files_keep_the_work_done(session, tmp_path):
    s, _ = drag(session, 1, 0, 0, 7, 2)
    s, _ = handlers.edit(s, "reverse")
    grid = s.grid
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio at all")
    with pytest.raises(gr.Error, match="notes.wav"):
        handlers.open_clip(s, "A", None, str(junk), Limits())
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    with pytest.raises(gr.Error, match="foreign.json"):
        handlers.import_codes(s, str(foreign), Limits())
    fake_model = tmp_path / "fake.distill"
    fake_model.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}       ")
    with pytest.raises(gr.Error, match="fake.distill"):
        training.load_model_file(s, str(fake_model))
    assert s.grid == grid and len(s.history.labels) == 1 and s.codec is not None


def test_heatmap_html_marks_the_selection_and_colours_by_code():
    codes = np.array([[0, 1, 2], [3, 4, 5]])
    html = heatmap_html(codes, level=1, name="A · Timbre", grid_id="A", seconds_per_column=0.5,
                        codebook_size=8, selection=(1, 1, 0, 1))
    cells = re.findall(r'data-r="(\d)" data-c="(\d)" data-k="(\d)" style="background:(#[0-9a-f]{6})"', html)
    assert cells[0][:3] == ("1", "0", "3")             # top row is the highest band
    assert all(col == palette(8)[int(k)] for _, _, k, col in cells)
    assert len(set(palette(64))) == 64
    assert "left:0.0%;width:66.66" in html and "top:0.0%;height:50.0%" in html


def test_bands_are_labelled_in_hz_on_hover_and_in_the_selection(session):
    s, view = drag(session, 1, 2, 0, 5, 1)
    labels = re.search(r'data-hz="([^"]+)"', view.heat_a[1]).group(1).split("|")
    assert len(labels) == s.grid.num_bands and labels[0].startswith("0–")
    lo, hi = s.codec.band_ranges_hz[2][0], s.codec.band_ranges_hz[5][1]
    assert f"bands 2–5 ({hz_label(lo, hi)})" in view.selection


@pytest.mark.parametrize("bands,row_px", [(8, 14), (16, 7), (32, 5)])
def test_heatmap_keeps_its_height_whatever_the_band_count(bands, row_px):
    """8-band (older) and 16-band models give heatmaps of about the same height; rows never vanish."""
    html = heatmap_html(np.zeros((bands, 4), dtype=int), level=0, name="A · Structure", grid_id="A",
                        seconds_per_column=0.17, codebook_size=8)
    assert f"--row-h:{row_px}px" in html and html.count('class="hm-c"') == bands * 4


def test_dataset_report_lists_every_file_and_implied_settings(tmp_path):
    good = [tmp_path / f"c{i}.wav" for i in range(5)]
    for i, p in enumerate(good):
        sf.write(p, tone(0.5, 200 + 50 * i), SR)
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    paths = [str(tmp_path / "readme.txt"), str(tmp_path / "broken.wav")] + [str(p) for p in good]
    s, table, text, st = training.scan(None, paths, None, Limits(max_files=6))
    assert len(table) == 7
    verdicts = dict(zip(table["file"], table["verdict"], strict=True))
    assert verdicts["readme.txt"] == "rejected" and verdicts["broken.wav"] == "rejected"
    assert list(table["verdict"]).count("accepted") == 4          # c4.wav is past max_files=6
    assert "over this Space's limit of 6 files" in " ".join(table["reason"])
    assert "4 of 7 files accepted" in text and "codebook **64**" in text
    with pytest.raises(gr.Error, match="empty"):
        training.scan(None, [], [], Limits())


def test_training_streams_progress_and_switches_the_session_to_the_new_model(corpus_dir):
    limits = Limits(preset="tiny")
    s, _, _, st = training.scan(None, [str(p) for p in sorted(corpus_dir.iterdir())], None, limits)
    st = training.Settings(levels=2, budget="epochs", amount=3, batch_size=4)
    updates = list(training.train_stream(s, st, limits))
    sent = [u.totals for u in updates if u.totals is not None]   # None = leave the plot as it is
    assert sent and all("validation" in set(f["curve"]) for f in sent)
    assert all({"train", "validation"} <= set(f["curve"]) for f in sent[:-1])  # the first frame fixes the legend
    assert "validation" in set(updates[-1].totals["curve"])
    assert updates[-1].totals["loss"].dtype == np.float64
    last = updates[-1]
    assert last.model_file and Path(last.model_file).is_file() and "Model ready" in last.status
    assert s.codec.config.num_quantizers == 2 and s.trainer is None
    assert "#22a34a" in last.health or "#e0a800" in last.health or "#d63a3a" in last.health
    s = handlers.open_defaults(s, limits)
    assert s.a is not None and s.a.grid.num_levels == 2


def test_stop_keeps_the_best_model(corpus_dir):
    limits = Limits(preset="tiny")
    s, _, _, _ = training.scan(None, [str(p) for p in sorted(corpus_dir.iterdir())], None, limits)
    gen = training.train_stream(s, training.Settings(levels=2, budget="epochs", amount=500, batch_size=4), limits)
    next(gen)
    assert "Stop requested" in training.stop(s)
    last = list(gen)[-1]
    assert "stopped" in last.status and s.codec is not None


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DISTILL_MAX_FILES", "12")
    monkeypatch.setenv("DISTILL_MAX_TRAIN_MINUTES", "3")
    lim = Limits.from_env()
    assert lim.max_files == 12 and lim.max_train_minutes == 3
    assert training.budget(training.Settings(amount=60), lim) == (3, None)


def test_training_events_cross_a_process_boundary(corpus_dir):
    """On ZeroGPU the training generator runs in a worker process: its inputs, events and result must pickle."""
    import pickle

    from distill.audio import scan_paths

    limits = Limits(preset="tiny")
    report = scan_paths(sorted(corpus_dir.iterdir()))
    cfg = training.build_config(len(report.accepted), training.Settings(levels=2, batch_size=4), limits)
    pickle.loads(pickle.dumps((report, cfg)))
    items = list(training.train_events(report, cfg, None, 1.0))
    result = pickle.loads(pickle.dumps(items[-1]))
    assert isinstance(result, TrainResult) and result.codec.fingerprint == items[-1].codec.fingerprint
    assert all(pickle.loads(pickle.dumps(ev)).kind == ev.kind for ev in items[:-1])


def test_without_a_model_the_page_explains_and_edits_ask_for_one(tmp_path):
    s, view = handlers.start(None, "no demo model (demo.distill: fingerprint mismatch)", None, {}, Limits())
    assert "fingerprint mismatch" in view.status and "Data & Train" in view.status
    assert all(h is None or "Open a clip" in h for h in view.heat_a)
    with pytest.raises(gr.Error, match="No model loaded"):
        handlers.edit(s, "swap")


def torch_allclose(a, b) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() < 1e-4)


def test_detail_slider_changes_only_the_edited_audio(session, codec):
    s, _ = drag(session, 0, 0, 3, 7, 5)
    s, _ = handlers.edit(s, "set", code=codec.codebook_size - 1)
    outs = {}
    for amount in (0.0, 1.0):
        s, view = handlers.set_detail(s, amount)
        outs[amount] = view.edited[1].astype(np.float32)
    assert s.detail == 1.0
    cols = s.grid.seconds_per_column * SR
    head = int(1 * cols)  # well before the edited columns 3-5: the recording either way
    assert np.array_equal(outs[0.0][:head], outs[1.0][:head])
    assert np.abs(outs[0.0] - outs[1.0]).max() > 0
    with pytest.raises(gr.Error, match="between 0 and 1"):
        handlers.set_detail(s, 1.5)
