"""Files in and out of the Edit tab: export the edited audio, its codes and its history; import a codes or
history JSON as clip A (its audio found by the hash the codes record)."""

from __future__ import annotations

import html
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from distill import (
    AudioError,
    CodeGrid,
    CodesError,
    EditError,
    EditSession,
    SourceAudio,
    atomic_write_text,
    atomic_write_wav,
    read_document,
)
from distill.audio import probe

from .common import View, fail, guarded, need_codec, need_edit, safe_filename
from .opening import open_a
from .pictures import render
from .state import Limits, Session

log = logging.getLogger("distill.studio")

@guarded
def export(s: Session | None) -> tuple[Session, list[str], View]:
    """Edited WAV (at the clip's own rate and length), codes JSON and history JSON, named after the clip."""
    session = need_edit(s)
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


def _candidate_sources(s: Session, limits: Limits, grid: CodeGrid) -> Iterator[SourceAudio | None]:
    """Audio that imported codes may have come from: the open clips first, then the clip list (read lazily).
    A file is decoded only when its header gives the rate and length the codes record (their source_rate /
    source_samples): one import never decodes a whole dataset to find its clip, nor a clip over the limit."""
    yield s.a.source if s.a is not None else None
    yield s.b.source if s.b is not None else None
    if not grid.source_sha256:
        return   # nothing to match by: matching_source takes none
    for name, path in sorted(s.clips.items()):
        try:
            if grid.source_rate and grid.source_samples:
                frames, rate, _, _ = probe(path, grid.source_samples / grid.source_rate + 1.0)
                if (frames, rate) != (grid.source_samples, grid.source_rate):
                    continue
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
    codec = need_codec(s)
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
        history, grid = read_document(codec, text)
        for g in (history.original, history.current):   # before any audio is looked for
            limits.check_codes(g, name)
        session, note = EditSession.from_history(codec, history, grid, f"{name} (imported)",
                                                 _candidate_sources(s, limits, grid),
                                                 render_mode=s.render_mode, detail=s.detail)
    except AudioError as exc:
        raise fail(str(exc)) from exc
    except (EditError, CodesError, ValueError) as exc:
        raise fail(f"{name}: {exc}") from exc
    open_a(s, session.clip, session)
    if not session.clip.has_audio:
        log.warning("%s: %s", name, note)
    return s, render(s, audio=True, decode_now=True, status=f"Imported {html.escape(name)} ({html.escape(note)}).")
