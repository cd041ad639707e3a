"""Edits do exactly what they say (issue 12): one regression test per fault, through the CLI, the API and the studio."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from conftest import SR, tone

from distill import Codec, CodeGrid, EditSession, SourceAudio, clip_from_source
from distill.cli import main
from distill.edits import EditError, EditHistory, Region, apply_operation, column_of
from distill.render import donor_from_seconds, render_edit
from distill_studio import api, handlers
from distill_studio.state import Limits


def _write(path: Path, wave: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> str:
    sf.write(path, wave, sr, subtype=subtype)
    return str(path)


@pytest.fixture(scope="module")
def work(trained, tmp_path_factory):
    """Model path, two clips written by `distill encode`, and the tiny codec."""
    folder = tmp_path_factory.mktemp("integrity")
    model = str(trained[1])
    out = {"model": model, "dir": folder}
    for name, secs, freq in (("A", 3.0, 220.0), ("B", 2.0, 330.0)):
        wav = _write(folder / f"{name}.wav", tone(secs, freq, seed=int(freq)))
        assert main(["encode", model, wav, "-o", str(folder / f"{name}.codes.json")]) == 0
        out[name], out[name + "_wav"] = str(folder / f"{name}.codes.json"), wav
    return out


# ---------------------------------------------------------------------- fault 1: a region's levels are a set
def test_swap_lines_up_levels_whatever_order_they_are_written_in(codec, work, tmp_path):
    grid = CodeGrid.load(work["A"])
    mixed = apply_operation(codec, grid, "swap Timbre+Structure@0-0.5 Structure+Timbre@1.0-1.5")
    plain = apply_operation(codec, grid, "swap Structure+Timbre@0-0.5 Structure+Timbre@1.0-1.5")
    assert mixed.grid == plain.grid
    a, b = Region.from_seconds(grid, ("Structure",), 0, 0.5), Region.from_seconds(grid, ("Structure",), 1.0, 1.5)
    b = Region(b.levels, b.r0, b.r1, b.c0, b.c0 + a.num_columns - 1)   # equal durations take the first's width
    assert np.array_equal(mixed.grid.codes[a.index()], grid.codes[b.index()])  # Structure went to Structure
    out = str(tmp_path / "o.codes.json")
    assert main(["edit", work["model"], work["A"], "-o", out, "--swap", "Timbre+Structure@0-0.5",
                 "Structure+Timbre@1.0-1.5"]) == 0
    assert CodeGrid.load(out) == plain.grid
    assert Region((2, 0), 0, 1, 0, 1).levels == (0, 2)


# ---------------------------------------------------------------------- fault 2: one rule for seconds -> columns
def test_paste_and_its_donor_land_on_the_same_column(codec, work):
    a, b = CodeGrid.load(work["A"]), CodeGrid.load(work["B"])
    for to in (1.0, 0.95, 1.1, 0.5):
        result = apply_operation(codec, a, f"copy B:Structure@0.0-0.5 --to {to}", other=b)
        donor = donor_from_seconds(codec, np.zeros(b.num_samples, np.float32), 0.0, 0.5, to)
        assert (donor.dst_c0, donor.src_c0, donor.n_cols) == (result.region.c0, 0, result.region.num_columns)
        assert result.region.c0 == column_of(to, a.seconds_per_column)
    # a shift by a distance rounds to the nearest whole column, both ways
    spc = a.seconds_per_column
    for by, n in ((0.5, 3), (-0.5, -3), (spc * 1.4, 1)):
        r = apply_operation(codec, a, f"shift Timbre@1.0-1.5 --by {by}")
        assert r.region.num_columns == Region.from_seconds(a, "Timbre", 1.0, 1.5).num_columns + abs(n)


# ---------------------------------------------------------------------- fault 3: imports are matched by hash
def test_imported_codes_never_borrow_another_clips_audio(codec, tmp_path):
    low, high = tone(2.0, 110.0, seed=1), tone(2.0, 880.0, seed=2)   # same length, different sounds
    clips = {"low": _write(tmp_path / "low.wav", low), "high": _write(tmp_path / "high.wav", high)}
    s, _ = handlers.start(codec, "tiny", None, {"low": clips["low"]}, Limits(), "low")
    high_codes = tmp_path / "high.codes.json"
    codec.encode(*sf.read(clips["high"], dtype="float32"), search_steps=0).save(high_codes)
    s, view = handlers.import_codes(s, str(high_codes), Limits())
    assert not s.a.has_audio and "no source audio" in view.status  # not low's audio, though the length matches
    assert s.rendered.mode == "plain" and "no source audio" in s.rendered.note
    s.clips["high"] = clips["high"]
    s, view = handlers.import_codes(s, str(high_codes), Limits())
    assert s.a.has_audio and np.array_equal(s.a.source.samples, sf.read(clips["high"], dtype="float32")[0])
    assert "audio from high" in view.status


# ---------------------------------------------------------------------- fault 4: donors follow the cells
def test_a_donor_stops_where_later_edits_overwrite_its_cells(codec, work):
    a = clip_from_source(codec, SourceAudio("A", sf.read(work["A_wav"], dtype="float32")[0], SR), search_steps=0)
    b = clip_from_source(codec, SourceAudio("B", sf.read(work["B_wav"], dtype="float32")[0], SR), search_steps=0)
    s = EditSession(codec, a, b)
    s.apply("copy B:Timbre@0.0-0.7 --to 1.0")
    copied = s.history.active_donors()[0].cells
    assert copied.any() and len(s.donors()) == 1
    spare = next(k for k in range(codec.codebook_size) if k not in s.current.codes[1][copied])
    s.apply(f"set Timbre+Structure@0.5-2.9={spare}")   # overwrites every copied cell
    assert s.history.active_donors() == [] and s.donors() == ()
    stale_free = render_edit(codec, s.current, a.wave, s.original, donors=())
    np.testing.assert_array_equal(s.render().wave, stale_free)
    s.undo()
    assert len(s.donors()) == 1 and np.array_equal(s.history.active_donors()[0].cells, copied)
    s.redo()
    assert s.donors() == ()
    s.undo()
    s.apply("set Detail@1.0-1.2=1")                    # another level: the Timbre donor still holds its codes
    assert len(s.history.active_donors()) == 1


def test_donors_of_another_clip_b_are_not_applied(codec, work):
    a = clip_from_source(codec, SourceAudio("A", sf.read(work["A_wav"], dtype="float32")[0], SR), search_steps=0)
    b = clip_from_source(codec, SourceAudio("B", sf.read(work["B_wav"], dtype="float32")[0], SR), search_steps=0)
    c = clip_from_source(codec, SourceAudio("C", tone(2.0, 600.0, seed=9), SR), search_steps=0)
    s = EditSession(codec, a, b)
    s.apply("copy B:Timbre@0.0-0.7 --to 1.0")
    assert len(s.donors()) == 1
    s.set_partner(c)
    assert s.donors() == ()


# ---------------------------------------------------------------------- fault 5: unedited cells are known
def test_surgical_decode_never_re_encodes_to_guess(work, tmp_path):
    wav = work["A_wav"]
    codes = str(tmp_path / "fast.codes.json")
    assert main(["encode", work["model"], wav, "-o", codes, "--search", "0"]) == 0
    out = str(tmp_path / "back.wav")
    assert main(["decode", work["model"], codes, "-o", out, "--source", wav]) == 0
    assert np.array_equal(sf.read(out, dtype="int16")[0], sf.read(wav, dtype="int16")[0])
    edited = str(tmp_path / "edited.codes.json")
    assert main(["edit", work["model"], codes, "-o", edited, "--set", "Timbre@1.0-1.3=2"]) == 0
    grid = CodeGrid.load(edited)
    assert np.array_equal(grid.original, CodeGrid.load(codes).codes)   # the edited file keeps its original
    assert json.loads(Path(codes).read_text())["encoder"] == {"search_steps": 0}


def test_decode_source_refuses_audio_the_codes_did_not_come_from(work, tmp_path, capsys):
    other = _write(tmp_path / "other.wav", tone(3.0, 700.0, seed=4))   # same length as A
    rc = main(["decode", work["model"], work["A"], "-o", str(tmp_path / "x.wav"), "--source", other])
    err = capsys.readouterr().err
    assert rc == 2 and "other.wav is not the audio A.codes.json was encoded from" in err


def test_legacy_codes_without_provenance_still_decode_with_a_warning(work, tmp_path, capsys):
    d = json.loads(Path(work["A"]).read_text())
    for key in ("encoder", "source_sha256", "original"):
        d.pop(key, None)
    legacy = tmp_path / "legacy.codes.json"
    legacy.write_text(json.dumps(d))
    assert CodeGrid.load(legacy).knows_original is False
    assert main(["decode", work["model"], str(legacy), "-o", str(tmp_path / "l.wav"), "--source", work["A_wav"]]) == 0
    assert "does not record its original codes" in capsys.readouterr().err


# ---------------------------------------------------------------------- fault 6: no silent fallbacks
def test_a_render_failure_is_said_and_logged(codec, work, monkeypatch, caplog):
    a = clip_from_source(codec, SourceAudio("A", sf.read(work["A_wav"], dtype="float32")[0], SR), search_steps=0)
    s = EditSession(codec, a)
    s.apply("set Timbre@1.0-1.3=2")

    def broken(*args, **kwargs):
        raise ValueError("the render exploded")

    monkeypatch.setattr("distill.session.render_edit", broken)
    with caplog.at_level(logging.WARNING, logger="distill.session"):
        r = s.render()
    assert r.mode == "plain" and "the render exploded" in r.note and "the render exploded" in caplog.text


def test_versions_previewed_together_sound_as_each_alone_and_say_why_when_they_fall_back(codec, work, monkeypatch):
    a = clip_from_source(codec, SourceAudio("A", sf.read(work["A_wav"], dtype="float32")[0], SR), search_steps=0)
    s = EditSession(codec, a)
    s.apply("set Detail@0.2-0.4=5")
    before = (s.history.to_json(), s.current)
    results = [apply_operation(codec, s.current, f"set Timbre@1.0-1.3={v}") for v in (2, 9, 17)]
    span = (1000, a.grid.num_samples - 1000)
    together = s.preview_many(results, span=span)
    for r, t in zip(results, together, strict=True):
        alone = s.preview(r, span=span)
        assert t.mode == "surgical" and t.start == alone.start == 1000
        np.testing.assert_allclose(t.wave, alone.wave, atol=1e-6)
    assert not np.allclose(together[0].wave, together[1].wave, atol=1e-4)
    assert (s.history.to_json(), s.current) == before   # previews never touch the history

    def broken(*args, **kwargs):
        raise ValueError("the render exploded")

    monkeypatch.setattr("distill.session.render_edits", broken)
    monkeypatch.setattr("distill.session.render_edit", broken)
    fallen = s.preview_many(results, span=span)
    assert [r.mode for r in fallen] == ["plain"] * 3 and all("the render exploded" in r.note for r in fallen)


def test_studio_status_names_a_demo_clip_that_failed(codec, tmp_path):
    good = _write(tmp_path / "good.wav", tone(1.0, 220.0))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00not a wave")
    s, view = handlers.start(codec, "tiny", None, {"good": good, "bad": str(bad)}, Limits(), "good", "bad")
    assert s.a is not None and s.b is None
    assert "bad could not be opened" in view.status and "bad.wav" in view.status


def test_studio_status_shows_a_render_fallback(codec, work, monkeypatch):
    s, _ = handlers.start(codec, "tiny", None, {"A": work["A_wav"], "B": work["B_wav"]}, Limits(), "A", "B")
    monkeypatch.setattr("distill.session.render_edit", lambda *a, **k: (_ for _ in ()).throw(ValueError("boom")))
    s, view = handlers.run_operation(s, "set Timbre@1.0-1.3=2")
    assert "plain decode" in view.status and "boom" in view.status


# ---------------------------------------------------------------------- fault 8: untouched audio at its own rate
@pytest.mark.parametrize("rate,channels", [(22050, 1), (44100, 2)])
def test_untouched_audio_is_the_files_own_samples(work, tmp_path, rate, channels):
    wave = tone(3.0, 220.0, sr=rate, noise=0.05, seed=3)
    if channels == 2:
        wave = np.stack([wave, 0.5 * tone(3.0, 330.0, sr=rate, seed=5)], axis=1)
    src = _write(tmp_path / f"src{rate}.wav", wave, rate)
    codes, edited, out = (str(tmp_path / n) for n in ("s.codes.json", "s.edited.codes.json", "s.out.wav"))
    assert main(["encode", work["model"], src, "-o", codes, "--search", "0"]) == 0
    assert main(["edit", work["model"], codes, "-o", edited, "--set", "Timbre@1.2-1.6=2"]) == 0
    assert main(["decode", work["model"], edited, "-o", out, "--source", src]) == 0
    got, got_rate = sf.read(out, dtype="float64")
    ref = sf.read(src, dtype="float32")[0]
    mono = ref.mean(axis=1) if ref.ndim == 2 else ref
    expect = np.clip(np.round(mono.astype(np.float64) * 32768), -32768, 32767) / 32768
    assert got_rate == rate and len(got) == len(mono)
    differs = np.flatnonzero(got != expect)
    assert differs.size  # the edit is heard
    lo, hi = differs[0] / rate, differs[-1] / rate
    assert 1.0 < lo and hi < 2.0                 # ... and only around 1.2-1.6 s (plus its crossfade)
    assert np.array_equal(got[:int(1.0 * rate)], expect[:int(1.0 * rate)])


def test_studio_export_keeps_the_files_rate_and_samples(codec, tmp_path):
    rate = 22050
    src = _write(tmp_path / "loop.wav", tone(2.5, 220.0, sr=rate, noise=0.05), rate)
    s, _ = handlers.start(codec, "tiny", None, {"loop": src}, Limits(), "loop")
    s, _ = handlers.run_operation(s, "set Timbre@1.0-1.4=2")
    s, files, view = handlers.export(s)
    got, got_rate = sf.read(files[0], dtype="int16")
    ref = sf.read(src, dtype="int16")[0]
    assert got_rate == rate and len(got) == len(ref) and f"{rate} Hz" in view.status
    assert np.array_equal(got[:int(0.6 * rate)], ref[:int(0.6 * rate)])   # the edit is 0.85-1.54 s
    assert np.array_equal(got[int(1.8 * rate):], ref[int(1.8 * rate):])
    assert not np.array_equal(got, ref)


# ---------------------------------------------------------------------- one operation, three front doors
def test_cli_api_and_studio_give_the_same_codes(codec, work, tmp_path):
    op = "swap Timbre@0.0-0.6 B:Timbre@0.5-1.1"
    cli_out = str(tmp_path / "cli.codes.json")
    assert main(["edit", work["model"], work["A"], "-o", cli_out, "--swap", "Timbre@0.0-0.6",
                 f"{work['B']}:Timbre@0.5-1.1"]) == 0
    api_out = api.api_edit(work["model"], work["A"], op, work["B"])
    s, _ = handlers.start(codec, "tiny", None, {}, Limits())
    s, _ = handlers.import_codes(s, work["A"], Limits())
    s.b = EditSession.from_document(codec, Path(work["B"]).read_text(), "B")[0].clip
    s.edit.set_partner(s.b)
    s, _ = handlers.run_operation(s, op)
    cli, via_api = CodeGrid.load(cli_out), CodeGrid.load(api_out)
    assert cli == via_api == s.grid
    assert np.array_equal(cli.original, via_api.original)


# ---------------------------------------------------------------------- history documents
def test_a_history_that_does_not_replay_is_refused(codec, work):
    grid = CodeGrid.load(work["A"])
    h = EditHistory(grid)
    h.push(apply_operation(codec, grid, "set Timbre@0-0.5=1"))
    h.push(apply_operation(codec, h.current, "reverse Detail@0-1"))
    d = json.loads(h.to_json())
    assert EditHistory.from_json(json.dumps(d), codec.fingerprint).current == h.current
    d["steps"][0]["after"] = [(v + 1) % codec.codebook_size for v in d["steps"][0]["after"]]
    with pytest.raises(EditError, match="does not replay"):
        EditHistory.from_json(json.dumps(d), codec.fingerprint)
    s, _ = handlers.start(codec, "tiny", None, {}, Limits())
    bad = Path(work["dir"]) / "bad.history.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(gr.Error, match="does not replay"):
        handlers.import_codes(s, str(bad), Limits())


def test_history_keeps_replaying_after_its_oldest_steps_are_dropped(codec, work):
    grid = CodeGrid.load(work["A"])
    h = EditHistory(grid, limit=200)
    for i in range(205):
        h.push(apply_operation(codec, h.current, f"set Detail@0-0.2={i % codec.codebook_size}"))
    back = EditHistory.from_json(h.to_json(), codec.fingerprint)
    assert back.current == h.current and back.original == grid and len(back.labels) == 200


def test_codec_has_no_render_shortcut():
    assert not hasattr(Codec, "render")  # Codec does not forward to render (no import cycle)


def test_a_session_renders_a_span_as_the_whole_render_has_it(codec, tmp_path):
    """The studio plays one place of a long clip: that span, in either mode, is the whole render's samples
    there (donors included), and export still writes the whole clip."""
    a = clip_from_source(codec, SourceAudio("a", tone(8.0, 220, seed=1), SR))
    b = clip_from_source(codec, SourceAudio("b", tone(4.0, 330, seed=2), SR))
    s = EditSession(codec, a, partner=b)
    s.apply("copy B:Timbre@0.5-1.0 --to 6.0")
    s.apply("set Structure@1.0-1.5=7")
    n = s.current.num_samples
    for mode in ("surgical", "plain"):
        whole = s.render(mode)
        for span in [(0, 4000), (20_000, 60_000), (60_000, n)]:
            part = s.render(mode, span=span)
            assert part.mode == mode and part.start == span[0] and part.stop == span[1]
            assert not part.covers(n)
            np.testing.assert_allclose(part.wave, whole.wave[span[0]:span[1]], atol=1e-4)
        assert whole.covers(n)
    wave, rate = s.export_audio(s.render(span=(0, 4000)))  # a span never becomes the export
    assert len(wave) == len(a.source.samples) and rate == SR
    np.testing.assert_array_equal(wave, s.export_audio()[0])
