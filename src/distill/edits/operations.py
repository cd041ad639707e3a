"""Edit operations on a CodeGrid: set, copy, swap, blend, shift, repeat, reverse, randomize (and the settings
of regenerate, which distill.edits.regenerate carries out with distill.prior).

Each takes grids and Regions and returns an EditResult (a new grid, the cells touched, and where
copied content came from); inputs are never mutated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..codes import CodeGrid
from .regions import EditError, Region


class LatentSpace(Protocol):
    """What blend needs of a model (distill.codec.Codec is one): its codewords and its residual quantizer."""

    @property
    def codebooks(self) -> np.ndarray: ...                 # float [levels, codebook_size, D]
    def codes_to_latent(self, codes: np.ndarray) -> Any: ...   # codes [levels, bands, cols] -> latent [D, bands, cols]
    def latent_to_codes(self, latent: Any) -> np.ndarray: ...  # the inverse, through the residual levels


@dataclass(frozen=True)
class DonorPatch:
    """Where copied cells came from, so a renderer can transplant phase from the donor audio.

    Columns src_c0.. of the donor land on dst_c0.. of the edited grid (n_cols columns); r0..r1 are
    the destination rows and src_r0 the first source row (None = same as r0).
    `donor` is "self" (the edited clip before the edit) or "other" (the second clip of the operation).
    """

    donor: str
    src_c0: int
    dst_c0: int
    n_cols: int
    r0: int
    r1: int
    levels: tuple[int, ...] = ()
    src_r0: int | None = None


@dataclass(frozen=True)
class EditResult:
    """A new grid plus what changed; inputs are never mutated."""

    grid: CodeGrid
    label: str
    region: Region                      # the region actually touched in `grid`
    clipped: bool = False               # part of the requested paste fell off the grid's edge
    donors: tuple[DonorPatch, ...] = ()
    other: CodeGrid | None = None       # swaps between two clips: the second clip's new grid
    other_region: Region | None = None
    other_donors: tuple[DonorPatch, ...] = field(default=())  # for `other`; "other" there means `grid`'s clip
    origin: str = ""                    # regenerate: where the material came from ("from kick.wav 1.2–1.9 s") or how drawn

    def for_other(self) -> EditResult:
        """The second clip's side of a two-clip swap, ready to push onto that clip's history."""
        if self.other is None or self.other_region is None:
            raise EditError("this edit changed only one clip")
        return EditResult(self.other, self.label, self.other_region, self.clipped, self.other_donors)


DEFAULT_STEPS = 10               # regenerate: decoding steps for the coarsest redrawn level; finer levels take fewer (12: 0.1% lower NLL, 9% slower)
DEFAULT_TEMPERATURE = 0.7        # regenerate: the network closes 13-23 points more of the decoded-agreement gap than at 1 (benchmarks/README.md)
DEFAULT_TOP_P = 0.9
DEFAULT_CANDIDATES = 4           # what the studio offers to audition
MAX_CANDIDATES = 16


@dataclass(frozen=True)
class RegenerateSettings:
    """How a region is redrawn. strength: share of the selected cells redrawn (1 = all, 0 = none);
    temperature scales the logits; top_p keeps the smallest set of codes holding that much probability;
    steps: decoding steps for the coarsest redrawn level (finer levels take a third, then a sixth);
    polish: re-draw the least confident cells next to the region's edges once more (network draws);
    retrieve: copy patches of real codes from the training files where the prior keeps them (else the network)."""

    strength: float = 1.0
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    seed: int = 0
    steps: int = DEFAULT_STEPS
    candidates: int = 1
    polish: bool = True
    retrieve: bool = True

    def __post_init__(self) -> None:
        def number(v: object) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

        if not (number(self.strength) and 0.0 <= self.strength <= 1.0):
            raise EditError(f"strength {self.strength!r} must be within 0-1")
        if not (number(self.temperature) and 0.05 <= self.temperature <= 5.0):
            raise EditError(f"temperature {self.temperature!r} must be within 0.05-5")
        if not (number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise EditError(f"top_p {self.top_p!r} must be within 0-1 (above 0)")
        for name, lo, hi in (("seed", 0, 2**63 - 1), ("steps", 1, 64), ("candidates", 1, MAX_CANDIDATES)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise EditError(f"{name} must be a whole number {lo}-{hi}, got {v!r}")


# ---------------------------------------------------------------------- helpers
def check_compatible(a: CodeGrid, b: CodeGrid) -> None:
    if a.level_names != b.level_names or a.num_bands != b.num_bands:
        raise EditError(f"clips do not share a layout: {list(a.level_names)} x {a.num_bands} bands vs "
                        f"{list(b.level_names)} x {b.num_bands} bands")
    if a.model and b.model and a.model != b.model:
        raise EditError(f"clips were encoded by different models ({a.model} vs {b.model})")


def _check_code(code: int, codebook_size: int) -> int:
    if isinstance(code, bool) or not isinstance(code, (int, np.integer)) or not 0 <= int(code) < codebook_size:
        raise EditError(f"code {code!r} is out of range; codes are 0-{codebook_size - 1}")
    return int(code)


def _changed(grid: CodeGrid, codes: np.ndarray, label: str, region: Region, **kw) -> EditResult:
    return EditResult(grid.with_codes(codes), label, region, **kw)


def span_text(grid: CodeGrid, c0: int, c1: int) -> str:
    spc = grid.seconds_per_column
    return f"{c0 * spc:.2f}-{min((c1 + 1) * spc, grid.duration_s):.2f} s"


# ---------------------------------------------------------------------- operations
def set_codes(grid: CodeGrid, region: Region, code: int, codebook_size: int) -> EditResult:
    """Fill every cell of the region with one code index."""
    region.validate(grid)
    code = _check_code(code, codebook_size)
    codes = grid.codes.copy()
    codes[region.index()] = code
    return _changed(grid, codes, f"set {region.describe(grid)} = {code}", region)


def copy_region(src_grid: CodeGrid, src_region: Region, dst_grid: CodeGrid, dst_c0: int,
                dst_r0: int | None = None, *, same_clip: bool = False) -> EditResult:
    """Paste the source region's cells (same levels) onto dst at column dst_c0 and row dst_r0.

    The paste keeps the source's size; whatever would run past the destination's edge is cut off
    and the result has clipped=True.
    """
    src_region.validate(src_grid)
    check_compatible(src_grid, dst_grid)
    dst_r0 = src_region.r0 if dst_r0 is None else int(dst_r0)
    dst_c0 = int(dst_c0)
    if not 0 <= dst_c0 < dst_grid.num_columns:
        raise EditError(f"paste column {dst_c0} is outside 0-{dst_grid.num_columns - 1}")
    if not 0 <= dst_r0 < dst_grid.num_bands:
        raise EditError(f"paste band {dst_r0} is outside 0-{dst_grid.num_bands - 1}")
    n_cols = min(src_region.num_columns, dst_grid.num_columns - dst_c0)
    n_rows = min(src_region.num_rows, dst_grid.num_bands - dst_r0)
    clipped = n_cols < src_region.num_columns or n_rows < src_region.num_rows
    levels = list(src_region.levels)
    codes = dst_grid.codes.copy()
    piece = src_grid.codes[levels, src_region.r0:src_region.r0 + n_rows, src_region.c0:src_region.c0 + n_cols]
    codes[levels, dst_r0:dst_r0 + n_rows, dst_c0:dst_c0 + n_cols] = piece
    touched = Region(src_region.levels, dst_r0, dst_r0 + n_rows - 1, dst_c0, dst_c0 + n_cols - 1)
    donor = DonorPatch("self" if same_clip else "other", src_region.c0, dst_c0, n_cols, dst_r0,
                       dst_r0 + n_rows - 1, src_region.levels, src_region.r0)
    where = "" if same_clip else "clip B "
    label = (f"copy {where}{src_region.describe(src_grid)} -> {span_text(dst_grid, dst_c0, dst_c0 + n_cols - 1)}"
             f", bands {dst_r0}-{dst_r0 + n_rows - 1}{' (clipped at the edge)' if clipped else ''}")
    return _changed(dst_grid, codes, label, touched, clipped=clipped, donors=(donor,))


def _same_size(a: Region, b: Region, what: str) -> None:
    if a.levels != b.levels:  # Region keeps its levels sorted, so equal sets line up level by level
        raise EditError(f"{what} regions must cover the same levels, got {a.levels} and {b.levels}")
    if (a.num_rows, a.num_columns) != (b.num_rows, b.num_columns):
        raise EditError(f"{what} regions must be the same size: {a.num_rows} bands x {a.num_columns} columns "
                        f"vs {b.num_rows} bands x {b.num_columns} columns")


def _patch(donor: str, src: Region, dst: Region) -> DonorPatch:
    return DonorPatch(donor, src.c0, dst.c0, dst.num_columns, dst.r0, dst.r1, dst.levels, src.r0)


def swap_regions(grid_a: CodeGrid, region_a: Region, grid_b: CodeGrid, region_b: Region, *,
                 same_clip: bool) -> EditResult:
    """Exchange two equal-size regions, in one clip (grid_b ignored) or between two clips (.other = B's new grid)."""
    region_a.validate(grid_a)
    _same_size(region_a, region_b, "swap")
    if same_clip:
        region_b.validate(grid_a)
        overlap = (region_a.r0 <= region_b.r1 and region_b.r0 <= region_a.r1
                   and region_a.c0 <= region_b.c1 and region_b.c0 <= region_a.c1)
        if overlap:
            raise EditError(f"swap regions overlap ({region_a.describe(grid_a)} and {region_b.describe(grid_a)})")
        codes = grid_a.codes.copy()
        codes[region_a.index()] = grid_a.codes[region_b.index()]
        codes[region_b.index()] = grid_a.codes[region_a.index()]
        touched = Region(region_a.levels, min(region_a.r0, region_b.r0), max(region_a.r1, region_b.r1),
                         min(region_a.c0, region_b.c0), max(region_a.c1, region_b.c1))
        label = f"swap {region_a.describe(grid_a)} <-> {span_text(grid_a, region_b.c0, region_b.c1)}, bands {region_b.r0}-{region_b.r1}"
        return _changed(grid_a, codes, label, touched,
                        donors=(_patch("self", region_b, region_a), _patch("self", region_a, region_b)))
    region_b.validate(grid_b)
    check_compatible(grid_a, grid_b)
    codes_a, codes_b = grid_a.codes.copy(), grid_b.codes.copy()
    codes_a[region_a.index()] = grid_b.codes[region_b.index()]
    codes_b[region_b.index()] = grid_a.codes[region_a.index()]
    label = f"swap {region_a.describe(grid_a)} <-> clip B {span_text(grid_b, region_b.c0, region_b.c1)}, bands {region_b.r0}-{region_b.r1}"
    return EditResult(grid_a.with_codes(codes_a), label, region_a, donors=(_patch("other", region_b, region_a),),
                      other=grid_b.with_codes(codes_b), other_region=region_b,
                      other_donors=(_patch("other", region_a, region_b),))


def _codebooks(codec: LatentSpace, levels: tuple[int, ...]) -> dict[int, np.ndarray]:
    """level -> embedding table [codebook_size, D], as the model's residual quantizer holds it."""
    books = codec.codebooks
    return {q: books[q] for q in levels}


def blend_region(codec: LatentSpace, dst_grid: CodeGrid, dst_region: Region, src_grid: CodeGrid, src_region: Region,
                 t: float) -> EditResult:
    """Move dst_region toward src_region's content by t in [0, 1] in embedding space.

    The region's levels are summed to an embedding per cell for both sides, interpolated, and
    re-quantized through those levels in order (with all levels selected, by the model's own
    residual quantizer; otherwise greedily nearest per level, as residual VQ does); the other
    levels keep their codes. t=0 returns dst unchanged and t=1 returns the source codes exactly.
    Donor patches are reported for t >= 0.5, where the result sounds more like the source.
    """
    t = float(t)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise EditError(f"blend amount {t:g} must be within 0-1")
    dst_region.validate(dst_grid)
    src_region.validate(src_grid)
    check_compatible(dst_grid, src_grid)
    _same_size(dst_region, src_region, "blend")
    levels = dst_region.levels
    a = dst_grid.codes[dst_region.index()]  # [S, rows, cols]
    b = src_grid.codes[src_region.index()]
    if t == 0.0:
        new = a
    elif t == 1.0:
        new = b
    elif levels == tuple(range(dst_grid.num_levels)):  # all levels: the model's own residual quantizer
        za = codec.codes_to_latent(a)
        zb = codec.codes_to_latent(b)
        new = codec.latent_to_codes((1.0 - t) * za + t * zb)
    else:
        books = _codebooks(codec, levels)
        za = sum(books[q][a[i]] for i, q in enumerate(levels))  # [rows, cols, D]
        zb = sum(books[q][b[i]] for i, q in enumerate(levels))
        residual = (1.0 - t) * za + t * zb
        new = np.empty_like(a)
        for i, q in enumerate(levels):
            book = books[q]
            dist = ((residual[..., None, :] - book) ** 2).sum(-1)  # [rows, cols, K]
            new[i] = dist.argmin(-1)
            residual = residual - book[new[i]]
    codes = dst_grid.codes.copy()
    codes[dst_region.index()] = new
    same = dst_grid is src_grid
    donors = (_patch("self" if same else "other", src_region, dst_region),) if t >= 0.5 else ()
    label = (f"blend {dst_region.describe(dst_grid)} toward {'' if same else 'clip B '}"
             f"{span_text(src_grid, src_region.c0, src_region.c1)} by {t:.2f}")
    return _changed(dst_grid, codes, label, dst_region, donors=donors)


def shift_region(grid: CodeGrid, region: Region, columns: int) -> EditResult:
    """Move the region's content `columns` later (negative: earlier); the cells it moves over slide into the gap.

    A pure rearrangement of the span covered before and after the move, so nothing is lost. A
    move past either end of the clip is refused with the largest shift that fits.
    """
    region.validate(grid)
    n = int(columns)
    if n == 0:
        raise EditError("shift by 0 columns changes nothing; shift by at least one column "
                        f"({grid.seconds_per_column:.3f} s)")
    lo, hi = -region.c0, grid.num_columns - 1 - region.c1
    if not lo <= n <= hi:
        raise EditError(f"shift by {n} columns moves {region.describe(grid)} past the clip's edge; "
                        f"allowed shifts are {lo} to {hi} columns")
    s0, s1 = min(region.c0, region.c0 + n), max(region.c1, region.c1 + n)
    idx = list(region.levels), slice(region.r0, region.r1 + 1)
    span = grid.codes[idx[0], idx[1], s0:s1 + 1]
    codes = grid.codes.copy()
    codes[idx[0], idx[1], s0:s1 + 1] = np.roll(span, n, axis=-1)
    touched = Region(region.levels, region.r0, region.r1, s0, s1)
    width = region.num_columns
    moved = DonorPatch("self", region.c0, region.c0 + n, width, region.r0, region.r1, region.levels)
    if n > 0:
        slid = DonorPatch("self", region.c1 + 1, region.c0, n, region.r0, region.r1, region.levels)
    else:
        slid = DonorPatch("self", region.c0 + n, region.c1 + n + 1, -n, region.r0, region.r1, region.levels)
    label = f"shift {region.describe(grid)} by {n * grid.seconds_per_column:+.2f} s"
    return _changed(grid, codes, label, touched, donors=(moved, slid))


def repeat_region(grid: CodeGrid, region: Region, times: int) -> EditResult:
    """Play the region `times` times in a row from its start, overwriting what follows (cut at the clip's end)."""
    region.validate(grid)
    if isinstance(times, bool) or int(times) != times or times < 1:
        raise EditError(f"repeat times must be a whole number >= 1, got {times!r}")
    times = int(times)
    width = region.num_columns
    end = region.c0 + times * width - 1
    last = min(end, grid.num_columns - 1)
    levels, rows = list(region.levels), slice(region.r0, region.r1 + 1)
    piece = grid.codes[levels, rows, region.c0:region.c1 + 1]
    codes = grid.codes.copy()
    n = last - region.c0 + 1
    fits = -(-n // width)  # copies that reach the clip's end: a huge --times is cut there, never allocated
    codes[levels, rows, region.c0:last + 1] = np.tile(piece, (1, 1, min(times, fits)))[..., :n]
    donors = tuple(DonorPatch("self", region.c0, c, min(width, last - c + 1), region.r0, region.r1, region.levels)
                   for c in range(region.c1 + 1, last + 1, width))
    clipped = last < end
    label = f"repeat {region.describe(grid)} x{times}{' (cut at the end)' if clipped else ''}"
    return _changed(grid, codes, label, Region(region.levels, region.r0, region.r1, region.c0, last),
                    clipped=clipped, donors=donors)


def reverse_region(grid: CodeGrid, region: Region) -> EditResult:
    """Reverse the order of the region's columns (each column's codes stay as they are)."""
    region.validate(grid)
    levels, rows = list(region.levels), slice(region.r0, region.r1 + 1)
    codes = grid.codes.copy()
    codes[levels, rows, region.c0:region.c1 + 1] = grid.codes[levels, rows, region.c0:region.c1 + 1][..., ::-1]
    donors = tuple(DonorPatch("self", c, region.c0 + region.c1 - c, 1, region.r0, region.r1, region.levels)
                   for c in range(region.c0, region.c1 + 1))
    return _changed(grid, codes, f"reverse {region.describe(grid)}", region, donors=donors)


def randomize_region(grid: CodeGrid, region: Region, usage: list[list[int]], seed: int = 0) -> EditResult:
    """Draw each cell's code from its level's code counts on the training set (uniform where none were counted)."""
    region.validate(grid)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EditError(f"seed must be a whole number >= 0, got {seed!r}")
    usage_arr = [np.asarray(u, dtype=np.float64) for u in usage]
    if len(usage_arr) < grid.num_levels or any(u.ndim != 1 or u.size == 0 or not np.isfinite(u).all() or (u < 0).any() for u in usage_arr):
        raise EditError(f"usage must hold non-negative counts for each of the {grid.num_levels} levels")
    rng = np.random.default_rng(int(seed))
    codes = grid.codes.copy()
    rows, cols = slice(region.r0, region.r1 + 1), slice(region.c0, region.c1 + 1)
    for q in region.levels:
        counts = usage_arr[q]
        scaled = counts / counts.max() if counts.max() > 0 else np.ones(counts.size)  # no overflow summing 1e308s
        p = scaled / scaled.sum()
        codes[q, rows, cols] = rng.choice(counts.size, size=(region.num_rows, region.num_columns), p=p)
    return _changed(grid, codes, f"randomize {region.describe(grid)} (seed {int(seed)})", region)
