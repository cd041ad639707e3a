"""Render the studio's license-clean demo corpus (plucks, pads, hits, sweeps) into assets/demo/ at 48 kHz.

Everything is synthesised from a fixed seed, so the clips are ours to ship and re-rendering gives the
same files. Train the bundled model on them with the project's own CLI:

    python assets/make_demo.py
    distill train assets/demo -o assets/demo.distill --minutes 6 --codebook-dim 64
    distill prior assets/demo.distill assets/demo --minutes 2   # the prior Regenerate uses (added later)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 48000


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SR))) / SR


def _lowpass(x: np.ndarray, cutoff_hz: np.ndarray | float) -> np.ndarray:
    """One-pole low-pass with a (possibly moving) cutoff: cheap, and sweeps stay smooth."""
    cutoff = np.broadcast_to(np.asarray(cutoff_hz, dtype=np.float64), x.shape)
    a = np.exp(-2 * np.pi * cutoff / SR)
    y = np.empty_like(x)
    acc = 0.0
    for i, v in enumerate(x):
        acc = (1 - a[i]) * v + a[i] * acc
        y[i] = acc
    return y


def pluck(freq: float, seconds: float = 2.5, seed: int = 0) -> np.ndarray:
    """Karplus-Strong string: a burst of noise in a damped delay line."""
    rng = np.random.default_rng(seed)
    period = int(SR / freq)
    buf = rng.uniform(-1, 1, period)
    out = np.empty(int(seconds * SR))
    for i in range(len(out)):
        j = i % period
        out[i] = buf[j]
        buf[j] = 0.996 * 0.5 * (buf[j] + buf[(j + 1) % period])
    return out


def pad(freqs: tuple[float, ...], seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Detuned saw chord, slow attack, low-passed with a slowly opening filter."""
    rng = np.random.default_rng(seed)
    t = _t(seconds)
    x = np.zeros_like(t)
    for f in freqs:
        for detune in (-0.004, 0.0, 0.005):
            phase = rng.uniform(0, 1)
            x += 2 * ((f * (1 + detune) * t + phase) % 1.0) - 1
    env = np.minimum(1, t / 0.6) * np.minimum(1, (seconds - t) / 0.5)
    return _lowpass(x, 600 + 2400 * t / seconds) * env


def kick(seconds: float = 0.6) -> np.ndarray:
    t = _t(seconds)
    freq = 45 + 110 * np.exp(-t * 25)
    return np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.exp(-t * 7)


def snare(seconds: float = 0.4, seed: int = 1) -> np.ndarray:
    t = _t(seconds)
    noise = np.random.default_rng(seed).standard_normal(t.size)
    body = np.sin(2 * np.pi * 190 * t) * np.exp(-t * 25)
    return 0.6 * body + 0.5 * (noise - _lowpass(noise, 1500)) * np.exp(-t * 14)


def hat(seconds: float = 0.15, seed: int = 2) -> np.ndarray:
    t = _t(seconds)
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return 0.5 * (noise - _lowpass(noise, 7000)) * np.exp(-t * 45)


def beat(pattern: str, bpm: float = 112, seconds: float = 3.0) -> np.ndarray:
    """Sequence k(ick) s(nare) h(at) on sixteenth notes; '.' is a rest."""
    out = np.zeros(int(seconds * SR))
    step = int(SR * 60 / bpm / 4)
    voices: dict[str, Callable[[], np.ndarray]] = {"k": kick, "s": snare, "h": hat}
    for i in range(len(out) // step):
        ch = pattern[i % len(pattern)]
        if ch in voices:
            hit = voices[ch]()[: len(out) - i * step]
            out[i * step:i * step + len(hit)] += hit
    return out


def sweep(seconds: float = 3.0, lo: float = 200, hi: float = 9000, seed: int = 3, up: bool = True) -> np.ndarray:
    """White noise through a band that glides exponentially from lo to hi (or back)."""
    t = _t(seconds)
    noise = np.random.default_rng(seed).standard_normal(t.size)
    frac = t / seconds if up else 1 - t / seconds
    centre = lo * (hi / lo) ** frac
    band = _lowpass(noise, centre * 1.3) - _lowpass(noise, centre * 0.7)
    return band * np.minimum(1, t / 0.2) * np.minimum(1, (seconds - t) / 0.2)


def bell(freq: float, seconds: float = 2.5) -> np.ndarray:
    """Two-operator FM with an inharmonic ratio and decaying index."""
    t = _t(seconds)
    index = 4 * np.exp(-t * 3)
    return np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * freq * 1.4 * t)) * np.exp(-t * 2.2)


def arpeggio(root: float, seconds: float = 3.0) -> np.ndarray:
    """Plucked notes of a minor-seventh chord, eighth notes."""
    out = np.zeros(int(seconds * SR))
    step = int(SR * 0.25)
    ratios = (1, 1.189, 1.498, 1.782)
    for i in range(len(out) // step):
        note = pluck(root * ratios[i % 4] * (2 if i // 4 % 2 else 1), seconds=0.6, seed=i)
        n = min(len(note), len(out) - i * step)
        out[i * step:i * step + n] += note[:n]
    return out


CLIPS: dict[str, Callable[[], np.ndarray]] = {
    "pluck_a2": lambda: pluck(110.0, seed=1),
    "pluck_e3": lambda: pluck(164.8, seed=2),
    "arp_dm7": lambda: arpeggio(146.8),
    "pad_cmaj": lambda: pad((130.8, 164.8, 196.0)),
    "pad_am_low": lambda: pad((55.0, 110.0, 130.8, 164.8), seed=4),
    "beat_rock": lambda: beat("k.h.s.h.k.kks.h."),
    "beat_sparse": lambda: beat("k...h..sk..h.s..", bpm=96),
    "sweep_up": lambda: sweep(up=True),
    "sweep_down": lambda: sweep(lo=300, hi=12000, seed=5, up=False),
    "bell_g4": lambda: bell(392.0),
}


def render(folder: Path) -> list[Path]:
    """Write every clip as 16-bit mono WAV peak-normalised to -3 dBFS; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in CLIPS.items():
        wave = make()
        wave = 0.708 * wave / max(1e-9, float(np.max(np.abs(wave))))
        path = folder / f"{name}.wav"
        sf.write(path, wave.astype(np.float32), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default=str(Path(__file__).parent / "demo"))
    args = p.parse_args()
    for path in render(Path(args.output)):
        print(path)


if __name__ == "__main__":
    main()
