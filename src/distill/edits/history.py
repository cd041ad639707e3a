"""Undo/redo history of one clip's grid: sparse diffs, with the donor records and clip B's changes of each step."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, fields, replace

import numpy as np

from ..codes import CodeGrid, CodesError, parse_json
from .operations import DonorPatch, EditResult
from .regions import EditError

HISTORY_FORMAT = "distill-edit-history"
HISTORY_VERSION = 1
MIN_HISTORY = 200   # at least this many undo steps are promised
MAX_HISTORY_LIMIT = 2000  # the most steps a history may keep (and a file may ask for): replay costs per step
# Largest history JSON from_json reads. A 500-step history of a 30-minute clip with 2 s edits is ~10 MB of
# JSON; parsing costs ~6x the text, so this keeps one file under ~1.5 GB (the studio's own cap is lower).
MAX_HISTORY_JSON_BYTES = 256 * 2**20
# Most bytes of changes one history keeps (its steps' cells and B records). 500 steps that each rewrite a whole
# 30-minute clip would hold ~3 GB per tab; past this the oldest steps go, as they do past `limit`, and
# `dropped` counts them so the studio can say so. Ordinary edits (seconds wide) never come near it.
MAX_HISTORY_BYTES = 256 * 2**20


@dataclass(frozen=True, eq=False)
class Diff:
    """The cells one step changed, as flat indices into codes [levels, bands, columns]."""

    index: np.ndarray   # int64 [n]
    before: np.ndarray  # int64 [n]
    after: np.ndarray   # int64 [n]

    @classmethod
    def between(cls, old: CodeGrid, new: CodeGrid) -> Diff:
        idx = np.flatnonzero(old.codes != new.codes)
        return cls(idx, old.codes.reshape(-1)[idx].copy(), new.codes.reshape(-1)[idx].copy())

    def apply(self, grid: CodeGrid, forward: bool = True) -> CodeGrid:
        codes = grid.codes.copy()
        codes.reshape(-1)[self.index] = self.after if forward else self.before
        return grid.with_codes(codes)

    def fits(self, grid: CodeGrid, forward: bool = True) -> bool:
        """True when `grid` holds this step's starting values (its `before`, or `after` going back)."""
        return bool(np.array_equal(grid.codes.reshape(-1)[self.index], self.before if forward else self.after))

    def touched(self, shape: tuple[int, int, int]) -> np.ndarray:
        """bool [levels, bands, columns]: True where this step changed a code."""
        out = np.zeros(int(np.prod(shape)), dtype=bool)
        out[self.index] = True
        return out.reshape(shape)


@dataclass(frozen=True, eq=False)
class Step:
    """One undoable edit: what changed, where copied content came from, and what it did to clip B.

    `partner` names the clip B this step's "other" donors and B record refer to, so a step made with
    one B never lends its phase to another B opened later. A step that changed B (a cross-clip swap)
    keeps B whole only when it starts a chain (`partner_start`: B after it, the first such step of
    that B, or one whose B differs in anything but its codes); the steps after it keep only the cells
    they changed (`partner_change`, against B as the earlier steps of the chain left it), so 500 swaps
    with a 30-minute B hold B once, not 500 times (EditHistory.partner_grid puts B back together).
    """

    label: str
    diff: Diff
    donors: tuple[DonorPatch, ...] = ()
    partner: str = ""
    partner_change: Diff | None = None
    partner_start: CodeGrid | None = None

    @property
    def changes_partner(self) -> bool:
        """True when this step changed clip B (it has a B record)."""
        return self.partner_start is not None or self.partner_change is not None


@dataclass(frozen=True, eq=False)
class ActiveDonor:
    """A donor record still in force: the cells [bands, columns] that still hold what it put there."""

    patch: DonorPatch
    partner: str
    cells: np.ndarray  # bool [bands, columns] of the edited grid


