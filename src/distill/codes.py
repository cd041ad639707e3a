"""CodeGrid: one clip's codes as [levels, bands (low->high), columns (time)] and its JSON form."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace

import numpy as np

from .fileio import atomic_write_text

CODES_FORMAT = "distill-codes"
CODES_VERSION = 1


class CodesError(ValueError):
    """A codes file or grid that cannot be used with this model; the message says why."""


@dataclass(frozen=True, eq=False)
class CodeGrid:
    """Discrete codes of one clip.

    Attributes:
        codes (np.ndarray): int64 [levels, bands, columns]; row 0 is the lowest frequency band.
        level_names (tuple[str, ...]): e.g. ("Structure", "Timbre", "Detail").
        seconds_per_column (float): duration one column covers (16 hops).
        sample_rate (int): model sample rate.
        num_samples (int): length of the encoded audio at the model rate; decode returns exactly this.
        model (str): fingerprint of the model that produced the codes.
        source_rate (int): sample rate of the file the codes came from (0 = not known, e.g. codes
            written by an older Distill); decoding to a file goes back to this rate and ...
        source_samples (int): ... to exactly this many samples, so a 44.1 kHz clip comes back as one.
        source_sha256 (str): audio_sha256 of the file's samples as decoded (mono, its own rate), so a
            renderer can tell whether the audio it is given is the one these codes came from ("" = unknown).
        search_steps (int | None): how the encoder made the codes (`encoder` in JSON): steps of search
            after the encoder (0 = the encoder alone); None = not recorded.
        search_method (str | None): which search took those steps: "fast" (sign steps, the default encode,
            distill.codec.fast_search_codes) or "adam" (an explicit N-step search, and every file written
            before this was recorded); None with 0 steps or when not recorded.
        original (np.ndarray | None): int64 [levels, bands, columns], the codes as encoded, before any
            edit. None for a grid that is its own original (fresh from the encoder, or a legacy file).
    """

    codes: np.ndarray
    level_names: tuple[str, ...]
    seconds_per_column: float
    sample_rate: int
    num_samples: int
    model: str = ""
    source_rate: int = 0
    source_samples: int = 0
    source_sha256: str = ""
    search_steps: int | None = None
    search_method: str | None = None
    original: np.ndarray | None = None

    def __post_init__(self) -> None:
        codes = np.array(self.codes, dtype=np.int64, copy=True)
        if codes.ndim != 3:
            raise CodesError(f"codes must be [levels, bands, columns], got shape {codes.shape}")
        if self.original is not None:
            original = np.array(self.original, dtype=np.int64, copy=True)
            if original.shape != codes.shape:
                raise CodesError(f"original codes have shape {original.shape}, the codes {codes.shape}")
            original.setflags(write=False)
            object.__setattr__(self, "original", original)
        if len(self.level_names) != codes.shape[0]:
            raise CodesError(f"{len(self.level_names)} level names for {codes.shape[0]} levels")
        if self.source_rate < 0 or self.source_samples < 0:
            raise CodesError(f"source_rate and source_samples must be >= 0, got {self.source_rate}, {self.source_samples}")
        if not (isinstance(self.sample_rate, (int, np.integer)) and self.sample_rate > 0):
            raise CodesError(f"sample_rate must be a positive whole number of Hz, got {self.sample_rate!r}")
        if not (isinstance(self.num_samples, (int, np.integer)) and self.num_samples >= 0):
            raise CodesError(f"num_samples must be a whole number >= 0, got {self.num_samples!r}")
        spc = self.seconds_per_column
        if isinstance(spc, bool) or not isinstance(spc, (int, float, np.floating)) or not (math.isfinite(spc) and spc > 0):
            raise CodesError(f"seconds_per_column must be a positive number, got {spc!r}")
        codes.setflags(write=False)  # grids are values: edits make new ones
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "level_names", tuple(self.level_names))

    # ------------------------------------------------------------------ shape
    @property
    def num_levels(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_bands(self) -> int:
        return int(self.codes.shape[1])

    @property
    def num_columns(self) -> int:
        return int(self.codes.shape[2])

    @property
    def duration_s(self) -> float:
        return self.num_samples / float(self.sample_rate)

    @property
    def samples_per_column(self) -> int:
        """Model-rate samples per code column (16 STFT hops)."""
        return max(1, int(round(self.seconds_per_column * self.sample_rate)))

    def column_samples(self, c0: int, c1: int) -> tuple[int, int]:
        """(start, stop) samples at the model rate of columns c0..c1-1, cut to the clip: the one rule
        for columns -> samples (what a player plays for a span of columns)."""
        spc = self.samples_per_column
        start = min(self.num_samples - 1, max(0, int(c0) * spc))
        return start, max(start + 1, min(self.num_samples, int(c1) * spc))

    def level_index(self, name: str | int) -> int:
        """Level by name (case-insensitive) or index; ValueError listing the allowed names."""
        if isinstance(name, (int, np.integer)):
            if 0 <= int(name) < self.num_levels:
                return int(name)
        else:
            for i, n in enumerate(self.level_names):
                if n.lower() == str(name).strip().lower():
                    return i
        raise CodesError(f"unknown level {name!r}; this grid has {', '.join(self.level_names)}")

    @property
    def original_codes(self) -> np.ndarray:
        """[levels, bands, columns]: the codes before any edit (this grid's own codes when it is unedited)."""
        return self.codes if self.original is None else self.original

    @property
    def knows_original(self) -> bool:
        """True when the unedited codes are known: an edited grid records them, and a grid the encoder
        made (search_steps recorded) is its own original. False only for legacy files."""
        return self.original is not None or self.search_steps is not None

    def as_original(self) -> CodeGrid:
        """The unedited grid this one was edited from (itself when it is unedited)."""
        return self if self.original is None else replace(self, codes=self.original, original=None)

    def with_codes(self, codes: np.ndarray) -> CodeGrid:
        """Same clip metadata, new code array (shape must match); the result remembers the original codes."""
        codes = np.asarray(codes)
        if codes.shape != self.codes.shape:
            raise CodesError(f"shape {codes.shape} does not match grid shape {self.codes.shape}")
        return replace(self, codes=codes, original=self.original_codes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CodeGrid):
            return NotImplemented
        return (np.array_equal(self.codes, other.codes) and self.level_names == other.level_names
                and self.num_samples == other.num_samples and self.sample_rate == other.sample_rate
                and abs(self.seconds_per_column - other.seconds_per_column) < 1e-9 and self.model == other.model)

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ validation
    def validate(self, *, codebook_size: int, num_bands: int, level_names: tuple[str, ...],
                 sample_rate: int, model: str | None = None) -> None:
        """Refuse a grid that does not belong to a model with these properties."""
        if model and self.model and self.model != model:
            raise CodesError(f"codes were made by model {self.model}, not by this model ({model})")
        if self.level_names != tuple(level_names):
            raise CodesError(f"codes have levels {list(self.level_names)}, the model has {list(level_names)}")
        if self.num_bands != num_bands:
            raise CodesError(f"codes have {self.num_bands} bands, the model has {num_bands}")
        if self.sample_rate != sample_rate:
            raise CodesError(f"codes are at {self.sample_rate} Hz, the model at {sample_rate} Hz")
        if self.codes.size and (self.codes.min() < 0 or self.codes.max() >= codebook_size):
            raise CodesError(f"code indices must be 0-{codebook_size - 1}; found {self.codes.min()}..{self.codes.max()}")
        if self.original is not None and self.original.size and (self.original.min() < 0
                                                                  or self.original.max() >= codebook_size):
            raise CodesError(f"original code indices must be 0-{codebook_size - 1}; found "
                             f"{self.original.min()}..{self.original.max()}")
        if self.source_rate:
            if not resamplable(self.source_rate, sample_rate):
                raise CodesError(f"source_rate {self.source_rate} Hz is not a rate Distill can resample "
                                 f"{sample_rate} Hz audio to")
            # the encoder resampled source_samples to ceil(source_samples * sample_rate / source_rate)
            lo = (self.num_samples - 1) * self.source_rate / sample_rate - 1
            hi = self.num_samples * self.source_rate / sample_rate + 1
            if self.source_samples and not lo <= self.source_samples <= hi:  # 0: length not recorded
                raise CodesError(f"source_samples {self.source_samples} at {self.source_rate} Hz cannot be the "
                                 f"{self.num_samples} samples at {sample_rate} Hz the codes describe")

    # ------------------------------------------------------------------ JSON
    def encoder_record(self) -> dict:
        """How the codes were made, as the JSON form's "encoder" object: {"search_steps": 3, "method": "fast"},
        {"search_steps": 20, "method": "adam"}, {"search_steps": 0} (the encoder alone)."""
        return {"search_steps": self.search_steps, **({"method": self.search_method} if self.search_method else {})}

    def to_dict(self) -> dict:
        return {
            "format": CODES_FORMAT,
            "version": CODES_VERSION,
            "model": self.model,
            "levels": list(self.level_names),
            "codes": self.codes.tolist(),
            "seconds_per_column": self.seconds_per_column,
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            **({"source_rate": self.source_rate, "source_samples": self.source_samples} if self.source_rate else {}),
            **({"source_sha256": self.source_sha256} if self.source_sha256 else {}),
            **({"encoder": self.encoder_record()} if self.search_steps is not None else {}),
            **({"original": self.original.tolist()} if self.original is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> CodeGrid:
        if not isinstance(d, dict) or d.get("format") != CODES_FORMAT:
            raise CodesError("not a Distill codes file (missing \"format\": \"distill-codes\")")
        if d.get("version") != CODES_VERSION:
            raise CodesError(f"unsupported codes version {d.get('version')!r}; this Distill reads {CODES_VERSION}")
        try:
            codes = _int_array(d["codes"], "codes")
            original = _int_array(d["original"], "original") if d.get("original") is not None else None
            encoder = d.get("encoder")
            if encoder is not None and not (isinstance(encoder, dict) and _is_int(encoder.get("search_steps"))
                                            and 0 <= encoder["search_steps"] < 2 ** 31):
                raise CodesError("\"encoder\" must be an object like {\"search_steps\": 20}")
            method = _search_method(encoder)
            sha = d.get("source_sha256", "")
            if not isinstance(sha, str):
                raise CodesError("\"source_sha256\" must be a string")
            levels, model = d["levels"], d.get("model", "")
            if not (isinstance(levels, list) and all(isinstance(n, str) for n in levels)):
                raise CodesError("\"levels\" must be a list of level names")
            if not isinstance(model, str):
                raise CodesError("\"model\" must be a string (the model's fingerprint)")
            spc = d["seconds_per_column"]
            if isinstance(spc, bool) or not isinstance(spc, (int, float)):
                raise CodesError(f"\"seconds_per_column\" must be a number, got {spc!r}")
            return cls(codes=codes, level_names=tuple(levels), seconds_per_column=float(spc),
                       sample_rate=_whole(d["sample_rate"], "sample_rate"),
                       num_samples=_whole(d["num_samples"], "num_samples"), model=model,
                       source_rate=_whole(d.get("source_rate", 0), "source_rate"),
                       source_samples=_whole(d.get("source_samples", 0), "source_samples"),
                       source_sha256=sha, search_steps=None if encoder is None else int(encoder["search_steps"]),
                       search_method=method, original=original)
        except KeyError as exc:
            raise CodesError(f"codes file is missing the field {exc.args[0]!r}") from exc
        except CodesError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise CodesError(f"malformed codes file: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> CodeGrid:
        return cls.from_dict(parse_json(text, CodesError))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CodeGrid:
        try:
            text = open(path, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CodesError(f"{os.path.basename(os.fspath(path))}: cannot read codes file ({exc})") from exc
        try:
            return cls.from_json(text)
        except CodesError as exc:
            raise CodesError(f"{os.path.basename(os.fspath(path))}: {exc}") from exc


def parse_json(text: str, error: type[ValueError]) -> object:
    """json.loads, with everything a malformed text can raise turned into `error` (a ValueError subclass):
    bad syntax, nesting too deep for the parser (RecursionError), integers of more than 4300 digits."""
    try:
        return json.loads(text)
    except RecursionError:
        raise error("not valid JSON: nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, int digit limit, bytes that are not text
        if "integer string conversion" in str(exc):
            raise error("not valid JSON for Distill: a number with more than 4300 digits") from None
        raise error(f"not valid JSON: {str(exc).splitlines()[0][:200]}") from exc


def resamplable(rate: int, model_rate: int) -> bool:
    """True for a rate the band-limited resampler can reach from `model_rate`: 1 Hz - 1.536 MHz. Any pair of
    rates in that range is cheap (audio.resample never builds torchaudio's kernel for a pair such as 47999 and
    48000 Hz, which would need 9 GB), so `model_rate` no longer narrows it."""
    return 1 <= rate <= 1_536_000


def _search_method(encoder: dict | None) -> str | None:
    """The search an "encoder" record names: its "method", or "adam" for a file from before methods were
    recorded (20 Adam steps was then the only search); None for the encoder alone or no record."""
    if encoder is None:
        return None
    method = encoder.get("method", "adam" if encoder["search_steps"] > 0 else None)
    if method is not None and not (isinstance(method, str) and 0 < len(method) <= 40):
        raise CodesError("\"encoder\".\"method\" must be the name of a search, such as \"fast\"")
    return method


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _whole(value: object, what: str) -> int:
    """A JSON whole number (an int, or a float with no fraction such as 48000.0) -> int; CodesError otherwise."""
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise CodesError(f"\"{what}\" must be a whole number, got {value!r}")


def _int_array(value: object, what: str) -> np.ndarray:
    """A JSON nested list -> int64 [levels, bands, columns], refusing floats, ragged lists and other shapes."""
    if not isinstance(value, list):
        raise CodesError(f"\"{what}\" must be a levels x bands x columns list of lists")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):  # ragged, or more dimensions than numpy has
        raise CodesError(f"\"{what}\" must be levels x bands x columns (equal-length lists of integers)") from None
    if arr.ndim != 3:
        raise CodesError(f"\"{what}\" must be levels x bands x columns, got {arr.ndim} dimensions")
    if arr.dtype.kind == "b" or (arr.dtype.kind not in "iu" and arr.size):
        raise CodesError(f"\"{what}\" must hold integers")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise CodesError(f"\"{what}\" holds integers too large to be codes")
    return arr.astype(np.int64)
