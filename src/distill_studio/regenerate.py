"""Regenerate panel: draw N versions of A's selection with the model's prior, audition them, keep one.

Candidates are rendered without being applied (EditSession.preview), so drawing never touches the
history; keeping one commits it as one undoable step. Thin glue over distill's public API.
"""

from __future__ import annotations

import html
import math
import time

import gradio as gr

from distill import MAX_CANDIDATES, CodesError, EditError, RegenerateSettings, Region
from distill.edits import regenerate as draw_versions

from .common import View, fail, guarded, need_edit, need_sel, to_int16, view_span
from .editing import commit
from .pictures import render
from .state import Candidates, Session

SLOTS = 6                  # candidate players on the page
AUDITION_PAD_S = 1.0       # each player plays the selection with this much context on both sides
STUDIO_NO_PRIOR = ("Regenerate needs a prior, and this model has none. Train a model on **Data & Train** (the Train "
                   "button trains the prior too), or add one to this model with `distill prior MODEL.distill FOLDER`.")


def _settings(strength: float | None, temperature: float | None, seed: float | None, count: float | None
              ) -> RegenerateSettings:
    """The panel's inputs -> RegenerateSettings; a clear message for an empty or out-of-range box."""
    values = {"strength": strength, "temperature": temperature, "seed": seed, "candidates": count}
    empty = [k for k, v in values.items() if v is None or (isinstance(v, float) and not math.isfinite(v))]
    if empty:
        raise fail(f"Regenerate: fill in {', '.join(empty)}.")
    n = int(count)
    if not 1 <= n <= min(SLOTS, MAX_CANDIDATES):
        raise fail(f"Regenerate: candidates must be 1-{min(SLOTS, MAX_CANDIDATES)}, got {n}.")
    try:
        return RegenerateSettings(strength=float(strength), temperature=float(temperature), seed=int(seed),
                                  candidates=n)
    except EditError as exc:
        raise fail(f"Regenerate: {exc}.") from exc


def audition_span(s: Session, region: Region) -> tuple[int, int]:
    """Samples (model rate) a candidate player plays: the selection with AUDITION_PAD_S of context each side."""
    grid = s.grid
    spc, sr = grid.seconds_per_column, grid.sample_rate
    t0 = max(0.0, region.c0 * spc - AUDITION_PAD_S)
    t1 = min(grid.duration_s, (region.c1 + 1) * spc + AUDITION_PAD_S)
    return int(round(t0 * sr)), max(int(round(t0 * sr)) + 1, int(round(t1 * sr)))


@guarded
def draw(s: Session | None, strength: float | None, temperature: float | None, seed: float | None,
         count: float | None, whole: bool = False) -> tuple[Session, View]:
    """Draw candidates for A's selection (or the whole clip), render each, keep them for audition."""
    session = need_edit(s)
    codec = s.codec
    if codec.prior is None:
        raise fail(STUDIO_NO_PRIOR + (f" ({codec.prior_note})" if "cannot be used" in codec.prior_note else ""))
    settings = _settings(strength, temperature, seed, count)
    grid = session.current
    if whole:
        names = [codec.level_names[q] for q in (s.sel_a.levels if s.sel_a is not None else range(grid.num_levels))]
        region = Region.from_seconds(grid, names, 0.0, grid.duration_s)
    else:
        region = need_sel(s)
    t0 = time.perf_counter()
    a, b = view_span(s) if whole else audition_span(s, region)   # "whole" on a long clip: the viewport is heard
    try:
        results = draw_versions(codec, grid, region, settings)
        renders = session.preview_many(results, span=(a, b))
        now = session.render(span=(a, b))
    except (EditError, CodesError, ValueError) as exc:
        raise fail(str(exc)) from exc
    except (RuntimeError, MemoryError) as exc:   # e.g. memory for many versions of a long region
        raise fail(f"Regenerate could not finish ({type(exc).__name__}: {str(exc)[:200]}); try fewer versions or a "
                   "shorter selection.") from exc
    s.candidates = Candidates(grid, tuple(results), tuple(r.wave for r in renders), now.wave, (a, b))
    notes = {r.note for r in renders + [now] if r.note}
    notes |= {r.origin for r in results if r.origin and not r.origin.startswith("from ")}   # how, when not copied
    what = "the whole clip" if whole else html.escape(region.describe(grid))
    text = (f"Drew {len(results)} version{'s' if len(results) != 1 else ''} of {what} (seed {settings.seed}, strength "
            f"{settings.strength:g}, temperature {settings.temperature:g}) in {time.perf_counter() - t0:.2f} s. "
            "Listen below and press **Keep** on the one you like; **Again** draws new ones.")
    if notes:
        text += " **Note:** " + html.escape("; ".join(sorted(notes))) + "."
    return s, render(s, status=text)


@guarded
def keep(s: Session | None, index: int) -> tuple[Session, View]:
    """Apply candidate `index` (0-based) as one undoable step."""
    session = need_edit(s)
    c = s.candidates
    if c is None or not 0 <= index < len(c.results):
        raise fail("No such candidate: press Regenerate first.")
    if c.base is not session.current:
        s.candidates = None
        raise fail("Clip A changed since these versions were drawn; press Regenerate again.")
    s.candidates = None
    return commit(s, c.results[index])


def version_updates(s: Session | None, candidates: bool) -> list | None:
    """The candidate area's updates after an event: re-sent when versions were drawn or kept (`candidates`),
    cleared once they went stale, None to leave the page as it is. Reads the versions under the tab's lock,
    so a Regenerate of the same tab finishing meanwhile never shows half of its versions."""
    if s is None:
        return candidate_updates(None, 1) if candidates else None
    with s.lock:
        if candidates or drop_stale(s):
            return candidate_updates(s, s.codec.sample_rate if s.codec is not None else 1)
    return None


def drop_stale(s: Session | None) -> bool:
    """Forget versions drawn on a grid that is no longer A's (an edit, undo, reset or another clip came since);
    True when some were dropped, so the page clears them instead of offering Keep buttons that would refuse."""
    c = s.candidates if s is not None else None
    if c is None or (s.edit is not None and c.base is s.edit.current):
        return False
    s.candidates = None
    return True


def version_label(c: Candidates, i: int) -> str:
    """"Version 2 — from kick_03.wav 1.2–1.9 s": where a version's material came from, so it can be followed back."""
    origin = c.results[i].origin if i < len(c.results) else ""
    return f"Version {i + 1}" + (f" — {origin}" if origin.startswith("from ") else "")


def candidate_updates(s: Session | None, sample_rate: int) -> list:
    """Page updates for the candidate area: the 'now' player, then (player, keep button) per slot."""
    c = s.candidates if s is not None else None
    if c is None:
        return [gr.update(value=None)] + [gr.update(value=None, visible=False), gr.update(visible=False)] * SLOTS
    out = [to_int16(c.current, sample_rate)]
    for i in range(SLOTS):
        shown = i < len(c.audio)
        out += [gr.update(value=to_int16(c.audio[i], sample_rate) if shown else None, visible=shown,
                          label=version_label(c, i)),
                gr.update(visible=shown)]
    return out