class EditHistory:
    """Undo/redo for one clip. A new edit after an undo drops the redo branch; the oldest steps go past `limit`
    steps or past `max_bytes` of changes (the newest step always stays); `dropped` counts the steps gone.

    `original` is the clip as encoded (what surgical rendering compares against); `base` is the grid
    the oldest kept step starts from (the original until steps are dropped past the limit).
    """

    def __init__(self, grid: CodeGrid, limit: int = 500, max_bytes: int = MAX_HISTORY_BYTES):
        if not MIN_HISTORY <= int(limit) <= MAX_HISTORY_LIMIT:
            raise EditError(f"history limit {limit} is outside {MIN_HISTORY}-{MAX_HISTORY_LIMIT} steps")
        self.max_bytes = int(max_bytes)
        self.dropped = 0
        self._original = grid.as_original()
        self._base = grid
        self._current = grid
        self._steps: list[Step] = []
        self._position = 0
        self.limit = int(limit)
        self._partner_cache: dict[str, tuple[Step, CodeGrid]] = {}  # partner -> (its latest step, B after it)

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> CodeGrid:
        return self._current

    @property
    def original(self) -> CodeGrid:
        return self._original

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(self._steps)

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

    # ------------------------------------------------------------------ moves
    def _add(self, step: Step, grid: CodeGrid) -> CodeGrid:
        del self._steps[self._position:]
        self._steps.append(step)
        drop = self._to_drop()
        if drop > 0:
            self.dropped += drop
            self._restart_partner_chains(drop)
            for old in self._steps[:drop]:
                self._base = old.diff.apply(self._base)
            del self._steps[:drop]
            kept = {id(s) for s in self._steps}
            self._partner_cache = {p: hit for p, hit in self._partner_cache.items() if id(hit[0]) in kept}
        self._position = len(self._steps)
        self._current = grid
        return grid

    def _to_drop(self) -> int:
        """How many of the oldest steps must go: those past `limit`, then more while the rest hold over
        `max_bytes` (never the newest)."""
        drop = max(0, len(self._steps) - self.limit)
        sizes = [_step_nbytes(st) for st in self._steps]
        total = sum(sizes[drop:])
        while total > self.max_bytes and drop < len(self._steps) - 1:
            total -= sizes[drop]
            drop += 1
        return drop

    def push(self, result: EditResult, partner: str = "") -> CodeGrid:
        """Apply an edit (the grid it returned) as the next step; `partner` names clip B when the edit used it."""
        self._check_same_clip(result.grid)
        change, start = self._partner_record(result.other, partner)
        step = Step(result.label, Diff.between(self._current, result.grid), tuple(result.donors), partner,
                    change, start)
        grid = self._add(step, result.grid)
        if result.other is not None and self._steps[-1] is step:
            self._partner_cache[partner] = (step, result.other)
        return grid

    def fork(self) -> EditHistory:
        """An independent copy to try an edit on (steps are immutable and shared; pushing to the fork never
        touches this history or its redo steps)."""
        twin = copy.copy(self)
        twin._steps = list(self._steps)
        twin._partner_cache = dict(self._partner_cache)
        return twin

    def undo(self) -> CodeGrid:
        if not self.can_undo:
            raise EditError("nothing to undo")
        self._position -= 1
        self._current = self._steps[self._position].diff.apply(self._current, forward=False)
        return self._current

    def redo(self) -> CodeGrid:
        if not self.can_redo:
            raise EditError("nothing to redo")
        self._current = self._steps[self._position].diff.apply(self._current)
        self._position += 1
        return self._current

    def reset(self) -> CodeGrid:
        """Back to the grid as encoded, as one more (undoable) step."""
        if np.array_equal(self._current.codes, self._original.codes):
            return self._current
        target = self._current.with_codes(self._original.codes)
        return self._add(Step("reset to original", Diff.between(self._current, target)), target)

    # ------------------------------------------------------------------ what the applied steps imply
    def active_donors(self) -> list[ActiveDonor]:
        """Donor records of the applied steps, each cut to the cells that still hold what it put there.

        A later step that changes any of a record's levels in a cell takes that cell away from it, so
        phase is never transplanted onto codes that no longer came from the donor; undo/redo move
        `position`, which restores exactly the records of that step. A record that lost every cell is
        left out (one of the last applied step is always kept).

        One pass from the newest applied step back, carrying the cells [levels, bands, columns] the
        steps after the one at hand changed: each step costs its own changed cells and records, so a
        render after 450 steps on a 30-minute grid pays milliseconds, not seconds (issue 25).
        """
        shape = self._current.codes.shape
        applied = self._steps[: self._position]
        later = np.zeros(shape, dtype=bool)  # [levels, bands, columns]: changed by a step after this one
        active: list[ActiveDonor] = []
        for i in range(len(applied) - 1, -1, -1):
            step = applied[i]
            for p in reversed(step.donors):
                cells = _cells_kept(p, later)
                if i == len(applied) - 1 or cells.any():
                    active.append(ActiveDonor(p, step.partner, cells))
            later.reshape(-1)[step.diff.index] = True
        active.reverse()
        return active

    def partner_grid(self, partner: str) -> CodeGrid | None:
        """Clip B (named `partner`) as the applied steps left it; None when no applied step changed it."""
        for i in range(self._position - 1, -1, -1):
            step = self._steps[i]
            if step.partner == partner and step.changes_partner:
                hit = self._partner_cache.get(partner)
                if hit is not None and hit[0] is step:
                    return hit[1]
                grid = self._partner_after(i)
                self._partner_cache[partner] = (step, grid)
                return grid
        return None

    def _partner_after(self, i: int) -> CodeGrid:
        """Clip B after step i (a step that changed it): its chain's start with the later steps' changes applied."""
        partner = self._steps[i].partner
        chain: list[Step] = []
        for step in reversed(self._steps[: i + 1]):
            if step.partner == partner and step.changes_partner:
                chain.append(step)
                if step.partner_start is not None:
                    break
        start = chain.pop().partner_start
        if start is None:
            raise EditError(f"edit history lost clip B ({partner!r}) before step {i + 1}")  # never: see _add
        if not chain:
            return start
        codes = start.codes.copy()
        for step in reversed(chain):
            codes.reshape(-1)[step.partner_change.index] = step.partner_change.after
        return replace(start, codes=codes)

    def _partner_record(self, other: CodeGrid | None, partner: str) -> tuple[Diff | None, CodeGrid | None]:
        """What a new step keeps of B after it, (change, start): the cells it changed in B as the applied
        steps leave it, or B whole when no applied step changed this B or B differs in more than its codes."""
        if other is None:
            return None, None
        before = self.partner_grid(partner)
        if before is not None and _same_but_codes(before, other):
            return Diff.between(before, other), None
        return None, other

    def _restart_partner_chains(self, drop: int) -> None:
        """Before the oldest `drop` steps go: the first kept step that changed each B keeps that B whole."""
        seen: set[str] = set()
        for i in range(drop, len(self._steps)):
            step = self._steps[i]
            if step.changes_partner and step.partner not in seen:
                seen.add(step.partner)
                if step.partner_start is None:
                    self._steps[i] = replace(step, partner_change=None, partner_start=self._partner_after(i))

    def nbytes(self) -> int:
        """Bytes of the code arrays this history holds (A's grids, every step's changes, each clip B once per
        chain), each array counted once: what one tab's undo costs, for the studio to report or bound."""
        arrays: dict[int, np.ndarray] = {}
        grids = [self._original, self._base, self._current, *(g for _, g in self._partner_cache.values())]
        grids += [s.partner_start for s in self._steps if s.partner_start is not None]
        for g in grids:
            for a in (g.codes, g.original):
                if a is not None:
                    arrays[id(a)] = a
        for s in self._steps:
            for d in (s.diff, s.partner_change):
                if d is not None:
                    arrays.update((id(a), a) for a in (d.index, d.before, d.after))
        return sum(a.nbytes for a in arrays.values())

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> str:
        return json.dumps({
            "format": HISTORY_FORMAT, "version": HISTORY_VERSION, "model": self._original.model,
            "limit": self.limit, "position": self._position,
            "original": self._original.to_dict(), "current": self._current.to_dict(),
            **({"base": self._base.to_dict()} if self._base is not self._original else {}),
            "steps": [{"label": s.label, "index": s.diff.index.tolist(), "before": s.diff.before.tolist(),
                       "after": s.diff.after.tolist(), "partner": s.partner,
                       "donors": [_patch_to_dict(p) for p in s.donors]} for s in self._steps],
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, fingerprint: str, codebook_size: int | None = None) -> EditHistory:
        """Read a history saved by to_json.

        Refuses one made with another model (fingerprint mismatch), one whose steps do not replay
        from its base grid to its current grid and on through its redo steps, one whose donor records
        lie outside the grid, one with more steps than its own `limit`, one over MAX_HISTORY_JSON_BYTES,
        and (given `codebook_size`) one whose steps hold codes outside the codebook: a damaged or
        hand-edited file. Only EditError is raised.
        """
        size = _json_size(text)
        if size > MAX_HISTORY_JSON_BYTES:
            raise EditError(f"edit history is {size} bytes, over the limit of {MAX_HISTORY_JSON_BYTES} bytes "
                            "for one history (MAX_HISTORY_JSON_BYTES)")
        try:
            d = parse_json(text, EditError)
        except EditError as exc:
            raise EditError(f"edit history is {exc}") from None
        if not isinstance(d, dict) or d.get("format") != HISTORY_FORMAT:
            raise EditError(f"not a Distill edit history (missing \"format\": \"{HISTORY_FORMAT}\")")
        if d.get("version") != HISTORY_VERSION:
            raise EditError(f"unsupported edit history version {d.get('version')!r}; this Distill reads {HISTORY_VERSION}")
        try:
            original, current = CodeGrid.from_dict(d["original"]), CodeGrid.from_dict(d["current"])
            base = CodeGrid.from_dict(d["base"]) if d.get("base") is not None else original
            for g in (original, current, base):
                if d["model"] != fingerprint or g.model != fingerprint:
                    raise EditError(f"edit history was made with model {g.model or d['model']}, "
                                    f"not with this model ({fingerprint})")
            hist = cls(original, limit=_count(d["limit"], "limit"))
            size = original.codes.size
            top = np.iinfo(np.int64).max if codebook_size is None else int(codebook_size) - 1
            steps = []
            if not isinstance(d["steps"], list):
                raise EditError("edit history's \"steps\" must be a list")
            if len(d["steps"]) > hist.limit:
                raise EditError(f"edit history has {len(d['steps'])} steps, more than its limit of {hist.limit} "
                                "(a damaged or hand-edited file)")
            for n, s in enumerate(d["steps"], 1):
                idx, before, after = (_ints(s[k], f"step {n} {k}") for k in ("index", "before", "after"))
                if not (idx.shape == before.shape == after.shape) or (idx.size and (idx.min() < 0 or idx.max() >= size)):
                    raise EditError(f"edit history has a damaged step {n} (its cells are not cells of the grid)")
                for values in (before, after):
                    if values.size and (values.min() < 0 or values.max() > top):
                        raise EditError(f"edit history step {n} holds code {values.min() if values.min() < 0 else values.max()}"
                                        f"; codes are 0-{top}")
                donors = s.get("donors", [])
                if not isinstance(donors, list):
                    raise EditError(f"edit history step {n} has damaged donor records")
                donors = tuple(_patch_from_dict(p, original) for p in donors)
                steps.append(Step(str(s["label"]), Diff(idx, before, after), donors, str(s.get("partner", ""))))
            position = _count(d["position"], "position")
        except EditError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, CodesError, OverflowError, RecursionError) as exc:
            raise EditError(f"damaged edit history ({exc})") from exc
        if not 0 <= position <= len(steps):
            raise EditError(f"edit history position {position} is outside 0-{len(steps)}")
        for g in (base, current):
            hist._current = g
            hist._check_same_clip(original)
        flat = base.codes.copy().reshape(-1)  # replayed in place: each step costs its own cells, not a grid copy
        for i, step in enumerate(steps):
            if i == position and not np.array_equal(flat, current.codes.reshape(-1)):
                raise EditError(f"edit history does not replay: its {position} applied steps do not lead from its "
                                "original grid to its current grid")
            d = step.diff
            if not np.array_equal(flat[d.index], d.before):
                what = "redo step" if i >= position else "step"   # the redo steps go on from the current grid
                raise EditError(f"edit history does not replay: {what} {i + 1} ({step.label!r}) does not start "
                                "from the grid the steps before it leave")
            flat[d.index] = d.after
        if position == len(steps) and not np.array_equal(flat, current.codes.reshape(-1)):
            raise EditError(f"edit history does not replay: its {position} applied steps do not lead from its "
                            "original grid to its current grid")
        hist._base, hist._current, hist._steps, hist._position = base, current, steps, position
        return hist


