"""Audio in: load, validate and resample any clip, and scan a folder with a verdict per file.

Just over 600 lines on purpose: what a file is (its verdict), how it is decoded under a length limit and how a
scan or a training load reads it again are one set of rules; split, the limit would be checked in two places."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc"})
MIN_DURATION_S = 0.005  # shorter than 5 ms holds less than one useful STFT hop at 48 kHz
SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS: below this a clip teaches the model nothing
DESIGNED_FILE_RANGE = (5, 500)


class AudioError(ValueError):
    """A file could not be used as audio; the message names the file and says why."""


class TooLong(AudioError):
    """A file longer than a limit, found out before its samples were decoded; `reason` is the message without
    the file's name (a scan verdict names the file itself)."""

    def __init__(self, name: str, seconds: float, max_seconds: float, variable: str, counted: bool = False):
        self.seconds, self.max_seconds, self.counted = float(seconds), float(max_seconds), counted
        self.reason = (f"longer than the limit of {max_seconds:g} s (decoding stopped there; set by {variable})"
                       if counted else f"{seconds:.0f} s long, over the limit of {max_seconds:g} s (set by {variable})")
        super().__init__(f"{name}: {self.reason}")


@dataclass(frozen=True)
class FileVerdict:
    """What the folder scan decided about one file."""

    path: str
    accepted: bool
    reason: str = ""  # why it was rejected; on an accepted file, a note (or "")
    duration_s: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    # rejected for its length (inspect_file's max_seconds) before a full decode: "header" when its header said so,
    # "decoded" when decoding passed the limit (duration_s is then only how far it got); "" otherwise
    over_limit: str = ""

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def describe(self) -> str:
        if self.accepted:
            note = f"; {self.reason}" if self.reason else ""   # e.g. NaN samples read as silence
            return f"{self.name}: accepted ({self.duration_s:.2f} s, {self.sample_rate} Hz, {self.channels} ch{note})"
        return f"{self.name}: rejected: {self.reason}"


