"""Training losses: mel MSE, the seed's multi-scale mel loss, a multi-resolution spectral term, commitment.

No KL anywhere: the bottleneck is discrete. Every loss comes back under a slash-namespaced key,
and the weights in VQVAEConfig use the same keys; the total is summed in one place (`total_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import VQVAEConfig

LOSS_KEYS = ("recon/mse", "recon/multiscale", "recon/spectral", "recon/logpower", "vq/commitment")
LOGPOWER_FLOOR = 1e-5  # mel power of 1e-5 is ~110 dB below a full-scale sine


def multiscale_mel_loss(recon: torch.Tensor, target: torch.Tensor, scales: tuple[int, ...] = (1, 2, 4)) -> torch.Tensor:
    """The seed's loss: mean of MSEs between avg-pooled log-mels at several scales."""
    total = recon.new_zeros(())
    for s in scales:
        r = F.avg_pool2d(recon, s) if s > 1 else recon
        t = F.avg_pool2d(target, s) if s > 1 else target
        total = total + F.mse_loss(r, t)
    return total / len(scales)


def spectral_loss(recon: torch.Tensor, target: torch.Tensor, fbank_pinv: torch.Tensor,
                  time_scales: tuple[int, ...] = (1, 2, 4)) -> torch.Tensor:
    """Multi-resolution spectral convergence + log-magnitude L1 on the linear magnitude.

    Both log-mels are lifted to linear magnitude through the mel pseudo-inverse (the same path
    the decoder uses to make audio), then compared at several time resolutions. This weighs
    loud partials the way the ear does, which MSE on log1p values does not.
    """
    def linear_mag(logmel: torch.Tensor) -> torch.Tensor:
        power = torch.expm1(logmel.clamp(min=0, max=30))
        return torch.matmul(fbank_pinv, power.squeeze(1)).clamp(min=0).add(1e-7).sqrt()

    r_mag, t_mag = linear_mag(recon), linear_mag(target)
    total = recon.new_zeros(())
    for s in time_scales:
        r = F.avg_pool1d(r_mag, s, ceil_mode=True) if s > 1 else r_mag
        t = F.avg_pool1d(t_mag, s, ceil_mode=True) if s > 1 else t_mag
        sc = torch.linalg.vector_norm(t - r, dim=(-2, -1)) / torch.linalg.vector_norm(t, dim=(-2, -1)).clamp(min=1e-5)
        log_l1 = (torch.log(r + 1e-5) - torch.log(t + 1e-5)).abs().mean(dim=(-2, -1))
        total = total + sc.mean() + log_l1.mean()
    return total / len(time_scales)


def logpower_l1(recon: torch.Tensor, target: torch.Tensor, floor: float = LOGPOWER_FLOOR) -> torch.Tensor:
    """L1 between log(mel power + floor): weighs quiet tails and silence the way the ear and
    log-spectral distances do, where MSE on log1p values sees only the loud partials."""
    def lp(x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.expm1(x.clamp(min=0, max=30)) + floor)
    return (lp(recon) - lp(target)).abs().mean()


def compute_losses(recon: torch.Tensor, target: torch.Tensor, commit_loss: torch.Tensor,
                   fbank_pinv: torch.Tensor | None, cfg: VQVAEConfig,
                   valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All loss terms (unweighted except commitment, which the quantizer already weighted).

    `valid` ([B, 1, 1, T], bool) marks the real frames of each crop: the silence padded after a
    short clip is not audio, so it is scored as perfect. Left in, it dominated the log-power term
    (exact zeros sit at log 1e-8) and made validation swing +-40% between checkpoints.
    """
    if valid is not None:
        recon = torch.where(valid, recon, target)
    losses = {
        "recon/mse": F.mse_loss(recon, target),
        "recon/multiscale": multiscale_mel_loss(recon, target) if cfg.multiscale_weight else recon.new_zeros(()),
        "recon/spectral": (spectral_loss(recon, target, fbank_pinv)
                           if cfg.spectral_weight and fbank_pinv is not None else recon.new_zeros(())),
        "recon/logpower": (logpower_l1(recon, target, cfg.power_floor or LOGPOWER_FLOOR)
                           if cfg.logpower_weight else recon.new_zeros(())),
        "vq/commitment": commit_loss.sum(),
    }
    return losses


def loss_weights(cfg: VQVAEConfig) -> dict[str, float]:
    return {"recon/mse": cfg.mse_weight, "recon/multiscale": cfg.multiscale_weight,
            "recon/spectral": cfg.spectral_weight, "recon/logpower": cfg.logpower_weight, "vq/commitment": 1.0}


def total_loss(losses: dict[str, torch.Tensor], cfg: VQVAEConfig) -> torch.Tensor:
    """The one place the terms are summed."""
    weights = loss_weights(cfg)
    return sum(weights[k] * v for k, v in losses.items())
