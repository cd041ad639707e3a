"""Edit events of the Edit & Listen tab: selecting (drag, level boxes, all, clear, single-cell preview), the edit
buttons (set, reverse, shift, repeat, randomize, swap, blend, copy/paste), typed operations, undo / redo / reset
and the Edited player's render settings. Every edit goes through distill.EditSession; `commit` pushes one."""

from __future__ import annotations

import dataclasses
import html

import gradio as gr
import numpy as np

from distill import CodeGrid, CodesError, EditError, EditResult, Region
from distill.edits import (
    blend_region,
    copy_region,
    randomize_region,
    repeat_region,
    reverse_region,
    set_codes,
    shift_region,
    swap_regions,
)

from . import viewport
from .common import (
    View,
    event_grid,
    fail,
    getattr_default,
    guarded,
    need_b,
    need_codec,
    need_edit,
    need_sel,
    to_int16,
)
from .pictures import render
from .state import Clipboard, Session


# ---------------------------------------------------------------------- selection
def _levels_from_names(grid: CodeGrid, names: list[str] | None) -> tuple[int, ...]:
    return tuple(sorted(grid.level_index(n) for n in (names or [])))


@guarded
def select(s: Session | None, evt: gr.EventData) -> tuple[Session, View]:
    """Heatmap drag: index [[r0, c0], [r1, c1]], value = level; shift adds the level to the current selection."""
    need_edit(s)
    grid_id, grid = event_grid(s, evt)
    try:
        (r0, c0), (r1, c1) = evt.index
        level = int(evt.value)
        shift = bool(getattr_default(evt, "shift", False))
    except (TypeError, ValueError, AttributeError) as exc:
        raise fail(f"Unreadable selection from the heatmap ({exc}).") from exc
    current = s.sel_a if grid_id == "A" else s.sel_b
    other = s.sel_b if grid_id == "A" else s.sel_a
    if shift and (current is not None or other is not None):
        levels = tuple(sorted(set((current or other).levels) | {level}))
    else:
        levels = (level,)
    region = Region(levels, min(r0, r1), max(r0, r1), min(c0, c1), max(c0, c1))
    try:
        region.validate(grid)
    except EditError as exc:
        raise fail(str(exc)) from exc
    if grid_id == "A":
        s.sel_a = region
        s.sel_b = s.sel_b.with_levels(levels) if s.sel_b is not None else None
    else:
        s.sel_b = region
        s.sel_a = s.sel_a.with_levels(levels) if s.sel_a is not None else None
    view = render(s)
    if grid_id == "B" and s.sel_a is None:
        names = list(s.codec.level_names)
        view = View(**{**view.fields(), "levels": (names, [names[q] for q in levels])})
    return s, view


@guarded
def set_levels(s: Session | None, names: list[str]) -> tuple[Session, View]:
    """Level checkboxes: the selection's rectangle applies to exactly the ticked levels."""
    need_edit(s)
    levels = _levels_from_names(s.grid, names)
    if not levels:
        s.sel_a = s.sel_b = None
        return s, render(s)
    s.sel_a = s.sel_a.with_levels(levels) if s.sel_a else None
    s.sel_b = s.sel_b.with_levels(levels) if s.sel_b else None
    return s, render(s)


@guarded
def select_all(s: Session | None, names: list[str]) -> tuple[Session, View]:
    """The whole clip on the ticked levels (Structure when none is ticked)."""
    grid = need_edit(s).current
    levels = _levels_from_names(grid, names) or (0,)
    s.sel_a = Region(levels, 0, grid.num_bands - 1, 0, grid.num_columns - 1)
    return s, render(s)


@guarded
def clear_selection(s: Session | None) -> tuple[Session, View]:
    need_edit(s)
    s.sel_a = s.sel_b = None
    return s, render(s)


