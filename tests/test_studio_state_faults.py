"""Studio state that must come from the right clip: the clipboard's donor, same-named uploads, the overview's
waveform cache, and the status line after a model change (issue 25, faults 4, 9, 10, 11)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from conftest import SR, tone

from distill import clip_from_source, load_source
from distill_studio import handlers, training
from distill_studio.state import Limits


def drag(s, level: int, r0: int, c0: int, r1: int, c1: int, grid: str = "A"):
    evt = gr.EventData(None, {"index": [[r0, c0], [r1, c1]], "value": level, "shift": False, "grid": grid})
    return handlers.select(s, evt)


def write(path, seconds: float, freq: float, noise: float = 0.05):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, freq, noise=noise, decay=0.3), SR)
    return str(path)


def test_paste_after_opening_another_b_never_takes_that_clips_phase(session, tmp_path):
    """Copy from B, open another B, Paste: the copied cells are bright's codes, so the drum-like third clip's
    audio must not lend them its phase. The paste has no donor then, and the status says so."""
    s, _ = drag(session, 1, 0, 2, 3, 5, grid="B")
    s, _ = handlers.copy(s, "B")
    other = write(tmp_path / "drums.wav", 2.0, 55.0, noise=0.4)
    s, _ = handlers.open_clip(s, "B", None, other, Limits())
    s, _ = drag(s, 1, 0, 1, 0, 1)
    s, view = handlers.edit(s, "paste")
    assert np.array_equal(s.grid.codes[1, 0:4, 1:5], s.clipboard.grid.codes[1, 0:4, 2:6])
    drums = s.b.wave
    assert not any(np.shares_memory(d.audio, drums) or np.array_equal(d.audio[:len(drums)], drums)
                   for d in s.edit.donors() if len(d.audio) >= len(drums))
    assert "no longer open" in view.status


def test_paste_from_the_b_still_open_keeps_its_phase(session):
    s, _ = drag(session, 1, 0, 2, 3, 5, grid="B")
    s, _ = handlers.copy(s, "B")
    s, _ = drag(s, 1, 0, 1, 0, 1)
    s, view = handlers.edit(s, "paste")
    assert any(np.array_equal(d.audio, s.b.wave) for d in s.edit.donors())
    assert "no longer open" not in view.status


def test_a_newer_upload_with_the_same_name_gets_its_own_entry(session, tmp_path):
    """Two different files both called take.wav: the clip list keeps both (the second as 'take (2).wav'), and
    picking a name opens that name's audio, never the other take's."""
    limits = Limits()
    first = write(tmp_path / "one" / "take.wav", 2.0, 220.0)
    second = write(tmp_path / "two" / "take.wav", 2.0, 880.0)
    s, _ = handlers.open_clip(session, "A", None, first, limits)
    s, _ = handlers.open_clip(s, "A", None, second, limits)
    assert s.a.name == "take (2).wav"
    assert s.clips["take.wav"] == first and s.clips["take (2).wav"] == second
    s, _ = handlers.open_clip(s, "B", "take.wav", None, limits)
    assert np.array_equal(s.b.source.samples, load_source(first).samples)
    again = write(tmp_path / "three" / "take.wav", 2.0, 880.0)          # the same audio again: no third entry
    s, _ = handlers.open_clip(s, "B", None, again, limits)
    assert s.b.name == "take (2).wav" and sorted(k for k in s.clips if k.startswith("take")) == [
        "take (2).wav", "take.wav"]


def test_the_overview_shows_the_audio_once_it_arrives_after_its_codes(session, codec, tmp_path):
    """Codes imported without audio draw a flat overview; opening the audio itself afterwards must draw its
    waveform, not the cached flat line."""
    path = write(tmp_path / "long.wav", 7.0, 330.0)
    codes = tmp_path / "long.codes.json"
    clip_from_source(codec, load_source(path)).grid.save(codes)
    s = session
    s.view_seconds = 5.0                       # a 7 s clip is longer than the viewport: the overview shows
    s, view = handlers.import_codes(s, str(codes), Limits())
    assert not s.a.has_audio and view.overview_a
    s, view = handlers.open_clip(s, "A", None, path, Limits())
    assert s.a.has_audio and view.overview_a
    assert float(s.peaks[s.a.key].max()) == pytest.approx(float(np.abs(s.a.wave).max()), rel=0.05)


def test_status_after_a_model_upload_says_which_clips_are_open_and_why(session, trained, tmp_path):
    """The clips kept open across a model change are not 'the longest clips of the dataset'; clips opened
    because none was open are the longest in the list."""
    s = session
    s.clips["long3"] = write(tmp_path / "long3.wav", 3.0, 440.0)
    s = training.load_model_file(s, str(trained[1]))
    s, view = handlers.model_changed(s, Limits())
    assert "longest" not in view.status and "kept open" in view.status and "low" in view.status
    s.close_clips()
    s, view = handlers.model_changed(s, Limits())
    assert s.a.name == "long3" and "longest" in view.status


def test_the_history_panel_reports_the_tabs_memory_and_the_steps_the_limits_dropped(session):
    """Issue 25 ("memory per tab is bounded and reported"): the history panel says what the tab holds, by part,
    and once the history's byte limit drops old steps it says how many went and why."""
    import re

    s, _ = drag(session, 1, 0, 2, 3, 5)
    s, view = handlers.edit(s, "reverse")
    parts = s.memory()
    assert parts["clips"] >= s.a.wave.nbytes + s.b.wave.nbytes and parts["history"] == s.history.nbytes()
    shown = float(re.search(r"This tab holds ([0-9.]+) MB", view.history).group(1))
    assert shown == pytest.approx(sum(parts.values()) / 2**20, abs=0.06)
    assert "went" not in view.history
    s.history.max_bytes = 1                      # as if the history were full: the next step drops the oldest
    s, view = handlers.edit(s, "reverse")
    assert s.history.dropped == 1 and "the oldest 1 step went" in view.history
