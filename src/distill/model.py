"""VQEncoder, VQDecoder and ConvVQVAE: log-mel [B, 1, M, T] <-> code grid [B, Q, M/band_bins, ceil(T/16)].

Four stages halve time (16x): with 128 mels at 48 kHz / hop 512 one code column covers 16 frames
= 0.171 s. The last log2(band_bins) stages also halve frequency: by default a band row covers
8 mel bins (16 bands) and the first stage works at full mel resolution; the seed design and older
models use 16 (8 bands).
Nothing here keeps per-call state: shapes go in and come out explicitly, so one model can serve
several threads at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQVAEConfig

DOWNSAMPLE = 16  # frames per code column: 4 stages each halve time
LOG_POWER_SCALE = 4.0  # with power_floor > 0: natural-log units of output power per unit of activation
OUT_SHIFT = -4.0       # an untrained decoder starts at log power -4 (near silence), not at log1p 0.69


class VQLibrary(NamedTuple):
    module: ModuleType                 # vector_quantize_pytorch.vector_quantize_pytorch
    rotation: Callable | None          # the library's own rotation-trick transform (None: it has none)


@functools.cache
def vq_library() -> VQLibrary:
    """The quantizer library, imported on first use, with `rotation_trick_transform` installed in it.

    Importing it costs ~3 s (einx, torch._dynamo), which `distill info`, `--help` and every command that
    fails on its arguments would otherwise pay before doing anything; a model's construction imports it."""
    import vector_quantize_pytorch.vector_quantize_pytorch as module

    lib = VQLibrary(module, getattr(module, "efficient_rotation_trick_transform", None))
    if lib.rotation is not None:
        module.efficient_rotation_trick_transform = rotation_trick_transform
    return lib


