"""Exports at the file's own rate are exact: inside an edit the export changes the file by the 48 kHz render's change resampled,
outside it (plus the resampler's reach) the file's own samples bit for bit, and the length is the file's.

Across source rates, mono and stereo files, and edits starting at every column offset: the render is
made at the model rate and only its difference is resampled back (render.to_source_rate), so a
difference placed off the file's sample grid would leave part of the original inside the edit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from distill import EditSession, SourceAudio, clip_from_source, load_source
from distill.audio import resample
from distill.render import to_source_rate

MODEL_RATE = 48000
RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000)


def band_limited(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A pad well inside every rate's band (so resampling it there and back is near-lossless): float32 [T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    top = 0.3 * min(rate, MODEL_RATE)
    freqs = [110.0, 220.0 * (1 + rng.random()), 0.6 * top, top]
    wave = sum(0.15 * np.sin(2 * np.pi * f * t + rng.random() * 6) for f in freqs)
    return (wave * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def relative_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / max(1e-12, np.sqrt(np.mean(b ** 2))))


def reach(rate: int) -> int:
    """File samples either side of a changed stretch that to_source_rate may touch: its 10 ms margin plus
    one period of the two rates (the stretch starts on a whole period) and the filter's reach."""
    pad = max(64, MODEL_RATE // 100)
    period = MODEL_RATE // math.gcd(MODEL_RATE, rate)
    return int(math.ceil((pad + period) * rate / MODEL_RATE)) + 16


def check_export(out: np.ndarray, rendered: np.ndarray, model_wave: np.ndarray, src: SourceAudio) -> float:
    """Assert length and bit-exactness outside the edit; return the relative error inside it (and its margin)."""
    assert out.dtype == np.float32 and len(out) == len(src.samples)
    nz = np.flatnonzero(rendered != model_wave)
    if nz.size == 0:
        np.testing.assert_array_equal(out, src.samples)
        return 0.0
    r = src.rate
    lo = max(0, int(nz[0] * r / MODEL_RATE) - reach(r))
    hi = min(len(out), int(math.ceil((nz[-1] + 1) * r / MODEL_RATE)) + reach(r))
    np.testing.assert_array_equal(out[:lo], src.samples[:lo])
    np.testing.assert_array_equal(out[hi:], src.samples[hi:])
    # What the edit changed, as the file hears it: the render's difference resampled whole. (The render itself
    # resampled also carries the source's own round trip through 48 kHz, which is not the edit's.)
    change = resample(rendered - model_wave, MODEL_RATE, r)[:len(out)]
    return relative_rms(out[lo:hi] - src.samples[lo:hi], change[lo:hi])


@settings(max_examples=60, deadline=None, database=None)
@given(rate=st.sampled_from(RATES), start=st.integers(0, 40_000), width=st.integers(1, 30_000),
       kind=st.sampled_from(["tone", "noise", "step"]), seed=st.integers(0, 3))
def test_a_difference_anywhere_comes_back_at_the_file_rate_exactly(rate, start, width, kind, seed):
    """Any changed stretch (any start sample, any width, bright or abrupt): inside, the export's change is the
    render's change resampled (relative RMS <= 0.01); outside, the file's samples; exact length."""
    src = SourceAudio("x", band_limited(1.5, rate, seed), rate)
    model_wave = src.at_rate(MODEL_RATE)
    rng = np.random.default_rng(seed)
    stop = min(len(model_wave), start + width)
    n = stop - start
    t = np.arange(n) / MODEL_RATE
    if kind == "tone":     # an 8 kHz tone (above the 8 and 11 kHz files' band: it must vanish there, not alias)
        delta = 0.2 * np.sin(2 * np.pi * 8000 * t)
    elif kind == "noise":
        delta = 0.1 * rng.standard_normal(n)
    else:
        delta = np.full(n, 0.1)
    rendered = model_wave.copy()
    rendered[start:stop] += delta.astype(np.float32)
    out = to_source_rate(rendered, model_wave, src, MODEL_RATE)
    assert check_export(out, rendered, model_wave, src) <= 0.01


def _set_op(session: EditSession, c0: int, c1: int) -> str:
    spc = session.codec.seconds_per_column
    end = min((c1 + 1) * spc, session.current.duration_s) - 1e-6
    return f"set Structure+Timbre+Detail@{c0 * spc:.6f}-{end:.6f}=3"


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_export_of_an_edit_at_every_column_is_exact(codec, tmp_path, rate, channels):
    """The studio's export path (file -> EditSession -> surgical render -> export_audio) for each rate, mono and
    stereo, with a one-column 'set' of all levels at every column of a clip."""
    wave = band_limited(1.6, rate, seed=channels)
    data = wave if channels == 1 else np.stack([wave, 0.5 * wave], axis=1)
    path = tmp_path / f"pad_{rate}_{channels}.wav"
    sf.write(path, data, rate, subtype="FLOAT")
    src = load_source(path)
    clip = clip_from_source(codec, src)
    worst = 0.0
    for column in range(clip.grid.num_columns):
        session = EditSession(codec, clip)
        session.apply(_set_op(session, column, column))
        assert np.any(session.current.codes != clip.grid.codes)
        rendered = session.render()
        out, out_rate = session.export_audio(rendered)
        assert out_rate == rate
        worst = max(worst, check_export(out, rendered.wave, clip.wave, src))
    assert worst <= 0.01, f"{rate} Hz, {channels} channel(s): export differs from the render by {worst:.3f}"


@pytest.mark.parametrize("rate", [44100, 44056, 22254, 47952])
def test_two_edits_close_together_are_each_added_once(rate):
    """Second reader (issue 25): each stretch starts on a whole period of the two rates; at 44056 Hz the period
    is 6000 model samples, so the second edit's start fell back inside the first, and that part of the first
    edit's difference was resampled and added twice (relative error 1.0 there)."""
    m = 48000
    rng = np.random.default_rng(0)
    src = (0.1 * rng.standard_normal(3 * rate)).astype(np.float32)
    model_wave = resample(src, rate, m)
    delta = np.zeros(len(model_wave), np.float32)
    t = np.arange(len(delta)) / m
    a0, a1, b0, b1 = 60000, 76559, 78479, 88479        # 40 ms apart; a ends 4559 samples past a whole period
    delta[a0:a1] = 0.2 * np.sin(2 * np.pi * 300 * t[a0:a1])
    delta[b0:b1] = 0.2 * np.sin(2 * np.pi * 500 * t[b0:b1])
    out = to_source_rate(model_wave + delta, model_wave, SourceAudio("x", src, rate), m)
    ref = src + resample(delta, m, rate)[:len(src)]
    for lo, hi in ((a0 + 1000, a1 - 100), (b0 + 1000, b1 - 1000)):
        span = slice(int(lo * rate / m), int(hi * rate / m))
        err = np.sqrt(np.mean((out[span] - ref[span]) ** 2)) / np.sqrt(np.mean((ref[span] - src[span]) ** 2))
        assert err < 0.01, f"{rate} Hz, samples {lo}-{hi}: relative error {err:.3f}"
