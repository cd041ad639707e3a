"""Regions of a code grid and the one rule for turning seconds into columns.

Every caller that turns a time in seconds into a column (region syntax, --to, --by, donor spans,
the studio) goes through the three functions here, so a paste and the phase transplanted for it
always land on the same column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..codes import CodeGrid, CodesError

SNAP_EPS = 1e-4     # times within this many columns (17 µs) of a column edge count as on it


class EditError(ValueError):
    """An edit that cannot be applied to this grid; the message names the thing and the allowed values."""


# ---------------------------------------------------------------------- seconds <-> columns
def column_of(seconds: float, seconds_per_column: float) -> int:
    """A point in time -> the column that contains it (a time on a column edge starts that column).

    The rule for every time that names a place: a region's start, --to, a donor's start and destination.
    """
    return int(math.floor(_columns(seconds, seconds_per_column) + SNAP_EPS))


def end_column_of(seconds: float, seconds_per_column: float) -> int:
    """The end of a time span -> the last column it reaches into (spans snap outward; an end on an
    edge stops before it), so `Timbre@1.0-2.0` covers all of 1.0-2.0 s."""
    return int(math.ceil(_columns(seconds, seconds_per_column) - SNAP_EPS)) - 1


def last_column_of(seconds: float, grid: CodeGrid) -> int:
    """The end of a span of `grid` -> its last column (end_column_of), except that a span reaching the clip's
    end covers every column up to the grid's last: a clip of exactly k columns' samples has one more (the
    encoder's last frame starts on its final sample), and "the whole clip" must include it as Select all does."""
    return last_column_in(seconds, grid.duration_s, grid.num_columns, grid.seconds_per_column)


def last_column_in(seconds: float, duration_s: float, num_columns: int, seconds_per_column: float) -> int:
    """last_column_of for a clip known by its length and column count (a donor's audio, which has no grid)."""
    if seconds >= duration_s - SNAP_EPS * seconds_per_column:
        return num_columns - 1
    return min(end_column_of(seconds, seconds_per_column), num_columns - 1)


def columns_in(seconds: float, seconds_per_column: float) -> int:
    """A distance in time (--by) -> the nearest whole number of columns (sign kept)."""
    return int(round(_columns(seconds, seconds_per_column)))


def _columns(seconds: float, seconds_per_column: float) -> float:
    """seconds / seconds_per_column, refusing what has no column (NaN, or too large to count: 1e308 s)."""
    value = float(seconds) / float(seconds_per_column)
    if not math.isfinite(value):
        raise EditError(f"{float(seconds):g} s is not a time within a clip")
    return value


def column_start(column: int, seconds_per_column: float) -> float:
    """Column -> the time its first frame starts."""
    return column * seconds_per_column


# ---------------------------------------------------------------------- regions
@dataclass(frozen=True)
class Region:
    """Cells of one grid: a set of levels x band rows r0..r1 x columns c0..c1 (all bounds inclusive).

    The levels are a set: they are stored sorted, so "Timbre+Structure" and "Structure+Timbre"
    name the same cells and two regions' levels line up one to one.
    """

    levels: tuple[int, ...]
    r0: int
    r1: int
    c0: int
    c1: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(sorted(int(q) for q in self.levels)))
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

    def with_levels(self, levels: tuple[int, ...]) -> Region:
        return Region(levels, self.r0, self.r1, self.c0, self.c1)

    @classmethod
    def from_seconds(cls, grid: CodeGrid, levels: tuple[int | str, ...] | list[int | str] | int | str,
                     t0: float, t1: float, bands: tuple[int, int] | None = None) -> Region:
        """Time range in seconds -> whole columns covering it (column_of start .. last_column_of end), validated."""
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
        c0 = column_of(t0, spc)
        c1 = last_column_of(t1, grid)
        r0, r1 = (0, grid.num_bands - 1) if bands is None else bands
        region = cls(idx, r0, r1, c0, max(c0, c1))
        region.validate(grid)
        return region

    def seconds(self, grid: CodeGrid) -> tuple[float, float]:
        """(start, end) in seconds of the columns covered; the end never exceeds the clip's length."""
        spc = grid.seconds_per_column
        return column_start(self.c0, spc), min(column_start(self.c1 + 1, spc), grid.duration_s)

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

    def cells(self, shape: tuple[int, int]) -> np.ndarray:
        """bool [bands, columns] of a grid of that shape: True on the region's rectangle."""
        out = np.zeros(shape, dtype=bool)
        out[self.r0:self.r1 + 1, self.c0:self.c1 + 1] = True
        return out


def column_at(grid: CodeGrid, seconds: str | float, what: str) -> int:
    """A user's time (text or number) that names a place in `grid` -> its column (column_of), checked."""
    try:
        t = float(seconds)
    except (TypeError, ValueError):
        raise EditError(f"{what} must be a time in seconds, got {seconds!r}") from None
    if not math.isfinite(t) or t < 0 or t >= grid.duration_s:
        raise EditError(f"{what} {seconds} s is outside the clip (0-{grid.duration_s:.3f} s)")
    return min(column_of(t, grid.seconds_per_column), grid.num_columns - 1)
