"""File-in, file-out functions behind the named API endpoints (/train, /encode, /edit, /regenerate, /decode) for
gradio_client. Each checks the Space's limits on what it is handed (Limits.check_clip / check_json / check_codes)
before any decode or parse: /encode once spent 341 s and 5.5 GB on a 3.1 MB FLAC of two hours."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from distill import (
    DEFAULT_TEMPERATURE,
    AudioError,
    BundleError,
    Clip,
    Codec,
    CodeGrid,
    CodesError,
    EditError,
    EditHistory,
    EditSession,
    RegenerateSettings,
    TrainingError,
    TrainResult,
    parse_region,
    read_document,
)
from distill.edits import HISTORY_FORMAT, regenerate
from distill.fileio import atomic_write_text, pcm16
from distill.session import decode_with_source

from .common import fail, safe_filename
from .state import Limits
from .training import (
    Settings,
    budget,
    build_config,
    limited_scan,
    on_zero_gpu,
    train_events,
    train_events_gpu,
    uploaded_paths,
)

ERRORS = (AudioError, BundleError, CodesError, EditError, TrainingError, ValueError, OSError)
log = logging.getLogger("distill_studio.api")


def _out(name: str, suffix: str = "") -> Path:
    """A new file in a fresh temp folder of its own; `name` (built from an uploaded file's name) is
    reduced to a plain file name, so `../../x`, an absolute path or a NUL byte never leaves the folder.
    With `suffix`, `name` is a stem: a long one is cut there and the suffix is kept whole."""
    return Path(tempfile.mkdtemp(prefix="distill-api-")) / safe_filename(name, "output", suffix)


CODEC_CACHE_SIZE = 2   # recently used models kept loaded (a Codec is stateless, so callers can share one)
_codecs: OrderedDict[tuple[str, int, int], Codec] = OrderedDict()
_codecs_lock = threading.Lock()


def _codec(model_file: str | None) -> Codec:
    """The model in `model_file`, loaded once per file version: each API call uploads the model, and
    loading it again every time cost ~35% of an encode -> edit -> decode round trip (benchmarks/load.py).
    Keyed by (path, size, mtime): gradio stores an upload under its content hash, so the same model file
    arrives at the same path."""
    if not model_file:
        raise fail("model_file is required (a .distill file)")
    try:
        st = os.stat(model_file)
        key = (os.path.realpath(model_file), st.st_size, st.st_mtime_ns)
        with _codecs_lock:
            if key in _codecs:
                _codecs.move_to_end(key)
                return _codecs[key]
        codec = Codec.load(model_file)
    except (BundleError, OSError) as exc:
        raise fail(str(exc)) from exc
    with _codecs_lock:
        _codecs[key] = codec
        while len(_codecs) > CODEC_CACHE_SIZE:
            _codecs.popitem(last=False)
    return codec


def _stem(name: str) -> str:
    """An input's file name without its codes / history ending: the stem its outputs are named after."""
    return name.removesuffix(".history.json").replace(".codes.json", "").removesuffix(".json")


def _grid(codec: Codec, codes_file: str | None, limits: Limits, what: str = "codes_file") -> CodeGrid:
    if not codes_file:
        raise fail(f"{what} is required (a codes JSON file from /encode or /edit)")
    try:
        limits.check_json(codes_file)
        grid = CodeGrid.load(codes_file)
        codec.check(grid)
        limits.check_codes(grid, Path(codes_file).name)
    except (CodesError, ValueError, OSError) as exc:
        raise fail(f"{what}: {exc}") from exc
    return grid


def _document(codec: Codec, codes_file: str, limits: Limits) -> tuple[EditHistory, CodeGrid, bool]:
    """A codes or history JSON within the Space's limits (its size before it is read, its clip's length)
    -> (history, original grid, whether the file is a history); ValueError / OSError (EditError, CodesError,
    AudioError among them) say why."""
    limits.check_json(codes_file)
    text = Path(codes_file).read_text(encoding="utf-8")
    history, original = read_document(codec, text)
    for grid in (original, history.current):
        limits.check_codes(grid, Path(codes_file).name)
    return history, original, _is_history(text)


def _is_history(text: str) -> bool:
    """Whether a document read_document accepted is an edit history (not a codes file). Only a text that names
    the history format is parsed again to be sure, so a codes file costs a substring search."""
    if HISTORY_FORMAT not in text:
        return False
    try:
        return json.loads(text).get("format") == HISTORY_FORMAT
    except (ValueError, TypeError, RecursionError, AttributeError):
        return False


def _save(session: EditSession, path: Path, as_history: bool) -> None:
    """The session's result: its whole history (as `distill edit --history` writes it) or its current codes."""
    if as_history:
        atomic_write_text(path, session.to_json())
    else:
        session.current.save(path)


def _named(name: str, exc: Exception) -> str:
    """The error as the user sees it, naming the file once (the limit checks name it themselves)."""
    return str(exc) if str(exc).startswith(f"{name}: ") else f"{name}: {exc}"


def api_train(files: list | None, minutes: float, limits: Limits) -> tuple[str, str]:
    """Audio files + a budget in minutes -> (.distill file, text summary). A budget over the Space's limit
    (DISTILL_MAX_TRAIN_MINUTES) is capped, and the summary's first line says so."""
    report = limited_scan(uploaded_paths(files, None), limits)
    if not report.accepted:
        raise fail("no usable audio files:\n" + report.summary())
    try:
        st = Settings(budget="minutes", amount=float(minutes or 1.0))
        cfg = build_config(len(report.accepted), st, limits)
        mins, epochs = budget(st, limits)
        run = train_events_gpu if on_zero_gpu() else train_events
        result = [ev for ev in run(report, cfg, mins, epochs) if isinstance(ev, TrainResult)][-1]
    except ERRORS as exc:
        raise fail(str(exc)) from exc
    except IndexError:
        raise fail("training stopped before a model existed") from None
    path = _out("model.distill")
    result.save(path)
    levels = "; ".join(f"{h['name']} {h['verdict']} ({h['utilization']:.0%} used)" for h in result.info.health.get("levels", []))
    capped = limits.train_minutes_capped(st.amount) + "\n" if mins is not None and st.amount > mins else ""
    summary = (capped + f"trained {result.steps} steps on {len(report.accepted)} files ({report.total_duration_s:.1f} s); "
               f"best validation loss {result.best_val_loss}; {levels}; fingerprint {result.info.fingerprint}\n"
               + report.summary())
    return str(path), summary


def api_encode(model_file: str, audio_file: str, limits: Limits = Limits()) -> str:  # noqa: B008 (frozen)
    """Model + audio (at most DISTILL_MAX_CLIP_SECONDS, checked from its header) -> codes JSON file."""
    codec = _codec(model_file)
    if not audio_file:
        raise fail("audio_file is required")
    try:
        wave, sr = limits.load_audio(audio_file)   # refused from its header, or as its decode passes the limit
        grid = codec.encode(wave, sr)  # records the file's rate and length: /decode gives them back
    except ERRORS as exc:
        raise fail(str(exc)) from exc
    path = _out(Path(audio_file).stem, ".codes.json")
    grid.save(path)
    return str(path)


def api_edit(model_file: str, codes_file: str, operation: str, other_codes_file: str | None = None,
             limits: Limits = Limits()) -> str:  # noqa: B008 (frozen)
    """Model + codes JSON (or history JSON) + operation in the CLI's region syntax (+ optional clip B codes)
    -> edited codes JSON (which records its original grid, as `distill edit` writes it), NAME.edited.codes.json;
    a history in gives the history continued by this step (undo steps and donor records kept, as
    `distill edit --history` writes it), NAME.edited.history.json."""
    codec = _codec(model_file)
    if not codes_file:
        raise fail("codes_file is required (a codes JSON file from /encode or /edit)")
    name = Path(codes_file).name
    other = _grid(codec, other_codes_file, limits, "other_codes_file") if other_codes_file else None
    try:
        history, original, is_history = _document(codec, codes_file, limits)
        session = EditSession(codec, Clip(name, original, None), history=history)
        if other is not None:
            session.set_partner(Clip(Path(other_codes_file).name, other, None))
        session.apply(operation or "")
    except (EditError, CodesError, ValueError, OSError) as exc:
        raise fail(_named(name, exc)) from exc
    path = _out(_stem(name), ".edited.history.json" if is_history else ".edited.codes.json")
    _save(session, path, is_history)
    return str(path)


def api_regenerate(model_file: str, codes_file: str, region: str, strength: float = 1.0, temperature: float = DEFAULT_TEMPERATURE,
                   seed: float = 0, candidates: float = 1, limits: Limits = Limits()) -> list[str]:  # noqa: B008
    """Model (with a prior) + codes JSON (or history JSON) + region in the CLI's syntax -> one codes JSON per
    candidate (NAME.regen.K.codes.json): the region's levels redrawn, everything else kept exactly. A history
    in gives one history per candidate (NAME.regen.K.history.json), each continuing it by its draw."""
    codec = _codec(model_file)
    if codec.prior is None:
        raise fail(f"{Path(model_file).name}: {codec.prior_note}")
    if not codes_file:
        raise fail("codes_file is required (a codes JSON file from /encode or /edit)")
    name = Path(codes_file).name
    try:
        settings = RegenerateSettings(strength=float(strength), temperature=float(temperature), seed=int(seed),
                                      candidates=int(candidates))
    except (EditError, TypeError, ValueError, OverflowError) as exc:
        raise fail(f"regenerate settings: {exc}") from exc
    try:
        history, original, is_history = _document(codec, codes_file, limits)
        results = regenerate(codec, history.current, parse_region(region or "", history.current), settings)
    except (EditError, CodesError, ValueError, OSError) as exc:
        raise fail(_named(name, exc)) from exc
    stem, kind = _stem(name), "history" if is_history else "codes"
    folder = _out("x").parent
    paths = []
    for i, result in enumerate(results, start=1):   # every candidate continues the same history
        session = EditSession(codec, Clip(name, original, None), history=history.fork())
        session.apply(result)
        path = folder / safe_filename(stem, "output", f".regen.{i}.{kind}.json")
        _save(session, path, is_history)
        paths.append(str(path))
    return paths


def api_decode(model_file: str, codes_file: str, phase_audio: str | None = None,
               limits: Limits = Limits(), *, source_audio: str | None = None,  # noqa: B008 (frozen)
               detail: float | None = None) -> tuple[int, np.ndarray]:
    """Model + codes JSON or history JSON (its current grid) -> 16-bit audio at the encoded file's own rate and
    length (model rate for codes that do not record them), as `distill decode` writes it.

    With `source_audio` (the clip the codes were encoded from, checked by the hash they record) the decode is
    surgical, as `distill decode --source` (session.decode_with_source): the recording bit for bit wherever no
    code changed, the model only inside the edits (`detail`: share 0-1 of the source's fine detail kept there,
    default 0.75), and a history's donor records lend the clip's own phase to what was copied within it; the
    clip's phase then comes from the source, so `phase_audio` is not used. Without it: the model decodes
    everything, with the phase of `phase_audio` (the clip the codes came from) or Griffin-Lim's."""
    codec = _codec(model_file)
    if not codes_file:
        raise fail("codes_file is required (a codes or history JSON file from /encode, /edit or /regenerate)")
    if detail is not None and not source_audio:
        raise fail("detail only applies with source_audio (the clip the codes were encoded from)")
    name = Path(codes_file).name
    try:
        history, _, is_history = _document(codec, codes_file, limits)
    except (EditError, CodesError, ValueError, OSError) as exc:
        raise fail(_named(name, exc)) from exc
    grid = history.current
    if source_audio:
        try:
            source = limits.load_source(source_audio)   # a longer file: refused from its header, nothing decoded
            wave, rate, how = decode_with_source(codec, history if is_history else grid, source, name,
                                                 detail=detail, option="source_audio",
                                                 warn=lambda text: log.warning("/decode: %s", text))
        except ERRORS as exc:
            raise fail(str(exc)) from exc
        log.info("/decode %s: %s", name, how)
        return rate, pcm16(wave)
    phase = None
    if phase_audio:
        try:
            phase, _ = limits.load_audio(phase_audio, codec.sample_rate)
        except AudioError as exc:
            raise fail(str(exc)) from exc
    try:
        wave, rate = codec.at_source_rate(codec.decode(grid, phase_from=phase), grid)
    except ERRORS as exc:
        raise fail(_named(name, exc)) from exc
    return rate, pcm16(wave)


def basename(path: str | None) -> str:
    return os.path.basename(path) if path else ""
