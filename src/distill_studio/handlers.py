"""Event functions of the Edit & Listen tab: Session in, (Session, View) out. No layout here; app.py wires them.

Thin glue: every edit, undo, render and export goes through distill.EditSession; this module turns
the page's events into its calls and its results into what the page shows.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import html
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf

from distill import (
    AudioError,
    Clip,
    Codec,
    CodeGrid,
    CodesError,
    EditError,
    EditResult,
    EditSession,
    Progress,
    Region,
    Rendered,
    SourceAudio,
    atomic_write_text,
    atomic_write_wav,
    clip_from_source,
    dsp,
)
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
from distill.render import decode_span

from . import threads, viewport
from .heatmap import empty_html, heatmap_html, hz_label, mel_html, sound_palette, usage_html
from .state import Clipboard, Limits, Session
from .viewport import Viewport

log = logging.getLogger("distill.studio")

MAX_LEVELS = 4
USER_ERRORS = (AudioError, CodesError, EditError, ValueError, OSError)
MIN_CLIP_SECONDS = 0.05


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


# ---------------------------------------------------------------------- audio helpers
def to_int16(wave: np.ndarray | None, sr: int) -> tuple[int, np.ndarray] | None:
    """float wave -> (sr, int16); int16 keeps relative loudness between players (floats get normalised)."""
    if wave is None:
        return None
    return sr, (np.clip(np.asarray(wave, dtype=np.float32), -1, 1) * 32767).astype(np.int16)


# ---------------------------------------------------------------------- model + clips
def model_summary(codec: Codec | None, label: str) -> str:
    if codec is None:
        return "No model yet: train one on the **Data & Train** tab or upload a `.distill` file there."
    cfg, ds = codec.config, codec.info.dataset or {}
    files = f", trained on {ds.get('accepted', '?')} files" if ds else ""
    regen = "Regenerate ready (prior)" if codec.prior is not None else "no prior: Regenerate unavailable"
    return (f"**Model:** {html.escape(label)} · {cfg.num_quantizers} levels ({', '.join(cfg.level_names)}) · "
            f"codebook {cfg.codebook_size} × dim {cfg.codebook_dim}{files} · {regen} · fingerprint `{codec.fingerprint}`")


def open_status(s: Session, kept: bool = False) -> str:
    """The status line after a model change: which model is in use, which clips are open now and why.

    `kept`: A (and B) were open before the change and were re-encoded with the new model; otherwise they were
    opened because none was (open_defaults: the longest clips in the list that open)."""
    if s.codec is None:
        return model_summary(None, "")
    if s.a is None:
        return f"Now using **{html.escape(s.model_label)}**. No clip is open: pick one above."
    def one(clip) -> str:
        return f"**{html.escape(clip.name)}** ({clip.grid.duration_s:.1f} s)"
    b = one(s.b) if s.b is not None else "-"
    why = ("kept open, re-encoded with this model" if kept
           else "the longest clips in the clip list")
    return (f"Now using **{html.escape(s.model_label)}**. Open: A = {one(s.a)}, B = {b} ({why}). "
            "Drag on a heatmap to select, then edit.")


@guarded
def model_changed(s: Session, limits: Limits) -> tuple[Session, View]:
    """After a model switch: open the longest clips when none is open, and say which clips are open and why."""
    kept = s.a is not None
    s = open_defaults(s, limits)
    return s, View(**{**full_view(s).fields(), "status": open_status(s, kept)})


def demo_clips(folder: str) -> dict[str, str]:
    p = Path(folder)
    if not p.is_dir():
        return {}
    return {f.stem: str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in (".wav", ".flac")}


def new_session(codec: Codec | None, label: str, model_path: str | None, clips: dict[str, str]) -> Session:
    return Session(codec=codec, model_label=label, model_path=model_path, clips=dict(clips))


def read_clip(codec: Codec, path: str, name: str, limits: Limits, progress: Progress | None = None) -> Clip:
    """Load, check length and encode one clip; AudioError / ValueError name the file and the problem.
    `progress(fraction)` as the encode goes (a 10-minute recording takes most of a minute). The length is checked
    from the header first: an hour of FLAC silence (673 KB) took 9.8 s and 2 GB to decode before it was refused."""
    source = limits.load_source(path, name)
    return encode_source(codec, source, limits, progress)


def encode_source(codec: Codec, source: SourceAudio, limits: Limits,
                  progress: Progress | None = None) -> Clip:
    seconds = len(source.samples) / source.rate
    if seconds < MIN_CLIP_SECONDS:
        raise AudioError(f"{source.name}: too short to edit ({seconds * 1000:.0f} ms; at least "
                         f"{MIN_CLIP_SECONDS * 1000:.0f} ms)")
    if seconds > limits.max_clip_seconds:
        raise AudioError(f"{source.name}: {seconds:.0f} s is longer than this studio opens "
                         f"({limits.max_clip_seconds:.0f} s; DISTILL_MAX_CLIP_SECONDS)")
    return encode_clip(codec, source, progress)


def encode_clip(codec: Codec, source: SourceAudio, progress: Progress | None = None) -> Clip:
    """Encode a whole clip with every core (threads.TRAIN_THREADS): it is long, dense work like a training
    step (a 10-minute recording: ~16 s on two idle cores, twice that on the one thread edits use)."""
    with threads.using(threads.TRAIN_THREADS):
        return clip_from_source(codec, source, progress=progress)


def _need_codec(s: Session | None) -> Codec:
    if s is None or s.codec is None:
        raise fail("No model loaded: train one on the Data & Train tab or upload a .distill file.")
    return s.codec


def _need_edit(s: Session | None) -> EditSession:
    _need_codec(s)
    if s.edit is None:
        raise fail("Open a clip A first (pick one from the list or upload audio).")
    return s.edit


def _same_file(a: str, b: str) -> bool:
    """Two paths hold the same bytes (one path, or the same upload saved twice)."""
    try:
        if os.path.samefile(a, b):
            return True
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(1 << 20), fb.read(1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def upload_label(clips: dict[str, str], path: str) -> str:
    """The clip-list name for an uploaded file: its file name, or 'name (2).wav', 'name (3).wav', ... when the
    list already holds other audio under that name (the same bytes again reuse their entry), so picking a name
    always opens the audio uploaded under it."""
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    label, n = base, 1
    while label in clips and not _same_file(clips[label], path):
        n += 1
        label = f"{stem} ({n}){ext}"
    return label


def _resolve(s: Session, name: str | None, upload: str | None) -> tuple[str, str]:
    if upload:
        return upload_label(s.clips, upload), upload
    if name and name in s.clips:
        return name, s.clips[name]
    raise fail("Pick a clip from the list or upload an audio file.")


def _open_a(s: Session, clip: Clip, session: EditSession | None = None) -> float:
    """Make `clip` clip A (a fresh history unless `session` is given), its viewport at its start; returns
    the reconstruction's decode time."""
    mode, detail = s.render_mode, s.detail
    s.edit = session or EditSession(s.codec, clip, render_mode=mode, detail=detail)
    if s.b is not None:
        s.edit.set_partner(s.b)
    s.sel_a, s.clipboard, s.src_mel, s.edited_mel = None, None, None, None
    s.view_a = viewport.initial(clip.grid, s.view_seconds)
    s.recon = s.rendered = None
    return _recon(s).seconds


