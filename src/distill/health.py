"""Codebook health: how many of a level's codes are in use and how evenly, with a plain-language verdict.

Training reports it on every validation, a saved model keeps it (and the training-set code counts
it was computed from), and the benchmarks score models with it. Pure functions over numpy arrays:
nothing here knows about the model, so every part of Distill can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HEALTHY_UTILIZATION = 0.60  # at or above this share of codes in use, a level is Healthy
LOW_UTILIZATION = 0.30      # below this share, a level is Collapsed (and training warns about it)


@dataclass(frozen=True)
class LevelHealth:
    """Codebook health of one RVQ level, measured on a set of code indices."""

    name: str
    utilization: float  # share of the codebook used at least once
    perplexity: float   # exp(entropy) of code usage: the effective number of codes
    dead_codes: int
    codebook_size: int

    @property
    def verdict(self) -> str:
        return health_verdict(self.utilization)

    def to_dict(self) -> dict:
        return {"name": self.name, "utilization": self.utilization, "perplexity": self.perplexity,
                "dead_codes": self.dead_codes, "codebook_size": self.codebook_size, "verdict": self.verdict}


def health_verdict(utilization: float) -> str:
    """Healthy (>= 60% of codes used), Some codes unused (30-60%), Collapsed (< 30%)."""
    if utilization >= HEALTHY_UTILIZATION:
        return "Healthy"
    if utilization >= LOW_UTILIZATION:
        return "Some codes unused"
    return "Collapsed"


def code_counts(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """codes [levels, ...] -> int64 counts [levels, codebook_size]; -1 (a level left out) counts as nothing."""
    codes = np.asarray(codes)
    out = np.zeros((codes.shape[0], codebook_size), dtype=np.int64)
    for q in range(codes.shape[0]):
        flat = codes[q].reshape(-1)
        out[q] = np.bincount(flat[(flat >= 0) & (flat < codebook_size)], minlength=codebook_size)
    return out


def health_from_counts(counts: np.ndarray, name: str) -> LevelHealth:
    """counts [codebook_size] of one level -> its LevelHealth (all zeros: nothing used, perplexity 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    used = int((counts > 0).sum())
    if total > 0:
        p = counts[counts > 0] / total
        perplexity = float(np.exp(-(p * np.log(p)).sum()))
    else:
        perplexity = 0.0
    return LevelHealth(name, used / len(counts), perplexity, int(len(counts) - used), len(counts))


def level_health(codes: np.ndarray, codebook_size: int, names: Sequence[str]) -> list[LevelHealth]:
    """codes [levels, ...] -> one LevelHealth per named level."""
    counts = code_counts(codes, codebook_size)
    return [health_from_counts(counts[q], name) for q, name in enumerate(names)]
