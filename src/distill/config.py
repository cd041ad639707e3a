"""VQVAEConfig (model + training settings) and adaptive_config(file_count), the dataset-size tiers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

LEVEL_NAMES = ("Structure", "Timbre", "Detail", "Fine")
CODEBOOK_SIZES = (64, 128, 256)
ARCHITECTURES = frozenset({"distill", "seed"})
NORMS = frozenset({"channel", "batch", "none"})
DEVICES = frozenset({"auto", "cpu", "cuda", "mps"})
PRECISIONS = frozenset({"auto", "fp32", "bf16"})
SEED_CHANNELS = (32, 64, 128, 256)  # the seed design's widths (and Distill's default before issue 15)
# Distill's default widths since issue 15: ~1.6x the training crops/s of SEED_CHANNELS on a CPU, with held-out
# quality per training minute as good or better (benchmarks/README.md, *Training speed*). A saved model keeps
# the widths stored in its config, so models trained with SEED_CHANNELS load unchanged.
DEFAULT_CHANNELS = (24, 48, 96, 192)
# Fields added after the first models were saved: a saved config without them meant these values.
LEGACY_DEFAULTS = {"res_from": 0, "full_res_head": True, "power_floor": 0.0, "logpower_weight": 0.0,
                   "band_embedding": False, "band_bins": 16, "precision": "fp32"}


@dataclass(frozen=True)
class VQVAEConfig:
    """Every setting that shapes a model or its training. Saved inside each .distill file.

    The seed fields keep their names; `arch` picks the network: "distill" (residual blocks,
    per-position channel norm, no dropout: the quality default) or "seed" (the reference design:
    4 stride-2 convs with BatchNorm + Dropout2d, 1x1 projections).
    """

    # model
    codebook_dim: int = 128
    codebook_size: int = 256
    num_quantizers: int = 3
    arch: str = "distill"
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    band_bins: int = 8  # mel bins per code band (8: 16 bands; benchmarks/README.md); a column is always 16 frames
    res_blocks: int = 0  # benchmarks/README.md: on a laptop CPU, more steps beat residual blocks
    res_from: int = 1  # first of the 4 stages (0 = highest resolution) that gets residual blocks
    full_res_head: bool = False  # a conv block at full mel resolution before the output (costly)
    norm: str = "channel"
    band_embedding: bool = True  # a learned vector per code band at the bottleneck (benchmarks/README.md)
    power_floor: float = 1e-8  # > 0: the decoder emits log power (wide range) and recon/logpower uses this floor
    # quantizer
    decay: float = 0.95
    commitment_weight: float = 0.25
    threshold_ema_dead_code: int = 2
    kmeans_iters: int = 10
    quantize_dropout: bool = False
    # training
    dropout: float = 0.0
    batch_size: int = 16
    max_epochs: int = 200
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    gradient_clip_norm: float = 1.0
    warmup_steps: int = 10
    chunk_duration_s: float = 1.0
    val_fraction: float = 0.2
    augmentation_expansion: int = 10
    checkpoint_interval: int = 10
    preview_interval: int = 20
    max_checkpoints: int = 3
    device: str = "auto"
    precision: str = "auto"  # training only: "auto" = bf16 mixed precision where the processor has it natively
    num_workers: int = 0
    seed: int = 0
    # loss weights (keys match losses.LOSS_KEYS)
    mse_weight: float = 1.0
    multiscale_weight: float = 0.5  # the seed's avg-pooled multi-scale mel MSE (a locked decision)
    spectral_weight: float = 0.0
    logpower_weight: float = 0.25

    def __post_init__(self) -> None:
        _check(2 <= self.num_quantizers <= 4, f"num_quantizers must be 2-4, got {self.num_quantizers}")
        _check(8 <= self.codebook_dim <= 1024, f"codebook_dim must be 8-1024, got {self.codebook_dim}")
        _check(2 <= self.codebook_size <= 4096, f"codebook_size must be 2-4096 (adaptive: 64/128/256), got {self.codebook_size}")
        _check(0.0 < self.decay < 1.0, f"decay must be in (0, 1), got {self.decay}")
        _check(self.commitment_weight >= 0, f"commitment_weight must be >= 0, got {self.commitment_weight}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _check(0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}")
        _check(0.1 <= self.chunk_duration_s <= 30, f"chunk_duration_s must be 0.1-30, got {self.chunk_duration_s}")
        _check(self.arch in ARCHITECTURES, f"arch must be one of {sorted(ARCHITECTURES)}, got {self.arch!r}")
        _check(self.norm in NORMS, f"norm must be one of {sorted(NORMS)}, got {self.norm!r}")
        _check(self.precision in PRECISIONS, f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        _check(self.device in DEVICES, f"device must be one of {sorted(DEVICES)}, got {self.device!r}")
        _check(len(self.channels) == 4 and all(c >= 1 for c in self.channels),
               f"channels must be 4 positive widths (one per 2x downsampling), got {self.channels}")
        _check(self.band_bins in (4, 8, 16), f"band_bins must be 4, 8 or 16, got {self.band_bins}")
        _check(self.arch != "seed" or self.band_bins == 16, f"the seed design has 16 mel bins per band, got {self.band_bins}")
        _check(self.res_blocks >= 0, f"res_blocks must be >= 0, got {self.res_blocks}")
        _check(0 <= self.res_from <= 4, f"res_from must be 0-4, got {self.res_from}")
        _check(self.power_floor >= 0, f"power_floor must be >= 0, got {self.power_floor}")

    @property
    def level_names(self) -> tuple[str, ...]:
        return LEVEL_NAMES[: self.num_quantizers]

    def replace(self, **changes) -> VQVAEConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> VQVAEConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {**LEGACY_DEFAULTS, **{k: v for k, v in d.items() if k in known}}
        if "channels" in kwargs:
            kwargs["channels"] = tuple(kwargs["channels"])
        return cls(**kwargs)  # fingerprints hash the JSON as stored (bundle.BundleInfo.stored_config)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def seed_config(file_count: int) -> VQVAEConfig:
    """The seed document's reference design at its adaptive tier (the benchmark's baseline)."""
    base = adaptive_config(file_count)
    return base.replace(arch="seed", norm="batch", res_blocks=0, band_embedding=False, band_bins=16, channels=SEED_CHANNELS,
                        dropout=0.4 if file_count <= 20 else 0.2,
                        batch_size=32, warmup_steps=0, spectral_weight=0.0, mse_weight=0.0, multiscale_weight=1.0,
                        logpower_weight=0.0, power_floor=0.0, precision="fp32",
                        learning_rate=5e-4 if file_count <= 20 else 1e-3)


def adaptive_config(file_count: int, **overrides) -> VQVAEConfig:
    """Settings scaled to the dataset: codebook 64 / 128 / 256 for 5-20 / 21-100 / 101-500 files.

    Smaller datasets get a smaller codebook (fewer dead codes), a faster EMA decay (sparse
    updates must still move the codebook) and fewer epochs. Outside 5-500 files the nearest
    tier is used; the caller warns the user.
    """
    if file_count < 1:
        raise ValueError(f"file_count must be >= 1, got {file_count}")
    if file_count <= 20:
        tier = dict(codebook_size=64, decay=0.8, max_epochs=100, learning_rate=1e-3)
    elif file_count <= 100:
        tier = dict(codebook_size=128, decay=0.9, max_epochs=200, learning_rate=1e-3)
    else:
        tier = dict(codebook_size=256, decay=0.95, max_epochs=300, learning_rate=1e-3)
    tier.update(overrides)
    return VQVAEConfig(**tier)