def _set_b(s: Session, clip: Clip) -> None:
    """Make `clip` clip B (the partner of A's edits), its viewport at its start."""
    s.b, s.sel_b = clip, None
    s.view_b = viewport.initial(clip.grid, s.view_seconds)
    if s.edit is not None:
        s.edit.set_partner(clip)


def _span(s: Session) -> tuple[int, int]:
    """Samples (model rate) of A's viewport: what the three players play."""
    return s.view_a.samples(s.edit.current)


def _recon(s: Session) -> Rendered:
    """A's plain reconstruction over its viewport (decoded once per viewport, only the columns it needs)."""
    a, span = s.a, _span(s)
    if s.recon is None or (s.recon.start, s.recon.stop) != span:
        t0 = time.perf_counter()
        wave = decode_span(s.codec, a.grid.codes, a.grid.num_samples, *span, phase_from=a.wave)
        s.recon = Rendered(wave, time.perf_counter() - t0, "plain", start=span[0])
    return s.recon


def _edited(s: Session, fresh: bool = False) -> Rendered:
    """A's edited audio over its viewport; re-rendered when `fresh` (the grid or the settings changed) or
    when the viewport moved. Only the edits that reach the viewport are rendered."""
    span = _span(s)
    if fresh or s.rendered is None or (s.rendered.start, s.rendered.stop) != span:
        s.rendered = s.edit.render(span=span)
    return s.rendered


