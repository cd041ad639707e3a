"""Audio in: every file gets a verdict, bad files never stop a scan, any rate/channel count loads."""

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from distill.audio import AudioError, load_audio, scan_folder, scan_paths


def _bad_folder(root):
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    sf.write(root / "good.wav", tone(0.5, sr=44100), 44100)
    sf.write(root / "sub" / "nested.flac", np.stack([tone(0.3), tone(0.3)], 1), 48000)
    sf.write(root / "int8.wav", tone(0.2, sr=8000), 8000, subtype="PCM_U8")
    sf.write(root / "s24.aiff", tone(0.2, sr=96000), 96000, subtype="PCM_24")
    sf.write(root / ".dotfile.wav", tone(0.2), 48000)
    sf.write(root / ".hidden" / "x.wav", tone(0.2), 48000)
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)
    (root / "text.wav").write_text("this is not audio")
    (root / "empty.wav").write_bytes(b"")
    (root / "readme.txt").write_text("hello")
    sf.write(root / "silent.wav", np.zeros(4800, np.float32), 48000)
    sf.write(root / "blip.wav", tone(0.002), 48000)
    sf.write(root / "oneshot20ms.wav", tone(0.02), 48000)


def test_scan_gives_every_file_a_reason(tmp_path):
    _bad_folder(tmp_path)
    report = scan_folder(tmp_path)
    by_name = {v.name: v for v in report.verdicts}
    assert sorted(v.name for v in report.accepted) == ["good.wav", "int8.wav", "nested.flac", "oneshot20ms.wav",
                                                        "s24.aiff"]
    assert ".dotfile.wav" not in by_name and "x.wav" not in by_name  # dot-files and dot-folders skipped
    assert "corrupt" in by_name["corrupt.wav"].reason
    assert "corrupt" in by_name["text.wav"].reason
    assert "empty" in by_name["empty.wav"].reason
    assert "not an audio file" in by_name["readme.txt"].reason
    assert "silent" in by_name["silent.wav"].reason
    assert "too short" in by_name["blip.wav"].reason
    assert by_name["nested.flac"].channels == 2
    assert report.total_duration_s == pytest.approx(0.5 + 0.3 + 0.2 + 0.2 + 0.02, abs=1e-3)
    assert "5 of 11 files accepted" in report.summary()
    assert report.warnings == ()


def test_file_count_outside_designed_range_warns(tmp_path):
    sf.write(tmp_path / "a.wav", tone(0.3), 48000)
    report = scan_paths([tmp_path / "a.wav"])
    assert len(report.accepted) == 1
    assert "designed for 5-500" in report.warnings[0]


def test_load_resamples_and_mixes_to_mono(tmp_path):
    stereo = np.stack([tone(1.0, sr=22050)] * 2, 1)
    sf.write(tmp_path / "st.wav", stereo, 22050)
    wave, sr = load_audio(tmp_path / "st.wav", 48000)
    assert sr == 48000 and wave.ndim == 1 and wave.dtype == np.float32
    assert len(wave) == 48000
    # same content as the mono original after resampling: peak preserved within 5 %
    assert np.abs(wave).max() == pytest.approx(np.abs(tone(1.0)).max(), rel=0.05)


def test_load_error_names_the_file(tmp_path):
    (tmp_path / "broken.ogg").write_bytes(b"OggS" + b"\x00" * 40)
    with pytest.raises(AudioError, match="broken.ogg"):
        load_audio(tmp_path / "broken.ogg")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AudioError, match="no such file or folder"):
        scan_folder(tmp_path / "nope")
