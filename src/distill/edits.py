"""Region-level code editing: select a region of a CodeGrid, set/copy/swap/blend/shift/repeat/reverse/randomize it, undo/redo."""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .codes import CodeGrid, CodesError

if TYPE_CHECKING:
    from .codec import Codec

HISTORY_FORMAT = "distill-edit-history"
HISTORY_VERSION = 1
MIN_HISTORY = 200   # the issue promises at least this many undo steps
SNAP_EPS = 1e-4     # times within this many columns (17 µs) of a column edge count as on it
REGION_SYNTAX = "LEVELS@START-END[/BANDLO-BANDHI], e.g. Timbre@1.0-2.0 or Structure+Timbre@0.5-1.5/0-3"


class EditError(ValueError):
    """An edit that cannot be applied to this grid; the message names the thing and the allowed values."""


# ---------------------------------------------------------------------- regions
@dataclass(frozen=True)
class Region:
    """Cells of one grid: some levels x band rows r0..r1 x columns c0..c1 (all bounds inclusive)."""

    levels: tuple[int, ...]
    r0: int
    r1: int
    c0: int
    c1: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(int(q) for q in self.levels))
        for name in ("r0", "r1", "c0", "c1"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @property
    def num_rows(self) -> int:
        return self.r1 - self.r0 + 1

    @property
    def num_columns(self) -> int:
        return self.c1 - self.c0 + 1

    def validate(self, grid: CodeGrid) -> None:
        """Refuse an empty, out-of-range or repeated-level region, naming the allowed ranges."""
        if not self.levels:
            raise EditError(f"a region needs at least one level ({', '.join(grid.level_names)})")
        if len(set(self.levels)) != len(self.levels):
            raise EditError(f"region lists a level twice: {self.levels}")
        for q in self.levels:
            if not 0 <= q < grid.num_levels:
                raise EditError(f"level {q} does not exist; levels are 0-{grid.num_levels - 1} "
                                f"({', '.join(grid.level_names)})")
        if not (0 <= self.r0 <= self.r1 < grid.num_bands):
            raise EditError(f"bands {self.r0}-{self.r1} are not a range within 0-{grid.num_bands - 1}")
        if not (0 <= self.c0 <= self.c1 < grid.num_columns):
            raise EditError(f"columns {self.c0}-{self.c1} are not a range within 0-{grid.num_columns - 1} "
                            f"(0.00-{grid.duration_s:.2f} s)")

    @classmethod
    def from_seconds(cls, grid: CodeGrid, levels: tuple[int | str, ...] | list[int | str] | int | str,
                     t0: float, t1: float, bands: tuple[int, int] | None = None) -> Region:
        """Time range in seconds -> whole columns covering it (snapped outward), validated."""
        if isinstance(levels, (int, str, np.integer)):
            levels = (levels,)
        try:
            idx = tuple(grid.level_index(q) for q in levels)
        except CodesError as exc:
            raise EditError(str(exc)) from exc
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1)) or t0 < 0 or t1 <= t0:
            raise EditError(f"time range {t0:g}-{t1:g} s must have 0 <= start < end")
        if t1 > grid.duration_s + SNAP_EPS:
            raise EditError(f"time {t1:g} s is past the clip's end ({grid.duration_s:.3f} s)")
        spc = grid.seconds_per_column
        c0 = int(math.floor(t0 / spc + SNAP_EPS))
        c1 = min(int(math.ceil(t1 / spc - SNAP_EPS)) - 1, grid.num_columns - 1)
        r0, r1 = (0, grid.num_bands - 1) if bands is None else bands
        region = cls(idx, r0, r1, c0, max(c0, c1))
        region.validate(grid)
        return region

    def seconds(self, grid: CodeGrid) -> tuple[float, float]:
        """(start, end) in seconds of the columns covered; the end never exceeds the clip's length."""
        spc = grid.seconds_per_column
        return self.c0 * spc, min((self.c1 + 1) * spc, grid.duration_s)

    def level_label(self, grid: CodeGrid) -> str:
        return "+".join(grid.level_names[q] for q in self.levels)

    def describe(self, grid: CodeGrid) -> str:
        """Human-readable form, e.g. "Timbre 1.20-2.05 s, bands 0-7"."""
        a, b = self.seconds(grid)
        return f"{self.level_label(grid)} {a:.2f}-{b:.2f} s, bands {self.r0}-{self.r1}"

    def to_text(self, grid: CodeGrid) -> str:
        """The region in CLI syntax (column edges, so parse_region(to_text()) gives it back)."""
        a, b = self.seconds(grid)
        return f"{self.level_label(grid)}@{a:.6f}-{b:.6f}/{self.r0}-{self.r1}"

    def index(self) -> tuple:
        """numpy index of the region's cells in codes[levels, bands, columns]."""
        return (list(self.levels), slice(self.r0, self.r1 + 1), slice(self.c0, self.c1 + 1))


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

    def for_other(self) -> EditResult:
        """The second clip's side of a two-clip swap, ready to push onto that clip's history."""
        if self.other is None or self.other_region is None:
            raise EditError("this edit changed only one clip")
        return EditResult(self.other, self.label, self.other_region, self.clipped, self.other_donors)