def _follow(s: Session, before: CodeGrid) -> None:
    """After an edit, undo or redo: when nothing that changed is in A's viewport, move it to the first change
    (an edit typed for another place of a long clip, or undone there, is heard at once)."""
    cols = np.flatnonzero(np.any(before.codes != s.edit.current.codes, axis=(0, 1)))
    if cols.size and not np.any((cols >= s.view_a.c0) & (cols < s.view_a.c1)):
        s.view_a = viewport.containing(s.view_a, int(cols[0]), int(cols[-1]) + 1, s.edit.current.num_columns)


def _encoding(progress: Callable[[float, str], None], label: str, fraction: float) -> None:
    """Tell the page how far the encode of `label` is (the page shows the fraction beside the words)."""
    progress(fraction, f"Encoding {label}")


@guarded
def open_clip(s: Session | None, which: str, name: str | None, upload: str | None, limits: Limits,
              progress: Callable[[float, str], None] | None = None) -> tuple[Session, View]:
    """Open a clip as A (starts a fresh edit history) or as B (the partner for swaps, copies and blends).
    `progress(fraction, description)` as the clip is encoded (the page draws a bar on the status line)."""
    codec = _need_codec(s)
    label, path = _resolve(s, name, upload)
    encoding = None if progress is None else functools.partial(_encoding, progress, label)
    if progress is not None:
        progress(0.0, f"Reading {label}")
    try:
        clip = read_clip(codec, path, label, limits, encoding)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from exc
    if upload:
        s.clips[label] = path
    if which == "A":
        dt = _open_a(s, clip)
        shown = "" if s.view_a.covers(clip.grid.num_columns) else (
            f" Showing {viewport.clock(s.view_a.seconds(clip.grid)[1])} of it: drag the box on the overview, or "
            "use Earlier / Later and the zoom, to move.")
        return s, render(s, audio=True, decode_now=True, clip_a=label, clips=sorted(s.clips),
                         status=f"Opened **{html.escape(label)}** as A ({viewport.clock(clip.grid.duration_s)}, "
                                f"{clip.grid.num_columns} columns); reconstruction decoded in {dt:.2f} s.{shown}")
    _set_b(s, clip)
    return s, render(s, status=f"Opened **{html.escape(label)}** as B ({viewport.clock(clip.grid.duration_s)}).",
                     clip_b=label, clips=sorted(s.clips))


def set_model(s: Session, codec: Codec, label: str, path: str | None) -> Session:
    """Switch the session to another model; open clips are re-encoded with it (a new history starts)."""
    a, b = s.a, s.b
    s.codec, s.model_label, s.model_path = codec, label, path
    s.close_clips()
    if b is not None and b.source is not None:
        _set_b(s, encode_clip(codec, b.source))
    if a is not None and a.source is not None:
        _open_a(s, encode_clip(codec, a.source))
    return s


# ---------------------------------------------------------------------- rendering
COLOUR_MODES = {"sound-alike": "sound", "code index": "index"}   # the toggle's labels -> Session.colour_by


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
    r = _edited(s, fresh=True)
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
        span = _span(s)
        frames, t0 = view_a.width * codec.frames_per_column, span[0] / codec.sample_rate
        shown = a.wave[span[0]:span[1]] if a.wave is not None else _recon(s).wave
        s.src_mel = _picture(codec, s.src_mel, span, shown)
        what = "original" if a.wave is not None else "plain decode: no source audio"
        panels = [(f"A: {a.name} ({what})", s.src_mel[1])]
        if s.history.position > 0 and not np.array_equal(grid.codes, a.grid.codes):
            r = _edited(s)
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
        view["edited"] = to_int16(_edited(s).wave, sr)
    if audio and a is not None:
        span = _span(s)
        view["original"] = to_int16(a.wave[span[0]:span[1]] if a.wave is not None else _recon(s).wave, sr)
        view["recon"] = to_int16(_recon(s).wave, sr)
    view.update(extra)
    return View(**view)


