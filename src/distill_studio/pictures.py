"""What the Edit tab shows: the levels' heatmaps, the overview strips, the mel pictures, the selection, history
and model texts (render, full_view), and the events that only change the picture: heatmap colours, moving,
scrolling and zooming the viewports of long clips, playing the whole edited clip."""

from __future__ import annotations

import functools
import html
import time

import gradio as gr
import numpy as np

from distill import Codec, CodeGrid, Region, Rendered, dsp

from . import viewport
from .common import (
    MAX_LEVELS,
    SKIP,
    View,
    event_grid,
    fail,
    guarded,
    need_edit,
    to_int16,
    view_edited,
    view_recon,
    view_span,
)
from .heatmap import empty_html, heatmap_html, hz_label, mel_html, sound_palette, usage_html
from .state import Session
from .viewport import Viewport

COLOUR_MODES = {"sound-alike": "sound", "code index": "index"}   # the toggle's labels -> Session.colour_by


def model_summary(codec: Codec | None, label: str) -> str:
    if codec is None:
        return "No model yet: train one on the **Data & Train** tab or upload a `.distill` file there."
    cfg, ds = codec.config, codec.info.dataset or {}
    files = f", trained on {ds.get('accepted', '?')} files" if ds else ""
    regen = "Regenerate ready (prior)" if codec.prior is not None else "no prior: Regenerate unavailable"
    return (f"**Model:** {html.escape(label)} · {cfg.num_quantizers} levels ({', '.join(cfg.level_names)}) · "
            f"codebook {cfg.codebook_size} × dim {cfg.codebook_dim}{files} · {regen} · fingerprint `{codec.fingerprint}`")


@functools.lru_cache(maxsize=8)
def code_colours(codec: Codec) -> tuple[tuple[str, ...], ...]:
    """Per level, one colour per code from its codebook vector (heatmap.sound_palette); computed once per model."""
    return tuple(sound_palette(book) for book in codec.codebooks)


def _heatmaps(s: Session, grid: CodeGrid | None, region: Region | None, grid_id: str) -> tuple:
    """The levels' heatmaps of A or B over its viewport (cells carry the clip's own column numbers)."""
    if grid is None:
        return _heatmaps_empty(grid_id)
    view = _view(s, grid_id, grid)
    out = []
    band_hz = s.codec.band_ranges_hz
    colours = code_colours(s.codec) if s.colour_by == "sound" else None
    for q in range(MAX_LEVELS):
        if q >= grid.num_levels:
            out.append(None)
            continue
        sel = (region.r0, region.r1, region.c0, region.c1) if region is not None and q in region.levels else None
        out.append(heatmap_html(grid.codes[q][:, view.c0:view.c1], level=q, name=f"{grid_id} · {grid.level_names[q]}",
                                grid_id=grid_id, seconds_per_column=grid.seconds_per_column,
                                codebook_size=s.codec.codebook_size, selection=sel, band_hz=band_hz,
                                colours=colours[q] if colours else None, col0=view.c0))
    return tuple(out)


def _view(s: Session, grid_id: str, grid: CodeGrid) -> Viewport:
    """A's or B's viewport (opened at the clip's start when it has none yet)."""
    view = s.view_a if grid_id == "A" else s.view_b
    if view is None or view.c1 > grid.num_columns:
        view = viewport.initial(grid, s.view_seconds)
        if grid_id == "A":
            s.view_a = view
        else:
            s.view_b = view
    return view


def _overview(s: Session, grid_id: str) -> str:
    """The overview strip of A or B ("" when the whole clip is in view), edited places marked."""
    clip, grid = (s.a, s.grid) if grid_id == "A" else (s.b, s.b_grid)
    if clip is None or grid is None:
        return ""
    view = _view(s, grid_id, grid)
    if view.covers(grid.num_columns):
        return ""
    if clip.wave is None:     # codes without their audio: a flat strip, never cached under the clip's key
        peaks = viewport.envelope(np.zeros(1, np.float32))   # (its audio may be opened next, with that key)
    else:
        peaks = s.peaks.get(clip.key)
        if peaks is None:
            peaks = s.peaks[clip.key] = viewport.envelope(clip.wave)
    edited = viewport.edited_bins(np.any(grid.codes != clip.grid.codes, axis=(0, 1)))
    return viewport.overview_html(grid_id, peaks, view, grid, edited)


def _heatmaps_empty(grid_id: str) -> tuple:
    return tuple([empty_html(f"Open a clip {grid_id} to see its codes.")] + [None] * (MAX_LEVELS - 1))


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
    return "\n".join(lines[-60:]) + "\n\n" + memory_text(s)


