"""Regenerate: redraw a region with the model's prior. The prior (distill.prior) draws code arrays; this makes
them edits: which cells of the region are redrawn (strength), one EditResult per candidate, labelled."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..codes import CodeGrid
from ..prior import NO_PRIOR_HELP, CodePrior, describe_origins, draw_versions
from .operations import EditResult, RegenerateSettings
from .regions import EditError, Region

if TYPE_CHECKING:
    from ..codec import Codec


def regenerate(codec: Codec, grid: CodeGrid, region: Region, settings: RegenerateSettings | None = None
               ) -> list[EditResult]:
    """Redraw `region` of `grid` with `codec`'s prior: one EditResult per candidate (regenerate_region).
    EditError saying how to add a prior when the model has none (or why its prior cannot be used)."""
    if codec.prior is None:
        raise EditError(codec.prior_note or NO_PRIOR_HELP)
    codec.check(grid)
    return regenerate_region(codec.prior, grid, region, settings)


def selection_cells(grid: CodeGrid, region: Region, strength: float, seed: int) -> np.ndarray:
    """bool [levels, bands, columns]: the region's cells to redraw: all of them at strength 1, a seeded
    random share otherwise (round(strength * cells), so strength 0 redraws nothing)."""
    region.validate(grid)
    cells = np.zeros(grid.codes.shape, dtype=bool)
    cells[region.index()] = True
    if strength >= 1.0:
        return cells
    idx = np.flatnonzero(cells)
    keep = int(round(strength * idx.size))
    chosen = np.random.default_rng(int(seed)).choice(idx, size=keep, replace=False) if keep else idx[:0]
    out = np.zeros(cells.size, dtype=bool)
    out[chosen] = True
    return out.reshape(cells.shape)


def regenerate_region(model: CodePrior | None, grid: CodeGrid, region: Region,
                      settings: RegenerateSettings | None = None) -> list[EditResult]:
    """Redraw `region` of `grid` with the prior: one EditResult per candidate.

    The region's levels are redrawn (coarse to fine), everything else conditions the draw and is
    returned bit-identical. Strength 0 returns the grid unchanged."""
    if model is None:
        raise EditError(NO_PRIOR_HELP)
    settings = settings or RegenerateSettings()
    cfg = model.cfg
    if (grid.num_levels, grid.num_bands) != (cfg.levels, cfg.bands):
        raise EditError(f"the prior is for {cfg.levels} levels x {cfg.bands} bands, the clip has "
                        f"{grid.num_levels} x {grid.num_bands}")
    todo = selection_cells(grid, region, settings.strength, settings.seed)
    with torch.inference_mode():
        drawn = draw_versions(model, grid.codes, todo, settings)
    what = region.describe(grid)
    defaults = RegenerateSettings()
    # the temperature is always named: its default has changed (1 -> 0.7), and a label must still say what was drawn
    named = (("strength", settings.strength, settings.strength != 1.0), ("temperature", settings.temperature, True),
             ("steps", settings.steps, settings.steps != defaults.steps))
    extra = "".join(f", {name} {value:g}" for name, value, shown in named if shown)
    out = []
    for i, version in enumerate(drawn):
        codes = np.where(todo, version.codes, grid.codes)   # belt and braces: only the chosen cells can change
        # the candidates of one draw share a generator: (seed, version i of N) is what reproduces one
        tag = f", version {i + 1} of {settings.candidates}" if settings.candidates > 1 else ""
        origin = describe_origins(list(version.origins), grid.seconds_per_column) or version.note
        label = f"regenerate {what} (seed {settings.seed}{tag}{extra}{'' if settings.retrieve else ', network'})"
        out.append(EditResult(grid.with_codes(codes), label, region, origin=origin))
    return out
