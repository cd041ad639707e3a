"""Issue 13, bad inputs: a folder of every kind of bad (and odd but usable) file trains without a crash.

Each unusable file is named with its reason (CLI output, Trainer warning events, the studio's table); each
usable one encodes and decodes to exactly its length with finite samples; a file that vanishes or turns to
garbage between the scan and training is skipped with a warning naming it, and training goes on.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

import distill.cli as cli
from distill import Codec, Trainer
from distill.audio import find_audio_candidates, scan_folder, scan_paths
from distill_studio import training
from distill_studio.state import Limits

SR = 48000
ODD_NAME = "Café del Mar [take 2] (ÄÖÜ ñ) 日本.wav"
LONG_SECONDS = 600.0
LONG_RATE = 8000

# usable files: name (relative to the folder) -> (rate, frames, channels) as written
ACCEPTED = {
    "blip20ms.wav": (SR, int(0.02 * SR), 1),
    "long10min.wav": (LONG_RATE, int(LONG_SECONDS * LONG_RATE), 1),
    "six_channels.wav": (SR, int(0.6 * SR), 6),
    "u8_11k.wav": (11025, int(0.7 * 11025), 1),
    "s24_192k.wav": (192000, int(0.5 * 192000), 1),
    "nan_inf.wav": (SR, SR, 1),
    ODD_NAME: (44100, int(0.8 * 44100), 2),
    "vorbis.ogg": (44100, int(0.9 * 44100), 1),
    "folder.wav/inside.flac": (SR, int(0.5 * SR), 1),
    "sub/deeper/nested.flac": (22050, int(0.6 * 22050), 1),
    "lying_header.wav": (SR, SR, 1),          # the header claims an hour; one second is there
    "vanishes.wav": (SR, int(0.5 * SR), 1),   # usable at scan time only: see sabotage()
    "turns_to_garbage.wav": (SR, int(0.5 * SR), 1),
    "truncated_later.wav": (SR, int(0.5 * SR), 1),
}
# unusable files: name -> words the reason must contain
REJECTED = {
    "corrupt.wav": "corrupt",
    "notes.wav": "holds text",
    "empty.wav": "empty file (0 bytes)",
    "silence.wav": "silent",
}
SABOTAGED = ("vanishes.wav", "turns_to_garbage.wav", "truncated_later.wav")


def make_bad_folder(root: Path) -> Path:
    """Every bad input issue 13 lists, plus the usable-but-odd ones, in one folder (about 10 MB, ~1 s to write)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(13)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVE" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "notes.wav").write_text("These are my session notes, not audio.\nTake 2 was the best.\n" * 20)
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "silence.wav", np.zeros(SR, np.float32), SR)
    sf.write(root / "blip20ms.wav", tone(0.02, 440), SR)
    long = tone(LONG_SECONDS, 110, sr=LONG_RATE, decay=0.0, noise=0.05, seed=1)
    long *= 0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * np.arange(long.size) / LONG_RATE)  # not one steady tone
    sf.write(root / "long10min.wav", long, LONG_RATE, subtype="PCM_16")
    six = np.stack([tone(0.6, 110 * (c + 1), seed=c) for c in range(6)], axis=1)
    sf.write(root / "six_channels.wav", six, SR)
    sf.write(root / "u8_11k.wav", tone(0.7, 330, sr=11025), 11025, subtype="PCM_U8")
    sf.write(root / "s24_192k.wav", tone(0.5, 550, sr=192000), 192000, subtype="PCM_24")
    bad = tone(1.0, 260)
    bad[1000:1100] = np.nan
    bad[5000:5010] = np.inf
    bad[9000] = -np.inf
    sf.write(root / "nan_inf.wav", bad, SR, subtype="FLOAT")
    sf.write(root / ODD_NAME, np.stack([tone(0.8, 196, sr=44100)] * 2, axis=1), 44100)
    sf.write(root / "vorbis.ogg", tone(0.9, 247, sr=44100), 44100, format="OGG", subtype="VORBIS")
    (root / "folder.wav").mkdir()
    sf.write(root / "folder.wav" / "inside.flac", tone(0.5, 294), SR)
    (root / "sub" / "deeper").mkdir(parents=True)
    sf.write(root / "sub" / "deeper" / "nested.flac", tone(0.6, 370, sr=22050), 22050)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(rng.integers(0, 256, 2048, dtype=np.uint8)))
    write_lying_header(root / "lying_header.wav")
    for i, name in enumerate(SABOTAGED):
        sf.write(root / name, tone(0.5, 180 + 40 * i), SR)
    return root


