"""The studio's Regenerate panel and the /regenerate endpoint: draw, audition, keep one, undo."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import handle_file

from distill import CodeGrid, Region
from distill_studio import api, handlers, regenerate
from distill_studio.state import Limits


@pytest.fixture
def rsession(prior_codec, clips):
    """A studio session on the tiny model with a prior, clips low (A) and bright (B) open, a selection made."""
    s, _ = handlers.start(prior_codec[0], "tiny+prior", str(prior_codec[1]), clips, Limits(), "low", "bright")
    s.sel_a = Region((1, 2), 0, s.grid.num_bands - 1, 3, 7)
    return s


def test_draw_renders_candidates_without_touching_the_history(rsession):
    s = rsession
    s, _ = handlers.edit(s, "reverse")
    s, _ = handlers.undo(s)            # a redo step the draw must not clobber
    before = s.grid
    s, view = regenerate.draw(s, 1.0, 1.0, 3, 3)
    c = s.candidates
    assert len(c.results) == 3 and s.grid is before and s.history.can_redo
    a, b = c.span
    assert all(len(w) == b - a for w in c.audio) and len(c.current) == b - a
    assert not np.allclose(c.audio[0], c.audio[1])              # versions sound different
    inside = np.zeros(before.codes.shape, dtype=bool)
    inside[s.sel_a.index()] = True
    for r in c.results:
        assert np.array_equal(r.grid.codes[~inside], before.codes[~inside])
    updates = regenerate.candidate_updates(s, s.codec.sample_rate)
    shown = [u.get("visible") for u in updates[1::2]]
    assert shown == [True, True, True, False, False, False]
    assert "Drew 3 versions" in view.status


def test_keep_applies_one_undoable_step(rsession):
    s = rsession
    s, _ = regenerate.draw(s, 1.0, 0.9, 5, 2)
    chosen = s.candidates.results[1].grid.codes
    s, view = regenerate.keep(s, 1)
    assert s.history.position == 1 and np.array_equal(s.grid.codes, chosen)
    assert s.candidates is None and "regenerate" in view.history
    s, _ = handlers.undo(s)
    assert np.array_equal(s.grid.codes, s.a.grid.codes)


def test_candidates_drawn_before_a_later_edit_are_refused(rsession):
    s = rsession
    s, _ = regenerate.draw(s, 1.0, 1.0, 0, 2)
    assert not regenerate.drop_stale(s)                         # still current: the page keeps showing them
    s, _ = handlers.edit(s, "reverse")
    with pytest.raises(gr.Error, match="changed since"):
        regenerate.keep(s, 0)


def test_stale_candidates_are_cleared_from_the_page_after_another_edit(rsession):
    s = rsession
    s, _ = regenerate.draw(s, 1.0, 1.0, 0, 2)
    s, _ = handlers.edit(s, "reverse")
    assert regenerate.drop_stale(s) and s.candidates is None   # the page then hides the versions and Keep buttons
    updates = regenerate.candidate_updates(s, s.codec.sample_rate)
    assert [u.get("visible") for u in updates[1:]] == [False] * (2 * regenerate.SLOTS)
    assert not regenerate.drop_stale(s)


def test_vary_whole_clip_at_low_strength_changes_few_cells(rsession):
    s = rsession
    s.sel_a = None
    s, _ = regenerate.draw(s, 0.2, 1.0, 1, 1, whole=True)
    changed = (s.candidates.results[0].grid.codes != s.grid.codes).mean()
    assert 0 < changed <= 0.2


def test_bad_panel_inputs_and_no_prior_give_messages(rsession, session):
    with pytest.raises(gr.Error, match="candidates must be"):
        regenerate.draw(rsession, 1.0, 1.0, 0, 9)
    with pytest.raises(gr.Error, match="fill in"):
        regenerate.draw(rsession, None, 1.0, 0, 2)
    session.sel_a = Region((1,), 0, 3, 1, 4)
    with pytest.raises(gr.Error, match="Data & Train"):
        regenerate.draw(session, 1.0, 1.0, 0, 2)   # the plain tiny model has no prior


def test_api_regenerate_writes_one_codes_file_per_candidate(prior_codec, trained, clips, tmp_path):
    codec, model = prior_codec
    from distill import load_audio

    wave, sr = load_audio(clips["low"])
    grid = codec.encode(wave, sr, search_steps=0)
    codes = tmp_path / "low.codes.json"
    grid.save(codes)
    paths = api.api_regenerate(str(model), str(codes), "Timbre+Detail@0.5-1.5", 1.0, 1.0, 4, 2)
    grids = [CodeGrid.load(p) for p in paths]
    assert [p.split("/")[-1] for p in paths] == ["low.regen.1.codes.json", "low.regen.2.codes.json"]
    assert not np.array_equal(grids[0].codes, grids[1].codes)
    assert all(np.array_equal(g.codes[0], grid.codes[0]) for g in grids)   # Structure kept exactly
    with pytest.raises(gr.Error, match="no prior"):
        api.api_regenerate(str(trained[1]), str(codes), "Timbre@0.5-1.5")
    with pytest.raises(gr.Error, match="strength"):
        api.api_regenerate(str(model), str(codes), "Timbre@0.5-1.5", 3.0)



def test_api_regenerate_keeps_every_version_for_a_long_input_name(prior_codec, clips, tmp_path):
    """A 150-character file name: the name is cut in its stem, never in `.regen.K.codes.json`, so three
    versions come back as three files (the cut used to land in the suffix: one file, the last version)."""
    codec, model = prior_codec
    from distill import load_audio

    wave, sr = load_audio(clips["low"])
    codes = tmp_path / ("kick_" + "x" * 140 + ".codes.json")
    codec.encode(wave, sr, search_steps=0).save(codes)
    paths = api.api_regenerate(str(model), str(codes), "Timbre+Detail@0.5-1.5", 1.0, 1.0, 4, 3)
    names = [p.split("/")[-1] for p in paths]
    assert len(set(paths)) == 3 and all(Path(p).is_file() for p in paths)
    assert [n[-len(".regen.1.codes.json"):] for n in names] == [f".regen.{i}.codes.json" for i in (1, 2, 3)]
    assert all(n.startswith("kick_xxx") and len(n.encode()) <= 120 for n in names)
    assert len({CodeGrid.load(p).codes.tobytes() for p in paths}) == 3   # three different versions kept

@pytest.mark.e2e
def test_regenerate_over_http(prior_codec, clips, tmp_path):
    """The named endpoint, through gradio_client against the real app."""
    from conftest import running_studio
    from gradio_client import Client

    codec, model = prior_codec
    from distill import load_audio

    wave, sr = load_audio(clips["bright"])
    codes = tmp_path / "bright.codes.json"
    codec.encode(wave, sr, search_steps=0).save(codes)
    with running_studio(model, tmp_path, 0.05) as url:
        client = Client(url, verbose=False)
        out = client.predict(handle_file(str(model)), handle_file(str(codes)), "Detail@0.2-1.0", 1.0, 1.0, 1, 3,
                             api_name="/regenerate")
        assert len(out) == 3 and all(CodeGrid.load(p).model == codec.fingerprint for p in out)


def test_the_versions_on_the_page_are_read_under_the_tabs_lock(rsession):
    """Issue 25: the page's versions were read after the event released the tab's lock, so another event of
    the tab (a Regenerate finishing, an edit dropping them) could change them halfway through the read."""
    import threading

    s = rsession
    s, _ = regenerate.draw(s, 1.0, 1.0, 0, 2)
    got: list = []
    with s.lock:                                   # another event of this tab is mid-change
        reader = threading.Thread(target=lambda: got.append(regenerate.version_updates(s, True)))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and not got       # it waits for the lock
        s.candidates = None                        # ... which the change ends by dropping the versions
    reader.join(5)
    assert [u.get("visible") for u in got[0][1:]] == [False] * (2 * regenerate.SLOTS)
    assert regenerate.version_updates(s, False) is None   # nothing stale, nothing drawn: the page is left alone