def full_view(s: Session) -> View:
    """Everything, for page load and model changes."""
    names = sorted(s.clips)
    return render(s, audio=True, decode_now=s.edit is not None and s.rendered is None, clips=names,
                  clip_a=s.a.name if s.a else None, clip_b=s.b.name if s.b else None,
                  usage=usage_html(s.codec.info.usage, s.codec.level_names) if s.codec else empty_html("No model."),
                  model=model_summary(s.codec, s.model_label))


def start(codec: Codec | None, label: str, model_path: str | None, clips: dict[str, str], limits: Limits,
          first: str | None = None, second: str | None = None) -> tuple[Session, View]:
    """Page load: a fresh session on the bundled model with two demo clips already open, so editing starts at once.

    Whatever cannot be opened is said in the status line (and logged), never skipped silently.
    """
    s = new_session(codec, label, model_path, clips)
    names = list(clips)
    problems: list[str] = []
    if codec is not None and names:
        a_name = first if first in clips else names[0]
        b_name = second if second in clips else names[min(1, len(names) - 1)]
        for which, name in (("B", b_name), ("A", a_name)):
            try:
                clip = read_clip(codec, clips[name], name, limits)
            except USER_ERRORS as exc:
                problems.append(f"demo clip {name} could not be opened as {which}: {exc}")
                continue
            if which == "B":
                _set_b(s, clip)
            else:
                _open_a(s, clip)
    for p in problems:
        log.warning(p)
    view = full_view(s)
    if codec is None:
        text = (f"The bundled demo model is not available ({html.escape(label)}). "
                "Train a model on **Data & Train**, or upload a `.distill` file there.")
    elif s.a is not None:
        text = (f"Demo clips open: A = **{html.escape(s.a.name)}**, B = **{html.escape(s.b.name) if s.b else '-'}**. "
                "Drag on a heatmap to select, then edit.")
    elif not names:
        text = "No demo clips found: pick or upload a clip to edit."
    else:
        text = "No clip is open."
    if problems:
        text += " **Note:** " + html.escape("; ".join(problems)) + "."
    return s, View(**{**view.fields(), "status": text})


@guarded
def open_defaults(s: Session, limits: Limits) -> Session:
    """After a model change with no clip open: open the dataset's longest clip as A and the next longest as B.

    Clips that fail to open are skipped, and the reason is logged and kept for the status line.
    """
    if s.codec is None or s.a is not None or not s.clips:
        return s
    for name in _by_length(s.clips):
        try:
            clip = read_clip(s.codec, s.clips[name], name, limits)
        except USER_ERRORS as exc:
            log.warning("could not open %s: %s", name, exc)
            continue
        if s.a is None:
            _open_a(s, clip)
        else:
            _set_b(s, clip)
            break
    return s


def _by_length(clips: dict[str, str]) -> list[str]:
    """Clip names, longest first (a one-shot of 0.1 s is a poor first clip to edit); unreadable ones last."""
    def seconds(name: str) -> float:
        try:
            info = sf.info(clips[name])
            return info.frames / float(info.samplerate)
        except Exception:  # noqa: BLE001 - any unreadable file sorts last; opening it says why
            return -1.0
    return sorted(clips, key=lambda n: (-seconds(n), n))


# ---------------------------------------------------------------------- selection
def _levels_from_names(grid: CodeGrid, names: list[str] | None) -> tuple[int, ...]:
    return tuple(sorted(grid.level_index(n) for n in (names or [])))


@guarded
def select(s: Session | None, evt: gr.EventData) -> tuple[Session, View]:
    """Heatmap drag: index [[r0, c0], [r1, c1]], value = level; shift adds the level to the current selection."""
    _need_edit(s)
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


def getattr_default(evt: gr.EventData, name: str, default):
    try:
        return getattr(evt, name)
    except AttributeError:
        return default


@guarded
def set_levels(s: Session | None, names: list[str]) -> tuple[Session, View]:
    """Level checkboxes: the selection's rectangle applies to exactly the ticked levels."""
    _need_edit(s)
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
    grid = _need_edit(s).current
    levels = _levels_from_names(grid, names) or (0,)
    s.sel_a = Region(levels, 0, grid.num_bands - 1, 0, grid.num_columns - 1)
    return s, render(s)


@guarded
def clear_selection(s: Session | None) -> tuple[Session, View]:
    _need_edit(s)
    s.sel_a = s.sel_b = None
    return s, render(s)