def memory_text(s: Session) -> str:
    """One line under the history: what this tab holds in memory, and the oldest steps the limits dropped."""
    parts = s.memory()
    total = sum(parts.values()) / 2**20
    each = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in parts.items() if v)
    h = s.history
    gone = ""
    if h is not None and h.dropped:
        gone = (f" · the oldest {h.dropped} step{'s' if h.dropped != 1 else ''} went (undo keeps {h.limit} steps and "
                f"{h.max_bytes / 2**20:.0f} MB of changes)")
    return f"_This tab holds {total:.1f} MB ({each} MB){gone}._"


def _render_now(s: Session) -> str:
    """Re-render A's edited audio over its viewport; returns the status text (how long, how, and any fallback)."""
    r = view_edited(s, fresh=True)
    how = "surgical render" if r.mode == "surgical" else "plain decode"
    text = f" Decoded in **{r.seconds:.2f} s** ({how})."
    if r.note:
        text += f" **Note:** {html.escape(r.note)}."
    return text


def _picture(codec: Codec, cached: tuple | None, key: tuple[int, int] | Rendered,
             wave: np.ndarray) -> tuple:
    """(key, log-mel of wave) for the spectrogram panel; reuses `cached` while it shows the same `key`,
    so selecting and hovering do not recompute a mel per event."""
    if cached is not None and (cached[0] is key or (isinstance(key, tuple) and cached[0] == key)):
        return cached
    return key, codec.logmel(wave).numpy()