def _step_nbytes(step: Step) -> int:
    """Bytes a step's own records hold: its cells, its B change, and B whole when it starts a chain."""
    n = sum(a.nbytes for d in (step.diff, step.partner_change) if d is not None for a in (d.index, d.before, d.after))
    start = step.partner_start
    if start is not None:
        n += start.codes.nbytes + (start.original.nbytes if start.original is not None else 0)
    return n


def _cells_kept(p: DonorPatch, later: np.ndarray) -> np.ndarray:
    """bool [bands, columns]: the cells record `p` filled that no later step changed on its levels (all levels
    when it names none); `later` is bool [levels, bands, columns]. Only p's own rectangle is read."""
    cells = np.zeros(later.shape[1:], dtype=bool)
    rows, cols = slice(p.r0, p.r1 + 1), slice(p.dst_c0, p.dst_c0 + p.n_cols)
    levels = list(p.levels) or slice(None)
    cells[rows, cols] = ~later[levels, rows, cols].any(axis=0)
    return cells


def _same_but_codes(a: CodeGrid, b: CodeGrid) -> bool:
    """True when grids a and b differ in nothing but their codes (same shape, provenance and original codes)."""
    if a.codes.shape != b.codes.shape:
        return False
    for f in fields(CodeGrid):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "codes" or x is y:
            continue
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def _json_size(text: str | bytes) -> int:
    """Bytes of a JSON text (UTF-8), encoding only when it must: the history JSON Distill writes is ASCII.
    0 for what is not text (parse_json says what is wrong with it)."""
    if isinstance(text, (bytes, bytearray)):
        return len(text)
    if not isinstance(text, str):
        return 0
    if len(text) > MAX_HISTORY_JSON_BYTES or text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _patch_to_dict(p: DonorPatch) -> dict:
    return {"donor": p.donor, "src_c0": p.src_c0, "dst_c0": p.dst_c0, "n_cols": p.n_cols, "r0": p.r0, "r1": p.r1,
            "levels": list(p.levels), "src_r0": p.src_r0}


