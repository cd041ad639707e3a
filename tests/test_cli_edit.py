"""`distill edit` end to end: encode synthetic clips, chain edits in command-line order, decode, refuse bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, tone

from distill import Codec, CodeGrid
from distill.cli import main
from distill.edits import EditHistory, apply_operation


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    """Model path and two encoded clips (A: 3 s, B: 2 s) written by `distill encode`."""
    folder = tmp_path_factory.mktemp("cli_edit")
    model = str(trained[1])
    out = {"model": model}
    for name, secs, freq in (("A", 3.0, 220.0), ("B", 2.0, 330.0)):
        wav = folder / f"{name}.wav"
        sf.write(wav, tone(secs, freq, seed=len(name) + int(freq)), SR)
        assert main(["encode", model, str(wav), "-o", str(folder / f"{name}.codes.json")]) == 0
        out[name], out[name + "_wav"] = str(folder / f"{name}.codes.json"), str(wav)
    out["dir"] = folder
    return out


def test_chained_edits_apply_in_command_line_order(files, capsys):
    out = str(files["dir"] / "out.codes.json")
    hist = str(files["dir"] / "out.history.json")
    b = files["B"]
    argv = ["edit", files["model"], files["A"], "-o", out, "--history", hist,
            "--set", "Timbre@1.0-2.0=17",
            "--copy", f"{b}:Structure@0.0-0.5", "--to", "1.0",
            "--swap", "Timbre@0.0-1.0", "Timbre@2.0-3.0",
            "--blend", f"{b}:Timbre@0.0-1.0", "--to", "1.0", "--amount", "0.5",
            "--reverse", "Detail@1.0-2.0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    codec = Codec.load(files["model"])
    grid, other = CodeGrid.load(files["A"]), CodeGrid.load(b)
    for op in ("set Timbre@1.0-2.0=17", "copy B:Structure@0.0-0.5 --to 1.0", "swap Timbre@0.0-1.0 Timbre@2.0-3.0",
               "blend B:Timbre@0.0-1.0 --to 1.0 --amount 0.5", "reverse Detail@1.0-2.0"):
        result = apply_operation(codec, grid, op, other=other)
        assert f"touched {result.region.describe(result.grid)}" in printed
        grid = result.grid
    assert CodeGrid.load(out) == grid
    history = EditHistory.from_json(open(hist, encoding="utf-8").read(), codec.fingerprint)
    assert history.position == 5 and history.current == grid
    assert "touched Timbre 0.85-2.05 s, bands 0-15 (columns 5-11, 0-24000 Hz)" in printed  # 1.0-2.0 s snapped outward


def test_order_matters(files):
    a, b = str(files["dir"] / "sc.codes.json"), str(files["dir"] / "cs.codes.json")
    common = ["edit", files["model"], files["A"]]
    assert main(common + ["-o", a, "--set", "Timbre@0.0-0.5=3", "--copy", "Timbre@1.0-1.5", "--to", "0.0"]) == 0
    assert main(common + ["-o", b, "--copy", "Timbre@1.0-1.5", "--to", "0.0", "--set", "Timbre@0.0-0.5=3"]) == 0
    original = CodeGrid.load(files["A"]).codes
    first, second = CodeGrid.load(a).codes, CodeGrid.load(b).codes
    np.testing.assert_array_equal(first[1, :, 0:3], original[1, :, 5:8])  # the copy came last
    assert (second[1, :, 0:3] == 3).all()  # the set came last


def test_edited_codes_decode_to_the_clip_length(files, capsys):
    out = str(files["dir"] / "rev.codes.json")
    wav = str(files["dir"] / "rev.wav")
    assert main(["edit", files["model"], files["A"], "-o", out, "--reverse", "Structure+Timbre@0.5-1.5/0-3"]) == 0
    top = Codec.load(files["model"]).band_ranges_hz[3][1]
    assert f"bands 0-3 (columns 2-8, 0-{top:.0f} Hz)" in capsys.readouterr().out  # what rows 0-3 mean, in Hz
    assert main(["decode", files["model"], out, "-o", wav, "--phase-from", files["A_wav"]]) == 0
    audio, sr = sf.read(wav)
    assert sr == SR and len(audio) == 3 * SR


@pytest.mark.parametrize("ops, message", [
    (["--set", "Timbre1.0-2.0=17"], "cannot read region"),
    (["--set", "Pitch@1.0-2.0=17"], "unknown level 'Pitch'"),
    (["--set", "Timbre@1.0-9.0=17"], "past the clip's end"),
    (["--set", "Timbre@1.0-2.0=32"], "codes are 0-31"),
    (["--to", "1.0", "--copy", "Timbre@0-1"], "--to must follow the operation"),
    (["--copy", "missing.codes.json:Timbre@0-1", "--to", "1.0"], "missing.codes.json"),
    (["--reverse", "Timbre@0-1", "--amount", "0.5"], "does not take --amount"),
    ([], "nothing to do"),
])
def test_bad_edits_exit_2_with_one_line(files, capsys, ops, message):
    out = files["dir"] / "bad.codes.json"
    assert main(["edit", files["model"], files["A"], "-o", str(out)] + ops) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distill: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_refuses_codes_from_another_model(files, capsys):
    foreign = files["dir"] / "foreign.codes.json"
    d = json.loads(open(files["A"], encoding="utf-8").read())
    d["model"] = "0123456789abcdef"
    foreign.write_text(json.dumps(d), encoding="utf-8")
    assert main(["edit", files["model"], str(foreign), "-o", str(files["dir"] / "x.json"),
                 "--reverse", "Timbre@0-1"]) == 2
    assert "not by this model" in capsys.readouterr().err