# ---------------------------------------------------------------------- helpers
def _check_compatible(a: CodeGrid, b: CodeGrid) -> None:
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


def _t(grid: CodeGrid, c0: int, c1: int) -> str:
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
    _check_compatible(src_grid, dst_grid)
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
    label = (f"copy {where}{src_region.describe(src_grid)} -> {_t(dst_grid, dst_c0, dst_c0 + n_cols - 1)}"
             f", bands {dst_r0}-{dst_r0 + n_rows - 1}{' (clipped at the edge)' if clipped else ''}")
    return _changed(dst_grid, codes, label, touched, clipped=clipped, donors=(donor,))


def _same_size(a: Region, b: Region, what: str) -> None:
    if sorted(a.levels) != sorted(b.levels):
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
        label = f"swap {region_a.describe(grid_a)} <-> {_t(grid_a, region_b.c0, region_b.c1)}, bands {region_b.r0}-{region_b.r1}"
        return _changed(grid_a, codes, label, touched,
                        donors=(_patch("self", region_b, region_a), _patch("self", region_a, region_b)))
    region_b.validate(grid_b)
    _check_compatible(grid_a, grid_b)
    codes_a, codes_b = grid_a.codes.copy(), grid_b.codes.copy()
    codes_a[region_a.index()] = grid_b.codes[region_b.index()]
    codes_b[region_b.index()] = grid_a.codes[region_a.index()]
    label = f"swap {region_a.describe(grid_a)} <-> clip B {_t(grid_b, region_b.c0, region_b.c1)}, bands {region_b.r0}-{region_b.r1}"
    return EditResult(grid_a.with_codes(codes_a), label, region_a, donors=(_patch("other", region_b, region_a),),
                      other=grid_b.with_codes(codes_b), other_region=region_b,
                      other_donors=(_patch("other", region_a, region_b),))


def _codebooks(codec: Codec, levels: tuple[int, ...]) -> dict[int, np.ndarray]:
    """level -> embedding table [codebook_size, D], read through the codec's public codes_to_latent."""
    k, n_levels = codec.codebook_size, len(codec.level_names)
    out = {}
    for q in levels:
        codes = np.full((n_levels, 1, k), -1, dtype=np.int64)
        codes[q, 0] = np.arange(k)
        out[q] = codec.codes_to_latent(codes)[:, 0, :].T.cpu().numpy().astype(np.float64)
    return out


def blend_region(codec: Codec, dst_grid: CodeGrid, dst_region: Region, src_grid: CodeGrid, src_region: Region,
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
    _check_compatible(dst_grid, src_grid)
    _same_size(dst_region, src_region, "blend")
    levels = tuple(sorted(dst_region.levels))
    dst_region = Region(levels, dst_region.r0, dst_region.r1, dst_region.c0, dst_region.c1)
    src_region = Region(levels, src_region.r0, src_region.r1, src_region.c0, src_region.c1)
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
             f"{_t(src_grid, src_region.c0, src_region.c1)} by {t:.2f}")
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
    codes[levels, rows, region.c0:last + 1] = np.tile(piece, (1, 1, times))[..., :n]
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
    usage_arr = [np.asarray(u, dtype=np.float64) for u in usage]
    if len(usage_arr) < grid.num_levels or any(u.ndim != 1 or u.size == 0 or (u < 0).any() for u in usage_arr):
        raise EditError(f"usage must hold non-negative counts for each of the {grid.num_levels} levels")
    rng = np.random.default_rng(int(seed))
    codes = grid.codes.copy()
    rows, cols = slice(region.r0, region.r1 + 1), slice(region.c0, region.c1 + 1)
    for q in region.levels:
        counts = usage_arr[q]
        p = counts / counts.sum() if counts.sum() > 0 else np.full(counts.size, 1.0 / counts.size)
        codes[q, rows, cols] = rng.choice(counts.size, size=(region.num_rows, region.num_columns), p=p)
    return _changed(grid, codes, f"randomize {region.describe(grid)} (seed {int(seed)})", region)


