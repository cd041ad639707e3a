"""Long clips in the studio: the viewport (heatmaps, spectrogram and players show only it), the overview strip,
edits anywhere in the clip, undo that follows the change, and an export of the whole clip."""

from __future__ import annotations

import re

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from distill import Region
from distill_studio import handlers, viewport
from distill_studio.state import Limits
from distill_studio.viewport import Viewport

SR = 48000
LONG_S = 100.0


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> str:
    """100 s of notes changing every 2.5 s (what a take looks like to the codec: it never repeats exactly)."""
    rng = np.random.default_rng(0)
    notes = [tone(2.5, float(f), noise=0.02, decay=0.8, seed=i, sr=SR)
             for i, f in enumerate(rng.choice([110, 165, 220, 330, 440, 660], size=int(LONG_S / 2.5)))]
    path = tmp_path_factory.mktemp("long") / "take.wav"
    sf.write(path, np.concatenate(notes).astype(np.float32), SR)
    return str(path)


@pytest.fixture(scope="module")
def opened(codec, clips, long_wav):
    s, _ = handlers.start(codec, "tiny", None, clips, Limits(), "low", "bright")
    s, view = handlers.open_clip(s, "A", None, long_wav, Limits())
    return s, view


def _cells(html: str) -> list[int]:
    return [int(c) for c in re.findall(r'class="hm-c" data-r="\d+" data-c="(\d+)"', html)]


def _fresh(codec, clips, long_wav):
    s, _ = handlers.start(codec, "tiny", None, clips, Limits(), "low", "bright")
    return handlers.open_clip(s, "A", None, long_wav, Limits())


def test_a_long_clip_opens_showing_only_its_viewport(opened):
    s, view = opened
    grid = s.a.grid
    assert grid.duration_s == pytest.approx(LONG_S, abs=0.01)
    width = viewport.columns_for(viewport.VIEW_SECONDS, grid.seconds_per_column)
    assert s.view_a == Viewport(0, width) and width < grid.num_columns / 3
    for html in (h for h in view.heat_a if h is not None):
        assert sorted(set(_cells(html))) == list(range(width))       # the page holds the viewport's cells only
        assert len(_cells(html)) == grid.num_bands * width
    start, stop = s.view_a.samples(grid)
    for player in (view.original, view.recon, view.edited):
        assert player[0] == SR and len(player[1]) == stop - start
    assert "take.wav" in view.status and "drag the box" in view.status
    assert 'class="ov-box"' in view.overview_a and "of 1:40.0" in view.overview_a


def test_opening_a_long_clip_reports_the_encode_progress(codec, clips, long_wav, monkeypatch):
    """The page's progress bar is told how far the encode of the clip being opened is, by name, up to 1; the encode
    uses every core (long, dense work), the rest of the handler the edit-time thread count."""
    import torch

    import distill.codec as codec_mod
    from distill_studio import threads
    monkeypatch.setattr(codec_mod, "CHUNK_COLUMNS", 64)  # the 100 s take in several pieces
    monkeypatch.setattr(threads, "TRAIN_THREADS", 2)
    monkeypatch.setattr(threads, "EDIT_THREADS", 1)
    s, _ = handlers.start(codec, "tiny", None, clips, Limits(), "low", "bright")
    told: list[tuple[float, str, int]] = []
    s, view = handlers.open_clip(s, "A", None, long_wav, Limits(),
                                 progress=lambda f, desc: told.append((f, desc, torch.get_num_threads())))
    assert s.a.name == "take.wav" and len(told) >= 4 and told[0] == (0.0, "Reading take.wav", 1)
    assert [f for f, *_ in told] == sorted(f for f, *_ in told) and told[-1] == (1.0, "Encoding take.wav", 2)
    assert {(desc, n) for _, desc, n in told[1:]} == {("Encoding take.wav", 2)}


