"""Audio in: every file gets a verdict, bad files never stop a scan, any rate/channel count loads."""

import numpy as np
import pytest
import soundfile as sf
import torch
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


# Runs in its own process under a memory cap, so an unbounded resampler fails the test instead of the machine.
_RESAMPLE_CHILD = r"""
import json, math, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from distill.audio import resample

def vm(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

resample(np.ones(1000, np.float32), 44100, 22050)
base = vm("VmRSS:")
resource.setrlimit(resource.RLIMIT_DATA, (vm("VmData:") + 2**30,) * 2)   # 1 GiB more than now, at most
out = {}
for sr, target in json.loads(sys.argv[1]):
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(10 * sr) / sr)).astype(np.float32)
    t0 = time.perf_counter()
    y = resample(x, sr, target)
    out[f"{sr}->{target}"] = dict(seconds=time.perf_counter() - t0, length=len(y), finite=bool(np.isfinite(y).all()),
                                  peak=float(np.abs(y[target:-target]).max()))
out["extra_mb"] = (vm("VmHWM:") - base) / 2**20
print(json.dumps(out))
"""


def test_rates_prime_to_the_model_rate_resample_in_bounded_memory_and_time():
    """47999 or 44101 Hz share no divisor (or only 7) with 22050 / 48000 Hz: torchaudio's kernel for such a
    pair is 0.1-9 GB. Ten seconds of audio must resample in well under a second of work and 1 GiB, to the
    length every other pair gets (ceil(samples * target / rate))."""
    import json
    import subprocess
    import sys

    pairs = [(47999, 22050), (44101, 22050), (47999, 48000), (44101, 48000)]
    run = subprocess.run([sys.executable, "-c", _RESAMPLE_CHILD, json.dumps(pairs)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    for sr, target in pairs:
        r = out[f"{sr}->{target}"]
        assert r["length"] == -(-10 * sr * target // sr) == 10 * target, (sr, target, r)
        assert r["finite"] and r["peak"] == pytest.approx(0.3, rel=0.02), (sr, target, r)
        assert r["seconds"] < 5, (sr, target, r)
    assert out["extra_mb"] < 400, out


def test_the_direct_resampler_is_torchaudios_filter_and_common_rates_are_unchanged():
    """The path for awkward rate pairs computes the same windowed sinc as torchaudio (checked against its
    float64 kernel, where torchaudio can still afford it); 44100 -> 22050 is torchaudio's result bit for bit."""
    import torch
    import torchaudio.functional as AF

    from distill.audio import MAX_RESAMPLE_KERNEL, _kernel_values, _resample_direct, resample

    x = tone(1.0, 330, sr=47999, noise=0.1)[:-5]
    assert _kernel_values(47999, 22050) > MAX_RESAMPLE_KERNEL
    reference = AF.resample(torch.from_numpy(x).double(), 47999, 22050).numpy()
    direct = _resample_direct(x, 47999, 22050)
    assert len(direct) == len(reference) and np.abs(direct - reference).max() < 1e-6
    np.testing.assert_array_equal(resample(x, 47999, 22050), direct)

    common = tone(1.0, 330, sr=44100)[:-3]
    np.testing.assert_array_equal(resample(common, 44100, 22050),
                                  AF.resample(torch.from_numpy(common), 44100, 22050).numpy())


def test_a_file_at_a_rate_prime_to_the_model_rate_encodes_and_decodes_to_its_exact_length(codec, tmp_path):
    """A 47999 Hz WAV (no common divisor with the model's 48 kHz) loads, encodes, its codes JSON is accepted,
    and decoding gives back 47999 Hz audio of exactly the file's length."""
    from distill import CodeGrid

    sf.write(tmp_path / "odd.wav", tone(1.5, 220, sr=47999), 47999)
    wave, sr = load_audio(tmp_path / "odd.wav")
    assert (sr, len(wave)) == (47999, int(round(1.5 * 47999)))
    model_wave, _ = load_audio(tmp_path / "odd.wav", codec.sample_rate)
    assert len(model_wave) == -(-len(wave) * codec.sample_rate // sr) and np.isfinite(model_wave).all()
    grid = CodeGrid.from_json(codec.encode(wave, sr, search_steps=0).to_json())
    codec.check(grid)
    back, rate = codec.at_source_rate(codec.decode(grid, phase_from=model_wave, n_iter=2), grid)
    assert (rate, len(back)) == (47999, len(wave)) and np.isfinite(back).all()


@pytest.mark.parametrize("rates", [(44100, 48000), (48000, 44100), (8000, 48000), (96000, 48000), (48000, 11025)])
def test_long_clips_resample_in_pieces_exactly_as_in_one_pass(monkeypatch, rates):
    """A 30-minute recording is resampled a piece at a time (torchaudio's temporaries for it at once are ~1.3 GB):
    the same samples and length as one pass, ends included, for any rate pair."""
    import torchaudio.functional as AF

    from distill import audio
    sr, target = rates
    wave = np.random.default_rng(1).standard_normal(50_003).astype(np.float32)
    whole = AF.resample(torch.from_numpy(wave), sr, target).numpy()
    monkeypatch.setattr(audio, "RESAMPLE_PIECE", 4000)
    seen: list[int] = []
    real = audio.AF.resample
    monkeypatch.setattr(audio.AF, "resample", lambda x, *a, **k: seen.append(x.numel()) or real(x, *a, **k))
    pieces = audio.resample(wave, sr, target)
    assert len(seen) > 5 and max(seen) < len(wave) / 5      # never the whole clip at once
    assert pieces.shape == whole.shape and np.allclose(pieces, whole, atol=1e-6)


def test_seconds_from_env_reads_a_length_limit():
    """The one parser of DISTILL_MAX_CLIP_SECONDS-style limits (the CLI's; the studio may share it)."""
    from distill.audio import CLIP_LIMIT_VARIABLE, seconds_from_env

    assert CLIP_LIMIT_VARIABLE == "DISTILL_MAX_CLIP_SECONDS"
    assert seconds_from_env("X", environ={}) is None
    assert seconds_from_env("X", 1800.0, environ={"X": "  "}) == 1800.0
    assert seconds_from_env("X", 1800.0, environ={"X": "90.5"}) == 90.5
    assert seconds_from_env("X", 1800.0, environ={"X": "inf"}) is None
    for bad in ("abc", "0", "-1", "nan"):
        with pytest.raises(ValueError, match=rf"X={bad!r} is not a length in seconds"):
            seconds_from_env("X", environ={"X": bad})
