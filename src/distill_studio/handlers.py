"""Event functions of the Edit & Listen tab: Session in, (Session, View) out. No layout here; app.py wires them."""

from __future__ import annotations

import html
import json
import os
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf
import torch

from distill import AudioError, Codec, CodeGrid, CodesError, load_audio
from distill.edits import (
    EditError,
    EditHistory,
    EditResult,
    Region,
    apply_operation,
    blend_region,
    copy_region,
    randomize_region,
    repeat_region,
    reverse_region,
    set_codes,
    shift_region,
    swap_regions,
)
from distill.model import DOWNSAMPLE
from distill.render import RenderError, decoder_reach, donors_from_patches, render_edit

from .heatmap import empty_html, heatmap_html, hz_label, mel_html, usage_html
from .state import Clip, Limits, Session

MAX_LEVELS = 4
SKIP = object()  # "leave this output as it is"
USER_ERRORS = (AudioError, CodesError, EditError, ValueError, OSError)


@dataclass(frozen=True)
class View:
    """What an edit event changes on screen; fields left at SKIP are not sent to the browser."""

    heat_a: object = SKIP        # tuple of MAX_LEVELS html strings or None (hidden)
    heat_b: object = SKIP
    mel: object = SKIP
    selection: object = SKIP     # markdown
    history: object = SKIP       # markdown
    original: object = SKIP      # (sr, int16) audio
    recon: object = SKIP
    edited: object = SKIP
    preview: object = SKIP
    status: object = SKIP        # markdown
    levels: object = SKIP        # (choices, value) for the level checkboxes
    clips: object = SKIP         # dropdown choices (names)
    clip_a: object = SKIP        # dropdown value
    clip_b: object = SKIP
    usage: object = SKIP         # html
    model: object = SKIP         # markdown

    def fields(self) -> dict:
        # not dataclasses.asdict: it deep-copies, and a copy of SKIP is no longer SKIP
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not SKIP}


def fail(message: str) -> gr.Error:
    """A user-facing error; the session is untouched because handlers change it only after success."""
    return gr.Error(message, duration=8)


# ---------------------------------------------------------------------- audio helpers
def to_int16(wave: np.ndarray | None, sr: int) -> tuple[int, np.ndarray] | None:
    """float wave -> (sr, int16); int16 keeps relative loudness between players (floats get normalised)."""
    if wave is None:
        return None
    return sr, (np.clip(np.asarray(wave, dtype=np.float32), -1, 1) * 32767).astype(np.int16)


def decode(codec: Codec, grid: CodeGrid, phase: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float]:
    """grid -> (wave, decoded log-mel, seconds): the model everywhere, with the given clip's phase."""
    t0 = time.perf_counter()
    codec.check(grid)
    mel = codec.decode_mel(grid)
    wave = codec.front.invert(mel, grid.num_samples, phase_from=phase).numpy().astype(np.float32)
    return wave, mel.numpy(), time.perf_counter() - t0


