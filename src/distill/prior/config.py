"""The prior's settings and names, torch-free: what the model file (distill.bundle) reads and checks.

PriorConfig is stored as JSON in a `.distill` file's metadata, the prior's tensors under PRIOR_PREFIX.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

PRIOR_PREFIX = "prior."          # tensor names of the prior inside a .distill file
DEFAULT_PRIOR_SHARE = 0.05       # share of `distill train --minutes` spent on the prior (benchmarks/README.md)
NO_PRIOR_HELP = ("this model has no prior, so it cannot regenerate; add one with "
                 "`distill prior MODEL.distill FOLDER --minutes 2` (the folder it was trained on), "
                 "or train a new model with `distill train` (which trains the prior too)")


MAX_BANK_COLUMNS = 1 << 20      # a code bank's most columns (~50 h of audio; distill.prior.retrieval.make_bank)


class PriorError(ValueError):
    """A prior that cannot be built or used (wrong shape, foreign codec, bad settings); the message says why."""


@dataclass(frozen=True)
class PriorConfig:
    """Shape and training recipe of a CodePrior (stored in the model file as JSON).

    The grid geometry (levels, bands, codebook_size) must be the codec's; the rest is the recipe
    measured in benchmarks/prior.py for 5-500 clips on two CPU cores.
    """

    levels: int
    bands: int
    codebook_size: int
    window: int = 32          # columns per training crop (~5.5 s) and the most context one pass sees
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    label_smoothing: float = 0.1
    val_fraction: float = 0.2
    seed: int = 0
    latent_dim: int = 0       # the codec's codeword size: > 0 adds the latent path (0 = priors saved before it)
    context_width: int = 0    # hidden width of the latent path's context part (0 = none, as in priors saved before it)
    context_same: int = 0     # 1 = the context part also reads the level's own codes drawn around the cell (0 before it)
    # the code bank: the training files' own codes, which regenerate copies from (distill.prior.retrieval); 0 = none
    bank_columns: int = 0     # columns of all its files together
    bank_files: int = 0
    bank_name_bytes: int = 0  # its files' names, UTF-8, one per line

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.levels <= 8, f"levels must be 1-8, got {self.levels}"),
            (1 <= self.bands <= 64, f"bands must be 1-64, got {self.bands}"),
            (2 <= self.codebook_size <= 4096, f"codebook_size must be 2-4096, got {self.codebook_size}"),
            (4 <= self.window <= 1024, f"window must be 4-1024 columns, got {self.window}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.warmup_steps >= 1, f"warmup_steps must be >= 1, got {self.warmup_steps}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (0 <= self.latent_dim <= 1024, f"latent_dim must be 0-1024, got {self.latent_dim}"),
            (0 <= self.context_width <= 1024, f"context_width must be 0-1024, got {self.context_width}"),
            (not self.context_width or self.latent_dim, "context_width needs the latent path (latent_dim > 0)"),
            (self.context_same in (0, 1), f"context_same must be 0 or 1, got {self.context_same}"),
            (not self.context_same or self.context_width, "context_same needs the context part (context_width > 0)"),
            (0 <= self.bank_columns <= MAX_BANK_COLUMNS, f"bank_columns must be 0-{MAX_BANK_COLUMNS}, got {self.bank_columns}"),
            (0 <= self.bank_files <= self.bank_columns, f"bank_files must be 0-{self.bank_columns}, got {self.bank_files}"),
            (0 <= self.bank_name_bytes <= 64 * 1024 * 1024, f"bank_name_bytes must be 0-64 MiB, got {self.bank_name_bytes}"),
            ((self.bank_columns > 0) == (self.bank_files > 0), "a code bank needs both columns and files"),
        ]
        for ok, message in checks:
            if not ok:
                raise PriorError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        """Known fields only; each must have its default's type (a crafted file never builds a strange model).
        Files saved before the ablation (benchmarks/README.md, "Prior ablation") also hold the removed parts'
        settings (the transformer's width, layers, heads, cell_dim, band_width, band_layers, dropout, weight_decay;
        context_members, recall_kernel, product): they are ignored (build_prior refuses those priors' weights)."""
        if not isinstance(d, dict):
            raise PriorError("prior config must be a JSON object")
        out = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            want = float if f.type in ("float", float) else int
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and float(v) != int(v)):
                raise PriorError(f"prior config field {f.name} is {str(v)[:40]!r}, not a {'whole ' if want is int else ''}number")
            if want is float and not math.isfinite(v):
                raise PriorError(f"prior config field {f.name} must be finite")
            out[f.name] = want(v)
        missing = [n for n in ("levels", "bands", "codebook_size") if n not in out]
        if missing:
            raise PriorError(f"prior config lacks {', '.join(missing)}")
        return cls(**out)
