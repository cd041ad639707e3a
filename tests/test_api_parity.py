"""Issue 25, "the API should do what the CLI does": /decode with the source audio renders surgically as
`distill decode --source` does (the same samples, the recording kept bit for bit outside the edits), and
/edit and /regenerate continue a history document instead of dropping it."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from distill import Clip, Codec, CodeGrid, EditHistory, EditSession, load_source
from distill.cli import main
from distill.edits import HISTORY_FORMAT
from distill.fileio import pcm16
from distill_studio import api
from distill_studio.state import Limits

RATE = 44100          # not the model's 48 kHz
SECONDS = 4.0
EDIT = "set Timbre@1.7-2.0=3"
KEPT = (slice(0, int(1.0 * RATE)), slice(int(3.0 * RATE), None))   # far outside the edit's reach


@pytest.fixture(scope="module")
def stereo(trained, tmp_path_factory):
    """A 4 s 44.1 kHz stereo 16-bit WAV, its codes from /encode and those codes edited by /edit."""
    folder = tmp_path_factory.mktemp("parity")
    left = tone(SECONDS, 220.0, sr=RATE, decay=0.3, seed=3)
    right = tone(SECONDS, 330.0, sr=RATE, decay=0.5, seed=4)
    wav = folder / "take.wav"
    sf.write(wav, np.stack([left, right], axis=1), RATE, subtype="PCM_16")
    model = str(trained[1])
    codes = api.api_encode(model, str(wav))
    edited = api.api_edit(model, codes, EDIT)
    return {"model": model, "wav": str(wav), "codes": codes, "edited": edited, "dir": folder}


def _cli_decode(files: dict, codes: str, out: Path, *extra: str) -> np.ndarray:
    assert main(["decode", files["model"], codes, "-o", str(out), "--source", files["wav"], *extra]) == 0
    data, rate = sf.read(out, dtype="int16")
    assert rate == RATE
    return data


def test_decode_with_the_source_is_what_the_cli_writes_and_keeps_the_recording(stereo, tmp_path):
    recording = pcm16(load_source(stereo["wav"]).samples)   # the file's own samples (mono mix), as 16-bit
    rate, wave = api.api_decode(stereo["model"], stereo["edited"], source_audio=stereo["wav"])
    cli = _cli_decode(stereo, stereo["edited"], tmp_path / "cli.wav")
    assert rate == RATE and wave.dtype == np.int16 and len(wave) == len(recording) == int(SECONDS * RATE)
    assert np.array_equal(wave, cli)
    for kept in KEPT:
        assert np.array_equal(wave[kept], recording[kept])
    assert np.any(wave != recording)                       # the edit itself is rendered
    rate, wave = api.api_decode(stereo["model"], stereo["edited"], source_audio=stereo["wav"], detail=0.0)
    assert np.array_equal(wave, _cli_decode(stereo, stereo["edited"], tmp_path / "d0.wav", "--detail", "0"))
    rate, wave = api.api_decode(stereo["model"], stereo["codes"], source_audio=stereo["wav"])
    assert np.array_equal(wave, recording)                 # unedited codes: the recording, bit for bit


def test_decode_refuses_a_source_the_codes_were_not_encoded_from(stereo, tmp_path):
    other = tmp_path / "other.wav"
    sf.write(other, tone(SECONDS, 700.0, sr=RATE, seed=9), RATE, subtype="PCM_16")   # same length, other audio
    name = Path(stereo["edited"]).name.replace(".", r"\.")
    with pytest.raises(gr.Error, match=rf"other\.wav is not the audio {name} was encoded from .*source_audio"):
        api.api_decode(stereo["model"], stereo["edited"], source_audio=str(other))
    with pytest.raises(gr.Error, match="detail .*source_audio"):
        api.api_decode(stereo["model"], stereo["edited"], detail=0.5)   # as `distill decode --detail` alone


def test_a_source_over_the_clip_limit_is_refused_before_it_is_read(stereo, tmp_path, monkeypatch):
    from distill import audio

    short = tmp_path / "short.wav"
    sf.write(short, tone(1.0, 330.0, sr=RATE), RATE)
    codes = api.api_encode(stereo["model"], str(short))        # 1 s of codes: within a 2 s limit
    read = []   # every way soundfile decodes samples: none may run for the refused file
    for owner, fn in ((audio.sf, "read"), (audio.sf.SoundFile, "read"), (audio.sf.SoundFile, "buffer_read_into")):
        real = getattr(owner, fn)
        monkeypatch.setattr(owner, fn, lambda *a, _real=real, _fn=fn, **k: read.append(_fn) or _real(*a, **k))
    with pytest.raises(gr.Error, match=r"take\.wav: 4 s long, over the limit of 2 s .*DISTILL_MAX_CLIP_SECONDS"):
        api.api_decode(stereo["model"], codes, None, Limits(max_clip_seconds=2), source_audio=stereo["wav"])
    assert read == []


def _history(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_edit_continues_a_history_and_each_step_can_be_undone(stereo, trained, tmp_path):
    model = stereo["model"]
    codec = Codec.load(model)
    start = tmp_path / "take.history.json"   # what `distill edit --history` writes
    assert main(["edit", model, stereo["codes"], "-o", str(tmp_path / "take.edited.codes.json"),
                 "--history", str(start), "--copy", "Timbre@0.2-0.5", "--to", "2.5"]) == 0
    first = api.api_edit(model, str(start), "reverse Detail@1.0-1.5")
    second = api.api_edit(model, first, "set Structure@3.0-3.5=1")
    assert Path(first).name == "take.edited.history.json" and Path(second).name == "take.edited.edited.history.json"
    for path, steps in ((first, 2), (second, 3)):
        assert _history(path)["format"] == HISTORY_FORMAT and len(_history(path)["steps"]) == steps
    after_first = EditHistory.from_json(Path(first).read_text(), codec.fingerprint).current
    history = EditHistory.from_json(Path(second).read_text(), codec.fingerprint)
    assert history.position == 3 and len(history.labels) == 3
    assert history.undo() == after_first                      # undo of the last step: the first /edit's result
    assert history.undo() == CodeGrid.load(tmp_path / "take.edited.codes.json")   # then the CLI's step
    assert len(history.active_donors()) == 1                  # the CLI step's donor record came through
    # a plain codes file in: a codes file out, as before
    assert "format" not in _history(stereo["edited"]) or _history(stereo["edited"])["format"] != HISTORY_FORMAT
    assert CodeGrid.load(stereo["edited"]).knows_original


def test_decode_of_a_history_with_its_source_is_the_studios_export(stereo, tmp_path):
    """encode -> edit (a copy within the clip: a donor record) -> decode with the source, through the API,
    gives the samples the studio's export writes for that history."""
    model = stereo["model"]
    codec = Codec.load(model)
    source = load_source(stereo["wav"])
    session = EditSession(codec, Clip("take.wav", CodeGrid.load(stereo["codes"]), None))
    history = tmp_path / "take.history.json"
    history.write_text(session.to_json())
    continued = api.api_edit(model, str(history), "copy Timbre+Detail@0.2-0.6 --to 2.4")
    rate, wave = api.api_decode(model, continued, source_audio=stereo["wav"])
    studio, _ = EditSession.from_document(codec, Path(continued).read_text(), "take", [source])
    assert len(studio.donors()) >= 1
    expected, expected_rate = studio.export_audio()
    assert rate == expected_rate == RATE and np.array_equal(wave, pcm16(expected))
    plain_rate, plain = api.api_decode(model, continued)     # without audio: the history's current grid, plainly
    assert plain_rate == RATE and len(plain) == len(wave)


def test_regenerate_continues_a_history_in_every_candidate(prior_codec, stereo, tmp_path):
    codec, model = prior_codec
    start = tmp_path / "take.history.json"
    start.write_text(EditSession(codec, Clip("take", CodeGrid.load(stereo["codes"]), None)).to_json())
    one = api.api_edit(str(model), str(start), "reverse Detail@1.0-1.5")
    paths = api.api_regenerate(str(model), one, "Timbre+Detail@2.0-3.0", 1.0, 1.0, 4, 2)
    assert [Path(p).name for p in paths] == ["take.edited.regen.1.history.json", "take.edited.regen.2.history.json"]
    before = EditHistory.from_json(Path(one).read_text(), codec.fingerprint).current
    for p in paths:
        history = EditHistory.from_json(Path(p).read_text(), codec.fingerprint)
        assert history.position == 2 and history.undo() == before