def _patch_from_dict(d: dict, grid: CodeGrid) -> DonorPatch:
    """A donor record, refused unless it lies inside `grid` (its levels, bands and columns)."""
    if not isinstance(d, dict) or d.get("donor") not in ("self", "other"):
        raise EditError(f"edit history has a donor record naming {d.get('donor') if isinstance(d, dict) else d!r} "
                        "(self or other)")
    src_c0, dst_c0, n_cols, r0, r1 = (_count(d[k], f"donor {k}") for k in ("src_c0", "dst_c0", "n_cols", "r0", "r1"))
    levels = d.get("levels", [])
    if not isinstance(levels, list):
        raise EditError("edit history has a donor record whose levels are not a list")
    levels = tuple(_count(q, "donor level") for q in levels)
    src_r0 = None if d.get("src_r0") is None else _count(d["src_r0"], "donor src_r0")
    bands, cols = grid.num_bands, grid.num_columns
    rows_from = r0 if src_r0 is None else src_r0
    if (any(q >= grid.num_levels for q in levels) or not r0 <= r1 < bands or rows_from + (r1 - r0) >= bands
            or n_cols < 1 or dst_c0 + n_cols > cols or src_c0 + n_cols > cols):
        raise EditError(f"edit history has a donor record outside the grid (levels {list(levels)}, bands {r0}-{r1}, "
                        f"columns {src_c0}+{n_cols} -> {dst_c0}; the grid has {grid.num_levels} levels, {bands} bands, "
                        f"{cols} columns)")
    return DonorPatch(d["donor"], src_c0, dst_c0, n_cols, r0, r1, levels, src_r0)


def _count(value: object, what: str) -> int:
    """A JSON whole number >= 0 (bools and fractions refused) -> int."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EditError(f"edit history's {what} must be a whole number >= 0, got {value!r}")
    return value


def _ints(value: object, what: str) -> np.ndarray:
    """A JSON list of integers -> int64 [n]."""
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise EditError(f"edit history's {what} must be a list of whole numbers")
    try:
        return np.asarray(value, dtype=np.int64).reshape(-1)
    except OverflowError:
        raise EditError(f"edit history's {what} holds numbers too large to be cells or codes") from None
