"""CodeGrid: one clip's codes as [levels, bands (low->high), columns (time)] and its JSON form."""

from __future__ import annotations

import json
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
        search_steps (int | None): how the encoder made the codes (`encoder` in JSON); None = not recorded.
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

    # ------------------------------------------------------------------ JSON
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
            **({"encoder": {"search_steps": self.search_steps}} if self.search_steps is not None else {}),
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
            if encoder is not None and not (isinstance(encoder, dict) and isinstance(encoder.get("search_steps"), int)):
                raise CodesError("\"encoder\" must be an object like {\"search_steps\": 20}")
            sha = d.get("source_sha256", "")
            if not isinstance(sha, str):
                raise CodesError("\"source_sha256\" must be a string")
            return cls(codes=codes, level_names=tuple(str(n) for n in d["levels"]),
                       seconds_per_column=float(d["seconds_per_column"]), sample_rate=int(d["sample_rate"]),
                       num_samples=int(d["num_samples"]), model=str(d.get("model", "")),
                       source_rate=int(d.get("source_rate", 0)), source_samples=int(d.get("source_samples", 0)),
                       source_sha256=sha, search_steps=None if encoder is None else int(encoder["search_steps"]),
                       original=original)
        except KeyError as exc:
            raise CodesError(f"codes file is missing the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CodesError):
                raise
            raise CodesError(f"malformed codes file: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> CodeGrid:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CodesError(f"not valid JSON: {exc}") from exc
        return cls.from_dict(d)

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


def _int_array(value: object, what: str) -> np.ndarray:
    """A JSON nested list -> int64 [levels, bands, columns], refusing floats, ragged lists and other shapes."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" and arr.size:
        raise CodesError(f"\"{what}\" must hold integers")
    if arr.ndim != 3:
        raise CodesError(f"\"{what}\" must be levels x bands x columns, got {arr.ndim} dimensions")
    return arr.astype(np.int64)
