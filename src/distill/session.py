"""EditSession: one clip being edited — its audio, partner clip B, undo history, donors and cached decode.

The studio, the CLI's `edit` and the HTTP API all edit through this class, so the same operation
gives the same codes and the same audio everywhere. It knows the clip's original grid (never
re-encodes to guess which cells were edited), applies donor phase only to cells that still hold
the donor's codes, and reports every fallback in `Rendered.note` (and the log) instead of hiding it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import SourceAudio, load_source
from .codec import Codec, Progress
from .codes import CodeGrid, CodesError
from .edits import HISTORY_FORMAT, EditError, EditHistory, EditResult, Region, apply_operation
from .model import DOWNSAMPLE
from .render import (
    DEFAULT_DETAIL,
    RenderError,
    check_span,
    decode_span,
    decoder_reach,
    donor_from_seconds,
    donors_by_match,
    donors_from_active,
    render_edit,
    render_edits,
    to_source_rate,
)

log = logging.getLogger("distill.session")

RENDER_MODES = ("surgical", "plain")
CACHE_WINDOW_COLUMNS = 16  # local re-decodes are rounded up to this many columns (few distinct shapes stay fast)


@dataclass(frozen=True, eq=False)
class Clip:
    """An opened clip: its codes as encoded, the model-rate audio, and the file's own samples.

    `source` is None when codes were opened without the audio they came from: such a clip can be
    edited and decoded plainly, but not rendered surgically.
    """

    name: str
    grid: CodeGrid                 # the codes as encoded (the original of every edit)
    wave: np.ndarray | None        # float32 [grid.num_samples] at the model rate; None without audio
    source: SourceAudio | None = None

    @property
    def key(self) -> str:
        """What identifies this clip's audio (its hash when known), so donor records find the right clip."""
        return self.grid.source_sha256 or (self.source.sha256 if self.source is not None else "") or self.name

    @property
    def has_audio(self) -> bool:
        return self.wave is not None


def clip_nbytes(clip: Clip) -> int:
    """Bytes of one opened clip: its codes, its model-rate audio and its file's own samples."""
    arrays = [clip.grid.codes, clip.wave, clip.source.samples if clip.source is not None else None]
    return sum({id(a): a.nbytes for a in arrays if a is not None}.values())  # a 48 kHz file's samples may be its wave


def clip_from_source(codec: Codec, source: SourceAudio, search_steps: int | None = None,
                     progress: Progress | None = None) -> Clip:
    """Encode a decoded file (any rate) -> Clip with provenance (hash, encoder) recorded in its grid;
    `progress(fraction)` as the encode goes (`Codec.encode`)."""
    grid = codec.encode(source.samples, source.rate, search_steps=search_steps, progress=progress)
    return Clip(source.name, grid, codec.load_wave(source.samples, source.rate), source)


def load_clip(codec: Codec, path: str | Path, name: str | None = None, search_steps: int | None = None) -> Clip:
    """Read and encode one audio file (AudioError naming the file when it cannot be used)."""
    return clip_from_source(codec, load_source(path, name), search_steps)


def matching_source(grid: CodeGrid, candidates: Iterable[SourceAudio | None]) -> SourceAudio | None:
    """The first candidate whose samples these codes were encoded from: by the recorded hash, never by
    length (many clips share a length). None when the codes record no hash or nothing matches."""
    if not grid.source_sha256:
        return None
    for source in candidates:
        if source is not None and source.sha256 == grid.source_sha256:
            return source
    return None


@dataclass(frozen=True)
class Rendered:
    """Audio of the current grid plus how it was made."""

    wave: np.ndarray   # float32 [samples] at the model rate: the whole clip, or the span asked for
    seconds: float     # wall time of the render
    mode: str          # "surgical" or "plain": what was actually done
    note: str = ""     # why it differs from what was asked (a fallback), for the status line
    start: int = 0     # the first sample of `wave` in the clip (0 for a whole render)

    @property
    def stop(self) -> int:
        return self.start + len(self.wave)

    def covers(self, num_samples: int) -> bool:
        """Whether this is the whole clip (what export writes), not a span of it."""
        return self.start == 0 and len(self.wave) == num_samples


