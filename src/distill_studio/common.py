"""What every studio module shares: the View an event returns, `guarded` (each event under its session's lock),
`fail` (a user-facing error), the "needs a model / clip A / a selection / clip B" checks, and A's audio over its
viewport (view_span, view_recon, view_edited). Below every other studio module: of the studio it imports
only threads and state.

Where the Edit tab's events live: opening.py (open, upload, encode, model changes), pictures.py (heatmaps,
overview, mel, status texts, moving the viewport), editing.py (selection and edit events, undo/redo),
exchange.py (import/export of codes, history and audio), regenerate.py (drawing versions with the prior).
"""

from __future__ import annotations

import enum
import functools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import gradio as gr
import numpy as np

from distill import Codec, CodeGrid, EditSession, Region, Rendered
from distill.render import decode_span

from . import threads
from .state import Session

MAX_LEVELS = 4


class Skip(enum.Enum):
    """"Leave this output as it is": a View field left at SKIP is not sent to the browser."""

    SKIP = "skip"


SKIP = Skip.SKIP
Audio = tuple[int, np.ndarray]                      # (rate, int16 samples) for a gr.Audio player
Heatmaps = tuple[str | None, ...]                   # MAX_LEVELS html strings; None hides that level


@dataclass(frozen=True)
class View:
    """What an edit event changes on screen."""

    heat_a: Heatmaps | Skip = SKIP
    heat_b: Heatmaps | Skip = SKIP
    overview_a: str | Skip = SKIP                   # html; "" hides it (the whole clip is in view)
    overview_b: str | Skip = SKIP
    mel: str | Skip = SKIP                          # html
    selection: str | Skip = SKIP                    # markdown
    history: str | Skip = SKIP                      # markdown
    original: Audio | None | Skip = SKIP
    recon: Audio | None | Skip = SKIP
    edited: Audio | None | Skip = SKIP
    preview: Audio | None | Skip = SKIP
    status: str | Skip = SKIP                       # markdown
    levels: tuple[list[str], list[str]] | Skip = SKIP  # (choices, value) for the level checkboxes
    clips: list[str] | Skip = SKIP                  # dropdown choices (names)
    clip_a: str | None | Skip = SKIP                # dropdown value
    clip_b: str | None | Skip = SKIP
    usage: str | Skip = SKIP                        # html
    model: str | Skip = SKIP                        # markdown

    def fields(self) -> dict:
        # not dataclasses.asdict: it deep-copies every audio array
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not SKIP}


SAFE_NAME_BYTES = 120


def safe_filename(name: str | None, default: str = "clip", suffix: str = "") -> str:
    """A name from a user (an upload's file name, a clip's label) -> one plain file name to write under
    Distill's own temp folder: only its last path part (after / or \\), any character other than a
    letter, digit, '.', '-', '_' or space replaced by '_', no leading or trailing dots or spaces, at most
    120 bytes; `default` when nothing is left. `../../x.wav` -> `x.wav`.

    The cut falls in the stem, never in the ending: the name's own extension, or `suffix` when given (the
    name then is a stem: `safe_filename(stem, suffix=".regen.2.codes.json")`), is always kept whole, so
    names that differ only there stay different."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = re.sub(r"[^\w.\- ]", "_", base).strip(" .")
    if suffix:
        stem, ext = base, re.sub(r"[^\w.\- ]", "_", suffix)[:SAFE_NAME_BYTES // 2]
    else:
        stem, ext = os.path.splitext(base)
        ext = ext[:16]
    stem = stem[:SAFE_NAME_BYTES]
    while stem and len((stem + ext).encode("utf-8")) > SAFE_NAME_BYTES:
        stem = stem[:-1]
    if not stem.strip(" ._"):
        return (default + ext) if suffix else default
    return stem.rstrip(" .") + ext


def fail(message: str) -> gr.Error:
    """A user-facing error; the session is untouched because handlers change it only after success."""
    return gr.Error(message, duration=8)


def guarded(fn: Callable) -> Callable:
    """Run a handler holding its session's lock (two events of one tab never interleave), with the torch
    threads edit-time work was measured fastest with (threads.EDIT_THREADS)."""
    @functools.wraps(fn)
    def wrapper(s: Session | None, *args, **kwargs):
        with threads.using(threads.EDIT_THREADS):
            if s is None:
                return fn(s, *args, **kwargs)
            with s.lock:
                return fn(s, *args, **kwargs)
    return wrapper


def getattr_default(evt: gr.EventData, name: str, default):
    try:
        return getattr(evt, name)
    except AttributeError:
        return default


def to_int16(wave: np.ndarray | None, sr: int) -> tuple[int, np.ndarray] | None:
    """float wave -> (sr, int16); int16 keeps relative loudness between players (floats get normalised)."""
    if wave is None:
        return None
    return sr, (np.clip(np.asarray(wave, dtype=np.float32), -1, 1) * 32767).astype(np.int16)


# ---------------------------------------------------------------------- what an event needs open
def need_codec(s: Session | None) -> Codec:
    """The session's model; a message naming where to get one when there is none."""
    if s is None or s.codec is None:
        raise fail("No model loaded: train one on the Data & Train tab or upload a .distill file.")
    return s.codec


def need_edit(s: Session | None) -> EditSession:
    """Clip A's EditSession (a model and an open clip A are needed)."""
    need_codec(s)
    if s.edit is None:
        raise fail("Open a clip A first (pick one from the list or upload audio).")
    return s.edit


def need_sel(s: Session) -> Region:
    """A's selection, or a message asking for one."""
    if s.sel_a is None:
        raise fail("Select a region on clip A first: drag on one of its heatmaps.")
    return s.sel_a


def need_b(s: Session) -> CodeGrid:
    """Clip B's current grid, or a message asking to open B."""
    if s.b_grid is None:
        raise fail("Open a clip B first.")
    return s.b_grid


# ---------------------------------------------------------------------- A's audio over its viewport
def view_span(s: Session) -> tuple[int, int]:
    """Samples (model rate) of A's viewport: what the three players play."""
    return s.view_a.samples(s.edit.current)


def view_recon(s: Session) -> Rendered:
    """A's plain reconstruction over its viewport (decoded once per viewport, only the columns it needs)."""
    a, span = s.a, view_span(s)
    if s.recon is None or (s.recon.start, s.recon.stop) != span:
        t0 = time.perf_counter()
        wave = decode_span(s.codec, a.grid.codes, a.grid.num_samples, *span, phase_from=a.wave)
        s.recon = Rendered(wave, time.perf_counter() - t0, "plain", start=span[0])
    return s.recon


def view_edited(s: Session, fresh: bool = False) -> Rendered:
    """A's edited audio over its viewport; re-rendered when `fresh` (the grid or the settings changed) or
    when the viewport moved. Only the edits that reach the viewport are rendered."""
    span = view_span(s)
    if fresh or s.rendered is None or (s.rendered.start, s.rendered.stop) != span:
        s.rendered = s.edit.render(span=span)
    return s.rendered


def event_grid(s: Session, evt: object) -> tuple[str, CodeGrid]:
    """("A" or "B", that clip's current grid) for a heatmap or overview event; gr.Error when B is not open."""
    grid_id = getattr_default(evt, "grid", "A")
    grid = s.grid if grid_id == "A" else s.b_grid
    if grid is None:
        raise fail("Open a clip B first.")
    return grid_id, grid
