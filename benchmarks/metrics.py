"""Audio distances for the quality benchmark: DAC-style log-mel L1, multi-resolution STFT, model-domain mel L1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

WINDOWS = (512, 1024, 2048)
EPS = 1e-5


@dataclass(frozen=True)
class Distances:
    """Sums over clips, weighted by clip length, so short one-shots do not dominate; `mean()` divides."""

    logmel_l1: float = 0.0
    mrstft: float = 0.0
    weight: float = 0.0

    def __add__(self, other: Distances) -> Distances:
        return Distances(self.logmel_l1 + other.logmel_l1, self.mrstft + other.mrstft, self.weight + other.weight)

    def mean(self) -> dict[str, float]:
        w = max(self.weight, 1e-12)
        return {"logmel_l1": self.logmel_l1 / w, "mrstft": self.mrstft / w}


class AudioMetrics:
    """DAC's mel distance (log10 magnitude mel, 80 bands) and auraloss-style MR-STFT, at 512/1024/2048.

    Both use hop = window / 4 and a Hann window; clips shorter than a window are zero-padded to it.
    """

    def __init__(self, sample_rate: int = 48000, n_mels: int = 80, windows: tuple[int, ...] = WINDOWS):
        self.windows = windows
        self.mels = [torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=w, hop_length=w // 4, n_mels=n_mels,
                                                          power=1.0, center=True) for w in windows]
        self.hann = {w: torch.hann_window(w) for w in windows}

    def logmel_l1(self, ref: torch.Tensor, est: torch.Tensor) -> float:
        total = 0.0
        for mel in self.mels:
            r, e = mel(_pad_to(ref, mel.n_fft)), mel(_pad_to(est, mel.n_fft))
            total += float((torch.log10(r.clamp(min=EPS)) - torch.log10(e.clamp(min=EPS))).abs().mean())
        return total / len(self.mels)

    def mrstft(self, ref: torch.Tensor, est: torch.Tensor) -> float:
        """Spectral convergence + log-magnitude L1, averaged over resolutions."""
        total = 0.0
        for w in self.windows:
            r, e = self._mag(_pad_to(ref, w), w), self._mag(_pad_to(est, w), w)
            sc = torch.linalg.vector_norm(r - e) / torch.linalg.vector_norm(r).clamp(min=EPS)
            log_l1 = (torch.log(r.clamp(min=EPS)) - torch.log(e.clamp(min=EPS))).abs().mean()
            total += float(sc + log_l1)
        return total / len(self.windows)

    def _mag(self, x: torch.Tensor, w: int) -> torch.Tensor:
        return torch.stft(x, w, w // 4, window=self.hann[w], center=True, return_complex=True).abs()

    def distances(self, ref: np.ndarray, est: np.ndarray) -> Distances:
        """Both distances for one clip, weighted by its length (est must have ref's length)."""
        if len(ref) != len(est):
            raise ValueError(f"decoded length {len(est)} != original {len(ref)}")
        r, e = torch.as_tensor(ref, dtype=torch.float32), torch.as_tensor(est, dtype=torch.float32)
        w = float(len(ref))
        return Distances(self.logmel_l1(r, e) * w, self.mrstft(r, e) * w, w)


def _pad_to(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, n - x.numel())) if x.numel() < n else x
