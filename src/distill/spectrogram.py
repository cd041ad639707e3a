"""Log-mel front end (log1p of the power mel) and mel -> waveform inversion (pinv + fast Griffin-Lim).

Frames are distill.dsp's centred STFT frames with zero padding (not reflect), so a 20 ms clip and a
30-minute recording go through the same code, and frame i always covers samples around i * hop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchaudio.functional as AF

from . import dsp
from .dsp import DEFAULT_GL_ITERS, GL_MOMENTUM, STFT_CHUNK_FRAMES, Framing

GL_PIECE_FRAMES = 2048   # ~22 s at hop 512: longer decodes without a phase source run Griffin-Lim in pieces
GL_OVERLAP_FRAMES = 32   # finished frames each piece starts on (held fixed) and extra frames it runs past its end


@dataclass(frozen=True)

class MelConfig:
    """Front-end parameters; saved with every model so encode and decode always agree."""

    sample_rate: int = 48000
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MelConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def num_frames(self, num_samples: int) -> int:
        """Centred frames covering `num_samples` samples (at least one)."""
        return dsp.num_frames(num_samples, self.hop_length)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def band_ranges_hz(self, bands: int) -> list[tuple[float, float]]:
        """(low, high) Hz of each code band, row 0 first: a band of k mel bins spans from halfway below
        its first filter's centre to halfway above its last's (HTK mel scale, as the filterbank)."""
        hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
        lo, hi = hz_to_mel(self.f_min), hz_to_mel(self.f_max or self.sample_rate / 2)
        step = (hi - lo) / (self.n_mels + 1)  # filter centres sit at lo + (i + 1) * step
        per = self.n_mels // bands
        edges = [lo + (r * per + 0.5) * step for r in range(bands)] + [lo + (bands * per + 0.5) * step]
        edges[0], edges[-1] = lo, hi
        hz = [700.0 * (10 ** (m / 2595.0) - 1.0) for m in edges]
        return [(float(hz[r]), float(hz[r + 1])) for r in range(bands)]


MEL_NNLS_STEPS = 1   # non-negative least-squares steps after the pseudo-inverse (5 gained 0.0006-0.002 more, 4x the time)


class MelFrontEnd:
    """Waveform <-> log-mel at one fixed configuration. Stateless after construction (thread-safe).

    The STFT, its inverse and Griffin-Lim are distill.dsp's, at this configuration's framing.
    """

    CHUNK_FRAMES = STFT_CHUNK_FRAMES  # STFT long recordings in pieces so memory stays flat

    def __init__(self, cfg: MelConfig | None = None):
        cfg = cfg or MelConfig()
        self.cfg = cfg
        self.framing = Framing(cfg.n_fft, cfg.hop_length)
        fb = AF.melscale_fbanks(cfg.n_freqs, cfg.f_min, cfg.f_max or cfg.sample_rate / 2, cfg.n_mels,
                                cfg.sample_rate, norm=None, mel_scale="htk")
        self.fbank = fb.T.contiguous()  # [n_mels, n_freqs]
        self.fbank_pinv = torch.linalg.pinv(self.fbank)  # [n_freqs, n_mels]; 3x faster than lstsq, same result
        self.fbank_t = self.fbank.T.contiguous()          # [n_freqs, n_mels]

    @property
    def window(self) -> torch.Tensor:
        """[n_fft] periodic Hann analysis/synthesis window."""
        return self.framing.window

    # ---------------------------------------------------------------- analysis
    def stft(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[T] float -> complex [n_freqs, num_frames(T)], centred frames, zero padded, computed in chunks."""
        return dsp.stft(self.framing, wave, chunk_frames=self.CHUNK_FRAMES)

    def power_to_logmel(self, power: torch.Tensor) -> torch.Tensor:
        """Linear power [.., n_freqs, F] -> log1p power mel [.., n_mels, F]."""
        return torch.log1p(torch.matmul(self.fbank, power))

    def logmel(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[T] waveform -> log1p power mel [n_mels, num_frames(T)], CHUNK_FRAMES frames at a time.

        Chunked to the mel, not only the STFT: a 30-minute clip's whole complex STFT is 1.4 GB (with
        its power, ~3 GB at once), its log-mel 86 MB."""
        x = dsp.as_samples(wave)
        frames = self.framing.num_frames(x.numel())
        parts = [self.power_to_logmel(dsp.stft(self.framing, x, a, min(frames, a + self.CHUNK_FRAMES)).abs().square())
                 for a in range(0, frames, self.CHUNK_FRAMES)]
        return torch.cat(parts, dim=-1) if parts else x.new_zeros(self.cfg.n_mels, 0)

    # ---------------------------------------------------------------- synthesis
    def logmel_to_magnitude(self, logmel: torch.Tensor) -> torch.Tensor:
        """log1p power mel [.., n_mels, F] -> linear magnitude [.., n_freqs, F]: the pseudo-inverse, then
        MEL_NNLS_STEPS multiplicative non-negative least-squares steps (p <- p * F'm / F'Fp).

        A model's mel is seldom exactly the mel of any spectrum; the pseudo-inverse's negative ripples,
        clipped to 0, add power (a decoded drum tail came back at 3.4x its power and the render put audible
        noise there). One step brings the synthesised magnitude's mel most of the way back to the one asked
        for: own-phase decoded log1p-mel L1 on held-out lmms clips 0.385 -> 0.296 (drums codec) and 0.506 ->
        0.452 (tonal), ~14 ms more for a 10 s clip (benchmarks/README.md). A real spectrum's mel comes back
        as before."""
        power_mel = torch.expm1(logmel.clamp(min=0))
        power = torch.matmul(self.fbank_pinv, power_mel).clamp(min=0)
        wanted = torch.matmul(self.fbank_t, power_mel) if MEL_NNLS_STEPS else None   # F'm, the same every step
        for _ in range(MEL_NNLS_STEPS):
            fitted = torch.matmul(self.fbank_t, torch.matmul(self.fbank, power))
            power = power * wanted / fitted.clamp(min=1e-12)
        return power.sqrt()

    def istft(self, spec: torch.Tensor, num_samples: int) -> torch.Tensor:
        """complex [n_freqs, F] -> [num_samples], exact inverse of `stft` (same framing)."""
        return dsp.istft(self.framing, spec, num_samples)

    def griffin_lim(self, magnitude: torch.Tensor, num_samples: int, n_iter: int = DEFAULT_GL_ITERS,
                    init_phase: torch.Tensor | None = None, momentum: float = GL_MOMENTUM,
                    fixed: torch.Tensor | None = None) -> torch.Tensor:
        """Fast Griffin-Lim on [n_freqs, F] magnitudes -> [num_samples] (dsp.griffin_lim).

        Starts from `init_phase` (complex unit or angle tensor; e.g. dsp.random_phase), by default from
        the phase the magnitudes imply (dsp.integrated_phase). `fixed` is an optional [n_freqs, F] weight
        in [0, 1]: 1 holds the initial complex value there (known phase stays put; only the rest iterates).
        """
        if init_phase is None:
            phase = dsp.integrated_phase(self.framing, magnitude)
        elif torch.is_complex(init_phase):
            phase = init_phase / init_phase.abs().clamp(min=1e-8)
        else:
            phase = torch.polar(torch.ones_like(magnitude), init_phase)
        spec = dsp.griffin_lim(self.framing, magnitude * phase, magnitude, n_iter, fixed=fixed, momentum=momentum)
        return self.istft(spec, num_samples)

    def invert(self, logmel: torch.Tensor, num_samples: int, n_iter: int = DEFAULT_GL_ITERS,
               phase_from: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """log-mel [n_mels, F] -> waveform [num_samples].

        With `phase_from` (a waveform at the model rate), the reference's own STFT phase is used
        as is: measured 0.06 log-mel L1 against 0.14 for random-phase GL, and more GL iterations
        from the true phase only make it worse, so none are run.
        """
        if phase_from is not None:
            return self.invert_with_phase(logmel, num_samples, phase_from)
        if logmel.shape[-1] > GL_PIECE_FRAMES + 2 * GL_OVERLAP_FRAMES:
            return self.griffin_lim_pieces(logmel, num_samples, n_iter=n_iter)
        return self.griffin_lim(self.logmel_to_magnitude(logmel), num_samples, n_iter=n_iter)

    def invert_with_phase(self, logmel: torch.Tensor, num_samples: int,
                          phase_from: np.ndarray | torch.Tensor) -> torch.Tensor:
        """log-mel [n_mels, F] with the STFT phase of `phase_from` (model-rate waveform) -> [num_samples].

        Synthesis is linear, so it runs GL_PIECE_FRAMES frames at a time, each added into the output: memory
        stays that of one piece (the whole spectrum of a 30-minute clip at once is ~2 GB), and the result is
        the one-shot synthesis up to float rounding.
        """
        ref = _fit_length(torch.as_tensor(np.asarray(phase_from), dtype=torch.float32).reshape(-1), num_samples)
        out = np.zeros(num_samples, dtype=np.float32)
        for a in range(0, logmel.shape[-1], GL_PIECE_FRAMES):
            b = min(logmel.shape[-1], a + GL_PIECE_FRAMES)
            spec = self.logmel_to_magnitude(logmel[:, a:b]) * dsp.unit_phase(dsp.stft(self.framing, ref, a, b))
            dsp.add_frames_into(self.framing, out, spec, a)
        return torch.from_numpy(out)


    def griffin_lim_pieces(self, logmel: torch.Tensor, num_samples: int, n_iter: int = DEFAULT_GL_ITERS) -> torch.Tensor:
        """Griffin-Lim of a long log-mel [n_mels, F] in pieces of GL_PIECE_FRAMES frames -> [num_samples].

        Memory stays that of one piece (a whole 10-minute clip at once took 4.4 GB): each piece starts on
        the last GL_OVERLAP_FRAMES frames the previous one finished, held fixed, so its phase continues
        theirs, and runs GL_OVERLAP_FRAMES frames past its end, which are dropped (its truncated edge
        reaches the frames it keeps only negligibly: ~3e-5 at the last one). Kept frames are overlap-added into the
        output as they come. Each piece starts from dsp.integrated_phase, turned to continue the tail's last frame.
        """
        frames, overlap = logmel.shape[-1], GL_OVERLAP_FRAMES
        out = np.zeros(num_samples, dtype=np.float32)
        tail: torch.Tensor | None = None     # complex [n_freqs, overlap]: finished frames before `start`
        start = 0
        while start < frames:
            stop = min(frames, start + GL_PIECE_FRAMES)
            a, b = max(0, start - overlap), min(frames, stop + overlap)
            magnitude = self.logmel_to_magnitude(logmel[:, a:b])
            phase = dsp.integrated_phase(self.framing, magnitude)
            fixed = None
            if tail is not None:
                j = start - a - 1     # the tail's last frame: the integrated phase carries on from it
                phase = phase * dsp.unit_phase(tail[:, -1:]) / phase[:, j:j + 1]
                fixed = torch.zeros(magnitude.shape)
                fixed[:, :start - a] = 1.0
            spec = magnitude * phase
            if tail is not None:
                spec[:, :start - a] = tail
            spec = dsp.griffin_lim(self.framing, spec, magnitude, n_iter, fixed=fixed)
            dsp.add_frames_into(self.framing, out, spec[:, start - a:stop - a], start)
            tail = spec[:, stop - a - overlap:stop - a].clone()
            start = stop
        return torch.from_numpy(out)


def _fit_length(wave: torch.Tensor, n: int) -> torch.Tensor:
    if wave.numel() >= n:
        return wave[:n]
    return torch.nn.functional.pad(wave, (0, n - wave.numel()))
