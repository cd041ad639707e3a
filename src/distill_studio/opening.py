"""Opening clips: reading and encoding audio (within the studio's limits), clip A (a fresh edit history) and its
partner B, uploads, the demo clips at page load, and switching models (open clips are re-encoded)."""

from __future__ import annotations

import functools
import html
import logging
import os
from collections.abc import Callable
from pathlib import Path

import soundfile as sf

from distill import (
    AudioError,
    Clip,
    Codec,
    CodesError,
    EditError,
    EditSession,
    Progress,
    SourceAudio,
    clip_from_source,
)

from . import threads, viewport
from .common import View, fail, guarded, need_codec, view_recon
from .pictures import full_view, model_summary, render
from .state import Limits, Session

log = logging.getLogger("distill.studio")

USER_ERRORS = (AudioError, CodesError, EditError, ValueError, OSError)
MIN_CLIP_SECONDS = 0.05


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


def open_a(s: Session, clip: Clip, session: EditSession | None = None) -> float:
    """Make `clip` clip A (a fresh history unless `session` is given), its viewport at its start; returns
    the reconstruction's decode time."""
    mode, detail = s.render_mode, s.detail
    s.edit = session or EditSession(s.codec, clip, render_mode=mode, detail=detail)
    if s.b is not None:
        s.edit.set_partner(s.b)
    s.sel_a, s.clipboard, s.src_mel, s.edited_mel = None, None, None, None
    s.view_a = viewport.initial(clip.grid, s.view_seconds)
    s.recon = s.rendered = None
    return view_recon(s).seconds


def set_b(s: Session, clip: Clip) -> None:
    """Make `clip` clip B (the partner of A's edits), its viewport at its start."""
    s.b, s.sel_b = clip, None
    s.view_b = viewport.initial(clip.grid, s.view_seconds)
    if s.edit is not None:
        s.edit.set_partner(clip)


def _encoding(progress: Callable[[float, str], None], label: str, fraction: float) -> None:
    """Tell the page how far the encode of `label` is (the page shows the fraction beside the words)."""
    progress(fraction, f"Encoding {label}")


@guarded
def open_clip(s: Session | None, which: str, name: str | None, upload: str | None, limits: Limits,
              progress: Callable[[float, str], None] | None = None) -> tuple[Session, View]:
    """Open a clip as A (starts a fresh edit history) or as B (the partner for swaps, copies and blends).
    `progress(fraction, description)` as the clip is encoded (the page draws a bar on the status line)."""
    codec = need_codec(s)
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
        dt = open_a(s, clip)
        shown = "" if s.view_a.covers(clip.grid.num_columns) else (
            f" Showing {viewport.clock(s.view_a.seconds(clip.grid)[1])} of it: drag the box on the overview, or "
            "use Earlier / Later and the zoom, to move.")
        return s, render(s, audio=True, decode_now=True, clip_a=label, clips=sorted(s.clips),
                         status=f"Opened **{html.escape(label)}** as A ({viewport.clock(clip.grid.duration_s)}, "
                                f"{clip.grid.num_columns} columns); reconstruction decoded in {dt:.2f} s.{shown}")
    set_b(s, clip)
    return s, render(s, status=f"Opened **{html.escape(label)}** as B ({viewport.clock(clip.grid.duration_s)}).",
                     clip_b=label, clips=sorted(s.clips))


def set_model(s: Session, codec: Codec, label: str, path: str | None) -> Session:
    """Switch the session to another model; open clips are re-encoded with it (a new history starts)."""
    a, b = s.a, s.b
    s.codec, s.model_label, s.model_path = codec, label, path
    s.close_clips()
    if b is not None and b.source is not None:
        set_b(s, encode_clip(codec, b.source))
    if a is not None and a.source is not None:
        open_a(s, encode_clip(codec, a.source))
    return s


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
                set_b(s, clip)
            else:
                open_a(s, clip)
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
            open_a(s, clip)
        else:
            set_b(s, clip)
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