def write_lying_header(path: Path, claimed_seconds: float = 3600.0) -> None:
    """A 16-bit WAV holding one second whose RIFF and data sizes claim `claimed_seconds`."""
    sf.write(path, tone(1.0, 415), SR, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    claimed = int(claimed_seconds * SR * 2)
    struct.pack_into("<I", data, at + 4, claimed)
    struct.pack_into("<I", data, 4, claimed + at + 8 - 8)
    path.write_bytes(bytes(data))


def sabotage(root: Path) -> None:
    """What can happen between the scan and training: a file is deleted, overwritten with garbage, truncated.
    (Tests run as root, where chmod 000 does not stop reads, so no file is made unreadable by permissions.)"""
    (root / "vanishes.wav").unlink()
    (root / "turns_to_garbage.wav").write_bytes(b"\x13\x37" * 3000)
    sf.write(root / "truncated_later.wav", np.zeros(0, np.float32), SR)  # a valid WAV header, no samples


def _lines_naming(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if name in line]


# ---------------------------------------------------------------------- the scan
def test_scan_gives_every_bad_input_its_verdict(tmp_path):
    root = make_bad_folder(tmp_path / "bad")
    report = scan_folder(root)
    by_name = {os.path.relpath(v.path, root): v for v in report.verdicts}
    assert set(by_name) == set(ACCEPTED) | set(REJECTED)            # .DS_Store skipped as a dot-file
    for name, why in REJECTED.items():
        assert not by_name[name].accepted and why in by_name[name].reason, (name, by_name[name])
        assert str(root) not in by_name[name].reason                # the reason names no temp path
    for name, (rate, frames, channels) in ACCEPTED.items():
        v = by_name[name]
        assert v.accepted, (name, v.reason)
        assert (v.sample_rate, v.channels) == (rate, channels), name
        assert v.duration_s == pytest.approx(frames / rate, abs=1e-3), name
    assert by_name["lying_header.wav"].duration_s == pytest.approx(1.0, abs=1e-3)  # what is there, not the claim
    assert "non-finite" in by_name["nan_inf.wav"].reason                # accepted, with a note
    summary = report.summary()
    for name in REJECTED:
        assert len(_lines_naming(summary, name)) == 1


def test_folder_paths_and_hidden_files_handed_over_directly_get_a_verdict(tmp_path):
    """The studio's upload hands over paths, not a folder walk: a folder or a .DS_Store must not look like audio."""
    root = make_bad_folder(tmp_path / "bad")
    report = scan_paths([root / "folder.wav", root / ".DS_Store", root / "blip20ms.wav"])
    folder, ds, blip = report.verdicts
    assert not folder.accepted and "folder" in folder.reason
    assert not ds.accepted and "hidden" in ds.reason
    assert blip.accepted


# ---------------------------------------------------------------------- the Trainer
def test_trainer_skips_files_changed_after_the_scan_with_a_warning(tmp_path, tiny_config):
    root = tmp_path / "few"
    root.mkdir()
    for i in range(3):
        sf.write(root / f"ok{i}.wav", tone(0.6, 200 + 100 * i, seed=i), SR)
    for i, name in enumerate(SABOTAGED):
        sf.write(root / name, tone(0.5, 180 + 40 * i), SR)
    report = scan_folder(root)
    assert len(report.accepted) == 6
    sabotage(root)
    trainer = Trainer(report, tiny_config, epochs=1, validate_every=100, log_every_s=0)
    events = list(trainer.run())
    warnings = [e.message for e in events if e.kind == "warning"]
    for name in SABOTAGED:
        assert any(name in w and "skipped" in w for w in warnings), (name, warnings)
    assert any("vanishes.wav" in w and "not found" in w for w in warnings), warnings
    assert any("truncated_later.wav" in w and "empty" in w for w in warnings), warnings
    assert events[-1].kind == "done" and trainer.result is not None
    ds = trainer.result.info.dataset
    assert ds["accepted"] == 3 and sorted(ds["train_files"] + ds["val_files"]) == ["ok0.wav", "ok1.wav", "ok2.wav"]
    assert {r["file"] for r in ds["rejected"]} >= set(SABOTAGED)     # the model file records why they are missing


# ---------------------------------------------------------------------- the CLI, end to end
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_config):
    """`distill train FOLDER` on the bad folder, with files sabotaged between its scan and training."""
    base = tmp_path_factory.mktemp("bad_inputs")
    root = make_bad_folder(base / "my samples")
    cfg = {k: v for k, v in tiny_config.to_dict().items()
           if k in ("codebook_size", "codebook_dim", "channels", "res_blocks", "batch_size", "warmup_steps", "decay")}
    (base / "tiny.json").write_text(json.dumps(cfg))
    real_scan = cli.scan_paths

    def scan_then_sabotage(paths, **kwargs):
        report = real_scan(paths, **kwargs)
        sabotage(root)
        return report

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setattr(cli, "scan_paths", scan_then_sabotage)
        rc = cli.main(["train", str(root), "-o", str(base / "m.distill"), "--epochs", "0.05",
                       "--config", str(base / "tiny.json"), "-q"])
    return base, root, rc, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_cli_trains_on_the_bad_folder_and_names_every_rejected_file(cli_run):
    base, root, rc, out, err = cli_run
    assert rc == 0, err
    assert (base / "m.distill").is_file() and "saved" in out
    for name, why in REJECTED.items():
        lines = _lines_naming(err, name)
        assert len(lines) == 1 and why in lines[0] and "rejected" in lines[0], (name, err)
    for name in SABOTAGED:
        assert any("warning" in line and "skipped" in line for line in _lines_naming(err, name)), (name, err)
    assert f"{len(ACCEPTED)} files accepted" in err
    assert "Traceback" not in err
    info = Codec.load(base / "m.distill").info.dataset
    assert info["accepted"] == len(ACCEPTED) - len(SABOTAGED)
    assert {r["file"] for r in info["rejected"]} == set(REJECTED) | set(SABOTAGED)


