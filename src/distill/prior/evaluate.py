"""Scoring a prior: the masked NLL of hidden cells, held-out bits/code, and the passes (stages) that score
them coarse to fine or in the order the sampler draws."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .masks import hidden_after, level_steps
from .network import CodePrior


def masked_nll(model: CodePrior, codes: torch.Tensor, pad: torch.Tensor, hide: torch.Tensor,
               label_smoothing: float = 0.0, scored: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy (nats) of the hidden cells given the rest. codes [N, L, B, T], hide bool same shape;
    `scored` (a subset of hide, default all of it) picks the cells that count."""
    x = codes.masked_fill(hide, model.mask_index)
    f = model.features(x, pad)
    scored = hide if scored is None else scored
    total, count = 0.0, 0
    for q in range(codes.shape[1]):
        cells = scored[:, q]
        n = int(cells.sum())
        if n:
            total = total + F.cross_entropy(model.logits(f, q, cells), codes[:, q][cells],
                                            label_smoothing=label_smoothing, reduction="sum")
            count += n
    return total / max(count, 1)


@torch.no_grad()
def evaluate_bits(model: CodePrior, codes: torch.Tensor, pad: torch.Tensor, hide: torch.Tensor,
                  batch: int = 32, by_level: bool = True, steps: int = 0, seed: int = 0) -> float:
    """Held-out NLL of the hidden cells in bits per code (no label smoothing).

    by_level (the default): the joint NLL coarse to fine: each level's hidden cells given everything visible
    and the true codes of the hidden coarser levels (the chain rule over levels; within a level every hidden
    cell is scored at once, given none of the others). With `steps` > 0, within a level too, in the order
    the sampler draws (drawing_stages, its `seed`): the NLL of the codes under the sampler's own joint
    distribution. by_level=False: every hidden cell given only the visible ones (one pass, each cell's
    marginal)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, codes.shape[0], batch):
        c, p, h = codes[i:i + batch], pad[i:i + batch], hide[i:i + batch]
        stages = ([(None, h, h)] if not by_level else
                  drawing_stages(h, steps, seed + i) if steps > 0 else level_stages(h))
        for _, shown, scored in stages:
            n = int(scored.sum())
            if n:
                total += float(masked_nll(model, c, p, shown, scored=scored)) * n
                count += n
    return total / max(count, 1) / math.log(2)


def drawing_stages(hide: torch.Tensor, steps: int, seed: int = 0) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """The passes of scoring the hidden cells hide bool [N, L, B, T] in the order the sampler draws them, as
    (q, shown, scored) like level_stages: level by level, coarse to fine, and within a level in a random order
    cut into the sampler's steps (level_steps(steps, rank), hidden_after). `shown` hides the level's cells not
    drawn yet and every finer level; `scored` is the step's cells. A random order (seeded) stands in for the
    sampler's most-confident-first one, whose likelihood has no closed form; the chain rule over it is the
    NLL of drawing in a random order."""
    gen = torch.Generator().manual_seed(int(seed))
    N, L = hide.shape[:2]
    redrawn = hide.flatten(2).any(-1)                                               # [N, L]
    out = []
    for q in range(L):
        cells = hide[:, q]                                                          # [N, B, T]
        if not bool(cells.any()):
            continue
        order = torch.rand(cells.shape, generator=gen).masked_fill(~cells, 2.0)
        order = order.flatten(1).argsort(1).argsort(1).reshape(cells.shape)      # each cell's place in the draw
        total = cells.flatten(1).sum(1).tolist()
        level_count = [level_steps(steps, int(r)) for r in redrawn[:, :q].sum(1)]
        before = torch.zeros(N, dtype=torch.long)
        for t in range(max(level_count)):
            after = torch.tensor([n - hidden_after(n, t, s) if t < s else n for n, s in zip(total, level_count, strict=True)])
            now = cells & (order >= before[:, None, None]) & (order < after[:, None, None])
            if bool(now.any()):
                out.append(stage_of(hide, q, cells & (order >= before[:, None, None]), now))
            before = after
    return out


def stage_of(hide: torch.Tensor, q: int, undrawn: torch.Tensor, now: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """One scoring pass at level q of hide bool [N, L, B, T]: (q, shown, scored), where `shown` hides the level's
    cells not drawn yet (undrawn bool [N, B, T]) and every finer level's hidden cells, and `scored` is `now`
    [N, B, T] (the cells this pass scores) at level q."""
    levels = torch.arange(hide.shape[1])[None, :, None, None]
    shown = hide & (levels > q)
    shown[:, q] = undrawn
    scored = torch.zeros_like(hide)
    scored[:, q] = now
    return q, shown, scored


def level_stages(hide: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """The passes of coarse-to-fine scoring of the hidden cells hide bool [N, L, B, T]: (q, shown, scored) for
    each level q with hidden cells, where `shown` hides only levels q and finer (the coarser ones are drawn
    by then) and `scored` is level q's hidden cells. A level with nothing hidden costs no pass."""
    levels = torch.arange(hide.shape[1])[None, :, None, None]
    out = []
    for q in range(hide.shape[1]):
        scored = hide & (levels == q)
        if bool(scored.any()):
            out.append((q, hide & (levels >= q), scored))
    return out
