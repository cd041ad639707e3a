"""The code grids a prior learns from (CodeCorpus), random training crops and the fixed held-out crops."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import PriorError
from .masks import edit_mask


@dataclass(frozen=True)
class CodeCorpus:
    """The code grids a prior learns from: int64 [levels, bands, columns] per file, with their names."""

    names: tuple[str, ...]
    grids: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.grids) or not self.grids:
            raise PriorError("a code corpus needs at least one grid, one name per grid")
        shapes = {g.shape[:2] for g in self.grids}
        if len(shapes) != 1 or any(g.ndim != 3 or g.shape[2] < 1 for g in self.grids):
            raise PriorError(f"code grids must share [levels, bands] and have >= 1 column, got {sorted(shapes)}")

    @property
    def columns(self) -> int:
        return int(sum(g.shape[2] for g in self.grids))

    def subset(self, idx: Sequence[int]) -> CodeCorpus:
        return CodeCorpus(tuple(self.names[i] for i in idx), tuple(self.grids[i] for i in idx))


def crop_batch(corpus: CodeCorpus, window: int, size: int, rng: np.random.Generator, weights: np.ndarray,
               mask_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops at random offsets: (codes long [size, L, B, window] padded with MASK, pad bool [size, window])."""
    L, B = corpus.grids[0].shape[:2]
    codes = np.full((size, L, B, window), mask_token, dtype=np.int64)
    pad = np.ones((size, window), dtype=bool)
    for n, i in enumerate(rng.choice(len(corpus.grids), size=size, p=weights)):
        g = corpus.grids[i]
        T = g.shape[2]
        if T >= window:
            s = int(rng.integers(0, T - window + 1))
            codes[n] = g[:, :, s:s + window]
            pad[n] = False
        else:
            s = int(rng.integers(0, window - T + 1))  # short clips sit anywhere in the window
            codes[n, :, :, s:s + T] = g
            pad[n, s:s + T] = False
    return torch.from_numpy(codes), torch.from_numpy(pad)


def fixed_eval_set(corpus: CodeCorpus, window: int, mask_token: int, per_file: int = 4, limit: int = 96,
                   seed: int = 1234, mask_fn: Callable[..., np.ndarray] = edit_mask
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic held-out crops and edit-shaped masks: (codes [N, L, B, W], pad [N, W], hide [N, L, B, W])."""
    rng = np.random.default_rng(seed)
    L, B = corpus.grids[0].shape[:2]
    items = []
    for g in corpus.grids:
        T = g.shape[2]
        starts = sorted({int(s) for s in np.linspace(0, max(0, T - window), per_file)}) if T > window else [0]
        items += [(g, s) for s in starts]
    items = items[:limit]
    codes = np.full((len(items), L, B, window), mask_token, dtype=np.int64)
    pad = np.ones((len(items), window), dtype=bool)
    hide = np.zeros((len(items), L, B, window), dtype=bool)
    for n, (g, s) in enumerate(items):
        piece = g[:, :, s:s + window]
        T = piece.shape[2]
        codes[n, :, :, :T] = piece
        pad[n, :T] = False
        hide[n, :, :, :T] = mask_fn(L, B, T, rng)
    return torch.from_numpy(codes), torch.from_numpy(pad), torch.from_numpy(hide)
