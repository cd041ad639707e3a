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
    assert "with the latent path and its context part (regenerate is available)" in info
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
