"""CLI end to end on a tiny synthetic folder with bad files in it: train, info, encode, decode."""

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write_corpus

from distill.cli import main


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, tiny_config):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    write_corpus(data / "nested", n=5)
    (data / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x07" * 9)
    (data / "notes.wav").write_text("a text file named .wav")
    (data / "empty.wav").write_bytes(b"")
    sf.write(data / "silent.wav", np.zeros(9600, np.float32), 48000)
    cfg = {k: v for k, v in tiny_config.to_dict().items()
           if k in ("codebook_dim", "channels", "res_blocks", "batch_size", "warmup_steps")}
    (root / "tiny.json").write_text(json.dumps(cfg))
    return root, data


def test_train_reports_bad_files_and_saves_a_model(cli_model, capsys):
    root, data = cli_model
    rc = main(["train", str(data), "-o", str(root / "m.distill"), "--epochs", "20",
               "--config", str(root / "tiny.json"), "--codebook-size", "32"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    for name, why in [("corrupt.wav", "corrupt"), ("notes.wav", "corrupt"), ("empty.wav", "empty"),
                      ("silent.wav", "silent")]:
        assert any(name in line and why in line for line in err.splitlines()), (name, err)
    assert "5 files accepted" in err and "val" in err and "use S:" in err
    assert "saved" in out and (root / "m.distill").exists() and (root / "m.distill.ckpt").exists()
    assert "prior step" in err and "prior:" in out          # the prior for regenerate trains after the codec

    assert main(["info", str(root / "m.distill")]) == 0
    info = capsys.readouterr().out
    # train wires the codewords to the prior, and fits its context part
    assert "with the latent path and its context part; regenerate copies from the codes of 5 training files" in info
    assert "5 of 9 files" in info and "Structure" in info and "rejected    empty.wav" in info
    assert "16 bands x columns of 0.171 s" in info and "0: 0-185, 1: 185-404" in info  # what /BANDS means in Hz


def test_encode_decode_round_trip(cli_model, capsys):
    root, data = cli_model
    model = root / "m.distill"
    if not model.exists():
        pytest.skip("needs the model from the train test")
    clip = root / "clip.wav"
    wave = tone(1.3, sr=44100)[:-3]  # an odd length at 44.1 kHz
    sf.write(clip, wave, 44100)
    assert main(["encode", str(model), str(clip), "-o", str(root / "c.codes.json")]) == 0
    codes = json.loads((root / "c.codes.json").read_text())
    assert codes["levels"] == ["Structure", "Timbre", "Detail"] and len(codes["codes"][0]) == 16  # bands
    assert codes["num_samples"] == 62397  # resampled to the model's 48 kHz
    assert (codes["source_rate"], codes["source_samples"]) == (44100, len(wave))
    assert main(["encode", str(model), str(clip), "-o", str(root / "s.codes.json"), "--search", "3"]) == 0
    searched = json.loads((root / "s.codes.json").read_text())
    assert np.shape(searched["codes"]) == np.shape(codes["codes"]) and searched["num_samples"] == codes["num_samples"]
    assert main(["decode", str(model), str(root / "c.codes.json"), "-o", str(root / "o.wav"),
                 "--phase-from", str(clip)]) == 0
    out, sr = sf.read(root / "o.wav")
    assert sr == 44100 and len(out) == len(wave)  # back at the file's own rate, to the sample
    assert main(["decode", str(model), str(root / "c.codes.json"), "-o", str(root / "m.wav"), "--model-rate"]) == 0
    out, sr = sf.read(root / "m.wav")
    assert sr == 48000 and len(out) == codes["num_samples"]


def test_errors_are_one_line_and_exit_2(cli_model, capsys, tmp_path):
    root, data = cli_model
    (tmp_path / "x.txt").write_text("x")
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "m.distill"), "--epochs", "1"]) == 2
    assert "no usable audio files" in capsys.readouterr().err
    assert main(["info", str(data / "notes.wav")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.wav: not a Distill model" in err
    assert main(["decode", str(root / "m.distill"), str(data / "notes.wav"), "-o", str(tmp_path / "o.wav")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_a_missing_input_file_is_named_before_any_model_loads(trained, tmp_path, capsys, monkeypatch):
    """Loading a model takes seconds; a mistyped path is said at once, naming the file and what it was for."""
    from distill import Codec

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing file was noticed")

    monkeypatch.setattr(Codec, "load", no_load)
    model, out = str(trained[1]), str(tmp_path / "out")
    for argv, path, what in ((["decode", model, "gone.codes.json", "-o", out + ".wav"], "gone.codes.json", "codes"),
                             (["regenerate", model, "gone.json", "-o", out, "--region", "Timbre@0-1"], "gone.json", "codes"),
                             (["edit", model, "gone.json", "-o", out, "--set", "Timbre@0-1=1"], "gone.json", "codes"),
                             (["encode", model, "gone.wav", "-o", out], "gone.wav", "audio"),
                             (["info", "gone.distill"], "gone.distill", "model"),
                             (["decode", "gone.distill", "gone.codes.json", "-o", out], "gone.distill", "model")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{path}: no such file or folder (the {what} to read)" in err, argv
    assert not list(tmp_path.iterdir())   # nothing written


# ---------------------------------------------------------------------- DISTILL_MAX_CLIP_SECONDS
CLIP_LIMIT = "DISTILL_MAX_CLIP_SECONDS"


def _long_silence(path, seconds: float = 600, rate: int = 8000):
    """`seconds` of silence as FLAC, written a block at a time (ten minutes: 10 KB of file)."""
    block = np.zeros(1 << 20, np.float32)
    with sf.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        left = int(seconds * rate)
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    return path


@pytest.fixture
def decodes(monkeypatch):
    """Names of the files soundfile decodes samples from from now on."""
    names = []
    read, read_into = sf.SoundFile.read, sf.SoundFile.buffer_read_into

    def counting_read(self, *args, **kwargs):
        names.append(str(self.name).rsplit("/", 1)[-1])
        return read(self, *args, **kwargs)

    def counting_read_into(self, *args, **kwargs):
        names.append(str(self.name).rsplit("/", 1)[-1])
        return read_into(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    monkeypatch.setattr(sf.SoundFile, "buffer_read_into", counting_read_into)
    return names


def test_the_clip_limit_variable_refuses_long_audio_before_it_is_decoded(trained, tmp_path, capsys, monkeypatch,
                                                                          decodes):
    """No limit by default (a local CLI); with DISTILL_MAX_CLIP_SECONDS set, encode refuses a longer file from its
    header, before the model loads, naming the file, the limit and the variable."""
    from distill import Codec

    model = str(trained[1])
    long = _long_silence(tmp_path / "long.flac")
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(2.0), 48000)
    monkeypatch.delenv(CLIP_LIMIT, raising=False)
    assert main(["encode", model, str(clip), "-o", str(tmp_path / "c.codes.json")]) == 0   # no limit by default
    capsys.readouterr()
    monkeypatch.setenv(CLIP_LIMIT, "60")
    real_load = Codec.load
    monkeypatch.setattr(Codec, "load", lambda *a, **k: pytest.fail("the model loaded before the refusal"))
    decodes.clear()
    assert main(["encode", model, str(long), "-o", str(tmp_path / "l.codes.json")]) == 2
    err = capsys.readouterr().err
    assert err == ("distill: error: long.flac: 600 s long, over the limit of 60 s (set by DISTILL_MAX_CLIP_SECONDS)"
                   "\n"), err
    assert "long.flac" not in decodes and not (tmp_path / "l.codes.json").exists()
    monkeypatch.setattr(Codec, "load", real_load)
    monkeypatch.setenv(CLIP_LIMIT, "1")
    assert main(["encode", model, str(clip), "-o", str(tmp_path / "d.codes.json")]) == 2
    assert "clip.wav: 2 s long, over the limit of 1 s (set by DISTILL_MAX_CLIP_SECONDS)" in capsys.readouterr().err


def test_decode_keeps_the_clip_limit_for_its_audio_and_its_codes(trained, tmp_path, capsys, monkeypatch, decodes):
    model = str(trained[1])
    long = _long_silence(tmp_path / "long.flac")
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(2.0), 48000)
    codes = tmp_path / "clip.codes.json"
    monkeypatch.delenv(CLIP_LIMIT, raising=False)
    assert main(["encode", model, str(clip), "-o", str(codes)]) == 0
    capsys.readouterr()
    monkeypatch.setenv(CLIP_LIMIT, "60")
    out = str(tmp_path / "o.wav")
    decodes.clear()
    for extra in (["--phase-from", str(long)], ["--source", str(long)], ["--source", str(clip), "--donor", str(long)]):
        assert main(["decode", model, str(codes), "-o", out, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert "long.flac: 600 s long, over the limit of 60 s (set by DISTILL_MAX_CLIP_SECONDS)" in err, (extra, err)
    assert "long.flac" not in decodes
    monkeypatch.setenv(CLIP_LIMIT, "1")   # the codes of a 2 s clip are refused as its audio would be
    for argv in (["decode", model, str(codes), "-o", out],
                 ["edit", model, str(codes), "-o", str(tmp_path / "e.codes.json"), "--reverse", "Structure@0-1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "clip.codes.json: 2 s long, over the limit of 1 s (set by DISTILL_MAX_CLIP_SECONDS)" in err, err
    assert not (tmp_path / "o.wav").exists()


def test_train_and_prior_skip_files_over_the_clip_limit(trained, tmp_path, capsys, monkeypatch, decodes):
    data = tmp_path / "data"
    data.mkdir()
    _long_silence(data / "long.flac")
    monkeypatch.setenv(CLIP_LIMIT, "60")
    decodes.clear()
    for argv in (["train", str(data), "-o", str(tmp_path / "m.distill"), "--epochs", "1"],
                 ["prior", str(trained[1]), str(data), "-o", str(tmp_path / "p.distill")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert ("skipped long.flac: rejected: 600 s long, over the limit of 60 s (set by DISTILL_MAX_CLIP_SECONDS)"
                in err), err
        assert "no usable audio files" in err
    assert "long.flac" not in decodes


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan"])
def test_a_clip_limit_that_is_not_a_length_is_said(trained, tmp_path, capsys, monkeypatch, value):
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0), 48000)
    monkeypatch.setenv(CLIP_LIMIT, value)
    assert main(["encode", str(trained[1]), str(clip), "-o", str(tmp_path / "c.codes.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"DISTILL_MAX_CLIP_SECONDS={value!r}" in err and "seconds" in err, err