@guarded
def cell_preview(s: Session | None, evt: gr.EventData) -> tuple[Session, View]:
    """Single-cell click: hear that code alone (its level in neutral context, only that band)."""
    codec = need_codec(s)
    grid_id = getattr_default(evt, "grid", "A")
    grid = s.grid if grid_id == "A" else s.b_grid
    if grid is None:
        raise fail(f"Open a clip {grid_id} first.")
    try:
        level, r, c = int(evt.level), int(evt.r), int(evt.c)
        code = int(grid.codes[level, r, c])
        wave = codec.preview_code(level, code, band=r)
    except (AttributeError, IndexError, ValueError, TypeError) as exc:
        raise fail(f"Cannot preview that cell ({exc}).") from exc
    return s, View(preview=to_int16(wave, codec.sample_rate),
                   status=f"Previewing **{grid.level_names[level]} code {code}** (clip {grid_id}, band {r}, "
                          f"{c * grid.seconds_per_column:.2f} s).")


# ---------------------------------------------------------------------- edits
def _partner_region(s: Session, region: Region) -> Region:
    """B's region for a two-clip edit: B's own selection, else the same cells as A's; A's size either way."""
    b = need_b(s)
    start = s.sel_b if s.sel_b is not None else region
    target = Region(region.levels, start.r0, start.r0 + region.num_rows - 1, start.c0, start.c0 + region.num_columns - 1)
    try:
        target.validate(b)
    except EditError as exc:
        raise fail(f"Clip B has no room for a region the size of A's selection there ({exc}).") from exc
    return target


def _follow(s: Session, before: CodeGrid) -> None:
    """After an edit, undo or redo: when nothing that changed is in A's viewport, move it to the first change
    (an edit typed for another place of a long clip, or undone there, is heard at once)."""
    cols = np.flatnonzero(np.any(before.codes != s.edit.current.codes, axis=(0, 1)))
    if cols.size and not np.any((cols >= s.view_a.c0) & (cols < s.view_a.c1)):
        s.view_a = viewport.containing(s.view_a, int(cols[0]), int(cols[-1]) + 1, s.edit.current.num_columns)


def commit(s: Session, result: EditResult) -> tuple[Session, View]:
    """Push an edit on A's history (B's new grid for swaps comes with it), then decode at once."""
    before = s.edit.current
    try:
        s.edit.apply(result)
    except (EditError, CodesError) as exc:
        raise fail(str(exc)) from exc
    if s.sel_a is not None and result.region.levels == s.sel_a.levels:
        r = result.region
        s.sel_a = Region(r.levels, r.r0, r.r1, r.c0, r.c1)
    _follow(s, before)
    msg = f"{html.escape(result.label)}{' (clipped at the edge)' if result.clipped else ''}."
    return s, render(s, decode_now=True, status=msg)


def _operation(s: Session, operation: str, params: dict) -> EditResult:
    """The button's operation on A's selection -> EditResult (nothing applied yet)."""
    grid, codec = s.grid, s.codec
    if operation == "set":
        return set_codes(grid, need_sel(s), int(params["code"]), codec.codebook_size)
    if operation == "reverse":
        return reverse_region(grid, need_sel(s))
    if operation == "shift":
        return shift_region(grid, need_sel(s), int(params["columns"]))
    if operation == "repeat":
        return repeat_region(grid, need_sel(s), int(params["times"]))
    if operation == "randomize":
        usage = codec.info.usage or [[1] * codec.codebook_size] * grid.num_levels
        return randomize_region(grid, need_sel(s), usage, int(params.get("seed", 0)))
    if operation == "swap":
        region = need_sel(s)
        return swap_regions(grid, region, need_b(s), _partner_region(s, region), same_clip=False)
    if operation == "blend":
        region = need_sel(s)
        return blend_region(codec, grid, region, need_b(s), _partner_region(s, region), float(params["amount"]))
    if operation == "paste":
        if s.clipboard is None:
            raise fail("Nothing copied yet: select a region and press Copy (or Copy from B).")
        dst = need_sel(s)
        c = s.clipboard
        result = copy_region(c.grid, c.region, grid, dst.c0, dst.r0, same_clip=c.same_clip)
        if not c.same_clip and (s.b is None or s.b.key != c.clip_key):
            # The copied clip B is no longer the open B: its cells keep their codes but take no phase from
            # the B open now (another recording); the label says so.
            result = dataclasses.replace(result, donors=(), label=f"{result.label} ({c.clip_name} is no longer "
                                         "open as B: the pasted cells are rendered without its phase)")
        return result
    raise fail(f"Unknown edit {operation!r}.")