@dataclass(frozen=True)
class ScanReport:
    """Every file found, accepted or rejected, plus the warnings a person should see."""

    verdicts: tuple[FileVerdict, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # the per-file length limit the scan applied (None: none) and the variable that set it: what a Trainer
    # holds its own loads to, so a file that grew after the scan is not decoded past it
    max_seconds: float | None = None
    variable: str = ""

    @property
    def accepted(self) -> list[FileVerdict]:
        return [v for v in self.verdicts if v.accepted]

    @property
    def rejected(self) -> list[FileVerdict]:
        return [v for v in self.verdicts if not v.accepted]

    @property
    def total_duration_s(self) -> float:
        return float(sum(v.duration_s for v in self.accepted))

    def summary(self) -> str:
        lines = [
            f"{len(self.accepted)} of {len(self.verdicts)} files accepted, "
            f"{self.total_duration_s:.1f} s of audio in total"
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [v.describe() for v in self.verdicts]
        return "\n".join(lines)


def to_mono(data: np.ndarray) -> np.ndarray:
    """[samples] or [samples, channels] -> float32 [samples] (mean of channels)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    elif data.ndim != 1:
        raise ValueError(f"audio must be 1-D or [samples, channels], got shape {data.shape}")
    return np.ascontiguousarray(data)


# torchaudio's resampler builds one kernel of [target/g, sr/g + taps] floats (g = gcd of the rates): tiny for
# 44.1 / 48 kHz and their kin, gigabytes for a rate prime to the other (47999 -> 48000 Hz: 9 GB). Above this
# many kernel values the same windowed sinc is evaluated per output sample instead (_resample_direct).
MAX_RESAMPLE_KERNEL = 1 << 20
_SINC_ZEROS, _ROLLOFF = 6, 0.99   # torchaudio.functional.resample's defaults (sinc_interp_hann)


def _sinc_width(orig: int, new: int) -> int:
    """Input samples torchaudio's resampling filter reaches each side, for rates reduced to orig : new."""
    return math.ceil(_SINC_ZEROS * orig / (min(orig, new) * _ROLLOFF))


def _kernel_values(sr: int, target_sr: int) -> int:
    """How many floats torchaudio's resampling kernel for this pair of rates holds."""
    g = math.gcd(sr, target_sr)
    orig, new = sr // g, target_sr // g
    return new * (orig + 2 * _sinc_width(orig, new))


RESAMPLE_PIECE = 1 << 21    # input samples resampled at a time (~44 s at 48 kHz)


def _resample_direct(wave: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """torchaudio's resampling (the same Hann-windowed sinc, the same output length) computed output by output:
    memory and time grow with the clip's length only, never with the rates' common divisor.

    Output sample m sits at input time m * sr / target_sr; it is the sum of the input samples within
    6 zero crossings of the low-pass sinc around it (about 13 taps, 12 * sr / min(sr, target_sr) + 2)."""
    g = math.gcd(sr, target_sr)
    orig, new = sr // g, target_sr // g
    n = len(wave)
    n_out = int(torch.ceil(torch.as_tensor(new * n / orig)))   # torchaudio's own length rule
    scale = min(orig, new) * _ROLLOFF / orig                     # sinc argument per input sample
    half = _SINC_ZEROS / scale                                   # half the filter, in input samples
    taps = int(math.floor(2 * half)) + 2
    pad = taps + 1
    x = np.concatenate([np.zeros(pad), np.asarray(wave, np.float64), np.zeros(pad)])
    out = np.empty(n_out, np.float32)
    block = max(16, (1 << 20) // taps)                           # about 8 MB per temporary array
    k = np.arange(taps)
    for m0 in range(0, n_out, block):
        m = np.arange(m0, min(n_out, m0 + block), dtype=np.int64)
        whole, frac = np.divmod(m * orig, new)                   # the output's time: whole + frac / new
        first = whole - int(math.floor(half))                    # first input sample within reach
        idx = first[:, None] + k                                 # [outputs, taps] input positions
        t = ((idx - whole[:, None]) - (frac / new)[:, None]) * scale
        t = np.clip(t, -_SINC_ZEROS, _SINC_ZEROS)
        weights = np.sinc(t) * np.cos(t * (np.pi / (2 * _SINC_ZEROS))) ** 2 * scale
        out[m0:m0 + len(m)] = np.einsum("ij,ij->i", weights, x[idx + pad])
    return out


def resample(wave: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio sinc); identity when the rates match. Rates whose kernel would be
    large (prime to each other, such as 47999 and 48000 Hz) take _resample_direct: the same filter and length."""
    if sr == target_sr or wave.size == 0:
        return np.asarray(wave, dtype=np.float32)
    if _kernel_values(int(sr), int(target_sr)) > MAX_RESAMPLE_KERNEL:
        return _resample_direct(np.asarray(wave, np.float32), int(sr), int(target_sr))
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if x.numel() > RESAMPLE_PIECE:
        return _resample_pieces(x, int(sr), int(target_sr))
    return AF.resample(x, int(sr), int(target_sr)).numpy()


def _resample_pieces(x: torch.Tensor, sr: int, target_sr: int) -> np.ndarray:
    """torchaudio's resampling of a long mono clip [T] a piece at a time: its polyphase filter and padding make
    a 30-minute clip's temporaries ~1.3 GB at once. Pieces start on whole periods of the two rates (`orig`
    input samples make `new` output samples), so each output sample sees the same filter phase and, with
    the filter's reach of real neighbours each side (whole periods), the same input samples as in one pass; the clip's own ends are padded with zeros as one pass pads them. Equal up to float rounding."""
    g = math.gcd(sr, target_sr)
    orig, new = sr // g, target_sr // g
    n = x.numel()
    n_out = int(torch.ceil(torch.as_tensor(new * n / orig)))   # torchaudio's own length rule
    out = np.empty(n_out, np.float32)
    step = max(1, RESAMPLE_PIECE // orig) * orig                 # input samples per piece, whole periods
    ctx = (_sinc_width(orig, new) // orig + 2) * orig             # the filter's reach and its padding, in periods
    for a in range(0, n, step):
        lo, hi = max(0, a - ctx), min(n, a + step + ctx)
        y = AF.resample(x[lo:hi], sr, target_sr)                 # output j of the piece is input lo + j * orig / new
        o0, o1 = a // orig * new, min(n_out, (a + step) // orig * new)
        out[o0:o1] = y[o0 - lo // orig * new:o1 - lo // orig * new].numpy()
    return out


def prepare(wave: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Any array the user hands us -> finite mono float32 at the model rate."""
    mono = to_mono(wave)
    if not np.all(np.isfinite(mono)):
        mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    return resample(mono, sr, target_sr)


def audio_sha256(mono: np.ndarray, sr: int) -> str:
    """Hash of a clip's samples as decoded (mono float32 at its own rate, non-finite values zeroed).

    Codes record it (`source_sha256`) so a renderer can tell whether it was handed the audio the
    codes came from; two files with the same length but different sounds never match.
    """
    wave = np.ascontiguousarray(to_mono(mono), dtype="<f4")
    if not np.all(np.isfinite(wave)):
        wave = np.nan_to_num(wave, nan=0.0, posinf=0.0, neginf=0.0)
    return hashlib.sha256(f"{int(sr)}:".encode() + wave.tobytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class SourceAudio:
    """A recording as decoded from its file: mono float32 [samples] at its own rate.

    Kept next to the model-rate copy so untouched audio can be written back bit-identical at the
    file's own rate (channels are mixed to mono by their mean, as everywhere in Distill).
    """

    name: str
    samples: np.ndarray
    rate: int

    @cached_property
    def sha256(self) -> str:
        return audio_sha256(self.samples, self.rate)

    def at_rate(self, rate: int) -> np.ndarray:
        """float32 [samples * rate / self.rate] resampled (identity at the file's own rate)."""
        return resample(self.samples, self.rate, rate)


# Containers whose length libsndfile takes from a field it checks against the data (WAV and kin are cut to the
# bytes present; FLAC never decodes past its STREAMINFO count): their header answers "how long" without a decode.
# Ogg (last page's granule) and MP3 (a tag or a bitrate estimate) may say anything: those are counted.
TRUSTED_HEADERS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "CAF", "AU", "FLAC"})
UNKNOWN_FRAMES = 1 << 62      # libsndfile's "length not known" (a streamed FLAC says 2**63 - 1)
COUNT_BLOCK = 1 << 16         # frames decoded at a time while counting (256 KB per channel)


def header_frames(container: str, frames: int) -> int | None:
    """The length a header states when it can be trusted (TRUSTED_HEADERS, a known length); None otherwise."""
    return int(frames) if container in TRUSTED_HEADERS and 0 <= frames < UNKNOWN_FRAMES else None


def _count_frames(f: sf.SoundFile, stop: int | None) -> int:
    """Frames `f` decodes to, counted a block at a time into one reused buffer; stops once past `stop`."""
    buf = np.empty((COUNT_BLOCK, f.channels), np.float32)
    frames = 0
    while stop is None or frames <= stop:
        n = f.buffer_read_into(buf, dtype="float32")
        frames += n
        if n < COUNT_BLOCK:
            break
    return frames


def finite_limit(max_seconds: float | None) -> float | None:
    """A length limit as the readers use it: None for no limit, which an infinite one is (DISTILL_*=inf)."""
    return None if max_seconds is None or not math.isfinite(max_seconds) else float(max_seconds)


def probe(path: str | os.PathLike, max_seconds: float | None = None) -> tuple[int, int, int, bool]:
    """(frames, rate, channels, counted) of a file without decoding it when its header can be trusted; otherwise
    its blocks are counted, stopping once past `max_seconds` (then frames is only a lower bound).

    Raises AudioError naming the file for anything soundfile cannot open or decode."""
    max_seconds = finite_limit(max_seconds)
    name = os.path.basename(os.fspath(path))
    try:
        with sf.SoundFile(os.fspath(path)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            if rate <= 0:
                raise AudioError(f"{name}: unreadable or corrupt audio (sample rate 0)")
            frames = header_frames(f.format, f.frames)
            if frames is not None:
                return frames, rate, channels, False
            stop = None if max_seconds is None else int(max_seconds * rate)
            return _count_frames(f, stop), rate, channels, True
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types for corrupt input
        raise AudioError(f"{name}: {unreadable_reason(path, exc)}") from exc


def check_length(path: str | os.PathLike, max_seconds: float, variable: str,
                 name: str | None = None) -> tuple[int, int, int]:
    """The one check every entry point makes before decoding a file: (frames, rate, channels) when it is at most
    `max_seconds` long; TooLong naming the file (as `name`, default its file name), its length, the limit and the
    `variable` that sets it otherwise (AudioError when it cannot be read). Costs a header read, or for Ogg / MP3
    a decode of at most the limit."""
    frames, rate, channels, counted = probe(path, max_seconds)
    if frames > max_seconds * rate:
        raise TooLong(name or os.path.basename(os.fspath(path)), frames / rate, max_seconds, variable, counted)
    return frames, rate, channels


def load_source(path: str | os.PathLike, name: str | None = None, *, max_seconds: float | None = None,
                variable: str = "") -> SourceAudio:
    """Read a file at its own rate (AudioError naming the file when it cannot be decoded; with `max_seconds`,
    TooLong when it is longer, found out as load_audio finds it: without decoding past the limit)."""
    wave, sr = load_audio(path, max_seconds=max_seconds, variable=variable)  # errors name the file itself
    return SourceAudio(name or os.path.basename(os.fspath(path)), wave, sr)


def load_audio(path: str | os.PathLike, target_sr: int | None = None, *, max_seconds: float | None = None,
               variable: str = "", name: str | None = None) -> tuple[np.ndarray, int]:
    """Read a file as mono float32; resample to `target_sr` when given.

    With `max_seconds`, a longer file raises TooLong naming the file (as `name`, default its file name), its
    length, the limit and the `variable` that sets it, in one pass: from the header where check_length trusts
    it (nothing decoded), else once decoding passes the limit (Ogg / MP3). An accepted file is decoded once.
    Raises AudioError naming the file for anything soundfile cannot decode.
    """
    max_seconds = finite_limit(max_seconds)
    name = name or os.path.basename(os.fspath(path))
    try:
        if max_seconds is None:
            data, sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
            wave = to_mono(data)
            del data
        else:
            wave, sr = _read_limited(path, max_seconds, variable, name)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types for corrupt input
        raise AudioError(f"{name}: {unreadable_reason(path, exc)}") from exc
    if not np.all(np.isfinite(wave)):
        wave = np.nan_to_num(wave, nan=0.0, posinf=0.0, neginf=0.0)
    if target_sr is not None:
        wave = resample(wave, sr, target_sr)
        sr = target_sr
    return wave, int(sr)


def _read_limited(path: str | os.PathLike, max_seconds: float, variable: str, name: str) -> tuple[np.ndarray, int]:
    """Mono float32 of a file at most `max_seconds` long, decoded once; TooLong (before decoding past the limit)
    otherwise.

    A trusted header (header_frames) decides before any decode. Otherwise the length is found by decoding;
    libsndfile never decodes past the length its header states, so a file whose header is within the limit is
    decoded and kept in one pass. One whose header is over it has its blocks only counted, in one reused buffer
    (a file refused costs what check_length costs), and is decoded again only when the header overstated its
    length and the file fits after all."""
    with sf.SoundFile(os.fspath(path)) as f:
        rate = int(f.samplerate)
        if rate <= 0:
            raise AudioError(f"{name}: unreadable or corrupt audio (sample rate 0)")
        stop = int(max_seconds * rate)
        frames = header_frames(f.format, f.frames)
        if frames is not None:
            if frames > stop:
                raise TooLong(name, frames / rate, max_seconds, variable)
            return to_mono(f.read(dtype="float32", always_2d=True)), rate
        stated = int(f.frames) if 0 <= f.frames < UNKNOWN_FRAMES else None
        if stated is None or stated <= stop:
            return _keep_frames(f, stated, stop, name, max_seconds, variable), rate
        counted = _count_frames(f, stop)
        if counted > stop:
            raise TooLong(name, counted / rate, max_seconds, variable, counted=True)
    with sf.SoundFile(os.fspath(path)) as f:   # its header overstated its length: it fits after all
        return _keep_frames(f, counted, stop, name, max_seconds, variable), rate


def _keep_frames(f: sf.SoundFile, first: int | None, stop: int, name: str, max_seconds: float,
                 variable: str) -> np.ndarray:
    """Every frame `f` decodes, mixed to mono as it comes (the rows' means, as to_mono takes them); TooLong once
    past `stop` frames. The `first` frames (the length known, when it is) are read in one call, as sf.read reads
    a file: an MP3 decoder rounds its last bits differently at the edges of each call, and the samples must be
    the ones a load without a limit gives (codes record their hash). Then blocks until the end."""
    pieces, frames, size = [], 0, COUNT_BLOCK if first is None else min(first, stop) + 1
    while True:
        buf = np.empty((size, f.channels), np.float32)
        n = f.buffer_read_into(buf, dtype="float32")
        frames += n
        if frames > stop:
            raise TooLong(name, frames / f.samplerate, max_seconds, variable, counted=True)
        if n:
            pieces.append(to_mono(buf[:n]))
        if n < size:
            break
        size = COUNT_BLOCK
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0] if pieces else np.zeros(0, np.float32)


CLIP_LIMIT_VARIABLE = "DISTILL_MAX_CLIP_SECONDS"   # the longest clip opened, encoded or decoded (studio, API, CLI)


def seconds_from_env(variable: str = CLIP_LIMIT_VARIABLE, default: float | None = None,
                     environ: dict | None = None) -> float | None:
    """The length limit in seconds an environment variable sets: `default` when it is unset or blank, None
    (no limit) for "inf"; ValueError naming the variable and its value for anything but a positive number."""
    raw = (os.environ if environ is None else environ).get(variable, "")
    if not raw.strip():
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{variable}={raw!r} is not a length in seconds (a number above 0, or inf for no limit)")
    return None if math.isinf(seconds) else seconds


def _short(exc: Exception, path: str | os.PathLike | None = None) -> str:
    """The first line of an error, without the file's full path (the verdict names the file already)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path is not None:
        full = os.fspath(path)
        text = text.replace(f"Error opening {full!r}: ", "").replace(full, os.path.basename(full))
    return text.rstrip(".")[:160]


def _holds_text(path: Path) -> bool:
    """The file starts with readable text (a note or a web page saved under an audio name), not sound."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    if not head or b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="ignore")
    if len(text.encode("utf-8")) < len(head) - 3:  # more than a multi-byte letter cut at the end was not UTF-8
        return False
    return sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * len(text)


def unreadable_reason(path: str | os.PathLike, exc: Exception | None = None) -> str:
    """Why a file soundfile could not open is no use, in words a person understands (no temp paths)."""
    p = Path(path)
    if not p.exists():
        return "a broken link (its target is missing)" if p.is_symlink() else "file not found (moved or deleted)"
    if p.is_dir():
        return "a folder, not an audio file"
    try:
        size = p.stat().st_size
    except OSError as err:
        return f"unreadable ({_short(err, p)})"
    if size == 0:
        return "empty file (0 bytes)"
    if not os.access(p, os.R_OK):
        return "no permission to read it"
    if _holds_text(p):
        return "unreadable or corrupt audio (the file holds text, not sound)"
    return f"unreadable or corrupt audio ({_short(exc, p) if exc is not None else 'unknown format'})"


SCAN_MARGIN_S = 1.0  # a file is decoded at most this much past the length its scan found (it changed since)


def content_problem(frames: int, sr: int, peak: float) -> str:
    """Why decoded audio of this length and peak is no use for training; "" when it is usable."""
    if frames <= 0:
        return "empty (no samples)"
    duration = frames / float(sr)
    if duration < MIN_DURATION_S:
        return f"too short to use ({duration * 1000:.1f} ms < {MIN_DURATION_S * 1000:.0f} ms)"
    if not peak >= SILENCE_PEAK:
        return "silent (peak below -60 dBFS)"
    return ""


def inspect_file(path: str | os.PathLike, max_seconds: float | None = None, variable: str = "") -> FileVerdict:
    """Decide whether one file is usable training audio, with a reason a person understands.

    The length is what decodes, not what the header claims (a header may promise an hour and hold a
    second); NaN and inf samples are read as silence, and an accepted verdict's reason says so.
    With `max_seconds`, a longer file is rejected (over_limit, the reason naming the limit and `variable`)
    from its header when check_length would trust it, else once decoding passes the limit."""
    max_seconds = finite_limit(max_seconds)
    p = Path(path)
    if p.name.startswith("."):
        return FileVerdict(str(p), False, "hidden file (names starting with '.' are skipped, e.g. .DS_Store)")
    if p.is_dir():
        return FileVerdict(str(p), False, unreadable_reason(p))
    if p.suffix.lower() not in AUDIO_SUFFIXES:
        return FileVerdict(str(p), False, f"not an audio file (suffix '{p.suffix or 'none'}')")
    try:
        size = p.stat().st_size
    except OSError:
        return FileVerdict(str(p), False, unreadable_reason(p))
    if size == 0:
        return FileVerdict(str(p), False, "empty file (0 bytes)")
    stop = None
    try:
        info = sf.info(str(p))
        sr, channels = int(info.samplerate), int(info.channels)
        if max_seconds is not None and sr > 0:
            stop = int(max_seconds * sr)
            header = header_frames(info.format, info.frames)
            if header is not None and header > stop:
                return _too_long(p, header, sr, channels, max_seconds, variable, counted=False)
        peak, frames, nonfinite = _peak(p, stop)
    except Exception as exc:
        return FileVerdict(str(p), False, unreadable_reason(p, exc))
    if stop is not None and frames > stop:
        return _too_long(p, frames, sr, channels, max_seconds, variable, counted=True)
    duration = frames / float(sr) if sr > 0 else 0.0
    problem = content_problem(frames, sr, peak) if sr > 0 else "unreadable or corrupt audio (sample rate 0)"
    if problem:
        return FileVerdict(str(p), False, problem, duration, sr, channels)
    note = f"{nonfinite} non-finite samples (NaN/inf) read as silence" if nonfinite else ""
    return FileVerdict(str(p), True, note, duration, sr, channels)


def _too_long(p: Path, frames: int, sr: int, channels: int, max_seconds: float, variable: str,
              counted: bool) -> FileVerdict:
    reason = TooLong(p.name, frames / sr, max_seconds, variable, counted).reason
    return FileVerdict(str(p), False, reason, frames / sr, sr, channels, over_limit="decoded" if counted else "header")


def _peak(path: Path, stop: int | None = None) -> tuple[float, int, int]:
    """(peak absolute sample, frames decoded, non-finite samples), read in blocks so a 30-minute file
    never sits in memory twice; decoding ends once past `stop` frames (a file over a limit)."""
    peak, frames, nonfinite = 0.0, 0, 0
    with sf.SoundFile(str(path)) as f:
        for block in f.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):
            if stop is not None and frames > stop:
                break
            if block.size:
                finite = np.isfinite(block)
                if not finite.all():
                    nonfinite += int(block.size - finite.sum())
                    block = np.where(finite, block, 0.0)
                peak = max(peak, float(np.abs(block).max()))
            frames += len(block)
    return peak, frames, nonfinite


def find_audio_candidates(root: str | os.PathLike) -> list[Path]:
    """Every non-hidden file under root (recursing, skipping dot-files and dot-folders), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return found


def scan_warnings(accepted: int) -> tuple[str, ...]:
    """What to say about a dataset of this many usable files: outside the designed 5-500 range, a warning."""
    lo, hi = DESIGNED_FILE_RANGE
    if 0 < accepted < lo:
        return (f"only {accepted} usable files; Distill is designed for {lo}-{hi}, expect a less general model",)
    if accepted > hi:
        return (f"{accepted} usable files; Distill is designed for {lo}-{hi}, training will be slower per epoch",)
    return ()


def scan_paths(paths: Iterable[str | os.PathLike], max_seconds: float | None = None,
               variable: str = "", workers: int = 1,
               progress: Callable[[int, int], None] | None = None,
               known: Callable[[str], FileVerdict | None] | None = None) -> ScanReport:
    """Verdict for each given file, in order (files over `max_seconds` rejected before a full decode:
    inspect_file); warns outside the designed 5-500 file range. `workers` threads decode files side by side
    (libsndfile and the checks release the GIL: a library of thousands of files scans in parallel);
    `progress(done, total)` after each file. `known(path)`: the verdict of a file already decoded and
    unchanged since (the mel cache's, distill.melcache.known_verdicts), or None to inspect it."""
    paths = list(paths)

    def check(p: str | os.PathLike, max_seconds: float | None, variable: str) -> FileVerdict:
        v = known(os.fspath(p)) if known is not None else None
        if v is not None and v.accepted and (max_seconds is None or v.duration_s <= max_seconds):
            return v
        return inspect_file(p, max_seconds, variable)
    if workers <= 1 or len(paths) < 2:
        verdicts = []
        for n, p in enumerate(paths, 1):
            verdicts.append(check(p, max_seconds, variable))
            if progress:
                progress(n, len(paths))
    else:
        with ThreadPoolExecutor(workers) as pool:
            jobs = [pool.submit(check, p, max_seconds, variable) for p in paths]
            for n, _ in enumerate(as_completed(jobs), 1):
                if progress:
                    progress(n, len(paths))
            verdicts = [j.result() for j in jobs]
    verdicts = tuple(verdicts)
    return ScanReport(verdicts, scan_warnings(sum(v.accepted for v in verdicts)), max_seconds,
                      variable if max_seconds is not None else "")


def scan_folder(root: str | os.PathLike, max_seconds: float | None = None, variable: str = "") -> ScanReport:
    """Scan a folder (recursively) and give every file a verdict. Never raises for a bad file."""
    if not Path(root).exists():
        raise AudioError(f"{root}: no such file or folder")
    return scan_paths(find_audio_candidates(root), max_seconds, variable)


def load_accepted(v: FileVerdict, sample_rate: int, max_seconds: float | None = None,
                  variable: str = "") -> np.ndarray:
    """A file the scan accepted, as mono float32 at `sample_rate`, loaded in one pass under `max_seconds` (set by
    `variable`) and under SCAN_MARGIN_S past the length the scan found (v.duration_s, when known): a file that
    grew or was replaced since is refused before decoding past either. AudioError "NAME: why" otherwise (for the
    length, why names the configured limit or the length found at the scan, whichever was reached)."""
    scanned = v.duration_s + SCAN_MARGIN_S if v.duration_s > 0 else None
    by_scan = scanned is not None and (max_seconds is None or scanned < max_seconds)
    try:
        wave, _ = load_audio(v.path, sample_rate, max_seconds=scanned if by_scan else max_seconds,
                             variable=variable)
    except TooLong as exc:
        if not by_scan:
            raise
        said = (f"longer than when scanned ({v.duration_s:.2f} s; decoding stopped at {scanned:.2f} s)"
                if exc.counted else f"{exc.seconds:.2f} s long, {v.duration_s:.2f} s when scanned")
        raise AudioError(f"{v.name}: {said}") from exc
    return wave