USABLE = sorted(set(ACCEPTED) - set(SABOTAGED))


@pytest.mark.slow
def test_every_accepted_file_encodes_and_decodes_to_its_exact_length(cli_run):
    base, root, rc, _, err = cli_run
    assert rc == 0, err
    codec = Codec.load(base / "m.distill")
    for name in USABLE:
        rate, frames, _ = ACCEPTED[name]
        wave, sr = sf.read(root / name, dtype="float32", always_2d=True)
        assert (sr, len(wave)) == (rate, frames), name
        long = name == "long10min.wav"
        grid = codec.encode(wave, sr, search_steps=0)   # search is the CLI test's (and test_codec's) business
        model_wave = codec.load_wave(wave, sr)
        assert np.isfinite(model_wave).all() and grid.num_samples == len(model_wave), name
        # the long file takes its own phase (Griffin-Lim over ten minutes would take a minute on two cores)
        decoded = codec.decode(grid, phase_from=model_wave if long else None, n_iter=4)
        assert len(decoded) == grid.num_samples and np.isfinite(decoded).all(), name
        back, back_rate = codec.at_source_rate(decoded, grid)
        assert (back_rate, len(back)) == (rate, frames) and np.isfinite(back).all(), name


@pytest.mark.slow
@pytest.mark.parametrize("name", [ODD_NAME, "nan_inf.wav", "six_channels.wav", "lying_header.wav"])
def test_cli_encode_decode_keeps_the_exact_length(cli_run, name, tmp_path):
    base, root, rc, _, err = cli_run
    assert rc == 0, err
    rate, frames, _ = ACCEPTED[name]
    codes = tmp_path / (Path(name).stem + ".codes.json")
    wav = tmp_path / (Path(name).stem + ".out.wav")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["encode", str(base / "m.distill"), str(root / name), "-o", str(codes), "--search", "2"]) == 0
        assert cli.main(["decode", str(base / "m.distill"), str(codes), "-o", str(wav), "--iters", "4"]) == 0
    assert codes.name in out.getvalue() and wav.name in out.getvalue()
    data, sr = sf.read(wav, dtype="float32")
    assert (sr, len(data)) == (rate, frames) and np.isfinite(data).all()


