"""Drawing codes with a prior: iterative parallel decoding (MaskGIT: confidence-ranked re-masking on a cosine
schedule), coarse to fine over levels, in windows for long regions. Returns code arrays; the edit it makes
(an EditResult) is distill.edits.regenerate's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .masks import hidden_after, level_steps
from .network import CodePrior
from .retrieval import Origin, keeps_cells, retrieve

EDGE_COLUMNS = 2                 # the polish pass re-draws the least confident cells this close to a region's edges


class DrawSettings(Protocol):
    """How cells are drawn (distill.edits.RegenerateSettings is one): temperature scales the logits, top_p keeps the
    smallest set of codes holding that much probability, steps are the coarsest redrawn level's decoding steps,
    polish re-draws the least confident cells next to the seams, candidates are drawn at once from `seed`;
    retrieve copies patches of the training files' codes (distill.prior.retrieval) where the prior has them."""

    @property
    def temperature(self) -> float: ...
    @property
    def top_p(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def candidates(self) -> int: ...
    @property
    def polish(self) -> bool: ...
    @property
    def retrieve(self) -> bool: ...


def draw_top_p(logits: torch.Tensor, top_p: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one code per row of logits [M, K] from the smallest set of codes holding `top_p` of the probability
    (the most probable code always), renormalised -> (codes long [M], each draw's log-probability under that
    renormalised distribution [M]). One sort serves both the nucleus and the draw (inverse CDF on the sorted
    probabilities), which is cheaper than filtering and then calling multinomial."""
    logp, order = logits.log_softmax(-1).sort(-1, descending=True)
    probs = logp.exp()
    cum = probs.cumsum(-1)
    last = ((cum - probs) <= top_p).sum(-1, keepdim=True) - 1                    # the nucleus's last code, sorted
    mass = cum.gather(-1, last)                                                   # [M, 1]: its probability
    u = torch.rand(mass.shape, generator=gen, dtype=cum.dtype) * mass
    idx = torch.searchsorted(cum, u).clamp(max=last)                              # [M, 1]
    return order.gather(-1, idx)[:, 0], (logp.gather(-1, idx) - mass.log())[:, 0]


class Sampler:
    """Iterative parallel decoding of the cells `todo` of one grid with a CodePrior, N candidates at once."""

    def __init__(self, model: CodePrior, settings: DrawSettings):
        self.model = model   # shared read-only between sessions: already in eval mode (build_prior / with_prior)
        self.s = settings
        self.gen = torch.Generator().manual_seed(int(settings.seed))

    def _logits(self, x: torch.Tensor, q: int, cells: torch.Tensor, base: torch.Tensor | None = None,
                table: torch.Tensor | None = None) -> torch.Tensor:
        """Level q's tempered logits at the cells (bool [N, B, T]) of x: [M, K]. Only the cells being drawn are
        scored: drawing, nucleus sorting and the latent path cost per cell (3x less for a 2 s span). `base`
        [N, B, T, E * H]: the context part's first layer from the coarser levels, computed once per level
        (CodePrior.context_base); the share of the codes drawn so far is added here, step by step (`table`:
        ContextNet.same_table, once per level too)."""
        where = cells.nonzero().unbind(1)
        ctx = None if base is None else self.model.context_from(base[cells], x, q, where, table=table)
        return self.model.logits(self.model.features(x), q, cells, ctx).float() / self.s.temperature

    def _draw(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample codes from logits [M, K] within the nucleus (draw_top_p); (codes, log-probability of each draw)."""
        return draw_top_p(logits, self.s.top_p, self.gen)

    @torch.no_grad()
    def decode_level(self, x: torch.Tensor, todo: torch.Tensor, q: int, steps: int) -> None:
        """Fill x[:, q] where todo [B, T] (currently MASK) in `steps` rounds, in place. x long [N, L, B, T]."""
        N = x.shape[0]
        masked = todo[None].expand(N, -1, -1).clone()          # [N, B, T]
        total = int(todo.sum())
        part = self.model.context_base(x, q, masked.nonzero().unbind(1))   # the coarser levels stay as they are here
        base = table = None
        if part is not None:
            base = part.new_zeros(*masked.shape, part.shape[-1])
            base[masked] = part
            if self.model.cfg.context_same:
                table = self.model.context[q - 1].same_table(self.model.books[q])
        for t in range(steps):
            draw, logp = self._draw(self._logits(x, q, masked, base, table))   # [M] each: the masked cells, in order
            remain = hidden_after(total, t, steps)
            gumbel = -torch.log(-torch.log(torch.rand(logp.shape, generator=self.gen).clamp_(1e-9, 1 - 1e-9)))
            conf = torch.full(masked.shape, math.inf)
            conf[masked] = logp + 4.5 * (1 - (t + 1) / steps) * gumbel
            xq = x[:, q]
            xq[masked] = draw
            if remain > 0:
                flat = conf.reshape(N, -1)
                low = flat.topk(remain, dim=1, largest=False).indices
                back = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, low, True).reshape(masked.shape)
                back &= masked
                xq[back] = self.model.mask_index
                masked = back
            else:
                masked = torch.zeros_like(masked)

    @torch.no_grad()
    def run(self, x: torch.Tensor, todo: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """x long [N, L, B, T] (one row per candidate), todo bool [L, B, T] (cells to draw), edges bool [T]
        (columns next to a seam) -> a new [N, L, B, T]; cells outside `todo` are x's own."""
        x = x.clone()
        x[:, todo] = self.model.mask_index
        levels = [q for q in range(x.shape[1]) if bool(todo[q].any())]
        for rank, q in enumerate(levels):
            self.decode_level(x, todo[q], q, level_steps(self.s.steps, rank))
        if self.s.polish and bool(edges.any()):
            self._polish(x, todo, edges, levels)
        return x

    def _polish(self, x: torch.Tensor, todo: torch.Tensor, edges: torch.Tensor, levels: list[int]) -> None:
        """Re-draw the less confident half of the drawn cells next to the seams, level by level: each level's
        seam cells are hidden and their drawn codes scored in that context (as the prior was trained), and
        the lower-scoring half is drawn again from it."""
        seam = todo & edges[None, None, :]
        N = x.shape[0]
        for q in levels:
            cells = seam[q]                                                  # [B, T]
            n = int(cells.sum())
            if n < 2:
                continue
            where = cells[None].expand(N, -1, -1)                            # [N, B, T]
            hidden = x.clone()
            hidden[:, q][where] = self.model.mask_index
            logits = self._logits(hidden, q, where)                          # [M, K]
            current = x[:, q][where].clamp(max=self.model.mask_index - 1)
            score = torch.full(where.shape, math.inf)
            score[where] = logits.log_softmax(-1).gather(-1, current[:, None])[:, 0]
            low = score.reshape(N, -1).topk(n // 2, dim=1, largest=False).indices
            redo = torch.zeros(N, cells.numel(), dtype=torch.bool).scatter_(1, low, True).reshape(where.shape)
            draw, _ = self._draw(logits)
            xq = x[:, q]
            xq[redo] = draw[redo[where]]


def sample_cells(model: CodePrior, codes: np.ndarray, todo: np.ndarray, settings: DrawSettings) -> list[np.ndarray]:
    """Redraw the cells `todo` of codes [L, B, T] -> one int64 [L, B, T] array per candidate.

    Regions longer than the prior's window are drawn left to right in windows that overlap what was
    already drawn, so each piece sees its left neighbours' new codes; cells still to draw to its right are
    hidden (the last piece sees the recording's right context)."""
    window = model.cfg.window
    L, B, T = codes.shape
    out = np.repeat(codes[None].astype(np.int64), settings.candidates, axis=0)
    cols = np.flatnonzero(todo.any(axis=(0, 1)))
    if cols.size == 0:
        return list(out)
    first, last = int(cols[0]), int(cols[-1])
    chunk = max(1, window // 2)
    start = first
    sampler = Sampler(model, settings)
    seams = _seam_columns(todo, T)
    while start <= last:
        stop = min(last, start + chunk - 1)
        a, b = window_around(start, stop, window, T)
        piece_todo = np.zeros((L, B, b - a), dtype=bool)
        piece_todo[:, :, start - a:stop - a + 1] = todo[:, :, start:stop + 1]
        later = np.zeros_like(piece_todo)          # cells still to draw in later pieces: hidden, not the old codes
        later[:, :, stop - a + 1:] = todo[:, :, stop + 1:b]
        edges = np.zeros(b - a, dtype=bool)
        edges[[c - a for c in seams if start <= c <= stop]] = True
        x = torch.from_numpy(out[:, :, :, a:b].copy())
        x[:, torch.from_numpy(later)] = model.mask_index
        drawn = sampler.run(x, torch.from_numpy(piece_todo), torch.from_numpy(edges))
        sel = piece_todo[None].repeat(settings.candidates, 0)
        region = out[:, :, :, a:b]
        region[sel] = drawn.numpy()[sel]
        start = stop + 1
    return list(out)


def window_around(first: int, last: int, window: int, T: int) -> tuple[int, int]:
    """The prior's window (columns a..b-1 of T) centred on columns first..last, moved inside the grid: the one rule
    the sampler's pieces and the patch scores share."""
    a = int(np.clip((first + last + 1) // 2 - window // 2, 0, max(0, T - window)))
    return a, min(T, a + window)


def _seam_columns(todo: np.ndarray, T: int) -> list[int]:
    """Columns of the selection within EDGE_COLUMNS of a boundary with untouched audio (not the clip's ends)."""
    sel = todo.any(axis=(0, 1))
    out = set()
    for c in np.flatnonzero(sel):
        lo, hi = max(0, c - EDGE_COLUMNS), min(T - 1, c + EDGE_COLUMNS)
        if any(not sel[k] for k in range(lo, hi + 1)):
            out.add(int(c))
    return sorted(out)


KEPT_NOTE = ("drawn cell by cell by the prior's network around the cells the selection keeps (copying other places "
             "onto them measured worse); a selection of every level is copied from your sounds")
NO_BANK_NOTE = ("drawn cell by cell by the prior's network: this prior keeps no codes of its training files to copy from "
                "(it was made by an earlier version; retrain it with `distill prior` to draw from your sounds)")


@dataclass(frozen=True)
class Version:
    """One drawn version: codes int64 [L, B, T]; where its material came from (empty when the network drew it),
    or why it was drawn by the network (`note`)."""

    codes: np.ndarray
    origins: tuple[Origin, ...] = ()
    note: str = ""


def draw_versions(model: CodePrior, codes: np.ndarray, todo: np.ndarray, settings: DrawSettings) -> list[Version]:
    """Redraw the cells `todo` (bool [L, B, T]) of codes [L, B, T], settings.candidates versions: copied from the
    training files (retrieval) when the prior keeps their codes and settings.retrieve, else drawn by the network
    (sample_cells), saying why. Cells outside `todo` come back bit-identical either way."""
    bank = model.bank() if settings.retrieve else None
    if bank is None:
        note = NO_BANK_NOTE if settings.retrieve else "drawn cell by cell by the prior's network"
        return [Version(c, (), note) for c in sample_cells(model, codes, todo, settings)]
    if keeps_cells(todo):
        return [Version(c, (), KEPT_NOTE) for c in sample_cells(model, codes, todo, settings)]
    found = retrieve(bank[0], bank[1], codes, todo, settings.candidates, settings.temperature, settings.seed,
                     score=lambda xs, cells, hidden: patch_scores(model, xs, cells, hidden))
    return [Version(c, tuple(origins)) for c, origins in found]


def patch_scores(model: CodePrior, xs: np.ndarray, cells: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The network's mean log-probability (nats per cell) of each candidate's codes at `cells` (bool [L, B, T]),
    xs int64 [S, L, B, T], with the `hidden` cells (bool [L, B, T], which include `cells`) masked: level by level,
    coarse to fine, each level scored given the coarser ones' candidate codes, as the sampler draws -> float [S].
    Scored a piece at a time, each piece in a window of the prior's that also holds a quarter window of context
    either side where the grid has it (the network's say on a patch is how it fits what is around it)."""
    window = model.cfg.window
    T = xs.shape[-1]
    cols = np.flatnonzero(cells.any(axis=(0, 1)))
    if cols.size == 0:
        return np.zeros(xs.shape[0])
    chunk = max(1, window - 2 * (window // 4))
    total, count = np.zeros(xs.shape[0]), 0
    lo = int(cols[0])
    while lo <= cols[-1]:
        hi = min(int(cols[-1]), lo + chunk - 1)
        a, b = window_around(lo, hi, window, T)
        part = np.zeros_like(cells)
        part[:, :, lo:hi + 1] = cells[:, :, lo:hi + 1]
        s, n = _scores(model, xs[..., a:b], part[..., a:b], hidden[..., a:b])
        total, count = total + s, count + n
        lo = hi + 1
    return total / max(count, 1)


@torch.no_grad()
def _scores(model: CodePrior, xs: np.ndarray, cells: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray, int]:
    """patch_scores within one window: (summed log-probability per candidate [S], cells scored per candidate)."""
    truth = torch.from_numpy(np.ascontiguousarray(xs))
    x = truth.clone()
    x[:, torch.from_numpy(np.ascontiguousarray(hidden))] = model.mask_index
    S = x.shape[0]
    total, count = torch.zeros(S, dtype=torch.float64), 0
    for q in np.flatnonzero(cells.any(axis=(1, 2))):
        where = torch.from_numpy(np.ascontiguousarray(cells[q]))[None].expand(S, -1, -1)
        logp = model.logits(model.features(x), int(q), where).float().log_softmax(-1)       # [M, K]
        code = truth[:, q][where]
        total += logp.gather(-1, code[:, None])[:, 0].double().reshape(S, -1).sum(1)
        count += int(cells[q].sum())
        x[:, q][where] = code                                                              # known for finer levels
    return total.numpy(), count
