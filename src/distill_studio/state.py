"""Per-session studio state (kept in gr.State, one per browser tab) and the Space limits read from the environment."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill import (
    DEFAULT_DETAIL,
    Clip,
    Codec,
    CodeGrid,
    EditHistory,
    EditResult,
    EditSession,
    Region,
    Rendered,
    ScanReport,
    SourceAudio,
    TooLong,
    Trainer,
    VQVAEConfig,
    check_length,
    clip_nbytes,
    load_audio,
    load_source,
)
from distill.audio import CLIP_LIMIT_VARIABLE as CLIP_VARIABLE

from .viewport import VIEW_SECONDS, Viewport

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    """What one shared Space allows; every field has an environment variable so a host can tune it.

    Args:
        max_file_mb (float): per-file upload limit (DISTILL_MAX_FILE_MB).
        max_files (int): files per dataset upload (DISTILL_MAX_FILES).
        max_total_minutes (float): total accepted audio per dataset (DISTILL_MAX_TOTAL_MINUTES).
        max_train_minutes (float): longest training budget (DISTILL_MAX_TRAIN_MINUTES).
        max_clip_seconds (float): longest clip opened for editing, encoded, decoded or imported as codes, in the
            studio and every API endpoint (DISTILL_MAX_CLIP_SECONDS).
        max_json_mb (float): largest codes or history JSON read, in the studio and the API (DISTILL_MAX_JSON_MB).
        queue_size (int): queue max_size (DISTILL_QUEUE_SIZE).
        train_concurrency (int): trainings at once across all users (DISTILL_TRAIN_CONCURRENCY).
        preset (str): "tiny" trains a very small network (tests, smoke checks) (DISTILL_STUDIO_PRESET).
        demo_model (str): bundled model opened on page load (DISTILL_DEMO_MODEL).
        demo_clips (str): folder of demo clips (DISTILL_DEMO_CLIPS).
    """

    max_file_mb: float = 350.0     # a 30-minute stereo 16-bit WAV at 44.1 kHz is 318 MB
    max_files: int = 500
    max_total_minutes: float = 120.0
    max_train_minutes: float = 30.0
    max_clip_seconds: float = 1800.0
    max_json_mb: float = 32.0      # a 30-minute clip's edited codes are ~3 MB; 32 MB of JSON parse to ~200 MB
    queue_size: int = 32
    train_concurrency: int = 1
    preset: str = ""
    demo_model: str = str(ASSETS / "demo.distill")
    demo_clips: str = str(ASSETS / "demo")

    @classmethod
    def from_env(cls) -> Limits:
        d = cls()
        return cls(
            max_file_mb=_env_float("DISTILL_MAX_FILE_MB", d.max_file_mb),
            max_files=int(_env_float("DISTILL_MAX_FILES", d.max_files)),
            max_total_minutes=_env_float("DISTILL_MAX_TOTAL_MINUTES", d.max_total_minutes),
            max_train_minutes=_env_float("DISTILL_MAX_TRAIN_MINUTES", d.max_train_minutes),
            max_clip_seconds=_env_float("DISTILL_MAX_CLIP_SECONDS", d.max_clip_seconds),
            max_json_mb=_env_float("DISTILL_MAX_JSON_MB", d.max_json_mb),
            queue_size=int(_env_float("DISTILL_QUEUE_SIZE", d.queue_size)),
            train_concurrency=int(_env_float("DISTILL_TRAIN_CONCURRENCY", d.train_concurrency)),
            preset=os.environ.get("DISTILL_STUDIO_PRESET", d.preset),
            demo_model=os.environ.get("DISTILL_DEMO_MODEL", d.demo_model),
            demo_clips=os.environ.get("DISTILL_DEMO_CLIPS", d.demo_clips),
        )

    def preset_overrides(self) -> dict:
        """Config overrides for the named preset; 'tiny' trains in seconds on 2 cores."""
        if self.preset == "tiny":
            return dict(codebook_size=32, codebook_dim=32, channels=(8, 16, 16, 32), res_blocks=1,
                        batch_size=4, warmup_steps=2, decay=0.8)
        return {}

    # What a user is told when a limit is reached: the limit itself and the variable that sets it.
    def file_too_big(self, size_mb: float) -> str:
        return (f"{size_mb:.1f} MB is over this Space's limit of {self.max_file_mb:g} MB per file "
                "(set by DISTILL_MAX_FILE_MB when the studio starts)")

    def too_many_files(self) -> str:
        return (f"over this Space's limit of {self.max_files} files per dataset "
                "(set by DISTILL_MAX_FILES when the studio starts)")

    def over_total_minutes(self) -> str:
        return (f"over this Space's total of {self.max_total_minutes:g} minutes of audio per dataset "
                "(set by DISTILL_MAX_TOTAL_MINUTES when the studio starts)")

    def over_total_left(self, seconds: float, left: float | None = None) -> str:
        """Why one file does not fit in what is left of the dataset's total: its length (or, when decoding was
        stopped at what was `left`, that it is longer), then the limit."""
        length = f"longer than the {left / 60:.1f} min left" if left is not None else f"{seconds / 60:.1f} min long"
        return f"{length}: {self.over_total_minutes()}"

    # Checks made before any work, wherever a file enters (studio uploads and imports, every API endpoint).
    def check_clip(self, path: str | os.PathLike, name: str | None = None) -> None:
        """Refuse audio longer than max_clip_seconds from its header, before decoding (TooLong says so)."""
        check_length(path, self.max_clip_seconds, CLIP_VARIABLE, name)

    def load_source(self, path: str | os.PathLike, name: str | None = None) -> SourceAudio:
        """A clip's file within max_clip_seconds, decoded once (audio.load_source under the limit: a longer
        WAV/FLAC is refused from its header, an Ogg/MP3 as soon as its decode passes the limit)."""
        return load_source(path, name, max_seconds=self.max_clip_seconds, variable=CLIP_VARIABLE)

    def load_audio(self, path: str | os.PathLike, target_sr: int | None = None) -> tuple[np.ndarray, int]:
        """audio.load_audio under max_clip_seconds, as load_source."""
        return load_audio(path, target_sr, max_seconds=self.max_clip_seconds, variable=CLIP_VARIABLE)

    def check_json(self, path: str | os.PathLike) -> None:
        """Refuse a codes or history file over max_json_mb before it is read (parsing costs ~6x its size).
        A file that cannot be reached raises OSError here, as reading it would, for the caller to name."""
        mb = os.path.getsize(path) / 2**20
        if mb > self.max_json_mb:
            raise ValueError(f"{os.path.basename(os.fspath(path))}: {mb:.2f} MB is over this Space's limit of "
                             f"{self.max_json_mb:g} MB per codes or history file (set by DISTILL_MAX_JSON_MB when "
                             "the studio starts)")

    def check_codes(self, grid: CodeGrid, name: str) -> None:
        """Refuse codes of a clip longer than max_clip_seconds, as its audio would be (before any decode)."""
        if grid.duration_s > self.max_clip_seconds:
            raise TooLong(name, grid.duration_s, self.max_clip_seconds, "DISTILL_MAX_CLIP_SECONDS")

    def train_minutes_capped(self, asked: float) -> str:
        return (f"Training budget capped at {self.max_train_minutes:g} minutes ({asked:g} asked for): this Space's "
                "longest training, set by DISTILL_MAX_TRAIN_MINUTES when the studio starts.")

    def queue_full(self) -> str:
        return (f"The studio is busy: {self.queue_size} requests are already waiting, this Space's queue limit "
                "(set by DISTILL_QUEUE_SIZE when the studio starts). Try again in a moment.")

    def upload_note(self) -> str:
        """One line listing the upload limits (for help text next to the upload widgets)."""
        return (f"Limits here: {self.max_files} files per dataset, {self.max_file_mb:g} MB per file, "
                f"{self.max_total_minutes:g} minutes of audio in all, {self.max_train_minutes:g} minutes of training "
                "(DISTILL_MAX_FILES, DISTILL_MAX_FILE_MB, DISTILL_MAX_TOTAL_MINUTES, DISTILL_MAX_TRAIN_MINUTES).")


@dataclass(frozen=True)
class Clipboard:
    """What Copy took: a region of A's or B's grid as it was then."""

    grid: CodeGrid
    region: Region
    same_clip: bool   # copied from A itself (its own audio lends the phase) rather than from B
    clip_key: str = ""    # Clip.key of the clip copied from: only that clip's audio may lend the paste its phase
    clip_name: str = ""


@dataclass(frozen=True)
class PendingModel:
    """A model that arrived (training finished, .distill uploaded) while clip A had edits: offered, not applied.

    Switching re-encodes the open clips and starts a new history, so it waits for "Use the new model".
    """

    codec: Codec
    label: str
    path: str | None                        # its downloadable .distill
    clips: dict[str, str] = field(default_factory=dict)  # clips that come with it (the training set), added on switch


@dataclass(frozen=True)
class Candidates:
    """Regenerate's versions of A's selection: each an edit not yet applied, with its audio to audition.

    `base` is the grid they were drawn on: once A changes, they no longer apply and are dropped."""

    base: CodeGrid
    results: tuple[EditResult, ...]
    audio: tuple[np.ndarray, ...]      # each candidate rendered (surgically), cut to the audition span
    current: np.ndarray                # the clip as it is now, same span
    span: tuple[int, int]              # audition span in samples at the model rate


@dataclass
class Session:
    """Everything one browser tab owns. Handlers receive it, change it and hand it back to gr.State.

    The editing itself (clip A, partner B, history, donors, decode cache, rendering) is a
    distill.EditSession; this adds what only the page needs (selection, clipboard, players, training).
    Handlers hold `lock` while they change anything, so two events of one tab never interleave.
    """

    codec: Codec | None = None
    model_label: str = ""
    model_path: str | None = None           # downloadable .distill of the current model
    clips: dict[str, str] = field(default_factory=dict)   # display name -> file path
    report: ScanReport | None = None
    config: VQVAEConfig | None = None       # settings implied by the dataset
    edit: EditSession | None = None         # clip A being edited (with B as its partner once both are open)
    b: Clip | None = None                   # clip B as opened (its edited state lives in `edit`)
    sel_a: Region | None = None
    sel_b: Region | None = None
    clipboard: Clipboard | None = None
    view_a: Viewport | None = None          # the columns of A on screen (the players play their samples)
    view_b: Viewport | None = None          # the columns of B on screen
    view_seconds: float = VIEW_SECONDS      # viewport width (zoom), shared by A and B
    recon: Rendered | None = None           # plain reconstruction of A over its viewport
    rendered: Rendered | None = None        # the Edited player's audio (A's viewport, or the whole clip), how it was made
    src_mel: tuple[tuple[int, int], np.ndarray] | None = None  # ((start, stop) samples, log-mel) of A's picture
    edited_mel: tuple[Rendered, np.ndarray] | None = None  # (the Edited player's render, its log-mel)
    peaks: dict[str, np.ndarray] = field(default_factory=dict)  # clip key -> overview envelope (viewport.envelope)
    shown_b: tuple[CodeGrid | None, Region | None, Viewport | None] | None = None  # what B's heatmaps last showed
    trainer: Trainer | None = None          # the running Trainer, so Stop can cancel it
    stop_file: str | None = None            # the running training's stop file: Stop creates it (works across processes)
    pending_model: PendingModel | None = None  # a new model waiting for "Use the new model" (A has edits)
    loss_rows: list[dict] = field(default_factory=list)  # [{step, value, series}] for the loss plots
    candidates: Candidates | None = None    # Regenerate's drawn versions, waiting to be auditioned and kept
    colour_by: str = "sound"                # heatmap colours: "sound" (codebook vectors) or "index" (code number)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def a(self) -> Clip | None:
        return self.edit.clip if self.edit is not None else None

    @property
    def history(self) -> EditHistory | None:
        return self.edit.history if self.edit is not None else None

    @property
    def grid(self) -> CodeGrid | None:
        """A's current (edited) grid."""
        return self.edit.current if self.edit is not None else None

    @property
    def b_grid(self) -> CodeGrid | None:
        """B as the edits left it (cross-clip swaps change it), or as opened."""
        if self.edit is not None and self.edit.partner is not None:
            return self.edit.partner_grid
        return self.b.grid if self.b is not None else None

    @property
    def render_mode(self) -> str:
        return self.edit.render_mode if self.edit is not None else "surgical"

    @property
    def detail(self) -> float:
        return self.edit.detail if self.edit is not None else DEFAULT_DETAIL

    @property
    def edited(self) -> np.ndarray | None:
        return self.rendered.wave if self.rendered is not None else None

    def memory(self) -> dict[str, int]:
        """Bytes this tab holds, by part (EditSession.memory, plus B when it is not A's partner, the players'
        audio, the pictures' log-mels, the overview envelopes and Regenerate's versions): what the history
        panel reports, so a long session's cost is visible."""
        parts = dict(self.edit.memory()) if self.edit is not None else {}
        if self.b is not None and (self.edit is None or self.edit.partner is not self.b):
            parts["clips"] = parts.get("clips", 0) + clip_nbytes(self.b)
        players = [r.wave for r in (self.recon, self.rendered) if r is not None]
        if self.candidates is not None:
            players += [*self.candidates.audio, self.candidates.current]
        parts["players"] = sum({id(a): a.nbytes for a in players}.values())
        pictures = [m[1] for m in (self.src_mel, self.edited_mel) if m is not None] + list(self.peaks.values())
        parts["pictures"] = sum(np.asarray(a).nbytes for a in pictures)
        return parts

    def close_clips(self) -> None:
        """Close A and B (their history goes with them) and everything shown about them."""
        self.edit, self.b = None, None
        self.sel_a = self.sel_b = self.clipboard = None
        self.recon = self.rendered = self.src_mel = self.edited_mel = self.shown_b = None
        self.view_a = self.view_b = None
        self.peaks.clear()