def _edited_logmel(codec: Codec, rendered: Rendered, shown: np.ndarray, shown_mel: np.ndarray) -> np.ndarray:
    """Log-mel [n_mels, frames] of the Edited player's span for its picture. Where its samples equal the
    picture above it (a surgical render outside the edits), so do its frames: only the frames over changed
    samples are analysed, so the picture costs what the edit costs, not the viewport's length."""
    wave = rendered.wave
    if len(wave) != len(shown) or shown_mel.shape[1] != codec.mel_cfg.num_frames(len(wave)):
        return codec.logmel(wave).numpy()
    changed = np.flatnonzero(wave != shown)
    if changed.size == 0:
        return shown_mel
    cfg = codec.mel_cfg
    reach = -(-cfg.n_fft // (2 * cfg.hop_length))   # frames whose window covers a sample
    f0 = max(0, int(changed[0]) // cfg.hop_length - reach)
    f1 = min(shown_mel.shape[1], int(changed[-1]) // cfg.hop_length + reach + 1)
    out = shown_mel.copy()
    out[:, f0:f1] = codec.front.power_to_logmel(dsp.stft(codec.front.framing, wave, f0, f1).abs().square()).numpy()
    return out


def render(s: Session, *, audio: bool = False, decode_now: bool = False, status: str | None = None,
           **extra) -> View:
    """Full Edit-tab view of the session over A's and B's viewports; `decode_now` re-synthesises A's
    edited audio first, `audio` re-sends the players."""
    codec = s.codec
    if codec is None:
        base = dict(heat_a=_heatmaps_empty("A"), heat_b=_heatmaps_empty("B"), mel=mel_html([], 0),
                    selection=selection_text(s), history=history_text(s), model=model_summary(None, ""),
                    status=status or model_summary(None, ""), overview_a="", overview_b="")
        return View(**{**base, **extra})
    grid = s.grid
    panels = []
    frames, t0 = 0, 0.0
    if decode_now and s.edit is not None:
        status = (status or "") + _render_now(s)
    a = s.a
    if a is not None:
        view_a = _view(s, "A", grid)
        span = view_span(s)
        frames, t0 = view_a.width * codec.frames_per_column, span[0] / codec.sample_rate
        shown = a.wave[span[0]:span[1]] if a.wave is not None else view_recon(s).wave
        s.src_mel = _picture(codec, s.src_mel, span, shown)
        what = "original" if a.wave is not None else "plain decode: no source audio"
        panels = [(f"A: {a.name} ({what})", s.src_mel[1])]
        if s.history.position > 0 and not np.array_equal(grid.codes, a.grid.codes):
            r = view_edited(s)
            if s.edited_mel is None or s.edited_mel[0] is not r:
                s.edited_mel = (r, _edited_logmel(codec, r, shown, s.src_mel[1]))
            panels.append(("A: edited (what the Edited player plays)", s.edited_mel[1]))
    names = list(codec.level_names)
    levels_value = [names[q] for q in s.sel_a.levels] if s.sel_a is not None else []
    b_grid = s.b_grid
    shown_b = (b_grid, s.sel_b, s.view_b)
    unchanged_b = s.shown_b is not None and s.shown_b[0] is b_grid and s.shown_b[1:] == shown_b[1:]
    heat_b = SKIP if unchanged_b and not audio else _heatmaps(s, b_grid, s.sel_b, "B")
    s.shown_b = (b_grid, s.sel_b, s.view_b)  # B's heatmaps are re-sent only when B, its selection or view changed
    view = dict(heat_a=_heatmaps(s, grid, s.sel_a, "A"), heat_b=heat_b, overview_a=_overview(s, "A"),
                overview_b=SKIP if heat_b is SKIP else _overview(s, "B"),
                mel=mel_html(panels, frames, codec.mel_cfg.hop_length / codec.sample_rate, t0),
                selection=selection_text(s), history=history_text(s), levels=(names, levels_value),
                status=status.strip() if status else SKIP)
    sr = codec.sample_rate
    if (decode_now or audio) and a is not None:
        view["edited"] = to_int16(view_edited(s).wave, sr)
    if audio and a is not None:
        span = view_span(s)
        view["original"] = to_int16(a.wave[span[0]:span[1]] if a.wave is not None else view_recon(s).wave, sr)
        view["recon"] = to_int16(view_recon(s).wave, sr)
    view.update(extra)
    return View(**view)


def full_view(s: Session) -> View:
    """Everything, for page load and model changes."""
    names = sorted(s.clips)
    return render(s, audio=True, decode_now=s.edit is not None and s.rendered is None, clips=names,
                  clip_a=s.a.name if s.a else None, clip_b=s.b.name if s.b else None,
                  usage=usage_html(s.codec.info.usage, s.codec.level_names) if s.codec else empty_html("No model."),
                  model=model_summary(s.codec, s.model_label))


@guarded
def set_colours(s: Session | None, mode: str) -> tuple[Session, View]:
    """Heatmap colours: "sound-alike" (similar codes look alike) or "code index" (distinct hue per number)."""
    if s is None:
        raise fail("The page is still loading.")
    if mode not in COLOUR_MODES:
        raise fail(f"Unknown colour mode {mode!r}; choose {' or '.join(COLOUR_MODES)}.")
    s.colour_by = COLOUR_MODES[mode]
    s.shown_b = None   # B's heatmaps are redrawn too
    return s, render(s)


# ---------------------------------------------------------------------- viewport (long clips)
def _moved(s: Session, grid_id: str, view: Viewport, how: str) -> tuple[Session, View]:
    """Show `view` of A or B: A's players then play its samples (rendered for just that span)."""
    if grid_id == "A":
        s.view_a = view
        grid = s.grid
    else:
        s.view_b = view
        grid = s.b_grid
    t0 = time.perf_counter()
    out = render(s, audio=grid_id == "A")
    a, b = view.seconds(grid)
    return s, View(**{**out.fields(), "status": f"{how}: clip {grid_id} {viewport.clock(a)}–{viewport.clock(b)} of "
                                                f"{viewport.clock(grid.duration_s)} (drawn in "
                                                f"{time.perf_counter() - t0:.2f} s)."})


@guarded
def move_view(s: Session | None, evt: gr.EventData) -> tuple[Session, View]:
    """Overview strip: its box was dropped (or the strip clicked) with its centre at `value` (0..1 of the clip)."""
    need_edit(s)
    grid_id, grid = event_grid(s, evt)
    try:
        centre = float(evt.value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise fail(f"Unreadable position from the overview ({exc}).") from exc
    if not np.isfinite(centre):
        raise fail("Unreadable position from the overview.")
    view = viewport.centred(_view(s, grid_id, grid), min(1.0, max(0.0, centre)) * grid.num_columns, grid.num_columns)
    return _moved(s, grid_id, view, "Moved")


@guarded
def scroll(s: Session | None, direction: int) -> tuple[Session, View]:
    """Earlier (-1) / Later (+1): A's viewport moves by most of its width."""
    grid = need_edit(s).current
    return _moved(s, "A", viewport.scrolled(_view(s, "A", grid), direction, grid.num_columns),
                  "Later" if direction > 0 else "Earlier")


@guarded
def zoom(s: Session | None, factor: float) -> tuple[Session, View]:
    """Zoom out (factor > 1) or in (< 1): the viewports of A and B get wider or narrower around their centres."""
    grid = need_edit(s).current
    s.view_seconds = viewport.clamp_seconds(s.view_seconds * factor)
    if s.b_grid is not None:
        s.view_b = viewport.resized(_view(s, "B", s.b_grid), s.view_seconds, s.b_grid)
        s.shown_b = None
    return _moved(s, "A", viewport.resized(_view(s, "A", grid), s.view_seconds, grid),
                  f"Viewport {s.view_seconds:g} s")


@guarded
def play_whole(s: Session | None) -> tuple[Session, View]:
    """The Edited player gets the whole edited clip (the players otherwise play A's viewport)."""
    session = need_edit(s)
    r = session.render()
    text = (f"The Edited player holds the whole clip ({viewport.clock(len(r.wave) / s.codec.sample_rate)}), "
            f"rendered in {r.seconds:.2f} s ({r.mode}).")
    if r.note:
        text += f" **Note:** {html.escape(r.note)}."
    return s, View(edited=to_int16(r.wave, s.codec.sample_rate), status=text)