# ---------------------------------------------------------------------- history
@dataclass(frozen=True)
class _Step:
    """One undoable step stored as a sparse diff, so 500 steps of a long clip stay small."""

    label: str
    index: np.ndarray   # flat indices into codes
    before: np.ndarray
    after: np.ndarray


def _diff(label: str, old: CodeGrid, new: CodeGrid) -> _Step:
    idx = np.flatnonzero(old.codes != new.codes)
    return _Step(label, idx, old.codes.reshape(-1)[idx].copy(), new.codes.reshape(-1)[idx].copy())


def _apply(grid: CodeGrid, idx: np.ndarray, values: np.ndarray) -> CodeGrid:
    codes = grid.codes.copy()
    codes.reshape(-1)[idx] = values
    return grid.with_codes(codes)


class EditHistory:
    """Undo/redo for one clip. A new edit after an undo drops the redo branch; the oldest steps go past `limit`."""

    def __init__(self, grid: CodeGrid, limit: int = 500):
        if int(limit) < MIN_HISTORY:
            raise EditError(f"history limit {limit} is too small; use at least {MIN_HISTORY}")
        self._original = grid
        self._current = grid
        self._steps: list[_Step] = []
        self._position = 0
        self.limit = int(limit)

    @property
    def current(self) -> CodeGrid:
        return self._current

    @property
    def original(self) -> CodeGrid:
        return self._original

    @property
    def labels(self) -> list[str]:
        """Labels of all steps; the first `position` are applied, the rest can be redone."""
        return [s.label for s in self._steps]

    @property
    def position(self) -> int:
        return self._position

    @property
    def can_undo(self) -> bool:
        return self._position > 0

    @property
    def can_redo(self) -> bool:
        return self._position < len(self._steps)

    def _check_same_clip(self, grid: CodeGrid) -> None:
        cur = self._current
        if (grid.codes.shape != cur.codes.shape or grid.level_names != cur.level_names
                or grid.num_samples != cur.num_samples or grid.model != cur.model):
            raise EditError("this edit belongs to another clip or model than this history")

    def _add(self, label: str, grid: CodeGrid) -> CodeGrid:
        self._check_same_clip(grid)
        del self._steps[self._position:]
        self._steps.append(_diff(label, self._current, grid))
        if len(self._steps) > self.limit:
            del self._steps[: len(self._steps) - self.limit]
        self._position = len(self._steps)
        self._current = grid
        return grid

    def push(self, result: EditResult) -> CodeGrid:
        """Apply an edit (the grid it returned) as the next step."""
        return self._add(result.label, result.grid)

    def undo(self) -> CodeGrid:
        if not self.can_undo:
            raise EditError("nothing to undo")
        self._position -= 1
        s = self._steps[self._position]
        self._current = _apply(self._current, s.index, s.before)
        return self._current

    def redo(self) -> CodeGrid:
        if not self.can_redo:
            raise EditError("nothing to redo")
        s = self._steps[self._position]
        self._position += 1
        self._current = _apply(self._current, s.index, s.after)
        return self._current

    def reset(self) -> CodeGrid:
        """Back to the grid the history started from, as one more (undoable) step."""
        if self._current == self._original:
            return self._current
        return self._add("reset to original", self._original)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> str:
        return json.dumps({
            "format": HISTORY_FORMAT, "version": HISTORY_VERSION, "model": self._original.model,
            "limit": self.limit, "position": self._position,
            "original": self._original.to_dict(), "current": self._current.to_dict(),
            "steps": [{"label": s.label, "index": s.index.tolist(), "before": s.before.tolist(),
                       "after": s.after.tolist()} for s in self._steps],
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, fingerprint: str) -> EditHistory:
        """Read a history saved by to_json, refusing one made with another model (fingerprint mismatch)."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EditError(f"edit history is not valid JSON: {exc}") from exc
        if not isinstance(d, dict) or d.get("format") != HISTORY_FORMAT:
            raise EditError(f"not a Distill edit history (missing \"format\": \"{HISTORY_FORMAT}\")")
        if d.get("version") != HISTORY_VERSION:
            raise EditError(f"unsupported edit history version {d.get('version')!r}; this Distill reads {HISTORY_VERSION}")
        try:
            original, current = CodeGrid.from_dict(d["original"]), CodeGrid.from_dict(d["current"])
            for g in (original, current):
                if d["model"] != fingerprint or g.model != fingerprint:
                    raise EditError(f"edit history was made with model {g.model or d['model']}, "
                                    f"not with this model ({fingerprint})")
            hist = cls(original, limit=int(d["limit"]))
            size = original.codes.size
            steps = []
            for s in d["steps"]:
                idx = np.asarray(s["index"], dtype=np.int64)
                before, after = np.asarray(s["before"], np.int64), np.asarray(s["after"], np.int64)
                if not (idx.shape == before.shape == after.shape) or (idx.size and (idx.min() < 0 or idx.max() >= size)):
                    raise EditError("edit history has a damaged step")
                steps.append(_Step(str(s["label"]), idx, before, after))
            position = int(d["position"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, EditError):
                raise
            raise EditError(f"damaged edit history ({exc})") from exc
        if not 0 <= position <= len(steps):
            raise EditError(f"edit history position {position} is outside 0-{len(steps)}")
        hist._current = current
        hist._check_same_clip(original)
        hist._steps, hist._position = steps, position
        return hist


# ---------------------------------------------------------------------- text syntax
_REGION_RE = re.compile(
    r"^\s*(?P<levels>[A-Za-z0-9_ ]+(?:\s*\+\s*[A-Za-z0-9_ ]+)*)\s*@\s*(?P<t0>[0-9]*\.?[0-9]+)\s*-\s*(?P<t1>[0-9]*\.?[0-9]+)"
    r"\s*(?:/\s*(?P<b0>[0-9]+)\s*(?:-\s*(?P<b1>[0-9]+))?)?\s*$")


def parse_region(text: str, grid: CodeGrid) -> Region:
    """'LEVELS@START-END[/BANDLO-BANDHI]' (levels by name joined with +, seconds, bands inclusive) -> Region."""
    m = _REGION_RE.match(str(text))
    if not m:
        raise EditError(f"cannot read region {text!r}; write {REGION_SYNTAX}")
    levels = tuple(p.strip() for p in m["levels"].split("+"))
    resolved: list[int | str] = [int(p) if p.isdigit() else p for p in levels]
    bands = None
    if m["b0"] is not None:
        b0 = int(m["b0"])
        bands = (b0, int(m["b1"]) if m["b1"] is not None else b0)
    return Region.from_seconds(grid, resolved, float(m["t0"]), float(m["t1"]), bands)


def _column_at(grid: CodeGrid, seconds: str, what: str) -> int:
    try:
        t = float(seconds)
    except ValueError:
        raise EditError(f"{what} must be a time in seconds, got {seconds!r}") from None
    if not math.isfinite(t) or t < 0 or t >= grid.duration_s:
        raise EditError(f"{what} {seconds} s is outside the clip (0-{grid.duration_s:.3f} s)")
    return min(int(math.floor(t / grid.seconds_per_column + SNAP_EPS)), grid.num_columns - 1)


_OPTIONS = {"set": set(), "swap": set(), "copy": {"--to", "--band"}, "blend": {"--to", "--amount"},
            "reverse": set(), "shift": {"--by"}, "repeat": {"--times"}, "randomize": {"--seed"}}
_ARITY = {"set": 1, "swap": 2, "copy": 1, "blend": 1, "reverse": 1, "shift": 1, "repeat": 1, "randomize": 1}
OPERATION_SYNTAX = ("set REGION=CODE | swap REGION REGION | copy [B:]REGION --to SECONDS [--band ROW] | "
                    "blend [B:]REGION --to SECONDS --amount T | reverse REGION | shift REGION --by SECONDS | "
                    "repeat REGION --times N | randomize REGION [--seed N]")


def _split_op(op: str) -> tuple[str, list[str], dict[str, str]]:
    try:
        tokens = shlex.split(str(op))
    except ValueError as exc:
        raise EditError(f"cannot read operation {op!r} ({exc})") from exc
    if not tokens or tokens[0].lower() not in _OPTIONS:
        raise EditError(f"unknown operation {op!r}; operations are: {OPERATION_SYNTAX}")
    kind, rest = tokens[0].lower(), tokens[1:]
    positional: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("--"):
            if tok not in _OPTIONS[kind]:
                allowed = ", ".join(sorted(_OPTIONS[kind])) or "none"
                raise EditError(f"{kind} does not take {tok} (options: {allowed})")
            if i + 1 >= len(rest):
                raise EditError(f"{tok} needs a value")
            options[tok] = rest[i + 1]
            i += 2
        else:
            positional.append(tok)
            i += 1
    if len(positional) != _ARITY[kind]:
        raise EditError(f"{kind} takes {_ARITY[kind]} region(s), got {len(positional)}: {op!r}")
    return kind, positional, options


def _need(options: dict[str, str], name: str, kind: str) -> str:
    if name not in options:
        raise EditError(f"{kind} needs {name}")
    return options[name]


def _number(text: str, what: str, cast=float):
    try:
        return cast(text)
    except ValueError:
        raise EditError(f"{what} must be a {'whole ' if cast is int else ''}number, got {text!r}") from None


def _match_width(region: Region, like: Region, grid: CodeGrid) -> Region:
    """Equal durations can snap to widths one column apart (1.0-2.0 s vs 2.0-3.0 s): give `region` like's width."""
    if abs(region.num_columns - like.num_columns) != 1:
        return region
    fitted = Region(region.levels, region.r0, region.r1, region.c0, region.c0 + like.num_columns - 1)
    if fitted.c1 >= grid.num_columns:  # at the clip's end: keep the end, move the start
        fitted = Region(region.levels, region.r0, region.r1, region.c1 - like.num_columns + 1, region.c1)
    fitted.validate(grid)
    return fitted


def apply_operation(codec: Codec, grid: CodeGrid, op: str, other: CodeGrid | None = None) -> EditResult:
    """One operation in the CLI's text syntax (see OPERATION_SYNTAX) applied to `grid`.

    A region written "B:REGION" lies in `other` (the second clip); without the prefix it is in `grid`.
    Times snap outward to whole columns, so two equally long swap regions can come out one column
    apart; the second then takes the first's width.
    """
    kind, regions, options = _split_op(op)

    def locate(text: str) -> tuple[CodeGrid, Region, bool]:
        if text[:2].upper() == "B:":
            if other is None:
                raise EditError(f"{text!r} refers to clip B, but no second clip was given")
            return other, parse_region(text[2:], other), True
        return grid, parse_region(text, grid), False

    if kind == "set":
        text, sep, code = regions[0].rpartition("=")
        if not sep:
            raise EditError(f"set needs REGION=CODE, got {regions[0]!r}")
        g, region, in_b = locate(text)
        if in_b:
            raise EditError("set edits this clip; drop the B: prefix")
        return set_codes(grid, region, _number(code, "code", int), codec.codebook_size)
    if kind == "swap":
        (ga, ra, a_in_b), (gb, rb, b_in_b) = locate(regions[0]), locate(regions[1])
        if a_in_b and b_in_b:
            raise EditError("swap needs at least one region in this clip (without B:)")
        if a_in_b:
            (ga, ra, a_in_b), (gb, rb, b_in_b) = (gb, rb, b_in_b), (ga, ra, a_in_b)
        return swap_regions(grid, ra, gb, _match_width(rb, ra, gb), same_clip=not b_in_b)
    if kind in ("copy", "blend"):
        src, region, in_b = locate(regions[0])
        dst_c0 = _column_at(grid, _need(options, "--to", kind), "--to")
        if kind == "copy":
            band = _number(options["--band"], "--band", int) if "--band" in options else None
            return copy_region(src, region, grid, dst_c0, band, same_clip=not in_b)
        amount = _number(_need(options, "--amount", kind), "--amount")
        dst = Region(region.levels, region.r0, region.r1, dst_c0, dst_c0 + region.num_columns - 1)
        if dst.c1 >= grid.num_columns:
            raise EditError(f"blend target {_t(grid, dst_c0, dst.c1)} runs past the clip's end "
                            f"({grid.duration_s:.3f} s)")
        return blend_region(codec, grid, dst, src, region, amount)
    g, region, in_b = locate(regions[0])
    if in_b:
        raise EditError(f"{kind} edits this clip; drop the B: prefix")
    if kind == "reverse":
        return reverse_region(grid, region)
    if kind == "shift":
        by = _number(_need(options, "--by", kind), "--by")
        return shift_region(grid, region, int(round(by / grid.seconds_per_column)))
    if kind == "repeat":
        return repeat_region(grid, region, _number(_need(options, "--times", kind), "--times", int))
    return randomize_region(grid, region, codec.info.usage or [[1] * codec.codebook_size] * grid.num_levels,
                            _number(options.get("--seed", "0"), "--seed", int))