def rotation_trick_transform(u: torch.Tensor, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The quantizer library's rotation-trick transform (section 4.2 of arXiv:2410.06424), rows [N, D]:
    e - 2 (e.w) w + 2 (e.u) q with w = unit(u + q), u and q held constant. The same values and gradients
    as the library's version, with per-row dot products in place of its N batched [1 x D] @ [D x 1] @
    [1 x D] matrix products, which were ~4% of a CPU training step (benchmarks/train_speed.py)."""
    w = vq_library().module.l2norm(u + q, dim=1).detach()
    u, q = u.detach(), q.detach()
    return e - 2 * (e * w).sum(-1, keepdim=True) * w + 2 * (e * u).sum(-1, keepdim=True) * q


def use_fast_rotation(enabled: bool = True) -> None:
    """Route the library's rotation trick through `rotation_trick_transform` (on from the library's first use),
    or back to its own (for benchmarks). Nothing changes if the library no longer has that function."""
    lib = vq_library()
    if lib.rotation is not None:
        lib.module.efficient_rotation_trick_transform = rotation_trick_transform if enabled else lib.rotation


class ChannelNorm(nn.Module):
    """LayerNorm over channels at each time-frequency position.

    Unlike BatchNorm or GroupNorm it never mixes positions, so a code depends only on its
    neighbourhood: long clips can be encoded in pieces without seams, and an edit stays local.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)  # contiguous: ~1.5x faster on CPU


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class BandEmbedding(nn.Module):
    """Adds a learned vector per code band: convolutions cannot tell band 2 from band 5, but a
    mel tile's meaning (bass body, presence, air) depends on where it sits."""

    def __init__(self, channels: int, bands: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, bands, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


class ResBlock(nn.Module):
    """Pre-norm residual block: norm -> SiLU -> 3x3 -> norm -> SiLU -> 3x3, plus skip."""

    def __init__(self, channels: int, norm: str, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            make_norm(norm, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            make_norm(norm, channels), nn.SiLU(), nn.Dropout2d(dropout), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class VQEncoder(nn.Module):
    """log-mel [B, 1, M, T] -> spatial embeddings [B, D, M/band_bins, ceil(T/16)]."""

    def __init__(self, cfg: VQVAEConfig, n_mels: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for stage, out_ch in enumerate(cfg.channels):
            if cfg.arch == "seed":
                layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.BatchNorm2d(out_ch),
                           nn.ReLU(inplace=True), nn.Dropout2d(cfg.dropout)]
            else:
                sf = freq_stride(cfg, stage)
                layers += [nn.Conv2d(in_ch, out_ch, (2 + sf, 4), stride=(sf, 2), padding=1),
                           make_norm(cfg.norm, out_ch), nn.SiLU()]
                layers += [ResBlock(out_ch, cfg.norm, cfg.dropout) for _ in range(stage_blocks(cfg, stage))]
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        self.band = BandEmbedding(in_ch, n_mels // cfg.band_bins) if cfg.band_embedding else nn.Identity()
        self.proj = nn.Conv2d(in_ch, cfg.codebook_dim, 1)
        self.band_bins = cfg.band_bins

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        _check_mel(mel)
        return self.proj(self.band(self.convs(pad_to_grid(mel, self.band_bins))))


class VQDecoder(nn.Module):
    """Quantized embeddings [B, D, H, W] -> non-negative log-mel [B, 1, H*band_bins, frames] (Softplus, cropped)."""

    def __init__(self, cfg: VQVAEConfig, n_mels: int = 128):
        super().__init__()
        chans = list(reversed(cfg.channels))  # e.g. 256, 128, 64, 32
        self.log_power_out = cfg.arch != "seed" and cfg.power_floor > 0
        self.proj = nn.Conv2d(cfg.codebook_dim, chans[0], 1)
        self.band = BandEmbedding(chans[0], n_mels // cfg.band_bins) if cfg.band_embedding else nn.Identity()
        layers: list[nn.Module] = []
        outs = chans[1:] + [chans[-1]]
        for i, (in_ch, out_ch) in enumerate(zip(chans, outs, strict=True)):
            last = i == len(chans) - 1
            if cfg.arch == "seed":
                out_ch = 1 if last else out_ch
                layers.append(nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1))
                if not last:
                    layers += [nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True), nn.Dropout2d(cfg.dropout)]
            else:
                stage = len(chans) - 1 - i  # mirror of the encoder stage at this resolution
                layers += [ResBlock(in_ch, cfg.norm, cfg.dropout) for _ in range(stage_blocks(cfg, stage))]
                sf = freq_stride(cfg, stage)
                up = dict(kernel_size=(2 + sf, 4), stride=(sf, 2), padding=1)
                if last and not cfg.full_res_head:  # upsample straight to the mel: full resolution is the costly part
                    layers.append(nn.ConvTranspose2d(in_ch, 1, **up))
                    continue
                layers += [nn.ConvTranspose2d(in_ch, out_ch, **up), make_norm(cfg.norm, out_ch), nn.SiLU()]
        if cfg.arch != "seed" and cfg.full_res_head:
            layers.append(nn.Conv2d(chans[-1], 1, 3, padding=1))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, quantized: torch.Tensor, frames: int) -> torch.Tensor:
        *body, head = self.deconvs
        x = self.band(self.proj(quantized))
        for layer in body:
            x = layer(x)
        with torch.autocast(x.device.type, enabled=False):  # the output layer stays fp32 under mixed precision:
            out = head(x.float())                            # bf16 would round log-mel 8..16 to steps of 0.06
        if self.log_power_out:  # the output is log power: softplus(log p) = log1p(p), so the range stays wide
            out = out * LOG_POWER_SCALE + OUT_SHIFT
        return F.softplus(out)[..., :frames]


class VQOutput(NamedTuple):
    """What one forward pass returns; fixed fields whatever the mode."""

    recon: torch.Tensor        # [B, 1, M, T] reconstructed log-mel
    codes: torch.Tensor        # [B, Q, H, W] code grid (levels, bands low->high, columns)
    commit_loss: torch.Tensor  # scalar, already weighted by commitment_weight (zero in eval mode)
    latent: torch.Tensor       # [B, D, H, W] encoder output before quantization
    quantized: torch.Tensor    # [B, D, H, W] sum of the residual codewords


class ConvVQVAE(nn.Module):
    """Convolutional residual-VQ autoencoder over log-mel spectrograms."""

    def __init__(self, cfg: VQVAEConfig, n_mels: int = 128, sync_codebook: bool = False):
        """sync_codebook: reduce the codebooks' EMA updates and k-means init over a torch.distributed process group
        (it must exist by then), so the ranks of a data-parallel run keep one codebook (distill.parallel)."""
        super().__init__()
        if n_mels % cfg.band_bins:
            raise ValueError(f"n_mels must be a multiple of {cfg.band_bins} (band_bins), got {n_mels}")
        self.cfg = cfg
        self.n_mels = n_mels
        self.encoder = VQEncoder(cfg, n_mels)
        vq_library()   # imported here (with the fast rotation trick), not when this module is
        from vector_quantize_pytorch import ResidualVQ

        self.quantizer = ResidualVQ(
            dim=cfg.codebook_dim,
            num_quantizers=cfg.num_quantizers,
            codebook_size=cfg.codebook_size,
            decay=cfg.decay,
            commitment_weight=cfg.commitment_weight,  # the library applies it: never weight again
            threshold_ema_dead_code=cfg.threshold_ema_dead_code,
            kmeans_init=True,
            kmeans_iters=cfg.kmeans_iters,
            quantize_dropout=cfg.quantize_dropout,
            sync_codebook=sync_codebook,
            sync_kmeans=sync_codebook,
        )
        self.decoder = VQDecoder(cfg, n_mels)

    @property
    def num_bands(self) -> int:
        return self.n_mels // self.cfg.band_bins

    # -------------------------------------------------------------- pieces
    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, 1, M, T] -> latent [B, D, H, W]."""
        return self.encoder(mel)

    def quantize(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """latent [B, D, H, W] -> (quantized [B, D, H, W], codes [B, Q, H, W], weighted commitment loss)."""
        B, D, H, W = latent.shape
        seq = latent.permute(0, 2, 3, 1).reshape(B, H * W, D)  # row-major: band, then column
        quantized, indices, commit = self.quantizer(seq)
        quantized = quantized.reshape(B, H, W, D).permute(0, 3, 1, 2)
        codes = indices.reshape(B, H, W, -1).permute(0, 3, 1, 2)
        return quantized, codes, commit.sum()

    def quantize_nearest(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode quantizer's choice in plain torch: latent [B, D, H, W] -> (quantized [B, D, H, W],
        codes [B, Q, H, W]), each residual level taking its nearest codeword (argmin of the squared distance).

        The same codes as `quantize` in eval (which takes the argmax of minus the clamped square root of
        that distance), without the library's per-call work: on a busy 2-core CPU its call on one 44 s encode
        chunk took 0.1-0.45 s against ~0.01 s here. Used where quantization runs once per search step
        (`distill.codec.fast_search_codes`). No gradient flows through it: use it straight-through.
        """
        B, D, H, W = latent.shape
        books = self.codebooks.detach()  # [Q, K, D]
        residual = latent.detach().permute(0, 2, 3, 1).reshape(B * H * W, D)
        total, picks = torch.zeros_like(residual), []
        for book in books:
            dist = torch.addmm(book.square().sum(-1)[None], residual, book.t(), alpha=-2)  # |c|^2 - 2 r.c
            idx = dist.argmin(-1)
            word = book[idx]
            total, residual, picks = total + word, residual - word, [*picks, idx]
        codes = torch.stack(picks, -1).reshape(B, H, W, -1).permute(0, 3, 1, 2)
        return total.reshape(B, H, W, D).permute(0, 3, 1, 2), codes

    @property
    def codebooks(self) -> torch.Tensor:
        """[Q, codebook_size, D]: every level's codewords, as the quantizer holds them (its own `codebooks`).

        The quantizer has no projection (its dim is the latent's), so these are latent-space vectors.
        """
        return self.quantizer.codebooks

    def commitment_loss(self, latent: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The quantizer's training commitment term for `codes`, in any mode (in eval it reports zero).

        Residual VQ commits each level to its own residual: the sum over levels of commitment_weight *
        mean((residual_q - codeword_q)^2), residual_0 = latent. Codewords come from the quantizer's
        get_codes_from_indices; a level left out (-1, quantizer dropout) adds nothing, as in training.
        latent [B, D, H, W], codes [B, Q, H, W] -> scalar.
        """
        B, D, H, W = latent.shape
        idx = codes.permute(0, 2, 3, 1).reshape(B, H * W, -1).long()
        words = self.quantizer.get_codes_from_indices(idx)  # [Q, B, H*W, D], zero where -1
        residual = self.quantizer.project_in(latent.permute(0, 2, 3, 1).reshape(B, H * W, D))
        total = latent.new_zeros(())
        for q in range(words.shape[0]):
            used = (idx[..., q] >= 0).to(latent.dtype)  # [B, H*W]
            total = total + ((residual - words[q]).square().mean(-1) * used).mean()
            residual = residual - words[q]
        return total * self.cfg.commitment_weight

    def codes_to_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q, H, W] (-1 = level left out) -> quantized [B, D, H, W].

        Looks the codewords up directly and adds them level by level, as the quantizer's forward pass does
        (same sums, bit for bit). The library's get_output_from_indices builds an einx graph for every new
        input shape (~0.5 s each on a laptop core), which every differently sized edit window paid."""
        books = self.quantizer.codebooks                                     # [num_quantizers, K, D]
        out = None
        for q in range(min(codes.shape[1], books.shape[0])):                 # missing levels contribute nothing
            idx = codes[:, q].long()                                         # [B, H, W]
            word = books[q][idx.clamp(min=0)] * (idx >= 0).unsqueeze(-1).to(books.dtype)   # [B, H, W, D]
            out = word if out is None else out + word
        if out is None:
            B, _, H, W = codes.shape
            out = books.new_zeros(B, H, W, books.shape[-1])
        return self.quantizer.project_out(out).permute(0, 3, 1, 2)

    def decode(self, quantized: torch.Tensor, frames: int) -> torch.Tensor:
        """quantized [B, D, H, W] -> log-mel [B, 1, M, frames] (frames <= 16 W)."""
        return self.decoder(quantized, frames)

    def decode_codes(self, codes: torch.Tensor, frames: int) -> torch.Tensor:
        """codes [B, Q, H, W] -> log-mel [B, 1, M, frames]."""
        return self.decode(self.codes_to_latent(codes), frames)

    def forward(self, mel: torch.Tensor) -> VQOutput:
        latent = self.encode(mel)
        quantized, codes, commit = self.quantize(latent)
        recon = self.decode(quantized, mel.shape[-1])
        return VQOutput(recon, codes, commit, latent, quantized)


def stage_blocks(cfg: VQVAEConfig, stage: int) -> int:
    """Residual blocks at one stage: none above `res_from`, where they cost most and help least."""
    return cfg.res_blocks if stage >= cfg.res_from else 0


def freq_stride(cfg: VQVAEConfig, stage: int) -> int:
    """Frequency stride of one stage (time always halves): with fewer than 4 halvings the first
    stages keep the full mel resolution, where harmonics are resolved (benchmarks/README.md:
    0.307 vs 0.329 held-out with the last stage keeping it, in spite of 40% fewer steps)."""
    keep = 4 - (cfg.band_bins.bit_length() - 1)  # 16 -> 0, 8 -> 1, 4 -> 2 full-resolution stages
    return 1 if stage < keep else 2


def grid_width(frames: int) -> int:
    """Code columns for a mel of `frames` frames."""
    return -(-int(frames) // DOWNSAMPLE)


def pad_to_grid(mel: torch.Tensor, band_bins: int = DOWNSAMPLE) -> torch.Tensor:
    """Zero-pad time to whole 16-frame columns and frequency to whole bands; zero is silence in log1p-mel."""
    h, w = mel.shape[-2:]
    ph, pw = (-h) % band_bins, (-w) % DOWNSAMPLE
    return F.pad(mel, (0, pw, 0, ph)) if (ph or pw) else mel


def _check_mel(mel: torch.Tensor) -> None:
    if mel.dim() != 4 or mel.shape[1] != 1:
        raise ValueError(f"expected log-mel [B, 1, n_mels, frames], got {tuple(mel.shape)}")
