"""Which cells are hidden: the training masks (shaped like edits), the benchmark's and validation's edit mask,
and the decoding schedule (how many of a level's cells stay hidden after each step) the sampler follows and
the evaluation scores in."""

from __future__ import annotations

import math

import numpy as np

MASK_KINDS = ("tokens", "span", "rect", "level")


def cosine_ratio(u: float) -> float:
    """MaskGIT's schedule: u ~ U(0, 1) -> share masked, weighted toward heavy masking."""
    return math.cos(math.pi * u / 2)


def training_mask(levels: int, bands: int, columns: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """bool [levels, bands, columns]: the cells to hide for one training example, shaped like edits.

    tokens: random cells at a cosine ratio. span: whole columns, 1 + Geometric(1/6) wide 80% of the time, else
    1 to the window (capped at it). rect: a band x time rectangle of such a width.
    level: a whole level at a cosine ratio (SoundStorm). In span/rect/level one level q is the one being
    drawn: coarser levels stay visible, finer ones are hidden too (usually) or kept, and level q's
    cells inside the shape are hidden at a cosine ratio, the states iterative decoding passes through.
    Never empty."""
    kind = kind or str(rng.choice(MASK_KINDS, p=(0.15, 0.45, 0.25, 0.15)))
    m = np.zeros((levels, bands, columns), dtype=bool)
    if kind == "tokens":
        m = rng.random(m.shape) < cosine_ratio(rng.random())
    else:
        if kind == "level":
            r0, r1, c0, c1 = 0, bands - 1, 0, columns - 1
        else:
            width = int(min(columns, 1 + rng.geometric(1 / 6) if rng.random() < 0.8 else rng.integers(1, columns + 1)))
            c0 = int(rng.integers(0, columns - width + 1))
            c1 = c0 + width - 1
            if kind == "rect":
                h = int(rng.integers(1, bands + 1))
                r0 = int(rng.integers(0, bands - h + 1))
                r1 = r0 + h - 1
            else:
                r0, r1 = 0, bands - 1
        q = int(rng.integers(0, levels))
        shape = m[q, r0:r1 + 1, c0:c1 + 1].shape
        m[q, r0:r1 + 1, c0:c1 + 1] = rng.random(shape) < cosine_ratio(rng.random())
        if rng.random() < 0.75:
            m[q + 1:, r0:r1 + 1, c0:c1 + 1] = True
    if not m.any():
        m[tuple(int(rng.integers(0, n)) for n in m.shape)] = True
    return m


def edit_mask(levels: int, bands: int, columns: int, rng: np.random.Generator, keep_levels: int = 1,
              max_span: int = 16) -> np.ndarray:
    """bool [levels, bands, columns]: the benchmark's and validation's edit-shaped mask: a span of 1-max_span
    columns, every band, levels from `keep_levels` up hidden (Structure kept by default)."""
    width = int(rng.integers(1, min(max_span, columns) + 1))
    c0 = int(rng.integers(0, columns - width + 1))
    m = np.zeros((levels, bands, columns), dtype=bool)
    m[min(keep_levels, levels - 1):, :, c0:c0 + width] = True
    return m


def hidden_after(total: int, step: int, steps: int) -> int:
    """How many of a level's `total` cells to draw are still hidden after decoding step `step` (0-based) of
    `steps`: the cosine schedule (MaskGIT), few at first, most at the end; the first step draws at least one
    and the last draws the rest."""
    if step + 1 >= steps or total <= 1:
        return 0
    return min(int(math.floor(total * math.cos(math.pi / 2 * (step + 1) / steps))), total - 1)


def level_steps(steps: int, rank: int) -> int:
    """Decoding steps for the rank-th redrawn level (0 = coarsest): steps, steps/3, steps/6, ..."""
    return max(1, int(round(steps / (1, 3, 6, 8, 8, 8, 8, 8)[min(rank, 7)])))