def test_moving_the_viewport_shows_and_plays_that_place(codec, clips, long_wav):
    s, _ = _fresh(codec, clips, long_wav)
    grid = s.a.grid
    s, view = handlers.move_view(s, gr.EventData(None, {"value": 0.5, "grid": "A"}))
    width = s.view_a.width
    assert abs((s.view_a.c0 + s.view_a.c1) / 2 - grid.num_columns / 2) <= 1
    cols = _cells(view.heat_a[0])
    assert min(cols) == s.view_a.c0 and max(cols) == s.view_a.c1 - 1 and len(set(cols)) == width
    assert f'data-c0="{s.view_a.c0}"' in view.heat_a[0]
    start, stop = s.view_a.samples(grid)
    np.testing.assert_array_equal(view.original[1], handlers.to_int16(s.a.wave[start:stop], SR)[1])
    assert "Moved" in view.status
    c0 = s.view_a.c0
    s, _ = handlers.scroll(s, 1)
    assert s.view_a.c0 == c0 + round(width * viewport.SCROLL_SHARE)
    for _ in range(20):
        s, _ = handlers.scroll(s, 1)
    assert s.view_a.c1 == grid.num_columns and s.view_a.width == width   # stops at the end, same width
    s, _ = handlers.zoom(s, 0.5)
    assert s.view_seconds == viewport.VIEW_SECONDS / 2 and s.view_a.width < width
    for _ in range(5):
        s, _ = handlers.zoom(s, 0.5)
    assert s.view_seconds == viewport.MIN_VIEW_SECONDS
    for _ in range(5):
        s, _ = handlers.zoom(s, 2.0)
    assert s.view_seconds == viewport.MAX_VIEW_SECONDS
    assert s.view_a.width == viewport.columns_for(viewport.MAX_VIEW_SECONDS, grid.seconds_per_column)
    with pytest.raises(gr.Error, match="position"):
        handlers.move_view(s, gr.EventData(None, {"value": "nan", "grid": "A"}))


def test_an_edit_far_from_the_start_is_heard_at_once_and_undo_follows_it(codec, clips, long_wav):
    s, _ = _fresh(codec, clips, long_wav)
    grid = s.a.grid
    s, _ = handlers.move_view(s, gr.EventData(None, {"value": 0.8, "grid": "A"}))
    c = s.view_a.c0 + 10
    s, view = handlers.select(s, gr.EventData(None, {"index": [[0, c], [2, c + 5]], "value": 1, "grid": "A"}))
    assert (s.sel_a.c0, s.sel_a.c1) == (c, c + 5)
    assert 'class="hm-sel on"' in view.heat_a[1]
    s, view = handlers.edit(s, "set", code=3)
    assert (s.grid.codes[1, 0:3, c:c + 6] == 3).all()
    start, stop = s.view_a.samples(grid)
    rendered = view.edited[1]
    assert len(rendered) == stop - start
    whole = s.edit.render().wave
    np.testing.assert_array_equal(rendered, handlers.to_int16(whole[start:stop], SR)[1])  # local == full render
    assert "Decoded in" in view.status
    # the edited picture is analysed only where the samples changed, and equals a full analysis
    np.testing.assert_allclose(s.edited_mel[1], codec.logmel(s.rendered.wave).numpy(), atol=1e-5)
    marks = viewport.edited_bins(np.any(s.grid.codes != grid.codes, axis=(0, 1)))
    at = c * viewport.OVERVIEW_BINS // grid.num_columns
    assert marks[at] and marks.sum() <= 6 * viewport.OVERVIEW_BINS // grid.num_columns + 2   # the edit, marked
    # back to the start, then undo: the viewport goes to where the undone edit was
    s, _ = handlers.move_view(s, gr.EventData(None, {"value": 0.0, "grid": "A"}))
    assert s.view_a.c0 == 0
    s, view = handlers.undo(s)
    assert np.array_equal(s.grid.codes, grid.codes) and s.view_a.c0 <= c < s.view_a.c1
    s, view = handlers.redo(s)
    assert (s.grid.codes[1, 0:3, c:c + 6] == 3).all()
    # an operation typed for a place outside the viewport moves it there
    s, _ = handlers.move_view(s, gr.EventData(None, {"value": 0.0, "grid": "A"}))
    s, view = handlers.run_operation(s, "reverse Structure@50.0-52.0")
    assert s.view_a.c0 * grid.seconds_per_column <= 50.0 < s.view_a.c1 * grid.seconds_per_column
    # the export is the whole clip at the file's own rate and length
    s, files, view = handlers.export(s)
    wave, rate = sf.read(files[0])
    assert rate == SR and len(wave) == int(LONG_S * SR)
    # "Play whole edited clip" hands the Edited player the whole clip
    s, view = handlers.play_whole(s)
    assert len(view.edited[1]) == grid.num_samples and "whole clip" in view.status


