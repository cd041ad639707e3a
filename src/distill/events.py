"""TrainEvent: the progress reports that codec training and prior training both stream.

Its own module so that train.py (the codec) and prior.py (the prior over codes) share one event type
without importing each other; the CLI and the studio consume both streams the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .health import LevelHealth


@dataclass(frozen=True)
class TrainEvent:
    """One progress report. `kind` is start | step | validation | warning | done; `stage` is "codec" or "prior"."""

    kind: str
    step: int
    epoch: float
    elapsed_s: float
    eta_s: float | None = None
    total_steps: int | None = None
    steps_per_s: float = 0.0
    lr: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)
    loss: float | None = None
    val_loss: float | None = None
    val_losses: dict[str, float] = field(default_factory=dict)
    best_val_loss: float | None = None
    codebook: tuple[LevelHealth, ...] = ()
    skipped_steps: int = 0
    message: str = ""
    stage: str = "codec"

    @property
    def progress(self) -> float | None:
        """0..1 when the budget is known."""
        if self.eta_s is None:
            return None
        total = self.elapsed_s + self.eta_s
        return self.elapsed_s / total if total > 0 else 1.0