@guarded
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
        return set_codes(grid, _need_sel(s), int(params["code"]), codec.codebook_size)
    if operation == "reverse":
        return reverse_region(grid, _need_sel(s))
    if operation == "shift":
        return shift_region(grid, _need_sel(s), int(params["columns"]))
    if operation == "repeat":
        return repeat_region(grid, _need_sel(s), int(params["times"]))
    if operation == "randomize":
        usage = codec.info.usage or [[1] * codec.codebook_size] * grid.num_levels
        return randomize_region(grid, _need_sel(s), usage, int(params.get("seed", 0)))
    if operation == "swap":
        region = _need_sel(s)
        return swap_regions(grid, region, _need_b(s), _partner_region(s, region), same_clip=False)
    if operation == "blend":
        region = _need_sel(s)
        return blend_region(codec, grid, region, _need_b(s), _partner_region(s, region), float(params["amount"]))
    if operation == "paste":
        if s.clipboard is None:
            raise fail("Nothing copied yet: select a region and press Copy (or Copy from B).")
        dst = _need_sel(s)
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
    _need_edit(s)
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
    _need_edit(s)
    if source == "B":
        grid = _need_b(s)
        region = s.sel_b
        if region is None:
            raise fail("Select a region on clip B first: drag on one of its heatmaps.")
    else:
        grid, region = s.grid, _need_sel(s)
    clip = s.b if source == "B" else s.a
    s.clipboard = Clipboard(grid, region, source == "A", clip.key, clip.name)
    return s, render(s, status=f"Copied {html.escape(region.describe(grid))} from clip {source}. "
                               "Select where it goes on A and press Paste.")


@guarded
def run_operation(s: Session | None, text: str) -> tuple[Session, View]:
    """An operation typed in the CLI's region syntax, e.g. 'swap Timbre@0.0-1.0 B:Timbre@1.0-2.0'."""
    session = _need_edit(s)
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
    session = _need_edit(s)
    if not session.history.can_undo:
        return s, View(status="Nothing to undo.")
    before = session.current
    session.undo()
    _follow(s, before)
    return s, render(s, decode_now=True, status="Undone.")


@guarded
def redo(s: Session | None) -> tuple[Session, View]:
    session = _need_edit(s)
    if not session.history.can_redo:
        return s, View(status="Nothing to redo.")
    before = session.current
    session.redo()
    _follow(s, before)
    return s, render(s, decode_now=True, status="Redone.")


@guarded
def reset(s: Session | None) -> tuple[Session, View]:
    """Back to the clip's original codes (one more undoable step); B returns to its opened state too."""
    _need_edit(s).reset()
    return s, render(s, decode_now=True, status="Reset to the original codes (undo brings the edits back).")


@guarded
def set_detail(s: Session | None, amount: float | None) -> tuple[Session, View]:
    """How much of the source's own fine texture survives inside edited cells (surgical rendering)."""
    session = _need_edit(s)
    if amount is None or not 0.0 <= float(amount) <= 1.0:
        raise fail("Keep original detail must be between 0 and 1.")
    session.set_render(detail=float(amount))
    return s, render(s, decode_now=True, status=f"Keeping {s.detail:.0%} of the original detail inside edits.")


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


@guarded
def set_render_mode(s: Session | None, mode: str) -> tuple[Session, View]:
    """Surgical (source kept outside the edits) or plain (the model's decode everywhere) for the Edited player."""
    session = _need_edit(s)
    session.set_render(mode="surgical" if str(mode).lower().startswith("surgical") else "plain")
    return s, render(s, decode_now=True, status=f"Edited player: {s.render_mode} rendering.")


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
    _need_edit(s)
    grid_id = getattr_default(evt, "grid", "A")
    grid = s.grid if grid_id == "A" else s.b_grid
    if grid is None:
        raise fail("Open a clip B first.")
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
    grid = _need_edit(s).current
    return _moved(s, "A", viewport.scrolled(_view(s, "A", grid), direction, grid.num_columns),
                  "Later" if direction > 0 else "Earlier")


