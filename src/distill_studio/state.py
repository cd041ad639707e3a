"""Per-session studio state (kept in gr.State, one per browser tab) and the Space limits read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill import Codec, CodeGrid, ScanReport, VQVAEConfig
from distill.render import DEFAULT_DETAIL

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
        max_clip_seconds (float): longest clip opened for editing (DISTILL_MAX_CLIP_SECONDS).
        queue_size (int): queue max_size (DISTILL_QUEUE_SIZE).
        train_concurrency (int): trainings at once across all users (DISTILL_TRAIN_CONCURRENCY).
        preset (str): "tiny" trains a very small network (tests, smoke checks) (DISTILL_STUDIO_PRESET).
        demo_model (str): bundled model opened on page load (DISTILL_DEMO_MODEL).
        demo_clips (str): folder of demo clips (DISTILL_DEMO_CLIPS).
    """

    max_file_mb: float = 50.0
    max_files: int = 500
    max_total_minutes: float = 120.0
    max_train_minutes: float = 30.0
    max_clip_seconds: float = 60.0
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


@dataclass(frozen=True)
class Clip:
    """One opened clip: its audio at the model rate and the codes the model gave it."""

    name: str
    wave: np.ndarray  # float32 [samples] at the model rate; also the phase source for decoding
    grid: CodeGrid


@dataclass
class Session:
    """Everything one browser tab owns. Handlers receive it, change it and hand it back to gr.State.

    Mutable on purpose: a tab's events run one after another, and copying numpy waves and a
    torch model on every click would cost more than the edit itself.
    """

    codec: Codec | None = None
    model_label: str = ""
    model_path: str | None = None           # downloadable .distill of the current model
    clips: dict[str, str] = field(default_factory=dict)   # display name -> file path
    report: ScanReport | None = None
    config: VQVAEConfig | None = None       # settings implied by the dataset
    a: Clip | None = None
    b: Clip | None = None
    b_grid: CodeGrid | None = None          # B as edited by cross-clip swaps
    history: object | None = None           # distill.edits.EditHistory over A's grid
    b_timeline: list = field(default_factory=list)  # B's grid at each history position
    donor_timeline: list = field(default_factory=list)  # distill.edits.DonorPatch tuples active at each position
    shown_b: tuple | None = None            # what B's heatmaps last showed (skip re-sending the same)
    render_mode: str = "surgical"          # "surgical" (source kept outside edits) or "plain" (model everywhere)
    detail: float = DEFAULT_DETAIL         # surgical: share of the source's fine texture kept inside edits
    src_mel: tuple | None = None            # (A's wave, its log-mel) for the spectrogram picture
    mel_cache: tuple | None = None          # (model fingerprint, grid, decoded log-mel) of A's last plain decode
    sel_a: object | None = None             # distill.edits.Region on A
    sel_b: object | None = None             # Region on B
    clipboard: tuple | None = None          # (source grid, Region) from Copy
    recon: np.ndarray | None = None         # plain reconstruction of A
    edited: np.ndarray | None = None        # last decoded edit of A
    last_decode_s: float | None = None
    trainer: object | None = None           # the running Trainer, so Stop can cancel it
    loss_rows: list = field(default_factory=list)  # [{step, value, series}] for the loss plots

    @property
    def grid(self) -> CodeGrid | None:
        """A's current (edited) grid."""
        if self.history is not None:
            return self.history.current
        return self.a.grid if self.a else None