# ---------------------------------------------------------------------- the studio's folder upload
@pytest.mark.slow
def test_studio_upload_lists_every_file_with_its_verdict_and_trains_on_the_rest(tmp_path):
    root = make_bad_folder(tmp_path / "upload")
    # a folder upload hands over every file (dot-files included), flattened to cached paths
    paths = sorted(str(Path(dp) / f) for dp, _, fs in os.walk(root) for f in fs)
    limits = Limits(preset="tiny")
    s, table, summary, st = training.scan(None, paths, None, limits)
    assert len(table) == len(paths)
    rows = {f: (verdict, reason) for f, verdict, reason in zip(table["file"], table["verdict"], table["reason"],
                                                               strict=True)}
    for name, why in REJECTED.items():
        assert rows[name][0] == "rejected" and why in rows[name][1], (name, rows[name])
    assert rows[".DS_Store"][0] == "rejected" and "hidden" in rows[".DS_Store"][1]
    for name in ACCEPTED:
        assert rows[Path(name).name][0] == "accepted", (name, rows[Path(name).name])
    lying = table[table["file"] == "lying_header.wav"].iloc[0]
    assert lying["seconds"] == pytest.approx(1.0)
    assert f"{len(ACCEPTED)} of {len(paths)} files accepted" in summary

    sabotage(root)   # between the scan and pressing Train
    st = training.Settings(levels=2, budget="epochs", amount=0.05, batch_size=4)
    updates = list(training.train_stream(s, st, limits))
    last = updates[-1]
    assert last.model_file and Path(last.model_file).is_file() and "Model ready" in last.status
    said = "\n".join(u.status for u in updates)
    for name in SABOTAGED:
        assert name in said and "skipped" in said, (name, said)


def test_find_audio_candidates_walks_into_a_folder_named_like_audio(tmp_path):
    root = make_bad_folder(tmp_path / "bad")
    found = {os.path.relpath(p, root) for p in find_audio_candidates(root)}
    assert "folder.wav/inside.flac" in found and "sub/deeper/nested.flac" in found and ".DS_Store" not in found


def test_broken_links_and_unreadable_files_say_why(tmp_path, monkeypatch):
    """A link to a deleted file, and a file this user may not read (tests run as root, so os.access is faked)."""
    (tmp_path / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    sf.write(tmp_path / "locked.wav", tone(0.3), SR)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("locked.wav") else real_access(p, mode))
    monkeypatch.setattr(sf, "info", lambda p: (_ for _ in ()).throw(RuntimeError(f"Error opening {p!r}: System error.")))
    gone, locked = scan_paths([tmp_path / "gone.wav", tmp_path / "locked.wav"]).verdicts
    assert not gone.accepted and gone.reason == "a broken link (its target is missing)"
    assert not locked.accepted and locked.reason == "no permission to read it"
