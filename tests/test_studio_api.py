"""The studio's named endpoints driven with gradio_client against a launched app: train, encode, edit (swap), decode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import running_studio
from gradio_client import Client, handle_file

from distill import CodeGrid


@pytest.fixture(scope="module")
def client(trained, corpus_dir):
    with running_studio(trained[1], corpus_dir, max_train_minutes=0.1) as address:
        yield Client(address, verbose=False)


def test_api_lists_the_four_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/train", "/encode", "/edit", "/decode"} <= names


def test_train_encode_swap_decode(client, corpus_dir, tmp_path):
    files = [handle_file(str(p)) for p in sorted(corpus_dir.iterdir())]
    model, summary = client.predict(files, 5.0, api_name="/train")   # 5 min asked, capped at 0.1 by the limits
    assert Path(model).is_file() and "trained" in summary and "fingerprint" in summary
    assert summary.startswith("Training budget capped at 0.1 minutes (5 asked for)")
    audio_a, audio_b = corpus_dir / "clip4.wav", corpus_dir / "clip3.wav"
    codes_a = client.predict(handle_file(model), handle_file(str(audio_a)), api_name="/encode")
    codes_b = client.predict(handle_file(model), handle_file(str(audio_b)), api_name="/encode")
    a, b = CodeGrid.load(codes_a), CodeGrid.load(codes_b)
    info = sf.info(audio_a)
    assert a.num_levels == 3 and abs(a.duration_s - info.frames / info.samplerate) < 0.01
    edited_path = client.predict(handle_file(model), handle_file(codes_a), "swap Timbre@0.0-0.3 B:Timbre@0.0-0.3",
                                 handle_file(codes_b), api_name="/edit")
    edited = CodeGrid.load(edited_path)
    assert np.array_equal(edited.codes[1, :, 0:2], b.codes[1, :, 0:2])
    assert np.array_equal(edited.codes[0], a.codes[0])
    wav = client.predict(handle_file(model), handle_file(edited_path), handle_file(str(audio_a)), api_name="/decode")
    data, sr = sf.read(wav)
    assert sr == info.samplerate and len(data) == info.frames and np.abs(data).max() > 0  # A's own rate and length


def test_bad_input_gives_a_message(client, trained, corpus_dir, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"format": "something-else"}))
    model = str(trained[1])
    with pytest.raises(Exception, match="not a Distill codes file"):
        client.predict(handle_file(model), handle_file(str(junk)), "reverse Timbre@0-0.2", None, api_name="/edit")
    with pytest.raises(Exception, match="not a Distill model"):
        client.predict(handle_file(str(junk)), handle_file(str(corpus_dir / "clip0.wav")), api_name="/encode")


def test_train_says_when_it_capped_the_budget_and_how_to_change_the_cap(corpus_dir):
    """/train with more minutes than DISTILL_MAX_TRAIN_MINUTES trains for the cap and its summary says so;
    within the cap, no such line."""
    from distill_studio import api
    from distill_studio.state import Limits

    limits = Limits(preset="tiny", max_train_minutes=0.005)
    files = [str(p) for p in sorted(corpus_dir.iterdir())][:3]
    model, summary = api.api_train(files, 2.0, limits)
    first = summary.splitlines()[0]
    assert Path(model).is_file()
    assert "capped at 0.005 minutes" in first and "2 asked for" in first and "DISTILL_MAX_TRAIN_MINUTES" in first
    _, summary = api.api_train(files, 0.002, limits)
    assert "capped" not in summary and summary.startswith("trained")


def test_the_api_loads_each_model_file_once(trained, tmp_path, monkeypatch):
    """Every call uploads the model: the same file (same path, size, mtime) is loaded once, a changed one again."""
    import shutil

    from distill import Codec
    from distill_studio import api

    loads = []
    real = Codec.load.__func__
    monkeypatch.setattr(Codec, "load", classmethod(lambda cls, path, *a, **k: loads.append(path) or real(cls, path, *a, **k)))
    model = tmp_path / "m.distill"
    shutil.copy(trained[1], model)
    first = api._codec(str(model))
    assert api._codec(str(model)) is first and len(loads) == 1
    shutil.copy(trained[1], tmp_path / "tmp.distill")
    os.replace(tmp_path / "tmp.distill", model)          # a new version of the file at the same path
    os.utime(model, ns=(1, 1))
    assert api._codec(str(model)) is not first and len(loads) == 2


def test_the_endpoints_refuse_an_hour_long_upload_at_once(client, trained, tmp_path):
    """Issue 25.2: /encode accepted a two-hour FLAC (3.1 MB) and spent 341 s and 5.5 GB on it. Through the launched
    app the header check answers within seconds, naming the limit; the endpoints keep their parameter names."""
    import time

    from test_length_limits import write_silence

    hour = write_silence(tmp_path / "hour.flac", 3600, 24000, format="FLAC", subtype="PCM_16")
    t0 = time.perf_counter()
    with pytest.raises(Exception, match=r"hour\.flac: 3600 s long, over the limit of 1800 s .*DISTILL_MAX_CLIP_SECONDS"):
        client.predict(model_file=handle_file(str(trained[1])), audio_file=handle_file(str(hour)), api_name="/encode")
    assert time.perf_counter() - t0 < 10
    params = {e: [p["parameter_name"] for p in v["parameters"]]
              for e, v in client.view_api(print_info=False, return_format="dict")["named_endpoints"].items()}
    assert params["/encode"] == ["model_file", "audio_file"]
    assert params["/decode"] == ["model_file", "codes_file", "phase_audio", "source_audio", "detail"]
    assert params["/edit"] == ["model_file", "codes_file", "operation", "other_codes_file"]


def test_decode_with_the_source_through_the_launched_app(client, trained, corpus_dir):
    """Issue 25: /decode's source_audio (a 44.1 kHz stereo clip) comes back through gradio as the API function
    gives it: the file's own rate and length, the same 16-bit samples."""
    from distill_studio import api

    model, audio = str(trained[1]), str(corpus_dir / "clip3.wav")
    codes = client.predict(handle_file(model), handle_file(audio), api_name="/encode")
    edited = client.predict(handle_file(model), handle_file(codes), "set Timbre@0.5-0.7=2", None, api_name="/edit")
    wav = client.predict(model_file=handle_file(model), codes_file=handle_file(edited), phase_audio=None,
                         source_audio=handle_file(audio), detail=None, api_name="/decode")
    data, sr = sf.read(wav, dtype="int16")
    rate, expected = api.api_decode(model, edited, source_audio=audio)
    assert sr == rate == sf.info(audio).samplerate and np.array_equal(data, expected)