def test_a_long_clip_b_has_its_own_viewport(codec, clips, long_wav):
    s, _ = handlers.start(codec, "tiny", None, clips, Limits(), "low", "bright")
    s, view = handlers.open_clip(s, "B", None, long_wav, Limits())
    assert s.view_b.c0 == 0 and view.overview_b and 'data-grid="B"' in view.overview_b
    assert view.overview_a == ""                                     # A (2 s) shows whole: no strip
    s, view = handlers.move_view(s, gr.EventData(None, {"value": 1.0, "grid": "B"}))
    assert s.view_b.c1 == s.b.grid.num_columns
    assert max(_cells(view.heat_b[0])) == s.b.grid.num_columns - 1
    # copy from B's far end into A works on B's own columns
    c = s.view_b.c1 - 4
    s, _ = handlers.select(s, gr.EventData(None, {"index": [[0, c], [1, c + 2]], "value": 0, "grid": "B"}))
    s, _ = handlers.copy(s, "B")
    s, _ = handlers.select(s, gr.EventData(None, {"index": [[0, 1], [1, 3]], "value": 0, "grid": "A"}))
    s, _ = handlers.edit(s, "paste")
    assert np.array_equal(s.grid.codes[0, 0:2, 1:4], s.b.grid.codes[0, 0:2, c:c + 3])


def test_short_clips_show_whole_without_an_overview(session):
    view = handlers.render(session, audio=True)
    assert view.overview_a == "" and session.view_a.covers(session.a.grid.num_columns)
    assert len(view.edited[1]) == session.a.grid.num_samples


def test_clip_length_limit_is_thirty_minutes_by_default(codec, tmp_path):
    assert Limits().max_clip_seconds == 1800 and Limits().max_file_mb >= 318   # a 30-min 44.1 kHz stereo WAV
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(SR * 61, np.float32), SR)
    s = handlers.new_session(codec, "tiny", None, {})
    with pytest.raises(gr.Error, match=r"over the limit of 60 s \(set by DISTILL_MAX_CLIP_SECONDS\)"):
        handlers.open_clip(s, "A", None, str(path), Limits(max_clip_seconds=60))


def test_viewport_arithmetic():
    v = Viewport(10, 40)
    assert viewport.moved(v, -5, 100) == Viewport(0, 30) and viewport.moved(v, 95, 100) == Viewport(70, 100)
    assert viewport.moved(v, 0, 20) == Viewport(0, 20)                       # a clip shorter than the view
    assert viewport.centred(v, 50, 100) == Viewport(35, 65)
    assert viewport.containing(v, 20, 25, 100) is v
    assert viewport.containing(v, 80, 85, 100).c0 <= 80 < viewport.containing(v, 80, 85, 100).c1
    marks = viewport.edited_bins(np.array([False] * 9 + [True]), bins=20)
    assert marks[18:].all() and not marks[:18].any()
    peaks = viewport.envelope(np.r_[np.zeros(500), np.ones(500)].astype(np.float32), bins=10)
    assert peaks.shape == (10,) and peaks[:5].max() == 0 and peaks[5:].min() == 1
    assert viewport.clock(75.25) == "1:15.2" and viewport.clock(4.5) == "4.50 s"


def test_column_samples_is_the_one_rule_for_players(opened):
    s, _ = opened
    grid = s.a.grid
    spc = grid.samples_per_column
    assert grid.column_samples(2, 5) == (2 * spc, 5 * spc)
    assert grid.column_samples(0, grid.num_columns) == (0, grid.num_samples)
    assert Region((0,), 0, 0, 0, 0).seconds(grid)[0] == grid.column_samples(0, 1)[0] / grid.sample_rate


def test_edit_handlers_run_with_the_measured_thread_count_and_restore_it(session):
    import threading

    import torch

    from distill_studio import editing, threads

    seen = []
    real = editing.render

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    def run():
        torch.set_num_threads(2)
        editing.render = spy
        try:
            editing.select_all(session, ["Timbre"])
        finally:
            editing.render = real
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=run)   # its own thread, as the server's workers: the test's thread is untouched
    t.start()
    t.join()
    assert seen == [threads.EDIT_THREADS, 2]

    def counts():
        for _ in range(3):
            yield torch.get_num_threads()

    before = torch.get_num_threads()
    assert list(threads.each_step(counts(), 1)) == [1, 1, 1]   # training's steps run with their own count
    assert torch.get_num_threads() == before