@guarded
def edit(s: Session | None, operation: str, **params) -> tuple[Session, View]:
    """Apply one named operation to A's selection; EditError becomes a message and nothing changes."""
    need_edit(s)
    try:
        result = _operation(s, operation, params)
    except gr.Error:
        raise
    except TypeError as exc:  # an emptied number box arrives as None
        raise fail(f"{operation}: fill in the number next to the button.") from exc
    except (EditError, CodesError, ValueError, KeyError) as exc:
        raise fail(str(exc)) from exc
    return commit(s, result)


@guarded
def copy(s: Session | None, source: str) -> tuple[Session, View]:
    """Copy A's (or B's) selection to the clipboard; Paste puts it at A's selection."""
    need_edit(s)
    if source == "B":
        grid = need_b(s)
        region = s.sel_b
        if region is None:
            raise fail("Select a region on clip B first: drag on one of its heatmaps.")
    else:
        grid, region = s.grid, need_sel(s)
    clip = s.b if source == "B" else s.a
    s.clipboard = Clipboard(grid, region, source == "A", clip.key, clip.name)
    return s, render(s, status=f"Copied {html.escape(region.describe(grid))} from clip {source}. "
                               "Select where it goes on A and press Paste.")


@guarded
def run_operation(s: Session | None, text: str) -> tuple[Session, View]:
    """An operation typed in the CLI's region syntax, e.g. 'swap Timbre@0.0-1.0 B:Timbre@1.0-2.0'."""
    session = need_edit(s)
    if not (text or "").strip():
        raise fail("Type an operation, e.g. set Timbre@0.5-1.0=12")
    before = session.current
    try:
        result = session.apply(text)
    except (EditError, CodesError, ValueError) as exc:
        raise fail(str(exc)) from exc
    _follow(s, before)
    msg = f"{html.escape(result.label)}{' (clipped at the edge)' if result.clipped else ''}."
    return s, render(s, decode_now=True, status=msg)


@guarded
def undo(s: Session | None) -> tuple[Session, View]:
    return _move(s, back=True)


@guarded
def redo(s: Session | None) -> tuple[Session, View]:
    return _move(s, back=False)


def _move(s: Session | None, back: bool) -> tuple[Session, View]:
    """One step back (undo) or forward (redo) in A's history; the viewport follows the change."""
    session = need_edit(s)
    if not (session.history.can_undo if back else session.history.can_redo):
        return s, View(status=f"Nothing to {'undo' if back else 'redo'}.")
    before = session.current
    session.undo() if back else session.redo()
    _follow(s, before)
    return s, render(s, decode_now=True, status="Undone." if back else "Redone.")


@guarded
def reset(s: Session | None) -> tuple[Session, View]:
    """Back to the clip's original codes (one more undoable step); B returns to its opened state too."""
    need_edit(s).reset()
    return s, render(s, decode_now=True, status="Reset to the original codes (undo brings the edits back).")


@guarded
def set_detail(s: Session | None, amount: float | None) -> tuple[Session, View]:
    """How much of the source's own fine texture survives inside edited cells (surgical rendering)."""
    session = need_edit(s)
    if amount is None or not 0.0 <= float(amount) <= 1.0:
        raise fail("Keep original detail must be between 0 and 1.")
    session.set_render(detail=float(amount))
    return s, render(s, decode_now=True, status=f"Keeping {s.detail:.0%} of the original detail inside edits.")


@guarded
def set_render_mode(s: Session | None, mode: str) -> tuple[Session, View]:
    """Surgical (source kept outside the edits) or plain (the model's decode everywhere) for the Edited player."""
    session = need_edit(s)
    session.set_render(mode="surgical" if str(mode).lower().startswith("surgical") else "plain")
    return s, render(s, decode_now=True, status=f"Edited player: {s.render_mode} rendering.")