def decode_mel_cached(s: Session, grid: CodeGrid) -> torch.Tensor:
    """A's decoded log-mel, re-running the decoder only around the columns that changed since the last call.

    The decoder is local (per-position norms, reach = render.decoder_reach frames), so output columns
    more than `reach` away from every changed code are unchanged; the window decoded here carries
    `reach` more columns of context on each side, which makes the splice exact.
    """
    codec = s.codec
    prev = s.mel_cache
    mel = None
    if prev is not None and prev[0] == codec.fingerprint and prev[1].codes.shape == grid.codes.shape \
            and prev[1].num_samples == grid.num_samples:
        changed = np.flatnonzero(np.any(prev[1].codes != grid.codes, axis=(0, 1)))
        if changed.size == 0:
            mel = prev[2]
        else:
            reach = -(-decoder_reach(codec.model) // DOWNSAMPLE)
            lo, hi = max(0, int(changed[0]) - reach), min(grid.num_columns - 1, int(changed[-1]) + reach)
            w0, w1 = max(0, lo - reach), min(grid.num_columns - 1, hi + reach)
            # round the window up to a multiple of 16 columns: each new input shape costs the CPU
            # backend a slow first call, so a few recurring shapes keep every edit fast
            width = -(-(w1 - w0 + 1) // 16) * 16
            w1 = min(grid.num_columns - 1, w0 + width - 1)
            w0 = max(0, w1 - width + 1)
            if (w1 - w0 + 1) < 0.8 * grid.num_columns:
                window = codec.decode_mel(grid.codes[..., w0:w1 + 1])
                mel = prev[2].clone()
                f0, f1 = lo * DOWNSAMPLE, min((hi + 1) * DOWNSAMPLE, mel.shape[-1])
                mel[:, f0:f1] = window[:, (lo - w0) * DOWNSAMPLE:(lo - w0) * DOWNSAMPLE + (f1 - f0)]
    if mel is None:
        mel = codec.decode_mel(grid)
    s.mel_cache = (codec.fingerprint, grid, mel)
    return mel


def render_current(s: Session) -> tuple[np.ndarray, float, str]:
    """A's edited audio in the session's mode -> (wave, seconds, note).

    "surgical" keeps the source recording exactly wherever no code changed and renders only the
    edited cells (phase from the clip the cells came from); "plain" decodes the whole grid.
    """
    grid, a = s.grid, s.a
    if s.render_mode == "surgical" and a is not None and a.grid.num_samples == grid.num_samples:
        t0 = time.perf_counter()
        patches = s.donor_timeline[s.history.position] if s.history and s.history.position < len(s.donor_timeline) else ()
        try:
            donors = donors_from_patches(patches, a.wave, s.b.wave if s.b else None)
            wave = render_edit(s.codec, grid, a.wave, a.grid, detail=s.detail, donors=donors)
            return np.asarray(wave, np.float32), time.perf_counter() - t0, "surgical render"
        except (RenderError, CodesError, ValueError):
            pass  # fall back to the plain decode below
    t0 = time.perf_counter()
    s.codec.check(grid)
    mel = decode_mel_cached(s, grid)
    wave = s.codec.front.invert(mel, grid.num_samples, phase_from=a.wave if a is not None else None)
    return wave.numpy().astype(np.float32), time.perf_counter() - t0, "plain decode"


def _timeline_start(s: Session) -> None:
    """B's grid and the active donor patches at every history position, so undo/redo restore them too."""
    n = (len(s.history.labels) + 1) if s.history is not None else 1
    s.b_timeline = [s.b_grid] * n
    s.donor_timeline = [()] * n


def _timeline_push(s: Session, before: int, b_grid: CodeGrid | None, donors: tuple) -> None:
    s.b_timeline = s.b_timeline[:before + 1] + [b_grid]
    s.donor_timeline = s.donor_timeline[:before + 1] + [donors]
    keep = len(s.history.labels) + 1   # the history drops its oldest steps past its limit
    s.b_timeline, s.donor_timeline = s.b_timeline[-keep:], s.donor_timeline[-keep:]


def _timeline_goto(s: Session) -> None:
    pos = s.history.position
    if pos < len(s.b_timeline):
        s.b_grid = s.b_timeline[pos]


# ---------------------------------------------------------------------- model + clips
def model_summary(codec: Codec | None, label: str) -> str:
    if codec is None:
        return "No model yet: train one on the **Data & Train** tab or upload a `.distill` file there."
    cfg, ds = codec.config, codec.info.dataset or {}
    files = f", trained on {ds.get('accepted', '?')} files" if ds else ""
    return (f"**Model:** {html.escape(label)} · {cfg.num_quantizers} levels ({', '.join(cfg.level_names)}) · "
            f"codebook {cfg.codebook_size} × dim {cfg.codebook_dim}{files} · fingerprint `{codec.fingerprint}`")


def demo_clips(folder: str) -> dict[str, str]:
    p = Path(folder)
    if not p.is_dir():
        return {}
    return {f.stem: str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in (".wav", ".flac")}


def new_session(codec: Codec | None, label: str, model_path: str | None, clips: dict[str, str]) -> Session:
    return Session(codec=codec, model_label=label, model_path=model_path, clips=dict(clips))


def read_clip(codec: Codec, path: str, name: str, limits: Limits) -> Clip:
    """Load, check length and encode one clip; AudioError / ValueError name the file and the problem."""
    wave, _ = load_audio(path, codec.sample_rate)
    seconds = len(wave) / codec.sample_rate
    if len(wave) < codec.sample_rate * 0.05:
        raise AudioError(f"{name}: too short to edit ({seconds * 1000:.0f} ms; at least 50 ms)")
    if seconds > limits.max_clip_seconds:
        raise AudioError(f"{name}: {seconds:.0f} s is longer than this studio opens ({limits.max_clip_seconds:.0f} s)")
    return Clip(name, wave, codec.encode(wave))


def _need_codec(s: Session | None) -> Codec:
    if s is None or s.codec is None:
        raise fail("No model loaded: train one on the Data & Train tab or upload a .distill file.")
    return s.codec


def _need_a(s: Session | None) -> Clip:
    _need_codec(s)
    if s.a is None:
        raise fail("Open a clip A first (pick one from the list or upload audio).")
    return s.a


def _resolve(s: Session, name: str | None, upload: str | None) -> tuple[str, str]:
    if upload:
        return os.path.basename(upload), upload
    if name and name in s.clips:
        return name, s.clips[name]
    raise fail("Pick a clip from the list or upload an audio file.")


def open_clip(s: Session | None, which: str, name: str | None, upload: str | None, limits: Limits) -> tuple[Session, View]:
    """Open a clip as A (starts a fresh edit history) or as B (the partner for swaps, copies and blends)."""
    codec = _need_codec(s)
    label, path = _resolve(s, name, upload)
    try:
        clip = read_clip(codec, path, label, limits)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from exc
    if upload and label not in s.clips:
        s.clips[label] = path
    if which == "A":
        s.a, s.sel_a, s.clipboard = clip, None, None
        s.history = EditHistory(clip.grid)
        _timeline_start(s)
        wave, _, dt = decode(codec, clip.grid, clip.wave)
        s.recon, s.edited, s.last_decode_s = wave, wave, dt
        return s, render(s, audio=True, status=f"Opened **{html.escape(label)}** as A "
                                                 f"({clip.grid.duration_s:.2f} s, {clip.grid.num_columns} columns); decoded in {dt:.2f} s.",
                         clip_a=label, clips=sorted(s.clips))
    s.b, s.b_grid, s.sel_b = clip, clip.grid, None
    _timeline_start(s)
    return s, render(s, status=f"Opened **{html.escape(label)}** as B ({clip.grid.duration_s:.2f} s).", clip_b=label,
                     clips=sorted(s.clips))


def set_model(s: Session, codec: Codec, label: str, path: str | None) -> Session:
    """Switch the session to another model; open clips are re-encoded with it so the grids stay valid."""
    s.codec, s.model_label, s.model_path = codec, label, path
    for which in ("a", "b"):
        clip = getattr(s, which)
        if clip is not None:
            setattr(s, which, Clip(clip.name, clip.wave, codec.encode(clip.wave)) if clip.wave is not None else None)
    s.b_grid = s.b.grid if s.b else None
    s.history = EditHistory(s.a.grid) if s.a else None
    _timeline_start(s)
    s.sel_a = s.sel_b = s.clipboard = None
    s.recon = s.edited = None
    if s.a is not None:
        s.recon, _, s.last_decode_s = decode(codec, s.a.grid, s.a.wave)
        s.edited = s.recon
    return s


# ---------------------------------------------------------------------- rendering
def _heatmaps(s: Session, grid: CodeGrid | None, region: Region | None, grid_id: str) -> tuple:
    if grid is None:
        return tuple([empty_html(f"Open a clip {grid_id} to see its codes.")] + [None] * (MAX_LEVELS - 1))
    out = []
    band_hz = s.codec.band_ranges_hz
    for q in range(MAX_LEVELS):
        if q >= grid.num_levels:
            out.append(None)
            continue
        sel = (region.r0, region.r1, region.c0, region.c1) if region is not None and q in region.levels else None
        out.append(heatmap_html(grid.codes[q], level=q, name=f"{grid_id} · {grid.level_names[q]}", grid_id=grid_id,
                                seconds_per_column=grid.seconds_per_column, codebook_size=s.codec.codebook_size,
                                selection=sel, band_hz=band_hz))
    return tuple(out)


def selection_text(s: Session) -> str:
    parts = []
    for tag, region, grid in (("A", s.sel_a, s.grid), ("B", s.sel_b, s.b_grid)):
        if region is not None and grid is not None:
            a, b = region.seconds(grid)
            hz = s.codec.band_ranges_hz if s.codec is not None else None
            span = f" ({hz_label(hz[region.r0][0], hz[region.r1][1])})" if hz and region.r1 < len(hz) else ""
            parts.append(f"**{tag}:** {html.escape(region.level_label(grid))} · **{a:.2f}–{b:.2f} s** "
                         f"({b - a:.2f} s, {region.num_columns} columns) · bands {region.r0}–{region.r1}{span}")
    if not parts:
        return "No selection: drag on a heatmap (shift-drag on another level adds that level)."
    clip = " · clipboard holds a copy" if s.clipboard else ""
    return "  \n".join(parts) + clip


def history_text(s: Session) -> str:
    h = s.history
    if h is None or not h.labels:
        return "_No edits yet._"
    lines = []
    for i, label in enumerate(h.labels, start=1):
        mark = "▶ " if i == h.position else ""
        text = f"{i}. {mark}{html.escape(label)}"
        lines.append(text if i <= h.position else f"{i}. ~~{html.escape(label)}~~ (undone)")
    return "\n".join(lines[-60:])


def render(s: Session, *, audio: bool = False, decode_now: bool = False, status: str | None = None,
           **extra) -> View:
    """Full Edit-tab view of the session; `decode_now` re-synthesises A's edited audio first."""
    codec = s.codec
    if codec is None:
        base = dict(heat_a=_heatmaps_empty("A"), heat_b=_heatmaps_empty("B"), mel=mel_html([], 0),
                    selection=selection_text(s), history=history_text(s), model=model_summary(None, ""),
                    status=status or model_summary(None, ""))
        return View(**{**base, **extra})
    grid = s.grid
    panels = []
    if decode_now and s.a is not None:
        s.edited, s.last_decode_s, how = render_current(s)
        status = (status or "") + f" Decoded in **{s.last_decode_s:.2f} s** ({how})."
    if s.a is not None:
        frames = grid.num_columns * 16
        if s.src_mel is None or s.src_mel[0] is not s.a.wave:
            s.src_mel = (s.a.wave, codec.logmel(s.a.wave).numpy())
        panels = [(f"A: {s.a.name} (original)", s.src_mel[1])]
        if s.history is not None and s.history.position > 0 and s.grid != s.a.grid:
            if s.render_mode == "plain" and s.mel_cache is not None and s.mel_cache[1] is grid:
                edited_mel = s.mel_cache[2].numpy()   # what the decoder produced for the Edited player
            else:
                edited = s.edited if s.edited is not None else render_current(s)[0]
                edited_mel = codec.logmel(edited).numpy()
            panels.append(("A: edited (what the Edited player plays)", edited_mel))
    else:
        frames = 0
    names = list(codec.level_names)
    levels_value = [names[q] for q in s.sel_a.levels] if s.sel_a is not None else []
    b_key = (id(s.b_grid), s.sel_b, id(codec))
    heat_b = SKIP if b_key == s.shown_b and not audio else _heatmaps(s, s.b_grid, s.sel_b, "B")
    s.shown_b = b_key  # B's heatmaps are re-sent only when B or its selection changed
    view = dict(heat_a=_heatmaps(s, grid, s.sel_a, "A"), heat_b=heat_b,
                mel=mel_html(panels, frames, codec.mel_cfg.hop_length / codec.sample_rate), selection=selection_text(s), history=history_text(s),
                levels=(names, levels_value), status=status.strip() if status else SKIP)
    sr = codec.sample_rate
    if decode_now or audio:
        view["edited"] = to_int16(s.edited, sr)
    if audio and s.a is not None:
        view["original"] = to_int16(s.a.wave, sr)
        view["recon"] = to_int16(s.recon, sr)
    view.update(extra)
    return View(**view)


def _heatmaps_empty(grid_id: str) -> tuple:
    return tuple([empty_html(f"Open a clip {grid_id} to see its codes.")] + [None] * (MAX_LEVELS - 1))


def full_view(s: Session) -> View:
    """Everything, for page load and model changes."""
    names = sorted(s.clips)
    return render(s, audio=True, clips=names, clip_a=s.a.name if s.a else None, clip_b=s.b.name if s.b else None,
                  usage=usage_html(s.codec.info.usage, s.codec.level_names) if s.codec else empty_html("No model."),
                  model=model_summary(s.codec, s.model_label))


def start(codec: Codec | None, label: str, model_path: str | None, clips: dict[str, str], limits: Limits,
          first: str | None = None, second: str | None = None) -> tuple[Session, View]:
    """Page load: a fresh session on the bundled model with two demo clips already open, so editing starts at once."""
    s = new_session(codec, label, model_path, clips)
    names = list(clips)
    if codec is not None and names:
        a_name = first if first in clips else names[0]
        b_name = second if second in clips else names[min(1, len(names) - 1)]
        try:
            s.b, s.b_grid = (clip := read_clip(codec, clips[b_name], b_name, limits)), clip.grid
            s, _ = open_clip(s, "A", a_name, None, limits)
        except gr.Error:
            pass
    view = full_view(s)
    if codec is None:
        view = View(**{**view.fields(), "status": f"The bundled demo model is not available ({html.escape(label)}). "
                                                  "Train a model on **Data & Train**, or upload a `.distill` file there."})
    elif s.a is not None:
        view = View(**{**view.fields(), "status": f"Demo clips open: A = **{s.a.name}**, B = **{s.b.name if s.b else '-'}**. "
                                                  f"Drag on a heatmap to select, then edit."})
    return s, view


def open_defaults(s: Session, limits: Limits) -> Session:
    """After a model change with no clip open: open the dataset's first two clips as A and B."""
    if s.codec is None or s.a is not None or not s.clips:
        return s
    names = sorted(s.clips)
    try:
        if len(names) > 1:
            s, _ = open_clip(s, "B", names[1], None, limits)
        s, _ = open_clip(s, "A", names[0], None, limits)
    except gr.Error:
        pass
    return s


# ---------------------------------------------------------------------- selection
def _levels_from_names(grid: CodeGrid, names: list[str] | None) -> tuple[int, ...]:
    return tuple(sorted(grid.level_index(n) for n in (names or [])))


def select(s: Session | None, evt: gr.EventData) -> tuple[Session, View]:
    """Heatmap drag: index [[r0, c0], [r1, c1]], value = level; shift adds the level to the current selection."""
    _need_a(s)
    grid_id = getattr_default(evt, "grid", "A")
    grid = s.grid if grid_id == "A" else s.b_grid
    if grid is None:
        raise fail("Open a clip B first.")
    try:
        (r0, c0), (r1, c1) = evt.index
        level = int(evt.value)
        shift = bool(getattr_default(evt, "shift", False))
    except (TypeError, ValueError, AttributeError) as exc:
        raise fail(f"Unreadable selection from the heatmap ({exc}).") from exc
    current = s.sel_a if grid_id == "A" else s.sel_b
    other = s.sel_b if grid_id == "A" else s.sel_a
    if shift and (current is not None or other is not None):
        base = (current or other).levels
        levels = tuple(sorted(set(base) | {level}))
    else:
        levels = (level,)
    region = Region(levels, min(r0, r1), max(r0, r1), min(c0, c1), max(c0, c1))
    try:
        region.validate(grid)
    except EditError as exc:
        raise fail(str(exc)) from exc
    if grid_id == "A":
        s.sel_a = region
        if s.sel_b is not None:
            s.sel_b = Region(levels, s.sel_b.r0, s.sel_b.r1, s.sel_b.c0, s.sel_b.c1)
    else:
        s.sel_b = region
        if s.sel_a is not None:
            s.sel_a = Region(levels, s.sel_a.r0, s.sel_a.r1, s.sel_a.c0, s.sel_a.c1)
    view = render(s)
    if grid_id == "B" and s.sel_a is None:
        names = list(s.codec.level_names)
        view = View(**{**view.fields(), "levels": (names, [names[q] for q in levels])})
    return s, view


def getattr_default(evt: gr.EventData, name: str, default):
    try:
        return getattr(evt, name)
    except AttributeError:
        return default


def set_levels(s: Session | None, names: list[str]) -> tuple[Session, View]:
    """Level checkboxes: the selection's rectangle applies to exactly the ticked levels."""
    _need_a(s)
    levels = _levels_from_names(s.grid, names)
    if not levels:
        s.sel_a = s.sel_b = None
        return s, render(s)
    s.sel_a = Region(levels, s.sel_a.r0, s.sel_a.r1, s.sel_a.c0, s.sel_a.c1) if s.sel_a else None
    s.sel_b = Region(levels, s.sel_b.r0, s.sel_b.r1, s.sel_b.c0, s.sel_b.c1) if s.sel_b else None
    return s, render(s)


def select_all(s: Session | None, names: list[str]) -> tuple[Session, View]:
    """The whole clip on the ticked levels (Structure when none is ticked)."""
    a = _need_a(s)
    levels = _levels_from_names(s.grid, names) or (0,)
    s.sel_a = Region(levels, 0, a.grid.num_bands - 1, 0, a.grid.num_columns - 1)
    return s, render(s)


def clear_selection(s: Session | None) -> tuple[Session, View]:
    _need_a(s)
    s.sel_a = s.sel_b = None
    return s, render(s)


def cell_preview(s: Session | None, evt: gr.EventData) -> tuple[Session, View]:
    """Single-cell click: hear that code alone (its level in neutral context, only that band)."""
    codec = _need_codec(s)
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
def _need_sel(s: Session) -> Region:
    if s.sel_a is None:
        raise fail("Select a region on clip A first: drag on one of its heatmaps.")
    return s.sel_a


def _need_b(s: Session) -> CodeGrid:
    if s.b_grid is None:
        raise fail("Open a clip B first.")
    return s.b_grid


def _partner_region(s: Session, region: Region) -> Region:
    """B's region for a two-clip edit: B's own selection, else the same cells as A's; A's size either way."""
    b = _need_b(s)
    start = s.sel_b if s.sel_b is not None else region
    target = Region(region.levels, start.r0, start.r0 + region.num_rows - 1, start.c0, start.c0 + region.num_columns - 1)
    try:
        target.validate(b)
    except EditError as exc:
        raise fail(f"Clip B has no room for a region the size of A's selection there ({exc}).") from exc
    return target


def commit(s: Session, result: EditResult, note: str = "") -> tuple[Session, View]:
    """Push an edit on A's history (and B's new grid for swaps), then decode at once."""
    before = s.history.position
    s.history.push(result)
    if result.other is not None:
        s.b_grid = result.other
    active = s.donor_timeline[before] if before < len(s.donor_timeline) else ()
    _timeline_push(s, before, s.b_grid, tuple(active) + tuple(result.donors))
    s.sel_a = Region(s.sel_a.levels, result.region.r0, result.region.r1, result.region.c0, result.region.c1) \
        if s.sel_a is not None and result.region.levels == s.sel_a.levels else s.sel_a
    msg = f"{html.escape(result.label)}{' (clipped at the edge)' if result.clipped else ''}.{note}"
    return s, render(s, decode_now=True, status=msg)


def edit(s: Session | None, operation: str, **params) -> tuple[Session, View]:
    """Apply one named operation to A's selection; EditError becomes a message and nothing changes."""
    _need_a(s)
    grid = s.grid
    try:
        if operation == "set":
            result = set_codes(grid, _need_sel(s), int(params["code"]), s.codec.codebook_size)
        elif operation == "reverse":
            result = reverse_region(grid, _need_sel(s))
        elif operation == "shift":
            result = shift_region(grid, _need_sel(s), int(params["columns"]))
        elif operation == "repeat":
            result = repeat_region(grid, _need_sel(s), int(params["times"]))
        elif operation == "randomize":
            usage = s.codec.info.usage or [[1] * s.codec.codebook_size] * grid.num_levels
            result = randomize_region(grid, _need_sel(s), usage, int(params.get("seed", 0)))
        elif operation == "swap":
            region = _need_sel(s)
            result = swap_regions(grid, region, _need_b(s), _partner_region(s, region), same_clip=False)
        elif operation == "blend":
            region = _need_sel(s)
            b = _need_b(s)
            result = blend_region(s.codec, grid, region, b, _partner_region(s, region), float(params["amount"]))
        elif operation == "paste":
            if s.clipboard is None:
                raise fail("Nothing copied yet: select a region and press Copy (or Copy from B).")
            src, region, same = s.clipboard
            dst = _need_sel(s)
            result = copy_region(src, region, grid, dst.c0, dst.r0, same_clip=same)
        else:
            raise fail(f"Unknown edit {operation!r}.")
    except (EditError, CodesError, ValueError, TypeError) as exc:
        if isinstance(exc, gr.Error):
            raise
        if isinstance(exc, TypeError):  # an emptied number box arrives as None
            raise fail(f"{operation}: fill in the number next to the button.") from exc
        raise fail(str(exc)) from exc
    return commit(s, result)


def copy(s: Session | None, source: str) -> tuple[Session, View]:
    """Copy A's (or B's) selection to the clipboard; Paste puts it at A's selection."""
    _need_a(s)
    if source == "B":
        grid = _need_b(s)
        region = s.sel_b
        if region is None:
            raise fail("Select a region on clip B first: drag on one of its heatmaps.")
    else:
        grid, region = s.grid, _need_sel(s)
    s.clipboard = (grid, region, source == "A")
    return s, render(s, status=f"Copied {html.escape(region.describe(grid))} from clip {source}. "
                               "Select where it goes on A and press Paste.")


def run_operation(s: Session | None, text: str) -> tuple[Session, View]:
    """An operation typed in the CLI's region syntax, e.g. 'swap Timbre@0.0-1.0 B:Timbre@1.0-2.0'."""
    _need_a(s)
    if not (text or "").strip():
        raise fail("Type an operation, e.g. set Timbre@0.5-1.0=12")
    try:
        result = apply_operation(s.codec, s.grid, text, other=s.b_grid)
    except (EditError, CodesError, ValueError) as exc:
        raise fail(str(exc)) from exc
    return commit(s, result)


def undo(s: Session | None) -> tuple[Session, View]:
    _need_a(s)
    if not s.history.can_undo:
        return s, View(status="Nothing to undo.")
    s.history.undo()
    _timeline_goto(s)
    return s, render(s, decode_now=True, status="Undone.")


def redo(s: Session | None) -> tuple[Session, View]:
    _need_a(s)
    if not s.history.can_redo:
        return s, View(status="Nothing to redo.")
    s.history.redo()
    _timeline_goto(s)
    return s, render(s, decode_now=True, status="Redone.")


def reset(s: Session | None) -> tuple[Session, View]:
    """Back to the clip's original codes (one more undoable step); B returns to its opened state too."""
    _need_a(s)
    before = s.history.position
    s.history.reset()
    if s.history.position != before:
        s.b_grid = s.b.grid if s.b else None
        _timeline_push(s, before, s.b_grid, ())
    return s, render(s, decode_now=True, status="Reset to the original codes (undo brings the edits back).")


def set_detail(s: Session | None, amount: float | None) -> tuple[Session, View]:
    """How much of the source's own fine texture survives inside edited cells (surgical rendering)."""
    _need_a(s)
    if amount is None or not 0.0 <= float(amount) <= 1.0:
        raise gr.Error("Keep original detail must be between 0 and 1.")
    s.detail = float(amount)
    return s, render(s, decode_now=True, status=f"Keeping {s.detail:.0%} of the original detail inside edits.")


def set_render_mode(s: Session | None, mode: str) -> tuple[Session, View]:
    """Surgical (source kept outside the edits) or plain (the model's decode everywhere) for the Edited player."""
    _need_a(s)
    s.render_mode = "surgical" if str(mode).lower().startswith("surgical") else "plain"
    return s, render(s, decode_now=True, status=f"Edited player: {s.render_mode} rendering.")


# ---------------------------------------------------------------------- files
def export(s: Session | None) -> tuple[Session, list[str], View]:
    """Edited WAV, codes JSON and history JSON for download (names carry the clip's name)."""
    a = _need_a(s)
    folder = Path(tempfile.mkdtemp(prefix="distill-export-"))
    stem = Path(a.name).stem or "clip"
    if s.edited is None:
        s.edited, s.last_decode_s, _ = render_current(s)
    wav = folder / f"{stem}.edited.wav"
    sf.write(wav, np.clip(s.edited, -1, 1), s.codec.sample_rate, subtype="PCM_16")
    codes = folder / f"{stem}.codes.json"
    s.grid.save(codes)
    hist = folder / f"{stem}.history.json"
    hist.write_text(s.history.to_json(), encoding="utf-8")
    return s, [str(wav), str(codes), str(hist)], View(status=f"Exported {wav.name}, {codes.name} and {hist.name}.")


def import_codes(s: Session | None, path: str | None, limits: Limits) -> tuple[Session, View]:
    """Load a codes JSON (or a history JSON) as A to continue editing; the current clip's audio lends its phase when it matches."""
    codec = _need_codec(s)
    if not path:
        raise fail("Choose a codes (.json) file to import.")
    name = os.path.basename(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        kind = json.loads(text).get("format") if text.strip().startswith("{") else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise fail(f"{name}: not a Distill codes or history file ({exc.__class__.__name__}).") from exc
    try:
        if kind == "distill-edit-history":
            history = EditHistory.from_json(text, codec.fingerprint)
            grid = history.original
        else:
            grid = CodeGrid.from_json(text)
            codec.check(grid)
            history = EditHistory(grid)
        codec.check(history.current)
    except (EditError, CodesError, ValueError) as exc:
        raise fail(f"{name}: {exc}") from exc
    wave = s.a.wave if s.a is not None and s.a.grid.num_samples == grid.num_samples else None
    s.a = Clip(f"{name} (imported)", wave if wave is not None else np.zeros(grid.num_samples, np.float32), grid)
    s.history, s.sel_a, s.clipboard = history, None, None
    _timeline_start(s)
    phase = wave
    s.recon, _, _ = decode(codec, grid, phase)
    note = "phase from the open clip" if wave is not None else "no source audio, so phase is estimated (Griffin-Lim)"
    s.a = Clip(s.a.name, wave if wave is not None else s.recon, grid)
    return s, render(s, audio=True, decode_now=True, status=f"Imported {html.escape(name)} ({note}).")