class EditSession:
    """Edits of one clip A (with an optional partner B), with undo/redo and rendering.

    Every public method takes the session's lock, so two events of one browser tab (or two
    threads) never interleave half an edit.
    """

    def __init__(self, codec: Codec, clip: Clip, partner: Clip | None = None, history: EditHistory | None = None,
                 render_mode: str = "surgical", detail: float = DEFAULT_DETAIL):
        codec.check(clip.grid)
        self.codec = codec
        self.clip = clip
        self.partner: Clip | None = None
        self.history = history if history is not None else EditHistory(clip.grid)
        codec.check(self.history.current)
        self.render_mode = _mode(render_mode)
        self.detail = _detail(detail)
        self.lock = threading.RLock()
        self._mel_cache: tuple[CodeGrid, torch.Tensor] | None = None
        if partner is not None:
            self.set_partner(partner)

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> CodeGrid:
        """A's grid after the applied edits."""
        return self.history.current

    @property
    def original(self) -> CodeGrid:
        """A's grid as encoded."""
        return self.history.original

    @property
    def partner_grid(self) -> CodeGrid | None:
        """B's grid as the applied edits left it (cross-clip swaps change B too)."""
        if self.partner is None:
            return None
        with self.lock:
            return self.history.partner_grid(self.partner.key) or self.partner.grid

    def set_partner(self, clip: Clip | None) -> None:
        """Open `clip` as B (None closes B). Donor records made with another B no longer apply."""
        with self.lock:
            if clip is not None:
                self.codec.check(clip.grid)
            self.partner = clip

    def set_render(self, mode: str | None = None, detail: float | None = None) -> None:
        with self.lock:
            if mode is not None:
                self.render_mode = _mode(mode)
            if detail is not None:
                self.detail = _detail(detail)

    # ------------------------------------------------------------------ edits
    def apply(self, op: str | EditResult) -> EditResult:
        """Apply one operation (text in the CLI syntax, or an EditResult made on `current`) as a new step."""
        with self.lock:
            if isinstance(op, str):
                result = apply_operation(self.codec, self.current, op, other=self.partner_grid)
            else:
                result = op
            self.codec.check(result.grid)
            if result.other is not None and self.partner is None:
                raise EditError("this edit changes clip B, but no clip B is open")
            uses_partner = result.other is not None or any(p.donor == "other" for p in result.donors)
            self.history.push(result, partner=self.partner.key if uses_partner and self.partner else "")
            return result

    def undo(self) -> CodeGrid:
        with self.lock:
            return self.history.undo()

    def redo(self) -> CodeGrid:
        with self.lock:
            return self.history.redo()

    def reset(self) -> CodeGrid:
        with self.lock:
            return self.history.reset()

    # ------------------------------------------------------------------ decode / render
    def memory(self) -> dict[str, int]:
        """Bytes this session holds, by part: the clips' audio and codes (A, and B when open), the edit
        history (EditHistory.nbytes: bounded by its step and byte limits) and the decoded log-mel cache."""
        with self.lock:
            clips = [self.clip] + ([self.partner] if self.partner is not None else [])
            cache = self._mel_cache[1] if self._mel_cache is not None else None
            return {"clips": sum(clip_nbytes(c) for c in clips), "history": self.history.nbytes(),
                    "decode cache": int(cache.numel() * cache.element_size()) if cache is not None else 0}

    def decode_mel(self) -> torch.Tensor:
        """The current grid's decoded log-mel [n_mels, frames], re-decoding only around changed columns.

        The decoder is local (per-position norms; reach = render.decoder_reach frames), so output
        columns further than that from every changed code are unchanged; the window decoded here
        carries that reach again as context on each side, which makes the splice exact.
        """
        with self.lock:
            grid, codec = self.current, self.codec
            mel = None
            if self._mel_cache is not None and self._mel_cache[0].codes.shape == grid.codes.shape:
                prev, prev_mel = self._mel_cache
                changed = np.flatnonzero(np.any(prev.codes != grid.codes, axis=(0, 1)))
                if changed.size == 0:
                    mel = prev_mel
                else:
                    mel = self._splice(grid, prev_mel, int(changed[0]), int(changed[-1]))
            if mel is None:
                mel = codec.decode_mel(grid)
            self._mel_cache = (grid, mel)
            return mel

    def _splice(self, grid: CodeGrid, prev_mel: torch.Tensor, first: int, last: int) -> torch.Tensor | None:
        """prev_mel with columns first..last (+ decoder reach) re-decoded; None when a whole decode is as cheap."""
        reach = -(-decoder_reach(self.codec.model) // DOWNSAMPLE)
        n = grid.num_columns
        lo, hi = max(0, first - reach), min(n - 1, last + reach)
        w0, w1 = max(0, lo - reach), min(n - 1, hi + reach)
        width = -(-(w1 - w0 + 1) // CACHE_WINDOW_COLUMNS) * CACHE_WINDOW_COLUMNS
        w1 = min(n - 1, w0 + width - 1)
        w0 = max(0, w1 - width + 1)
        if (w1 - w0 + 1) >= 0.8 * n:
            return None
        window = self.codec.decode_mel(grid.codes[..., w0:w1 + 1])
        mel = prev_mel.clone()
        f0, f1 = lo * DOWNSAMPLE, min((hi + 1) * DOWNSAMPLE, mel.shape[-1])
        mel[:, f0:f1] = window[:, (lo - w0) * DOWNSAMPLE:(lo - w0) * DOWNSAMPLE + (f1 - f0)]
        return mel

    def render(self, mode: str | None = None, detail: float | None = None,
               span: tuple[int, int] | None = None) -> Rendered:
        """The current grid as audio at the model rate: the whole clip, or samples span = (start, stop).

        "surgical": the recording itself wherever no code changed, the model inside edited cells,
        donor phase where cells still hold a donor's codes. "plain": the model's decode everywhere,
        with the clip's own phase. A surgical render that cannot be done (no audio, a render error)
        falls back to plain, and `note` says why. A span renders only what reaches it (the edits near
        it, the columns under it), so hearing one place of a long recording costs the same as a short
        clip; its samples equal the whole render's there.
        """
        with self.lock:
            mode = _mode(mode or self.render_mode)
            detail = self.detail if detail is None else _detail(detail)
            n = self.current.num_samples
            start, stop = check_span(span, n)
            note = ""
            if mode == "surgical":
                if not self.clip.has_audio:
                    note = "no source audio for these codes, so the model decodes everything (plain)"
                else:
                    t0 = time.perf_counter()
                    try:
                        wave = render_edit(self.codec, self.current, self.clip.wave, self.original, detail=detail,
                                           donors=self.donors(), span=span)
                        return Rendered(np.asarray(wave, np.float32), time.perf_counter() - t0, "surgical",
                                        start=start)
                    except (RenderError, CodesError, ValueError) as exc:
                        note = f"surgical render failed ({exc}); playing the plain decode instead"
                if note:
                    log.warning("%s: %s", self.clip.name, note)
            t0 = time.perf_counter()
            if span is not None and (start, stop) != (0, n):
                wave = decode_span(self.codec, self.current.codes, n, start, stop, phase_from=self.clip.wave)
                return Rendered(wave, time.perf_counter() - t0, "plain", note, start=start)
            mel = self.decode_mel()
            wave = self.codec.front.invert(mel, n, phase_from=self.clip.wave)
            return Rendered(wave.numpy().astype(np.float32), time.perf_counter() - t0, "plain", note)

    def preview(self, result: EditResult, span: tuple[int, int] | None = None) -> Rendered:
        """How the clip would sound with `result` applied, without applying it (candidates to audition);
        `span` as in `render`.

        Rendered on a fork of the history (a plain render starts from this session's decode cache), so the
        real history, its redo steps and the cache stay as they are."""
        with self.lock:
            return self._trial(result).render(span=span)

    def _trial(self, result: EditResult) -> EditSession:
        """A fork of this session with `result` applied (its history, redo steps and cache stay as they are)."""
        trial = EditSession(self.codec, self.clip, self.partner, self.history.fork(), self.render_mode, self.detail)
        trial._mel_cache = self._mel_cache
        trial.apply(result)
        return trial

    def preview_many(self, results: Sequence[EditResult], span: tuple[int, int] | None = None) -> list[Rendered]:
        """`preview` of each result (e.g. regenerate's candidates), rendered together: a surgical render
        decodes the source's side of the windows they share once (render.render_edits), not once each.

        Anything the joint render cannot do falls back to `preview` one by one, which says why."""
        with self.lock:
            trials = [self._trial(result) for result in results]
            if self.render_mode == "surgical" and self.clip.has_audio and trials:
                t0 = time.perf_counter()
                try:
                    waves = render_edits(self.codec, [t.current for t in trials], self.clip.wave, self.original,
                                         self.detail, [t.donors() for t in trials], span=span)
                    seconds = (time.perf_counter() - t0) / len(trials)
                    start = check_span(span, self.current.num_samples)[0]
                    return [Rendered(np.asarray(w, np.float32), seconds, "surgical", start=start) for w in waves]
                except (RenderError, CodesError, ValueError) as exc:
                    log.warning("%s: rendering %d versions together failed (%s); one by one", self.clip.name,
                                len(trials), exc)
            return [t.render(span=span) for t in trials]

    def donors(self) -> tuple:
        """render.Donor regions for the cells that still hold codes copied from A or from the open B."""
        with self.lock:
            partner = self.partner
            return donors_from_active(self.history.active_donors(), self.clip.wave,
                                      partner.wave if partner is not None else None,
                                      partner.key if partner is not None else "",
                                      self.original.codes, partner.grid.codes if partner is not None else None)

    def export_audio(self, rendered: Rendered | None = None) -> tuple[np.ndarray, int]:
        """(wave, rate) to write: the clip at its file's own rate and length.

        A surgical render goes back through render.to_source_rate, so everything outside the edits
        is the file's own samples (mono mix) bit for bit; a plain decode is resampled whole.
        """
        with self.lock:
            if rendered is None or not rendered.covers(self.current.num_samples):
                rendered = self.render()
            src = self.clip.source
            if src is None:
                return self.codec.at_source_rate(rendered.wave, self.current)
            if rendered.mode == "surgical":
                return to_source_rate(rendered.wave, self.clip.wave, src, self.codec.sample_rate), src.rate
            return self.codec.at_source_rate(rendered.wave, self.current)

    # ------------------------------------------------------------------ files
    def to_json(self) -> str:
        """The undo history (original, steps with donor records, current) as JSON."""
        with self.lock:
            return self.history.to_json()

    @classmethod
    def from_document(cls, codec: Codec, text: str, name: str, candidates: Iterable[SourceAudio | None] = (),
                      **kwargs) -> tuple[EditSession, str]:
        """A codes or history JSON -> (session, a note on where its audio came from).

        The audio is the candidate whose hash the codes record (candidates may be a lazy iterable:
        it stops at the first match). Without one the clip opens without audio (decoded plainly)
        and the note says why.
        """
        history, grid = read_document(codec, text)
        return cls.from_history(codec, history, grid, name, candidates, **kwargs)

    @classmethod
    def from_history(cls, codec: Codec, history: EditHistory, grid: CodeGrid, name: str,
                     candidates: Iterable[SourceAudio | None] = (), **kwargs) -> tuple[EditSession, str]:
        """from_document for a document already read (read_document), so a caller can check it first."""
        source = matching_source(grid, candidates)
        if source is not None:
            clip = Clip(name, grid, codec.load_wave(source.samples, source.rate), source)
            note = f"audio from {source.name} (the samples the codes record)"
        else:
            clip = Clip(name, grid, None, None)
            why = ("the codes do not record which audio they came from (an older file)" if not grid.source_sha256
                   else "none of the clips at hand holds the samples these codes were encoded from")
            note = f"no source audio: {why}, so they are decoded plainly (Griffin-Lim phase)"
        return cls(codec, clip, history=history, **kwargs), note


def decode_with_source(codec: Codec, document: CodeGrid | EditHistory, source: SourceAudio, codes_name: str, *,
                       detail: float | None = None,
                       donors: Sequence[tuple[np.ndarray, tuple[float, float, float] | None]] = (),
                       model_rate: bool = False, option: str = "--source",
                       warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, int, str]:
    """Surgical decode (`distill decode --source`, /decode's source_audio): the recording itself wherever the
    codes are unedited, the model inside the edits -> (wave, rate, how it was done).

    `document`: a codes grid, or an edit history (its current grid; its donor records lend the source's own
    phase to the cells that still hold what they copied, as EditSession.render / export_audio do: clip B's
    records need B's audio, which a history does not carry, so those cells come from the model). The
    unedited cells are known from the codes (an edited file records its original grid; a file straight from
    the encoder is its own original), never guessed by re-encoding, except for an older file that records
    neither (then `warn` is told). `source` must be the audio the codes were encoded from (by the hash they
    record, and its length); RenderError naming `source.name`, `codes_name` and `option` (how the caller's
    user passes the source) otherwise. `donors`: (model-rate audio, (start, end, dst) seconds or None) of
    other clips edited cells came from (render.parse_donor_spec; None: matched by their codes). The wave is
    float32 at the file's own rate and length, everything outside the edits its samples bit for bit
    (render.to_source_rate), or at the model rate with `model_rate`."""
    history = document if isinstance(document, EditHistory) else None
    grid = history.current if history is not None else document
    name = source.name
    if grid.source_sha256 and grid.source_sha256 != source.sha256:
        raise RenderError(f"{name} is not the audio {codes_name} was encoded from (its samples differ from the "
                          f"recorded source_sha256); pass that file as {option}, or decode without {option}")
    wave = codec.load_wave(source.samples, source.rate)
    if len(wave) != grid.num_samples:  # checked before any encode or render work
        raise RenderError(f"{name} is not the audio {codes_name} was encoded from "
                          f"({len(wave)} vs {grid.num_samples} samples at the model rate)")
    recorded: tuple = ()
    if history is not None:
        original = history.original
        recorded = EditSession(codec, Clip(name, original, wave, source), history=history).donors()
    elif grid.knows_original:
        original = grid.as_original()
    else:  # a file written before codes recorded their provenance: the only way left is to re-encode
        (warn or log.warning)(f"{codes_name} does not record its original codes (an older file): re-encoding "
                              f"{name} to find the edited cells; cells the re-encode does not reproduce are "
                              "re-synthesised")
        original = codec.encode(wave)
    found = list(recorded)
    for audio, span in donors:
        found += [donor_from_seconds(codec, audio, *span)] if span else donors_by_match(codec, grid, original, audio)
    detail = DEFAULT_DETAIL if detail is None else detail
    rendered = render_edit(codec, grid, wave, original, detail=detail, donors=found)
    how = f"kept {name} outside edits, detail {detail:g}, {len(found)} donor regions"
    if model_rate:
        return rendered, codec.sample_rate, how
    return to_source_rate(rendered, wave, source, codec.sample_rate), source.rate, how


def read_document(codec: Codec, text: str) -> tuple[EditHistory, CodeGrid]:
    """Codes JSON or history JSON -> (history, the grid it starts from); EditError / CodesError say what is wrong."""
    try:
        kind = json.loads(text).get("format")
    except (ValueError, TypeError, RecursionError, AttributeError):  # ValueError: also int() of 4300+ digits
        kind = None  # CodeGrid.from_json below names the problem
    if kind == HISTORY_FORMAT:
        history = EditHistory.from_json(text, codec.fingerprint, codec.codebook_size)
    else:
        grid = CodeGrid.from_json(text)
        codec.check(grid)
        history = EditHistory(grid.as_original())
        if grid.original is not None:  # an edited codes file: its edits become one undoable step
            history.push(EditResult(grid, "edits from the imported codes file", _whole(grid)))
    codec.check(history.current)
    codec.check(history.original)
    return history, history.original


def _whole(grid: CodeGrid) -> Region:
    return Region(tuple(range(grid.num_levels)), 0, grid.num_bands - 1, 0, grid.num_columns - 1)


def _mode(mode: str) -> str:
    m = str(mode).strip().lower()
    m = "surgical" if m.startswith("surgical") else "plain" if m.startswith("plain") else m
    if m not in RENDER_MODES:
        raise EditError(f"render mode {mode!r} is not one of {', '.join(RENDER_MODES)}")
    return m


def _detail(detail: float) -> float:
    d = float(detail)
    if not 0.0 <= d <= 1.0:
        raise EditError(f"detail {detail!r} must be between 0 and 1")
    return d