@guarded
def zoom(s: Session | None, factor: float) -> tuple[Session, View]:
    """Zoom out (factor > 1) or in (< 1): the viewports of A and B get wider or narrower around their centres."""
    grid = _need_edit(s).current
    s.view_seconds = viewport.clamp_seconds(s.view_seconds * factor)
    if s.b_grid is not None:
        s.view_b = viewport.resized(_view(s, "B", s.b_grid), s.view_seconds, s.b_grid)
        s.shown_b = None
    return _moved(s, "A", viewport.resized(_view(s, "A", grid), s.view_seconds, grid),
                  f"Viewport {s.view_seconds:g} s")


@guarded
def play_whole(s: Session | None) -> tuple[Session, View]:
    """The Edited player gets the whole edited clip (the players otherwise play A's viewport)."""
    session = _need_edit(s)
    r = session.render()
    text = (f"The Edited player holds the whole clip ({viewport.clock(len(r.wave) / s.codec.sample_rate)}), "
            f"rendered in {r.seconds:.2f} s ({r.mode}).")
    if r.note:
        text += f" **Note:** {html.escape(r.note)}."
    return s, View(edited=to_int16(r.wave, s.codec.sample_rate), status=text)


# ---------------------------------------------------------------------- files
@guarded
def export(s: Session | None) -> tuple[Session, list[str], View]:
    """Edited WAV (at the clip's own rate and length), codes JSON and history JSON, named after the clip."""
    session = _need_edit(s)
    folder = Path(tempfile.mkdtemp(prefix="distill-export-"))
    stem = Path(safe_filename(session.clip.name)).stem or "clip"  # a label, never a path
    whole = session.render()   # the export is the whole clip, whatever the players show
    wave, rate = session.export_audio(whole)
    wav = folder / f"{stem}.edited.wav"
    atomic_write_wav(wav, wave, rate)
    codes = folder / f"{stem}.codes.json"
    session.current.save(codes)
    hist = folder / f"{stem}.history.json"
    atomic_write_text(hist, session.to_json())
    note = f" **Note:** {html.escape(whole.note)}." if whole.note else ""
    return s, [str(wav), str(codes), str(hist)], View(
        status=f"Exported {wav.name} ({rate} Hz, {len(wave)} samples), {codes.name} and {hist.name}.{note}")


def _candidate_sources(s: Session, limits: Limits) -> Iterator[SourceAudio | None]:
    """Audio that imported codes may have come from: the open clips first, then the clip list (read lazily;
    clips the studio would not open are not decoded for it)."""
    yield s.a.source if s.a is not None else None
    yield s.b.source if s.b is not None else None
    for name, path in sorted(s.clips.items()):
        try:
            yield limits.load_source(path, name)
        except AudioError as exc:
            log.warning("while matching imported codes: %s", exc)


@guarded
def import_codes(s: Session | None, path: str | None, limits: Limits) -> tuple[Session, View]:
    """Load a codes JSON (or a history JSON) as A to continue editing.

    Its audio is found by the hash the codes record (the open clips, then the clip list); without
    a match the clip opens without audio, decoded plainly, and the status line says why. The file's size
    (DISTILL_MAX_JSON_MB) is checked before it is read, the clip's length (DISTILL_MAX_CLIP_SECONDS) before
    anything decodes it: its audio would be refused, so its codes are too.
    """
    codec = _need_codec(s)
    if not path:
        raise fail("Choose a codes (.json) file to import.")
    name = os.path.basename(path)
    try:
        limits.check_json(path)
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{name}: not a Distill codes or history file ({exc.__class__.__name__}).") from exc
    except ValueError as exc:   # over the size limit
        raise fail(str(exc)) from exc
    try:
        session, note = EditSession.from_document(codec, text, f"{name} (imported)", _candidate_sources(s, limits),
                                                  render_mode=s.render_mode, detail=s.detail)
        # no clip at hand can match codes longer than the limit (each was checked), so none was decoded for them
        for grid in (session.history.original, session.current):
            limits.check_codes(grid, name)
    except AudioError as exc:
        raise fail(str(exc)) from exc
    except (EditError, CodesError, ValueError) as exc:
        raise fail(f"{name}: {exc}") from exc
    _open_a(s, session.clip, session)
    if not session.clip.has_audio:
        log.warning("%s: %s", name, note)
    return s, render(s, audio=True, decode_now=True, status=f"Imported {html.escape(name)} ({html.escape(note)}).")
