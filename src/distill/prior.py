"""A masked-token prior over code grids: train it on a corpus's codes, then redraw a region so it fits its surroundings.

The prior is a small bidirectional transformer whose sequence steps are code columns; each column
carries its levels x bands tokens. It is trained by masked-token modelling with masks shaped like
edits (time spans, band x time rectangles, coarser levels kept, random tokens) and sampled by
iterative parallel decoding (MaskGIT: confidence-ranked re-masking on a cosine schedule), coarse to
fine over levels. Cells outside the selection are never written, so they come back bit-identical.

It lives in the model's `.distill` file next to the codec (tensors under `prior.`, settings in the
metadata) and never changes the codec's fingerprint: codes made before a prior was added stay valid.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .codes import CodeGrid
from .edits.operations import EditResult, RegenerateSettings
from .edits.regions import EditError, Region
from .events import TrainEvent

if TYPE_CHECKING:
    from .codec import Codec

PRIOR_PREFIX = "prior."          # tensor names of the prior inside a .distill file
DEFAULT_PRIOR_SHARE = 0.05       # share of `distill train --minutes` spent on the prior (benchmarks/README.md)
EDGE_COLUMNS = 2                 # the polish pass re-draws the least confident cells this close to a region's edges
NO_PRIOR_HELP = ("this model has no prior, so it cannot regenerate; add one with "
                 "`distill prior MODEL.distill FOLDER --minutes 2` (the folder it was trained on), "
                 "or train a new model with `distill train` (which trains the prior too)")


class PriorError(ValueError):
    """A prior that cannot be built or used (wrong shape, foreign codec, bad settings); the message says why."""


# ---------------------------------------------------------------------- config
@dataclass(frozen=True)
class PriorConfig:
    """Shape and training recipe of a CodePrior (stored in the model file as JSON).

    The grid geometry (levels, bands, codebook_size) must be the codec's; the rest is the recipe
    measured in benchmarks/prior.py for 5-500 clips on two CPU cores.
    """

    levels: int
    bands: int
    codebook_size: int
    width: int = 64           # transformer width d (benchmarks/README.md: smaller and faster beat larger here)
    layers: int = 2
    heads: int = 4
    cell_dim: int = 16        # embedding size of one (level, band) token before the column projection
    band_width: int = 32      # width of the per-band time-attention stage
    band_layers: int = 1
    dropout: float = 0.1
    window: int = 32          # columns per training crop (~5.5 s) and the most context one pass sees
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    label_smoothing: float = 0.1
    val_fraction: float = 0.2
    seed: int = 0
    latent_dim: int = 0       # the codec's codeword size: > 0 adds the latent path (0 = priors saved before it)
    context_width: int = 0    # hidden width of the latent path's context part (0 = none, as in priors saved before it)
    context_members: int = 4  # its ensemble size
    recall_kernel: int = 0    # 1 = the recall also lends codes near the recalled ones (0 in priors saved before it)
    context_same: int = 0     # 1 = the context part also reads the level's own codes drawn around the cell (0 before it)
    product: int = 0          # 1 = the mixture is sharpened by its parts raised to fitted powers (0 before it)

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.levels <= 8, f"levels must be 1-8, got {self.levels}"),
            (1 <= self.bands <= 64, f"bands must be 1-64, got {self.bands}"),
            (2 <= self.codebook_size <= 4096, f"codebook_size must be 2-4096, got {self.codebook_size}"),
            (8 <= self.width <= 1024 and self.width % max(1, self.heads) == 0,
             f"width must be 8-1024 and divisible by heads, got {self.width} / {self.heads}"),
            (1 <= self.layers <= 24, f"layers must be 1-24, got {self.layers}"),
            (1 <= self.heads <= 32, f"heads must be 1-32, got {self.heads}"),
            (2 <= self.cell_dim <= 256, f"cell_dim must be 2-256, got {self.cell_dim}"),
            (16 <= self.band_width <= 512 and self.band_width % 16 == 0,
             f"band_width must be 16-512 and a multiple of 16, got {self.band_width}"),
            (1 <= self.band_layers <= 8, f"band_layers must be 1-8, got {self.band_layers}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (4 <= self.window <= 1024, f"window must be 4-1024 columns, got {self.window}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.warmup_steps >= 1, f"warmup_steps must be >= 1, got {self.warmup_steps}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (0 <= self.latent_dim <= 1024, f"latent_dim must be 0-1024, got {self.latent_dim}"),
            (0 <= self.context_width <= 1024, f"context_width must be 0-1024, got {self.context_width}"),
            (not self.context_width or self.latent_dim, "context_width needs the latent path (latent_dim > 0)"),
            (1 <= self.context_members <= 16, f"context_members must be 1-16, got {self.context_members}"),
            (self.recall_kernel in (0, 1), f"recall_kernel must be 0 or 1, got {self.recall_kernel}"),
            (not self.recall_kernel or self.latent_dim, "recall_kernel needs the latent path (latent_dim > 0)"),
            (self.context_same in (0, 1), f"context_same must be 0 or 1, got {self.context_same}"),
            (not self.context_same or self.context_width, "context_same needs the context part (context_width > 0)"),
            (self.product in (0, 1), f"product must be 0 or 1, got {self.product}"),
            (not self.product or self.latent_dim, "product needs the latent path (latent_dim > 0)"),
        ]
        for ok, message in checks:
            if not ok:
                raise PriorError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        """Known fields only; each must have its default's type (a crafted file never builds a strange model)."""
        if not isinstance(d, dict):
            raise PriorError("prior config must be a JSON object")
        out = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            want = float if f.type in ("float", float) else int
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and float(v) != int(v)):
                raise PriorError(f"prior config field {f.name} is {str(v)[:40]!r}, not a {'whole ' if want is int else ''}number")
            if want is float and not math.isfinite(v):
                raise PriorError(f"prior config field {f.name} must be finite")
            out[f.name] = want(v)
        missing = [n for n in ("levels", "bands", "codebook_size") if n not in out]
        if missing:
            raise PriorError(f"prior config lacks {', '.join(missing)}")
        return cls(**out)


# ---------------------------------------------------------------------- network
class CodePrior(nn.Module):
    """Transformer over code columns with a per-band time-attention stage on top.

    Input codes [N, L, B, T] with index `codebook_size` meaning MASK; output logits [N, L, B, T, K].
    Stage 1 (context): each column's L*B token embeddings (a table per level) are concatenated,
    projected to the model width and mixed over time by a bidirectional transformer.
    Stage 2 (detail): one token per (band, column) - the column's context, that cell's codes at
    every level, the band's embedding - attends over time within its band, so a hidden cell can
    copy or vary what the same band does elsewhere (a column vector alone cannot carry 48 codes).
    The output head is tied to the input tables: a code's meaning is learned once.

    Latent path (cfg.latent_dim > 0; benchmarks/README.md): a code index says nothing about which codes
    are near it, but the codec's codewords do. A held note's latent barely moves, so the nearest visible
    column's latent minus the cell's own known coarser codewords predicts the residual the hidden code
    quantizes; each side's prediction gives a distribution over codes by distance to the codewords
    (a Gaussian, its precision by level and gap). The output is a mixture of the left, the right and
    the network's distribution, weighted by level and gap as fitted to the corpus (calibrate_latent):
    where its sounds move, the network's share takes over. A fourth part recalls: the visible cells of the same level and band
    whose known coarser codewords match the cell's (a drum hit that recurs in a loop) lend their codes,
    weighted by how close the match is. Two more parts in priors made since (benchmarks/README.md): the context
    part (cfg.context_width > 0; ContextNet, fit_context) predicts the hidden level's codeword from the coarser
    codewords around the cell (its band and the two beside it, two columns either side, the column's mean):
    a drum one-shot redrawn whole has no visible neighbours at its level, only its Structure. The recall
    kernel (cfg.recall_kernel) lends the recalled codes once more, each spread over the codes whose codewords
    are near its own: a hit that recurs is seldom coded exactly alike. With cfg.context_same the context part
    also reads the level's codes the sampler has drawn around the cell (a hit's Timbre across a column is one
    shape), and with cfg.product the parts, raised to fitted powers, sharpen the mixture where they agree.
    """

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        L, B, K, e, d = cfg.levels, cfg.bands, cfg.codebook_size, cfg.cell_dim, cfg.width
        db = cfg.band_width
        self.embed = nn.Parameter(torch.randn(L, K + 1, e) * 0.1)       # row K = MASK
        self.proj_in = nn.Linear(L * B * e, d)
        self.pos = nn.Parameter(torch.randn(cfg.window, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        layer.self_attn.dropout = 0.0   # dropout on attention weights cost 15% of a step and is not needed here
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.to_bands = nn.Linear(d, B * db)
        self.near_gap = nn.Embedding(MAX_GAP + 2, e)                     # how far the nearest visible codes are
        # logit bonus for them, by level / side / gap; it starts as "copy the nearest column" (a strong guess for
        # held sounds) and training tunes it, so even a short run starts from that baseline
        gap = torch.arange(MAX_GAP + 2, dtype=torch.float32)
        start = torch.where(gap <= MAX_GAP, 2.0 * torch.exp(-gap / 4.0), torch.zeros(()))
        self.copy_gain = nn.Parameter(start.expand(L, 2, MAX_GAP + 2).clone())
        self.cell_in = nn.Linear(3 * L * e, db)
        self.band = nn.Parameter(torch.randn(B, db) * 0.02)
        self.band_pos = nn.Parameter(torch.randn(cfg.window, db) * 0.02)
        band_layer = nn.TransformerEncoderLayer(db, max(1, db // 16), 4 * db, cfg.dropout, activation="gelu",
                                                batch_first=True, norm_first=True)
        band_layer.self_attn.dropout = 0.0
        self.band_blocks = nn.TransformerEncoder(band_layer, cfg.band_layers, enable_nested_tensor=False)
        self.band_norm = nn.LayerNorm(db)
        self.proj_out = nn.Linear(db, L * e)
        nn.init.zeros_(self.proj_out.weight)   # an untrained prior is exactly its frequencies + copy bonus
        nn.init.zeros_(self.proj_out.bias)
        self.bias = nn.Parameter(torch.zeros(L, B, K))
        D = cfg.latent_dim
        if D:
            self.register_buffer("books", torch.zeros(L, K, D))                      # the codec's codewords
            g = torch.arange(MAX_GAP + 2, dtype=torch.float32)
            self.latent_prec = nn.Parameter(torch.full((L, MAX_GAP + 2), math.log(3.0)))   # log precision by gap
            self.latent_mix = nn.Parameter((-0.25 * g).expand(L, 2, MAX_GAP + 2).clone())  # log weight of a side by gap
            self.latent_rest = nn.Parameter(torch.zeros(L))                            # log weight of the network's part
            self.latent_recall = nn.Parameter(torch.zeros(L))                          # log weight of the recall part
            self.recall_sharp = nn.Parameter(torch.full((L,), math.log(0.2)))          # log sharpness of its match
            self.latent_bias = nn.Parameter(torch.zeros(L, B, K))                      # code frequencies inside a side
            self.given_structure = nn.Parameter(torch.zeros(L, K + 1, K))   # log P(code | the cell's Structure) / P(code)
            self.structure_weight = nn.Parameter(torch.ones(L))             # how much of it the corpus bears out
        if cfg.context_width:   # one per level below Structure (see ContextNet)
            self.context = nn.ModuleList(ContextNet(CONTEXT_TAPS * D + B, cfg.context_width, D, cfg.context_members,
                                                    len(SAME_TAPS) if cfg.context_same else 0) for _ in range(L - 1))
            self.latent_context = nn.Parameter(torch.zeros(L))   # log weight of the part in the mixture
        if cfg.recall_kernel:   # the recall once more, each lent code spread over the codes near its codeword
            self.recall_prec = nn.Parameter(torch.full((L,), math.log(0.5)))   # log precision of that kernel
            self.latent_recall_near = nn.Parameter(torch.zeros(L))             # log weight of the part
        if cfg.product:   # each part's power in the product on top of the mixture (0 = the plain mixture)
            self.latent_product = nn.Parameter(torch.zeros(L, LATENT_PARTS))

    def mixing_tables(self) -> list[nn.Parameter]:
        """The latent path's mixing weights (~100 numbers) that calibrate_latent fits; [] without the path."""
        if not self.cfg.latent_dim:
            return []
        extra = ([self.latent_context] if self.cfg.context_width else []) + \
            ([self.recall_prec, self.latent_recall_near] if self.cfg.recall_kernel else []) + \
            ([self.latent_product] if self.cfg.product else [])
        return [self.latent_prec, self.latent_mix, self.latent_rest, self.latent_recall, self.recall_sharp,
                self.structure_weight, *extra]

    @property
    def mask_index(self) -> int:
        return self.cfg.codebook_size

    def features(self, codes: torch.Tensor, pad: torch.Tensor | None = None) -> PriorFeatures:
        """codes long [N, L, B, T] (T <= window; MASK where unknown), pad bool [N, T] (True = padding) ->
        each cell's output vector and its nearest visible codes, from which `logits` scores any cells."""
        cfg = self.cfg
        N, L, B, T = codes.shape
        if T > cfg.window:
            raise PriorError(f"{T} columns exceed the prior's window of {cfg.window}")
        e, db = cfg.cell_dim, cfg.band_width
        emb = torch.stack([F.embedding(codes[:, q], self.embed[q]) for q in range(L)], 1)  # [N, L, B, T, e]
        x = self.proj_in(emb.permute(0, 3, 1, 2, 4).reshape(N, T, L * B * e)) + self.pos[:T]
        x = self.norm(self.blocks(x, src_key_padding_mask=pad))                       # [N, T, d]
        pos_l, pos_r = nearest_positions(codes, self.mask_index, pad)                 # [N, L, B, T] each
        left, right, gap_l, gap_r = neighbours(codes, self.mask_index, pos_l, pos_r)
        near = torch.stack([F.embedding(left[:, q], self.embed[q]) + F.embedding(right[:, q], self.embed[q])
                            for q in range(L)], 1)                                     # [N, L, B, T, e]
        gaps = self.near_gap(gap_l) - self.near_gap(gap_r)
        cell = torch.cat([emb, near, gaps], -1).permute(0, 2, 3, 1, 4).reshape(N, B, T, 3 * L * e)
        cell = self.cell_in(cell)                                                      # [N, B, T, db]
        z = self.to_bands(x).reshape(N, T, B, db).transpose(1, 2) + cell + self.band[:, None] + self.band_pos[:T]
        band_pad = None if pad is None else pad[:, None].expand(N, B, T).reshape(N * B, T)
        z = self.band_norm(self.band_blocks(z.reshape(N * B, T, db), src_key_padding_mask=band_pad))
        h = self.proj_out(z).reshape(N, B, T, L, e).permute(0, 3, 1, 2, 4)            # [N, L, B, T, e]
        return PriorFeatures(h, left, right, gap_l, gap_r, codes, pos_l, pos_r, pad)

    def logits(self, f: PriorFeatures, q: int, cells: torch.Tensor | None = None,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of level q: for every cell [N, B, T, K], or only where `cells` (bool [N, B, T]) is set [M, K].
        With the latent path they are log-probabilities (the mixture); without, the network's logits.

        Scoring only the cells a loss or a draw needs keeps training and sampling cheap with 256 codes. `context`
        [M, K]: the context part's log-probabilities at those cells when the caller has them (context_from)."""
        out = self.network_logits(f, q, cells)
        if not self.cfg.latent_dim:
            return out
        shape, K = out.shape, self.cfg.codebook_size
        sel = torch.ones(f.h.shape[0], *f.h.shape[2:4], dtype=torch.bool) if cells is None else cells
        parts = self.latent_parts(f, q, sel.nonzero().unbind(1), out.reshape(-1, K), context)
        return self.mix(parts, q).reshape(shape)

    def network_logits(self, f: PriorFeatures, q: int, cells: torch.Tensor | None = None) -> torch.Tensor:
        """The network's own logits of level q (with the frequencies and the copy bonus), shaped as `logits`."""
        K = self.cfg.codebook_size
        if cells is None:
            def pick(t: torch.Tensor) -> torch.Tensor:
                return t[:, q]
            bias = self.bias[q][None, :, None, :]                                       # [1, B, 1, K]
        else:
            def pick(t: torch.Tensor) -> torch.Tensor:
                return t[:, q][cells]
            bias = self.bias[q][cells.nonzero()[:, 1]]                                   # [M, K]
        out = pick(f.h) @ self.embed[q, :K].T + bias
        # a direct route for "the note goes on": a learned bonus on the neighbours' codes, by distance
        for side, (code, gap) in enumerate(((f.left, f.gap_l), (f.right, f.gap_r))):
            c, g = pick(code), pick(gap)
            bonus = self.copy_gain[q, side][g] * (c < K)
            out = out.scatter_add(-1, c.clamp(max=K - 1)[..., None], bonus[..., None])
        return out

    def latent_parts(self, f: PriorFeatures, q: int, where: tuple[torch.Tensor, ...], rest: torch.Tensor,
                     context: torch.Tensor | None = None) -> LatentParts:
        """What the latent path knows about level q at the M cells `where` = (n, b, t), before its tables weigh it
        (see the class doc); `rest` [M, K] is the network's own logits, `context` [M, K] the context part's if
        already computed (it depends on the coarser levels only)."""
        n, b, t = where
        K, L = self.cfg.codebook_size, self.cfg.levels
        books = self.books                                                        # [L, K, D]
        levels = torch.arange(L)
        own = f.codes[n, :, b, t]                                                 # [M, L]
        known = (own[:, :q] < K)                                                  # the cell's visible coarser codes
        own_words = books[levels[:q], own[:, :q].clamp(max=K - 1)]                # [M, q, D]
        near, gaps = [], []
        for pos, gap in ((f.pos_l, f.gap_l), (f.pos_r, f.gap_r)):
            p = pos[n, q, b, t]
            nb = f.codes[n, :, b, p.clamp(min=0)]                                 # [M, L]: that column's codes
            seen = (nb < K) & (p >= 0)[:, None]
            words = books[levels, nb.clamp(max=K - 1)] * seen[..., None]          # [M, L, D]
            # the neighbour's latent, less the coarser codewords the cell itself has: its residual at level q
            both = (known & seen[:, :q])[..., None]
            mu = words[:, q:].sum(1) + ((words[:, :q] - own_words) * both).sum(1)
            near.append(codeword_scores(mu, books[q]))                             # [M, K]
            gaps.append(gap[n, q, b, t])
        dist, row, visible = self._recall_parts(f, q, where)
        structure = self.given_structure[q][f.codes[n, 0, b, t]]                 # [M, K]; row K: Structure hidden
        context_ok = None
        if self.cfg.context_width and q > 0:
            if context is None:
                context = self.context_from(self.context_base(f.codes, q, where, f.pad), f.codes, q, where, f.pad)
            context_ok = known.all(-1)   # fitted on cells whose coarser codes are all known
        else:
            context = None
        return LatentParts(torch.stack(near, 1), torch.stack(gaps, 1), b, dist, row, visible, rest, structure,
                           context, context_ok)

    def context_base(self, codes: torch.Tensor, q: int, where: tuple[torch.Tensor, ...],
                     pad: torch.Tensor | None = None) -> torch.Tensor | None:
        """The context part's first layer at the M cells `where` = (n, b, t) from the coarser codewords alone
        [M, E * H]; None without the part or at Structure. It changes only when a coarser level does, so the
        sampler computes it once per level and only the drawn codes' share (context_from) once per step."""
        if not self.cfg.context_width or q == 0:
            return None
        return self.context[q - 1].inp(context_inputs(self.books, codes, q, where, pad))

    def context_from(self, base: torch.Tensor, codes: torch.Tensor, q: int, where: tuple[torch.Tensor, ...],
                     pad: torch.Tensor | None = None, table: torch.Tensor | None = None) -> torch.Tensor:
        """The context part's log-probabilities [M, K] at the cells `where` from their context_base and, with
        cfg.context_same, the level-q codes drawn around them in codes long [N, L, B, T] (`table`: the level's
        ContextNet.same_table, if the caller keeps it)."""
        net = self.context[q - 1]
        same = same_level_codes(codes, q, self.cfg.codebook_size, where, pad) if self.cfg.context_same else None
        return self.context_logits(net.head(base + net.same_term(same, self.books[q], table)), q, where[1])

    def context_logits(self, mu: torch.Tensor, q: int, band: torch.Tensor, members: bool = False) -> torch.Tensor:
        """The context part's log-probabilities [M, K] of level q >= 1 from its members' expected codewords mu
        [E, M, D] (ContextNet) at cells of the bands `band` [M]: each member's Gaussian over the codewords around
        its mu, on top of the band's code frequencies, averaged over the members ([E, M, K] each if `members`)."""
        net, books = self.context[q - 1], self.books[q]
        logits = net.prec.exp()[:, None, None] * codeword_scores(mu, books) + net.freq[:, None, None] * self.bias[q][band]
        logp = logits.log_softmax(-1)
        return logp if members else logp.logsumexp(0) - math.log(len(logp))

    def mix(self, parts: LatentParts, q: int) -> torch.Tensor:
        """Log-probabilities [M, K] of level q: the mixture of both neighbours' Gaussians over the codewords (their
        precision by gap), the recall (its sharpness; and through the codeword kernel), the network and the
        context part, weighted by gap (the class doc); with cfg.product times each present part to its fitted
        power, renormalised."""
        K = self.cfg.codebook_size
        comps, weights = [], []
        for side in range(2):
            g = parts.gaps[:, side]
            logits = self.latent_prec[q][g].exp()[:, None] * parts.near[:, side] + self.latent_bias[q][parts.band]
            comps.append(logits.log_softmax(-1))
            weights.append(self.latent_mix[q, side][g].masked_fill(g > MAX_GAP, -1e4))
        score = (-self.recall_sharp[q].exp() * parts.dist).masked_fill(~parts.visible, -1e4).log_softmax(-1)
        probs = torch.zeros(len(parts.band), K + 1, dtype=score.dtype).scatter_add(1, parts.row, score.exp())[:, :K]
        floor = 1e-6   # no code impossible, and the result still sums to 1
        rest = (parts.rest + self.structure_weight[q] * parts.structure).log_softmax(-1)
        comps += [(probs * (1 - K * floor) + floor).log(), rest]
        nothing_seen = ~parts.visible.any(-1)   # no visible cell in the band row: nothing to recall
        weights += [self.latent_recall[q].expand_as(weights[0]).masked_fill(nothing_seen, -1e4),
                    self.latent_rest[q].expand_as(weights[0])]
        if self.cfg.recall_kernel:
            kernel = (self.recall_prec[q].exp() * codeword_scores(self.books[q], self.books[q])).softmax(-1)   # [K, K]
            comps.append((probs @ kernel * (1 - K * floor) + floor).log())
            weights.append(self.latent_recall_near[q].expand_as(weights[0]).masked_fill(nothing_seen, -1e4))
        if parts.context is not None and parts.context_ok is not None:
            comps.append(parts.context.log_softmax(-1))
            weights.append(self.latent_context[q].expand_as(weights[0]).masked_fill(~parts.context_ok, -1e4))
        raw, parts_logp = torch.stack(weights, -1), torch.stack(comps, -1)       # [M, parts], [M, K, parts]
        out = (parts_logp + raw.log_softmax(-1)[:, None, :]).logsumexp(-1)
        if not self.cfg.product:
            return out
        # a mixture can only average what its parts know; where two of them know something about the same cell
        # (its Structure's context and the codes drawn beside it) the product of their powers sharpens it
        power = self.latent_product[q, :len(comps)] * (raw > -1e3)                 # [M, parts]; 0 where absent
        return (out + (parts_logp @ power[:, :, None])[..., 0]).log_softmax(-1)

    def _recall_parts(self, f: PriorFeatures, q: int, where: tuple[torch.Tensor, ...]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the recall at the cells `where`: the squared distance [M, T] from each cell's known coarser codewords
        to those of every column of its band row, that row's level-q codes [M, T] and which are visible [M, T]."""
        n, b, t = where
        K, T = self.cfg.codebook_size, f.codes.shape[-1]
        if q == 0:   # nothing coarser to match: every visible cell of the band lends equally (the clip's own usage)
            dist = torch.zeros(len(n), T)
        else:        # each band row's pairwise distances once, then the cells' rows of them
            key = coarser_latent(self.books, f.codes, q)                          # [N, B, T, D]
            sq = key.square().sum(-1)
            pair = sq[..., :, None] + sq[..., None, :] - 2 * key @ key.transpose(-1, -2)   # [N, B, T, T]
            dist = pair[n, b, t].clamp(min=0)                                     # [M, T]
        row = f.codes[n, q, b]                                                    # [M, T]: the cell's band row
        visible = row < K
        if f.pad is not None:
            visible = visible & ~f.pad[n]
        return dist, row, visible

    def forward(self, codes: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """codes long [N, L, B, T] -> logits float [N, L, B, T, K] of every level (see features / logits)."""
        f = self.features(codes, pad)
        return torch.stack([self.logits(f, q) for q in range(codes.shape[1])], 1)


@dataclass
class PriorFeatures:
    """What CodePrior.features computes once per pass: h float [N, L, B, T, e] (each cell's output vector) and,
    per cell, the nearest visible codes of its level and band, their distances and columns (long [N, L, B, T])."""

    h: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    gap_l: torch.Tensor
    gap_r: torch.Tensor
    codes: torch.Tensor                 # the input codes [N, L, B, T] (MASK where hidden)
    pos_l: torch.Tensor                 # where those nearest visible codes are (column, -1 = none) [N, L, B, T]
    pos_r: torch.Tensor
    pad: torch.Tensor | None = None     # bool [N, T], True = padding


@dataclass
class LatentParts:
    """The latent path's per-cell evidence for one level at M cells, before its mixing tables weigh it (so the
    tables can be fitted on it cheaply): near float [M, 2, K] (mu.c - |c|^2/2 for the left and right
    neighbours' predictions), gaps long [M, 2], band long [M], dist float [M, T] / row long [M, T] /
    visible bool [M, T] (the recall's band row), rest float [M, K] (the network's logits), structure float
    [M, K] (the cell's Structure code's gain, given_structure); context float [M, K] / context_ok bool [M] (the
    context part's logits and where it applies; None at Structure or without the part)."""

    near: torch.Tensor
    gaps: torch.Tensor
    band: torch.Tensor
    dist: torch.Tensor
    row: torch.Tensor
    visible: torch.Tensor
    rest: torch.Tensor
    structure: torch.Tensor
    context: torch.Tensor | None = None
    context_ok: torch.Tensor | None = None


class ContextNet(nn.Module):
    """The latent path's context part for one level: E small networks, each mapping a cell's context_inputs
    [M, F] to the codeword of the level [E, M, D] it expects, with its own precision and frequency weight.
    Few thousand cells fit one network loosely; the members' average scored 0.13-0.19 bits/code better than
    one member on held-out drums (benchmarks/README.md). One wide first layer computes all members at once.

    With `same` taps (PriorConfig.context_same) the first layer also reads the level's own codes already drawn
    around the cell (same_level_codes): the bands beside it in its column and its band's neighbouring columns.
    A drum hit's Timbre across the bands of one column is one spectral shape, so each code the sampler draws
    tells the cells still hidden in that column what to expect. Each tap adds W_s c + v_s for a drawn code
    with codeword c and nothing for a hidden one: linear in the codeword, so codes that sound alike weigh alike."""

    def __init__(self, inputs: int, width: int, dim: int, members: int, same: int = 0):
        super().__init__()
        self.members, self.width = members, width
        self.inp = nn.Linear(inputs, members * width)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Parameter(torch.randn(members, width, dim) / math.sqrt(width))
        self.out_bias = nn.Parameter(torch.zeros(members, 1, dim))
        self.prec = nn.Parameter(torch.zeros(members))     # log precision of each member's Gaussian
        self.freq = nn.Parameter(torch.ones(members))      # weight of the code frequencies inside it
        if same:   # zero at first: the part starts as it is without the taps
            self.same = nn.Parameter(torch.zeros(same, dim, members * width))
            self.same_seen = nn.Parameter(torch.zeros(same, members * width))

    def forward(self, x: torch.Tensor, same: torch.Tensor | None = None, books: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x: context_inputs [M, F] (and with taps, same_level_codes long [M, S] and the level's codewords books
        [K, D]) -> the members' expected codewords [E, M, D]."""
        return self.head(self.inp(x) + self.same_term(same, books))

    def same_term(self, same: torch.Tensor | None, books: torch.Tensor | None, table: torch.Tensor | None = None
                  ) -> torch.Tensor | float:
        """The first layer's share from the drawn codes around the cells: same long [M, S] (K = hidden, padding or
        off the grid), books float [K, D] -> [M, E * H]; 0 without taps. `table`: same_table(books) if the caller
        keeps it (it depends on the weights and codewords only)."""
        if same is None or not hasattr(self, "same"):
            return 0.0
        table = self.same_table(books) if table is None else table
        return table[torch.arange(same.shape[1]), same].sum(1)

    def same_table(self, books: torch.Tensor) -> torch.Tensor:
        """Each tap's first-layer share for each code [S, K + 1, E * H] (row K, a hidden code: nothing)."""
        table = torch.einsum("kd,sdh->skh", books, self.same) + self.same_seen[:, None]        # [S, K, E * H]
        return F.pad(table, (0, 0, 0, 1))

    def head(self, pre: torch.Tensor) -> torch.Tensor:
        """The first layer's output pre [M, E * H] -> the members' expected codewords [E, M, D]."""
        h = self.drop(F.gelu(pre)).reshape(len(pre), self.members, self.width).transpose(0, 1)   # [E, M, H]
        return h @ self.out + self.out_bias


def codeword_scores(mu: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """mu.c - |c|^2 / 2 for every codeword c of books float [K, D] given mu float [..., D] -> [..., K]: -|mu - c|^2 / 2
    up to a constant per mu, so a precision times it is a Gaussian around mu over the codewords, as logits."""
    return mu @ books.T - 0.5 * books.square().sum(-1)


CONTEXT_TAPS = 8   # coarser latents the context part reads: the cell, bands +-1, columns +-1 and +-2, the column mean


def coarser_latent(books: torch.Tensor, codes: torch.Tensor, q: int, pad: torch.Tensor | None = None) -> torch.Tensor:
    """The sum of each cell's known codewords of the levels coarser than q: books float [L, K, D], codes long
    [N, L, B, T] (K = hidden; hidden codes and padding, pad bool [N, T], add nothing) -> float [N, B, T, D]."""
    K = books.shape[1]
    seen = codes[:, :q] < K                                                          # [N, q, B, T]
    if pad is not None:
        seen = seen & ~pad[:, None, None, :]
    return sum(books[lv][codes[:, lv].clamp(max=K - 1)] * seen[:, lv, ..., None] for lv in range(q))


def context_inputs(books: torch.Tensor, codes: torch.Tensor, q: int, where: tuple[torch.Tensor, ...],
                   pad: torch.Tensor | None = None) -> torch.Tensor:
    """What the context part reads for level q at the M cells `where` = (n, b, t) of codes long [N, L, B, T]
    (codebook_size = hidden): the sum of the known coarser codewords (books float [L, K, D]) at the cell, the
    bands above and below, one and two columns either side and averaged over the column, then the band one-hot
    -> float [M, CONTEXT_TAPS * D + B]. A hidden code, padding or the grid's edge adds nothing."""
    B = codes.shape[2]
    n, b, t = where
    lat = coarser_latent(books, codes, q, pad)                                      # [N, B, T, D]
    col = lat.mean(1)                                                               # [N, T, D]
    lat = F.pad(lat, (0, 0, 2, 2, 1, 1))                                            # zero bands / columns around
    taps = [lat[n, b + 1 + db, t + 2 + dt] for db, dt in ((0, 0), (1, 0), (-1, 0), (0, -1), (0, 1), (0, -2), (0, 2))]
    return torch.cat([*taps, col[n, t], F.one_hot(b, B).to(lat.dtype)], -1)


SAME_TAPS = ((1, 0), (-1, 0), (2, 0), (-2, 0), (0, -1), (0, 1))   # (band, column) offsets of same_level_codes


def same_level_codes(codes: torch.Tensor, q: int, k: int, where: tuple[torch.Tensor, ...],
                     pad: torch.Tensor | None = None) -> torch.Tensor:
    """The level-q codes the context part's taps read at the M cells `where` = (n, b, t) of codes long [N, L, B, T]
    (k = hidden): the bands one and two above and below in the cell's column, its band's columns either side
    (SAME_TAPS) -> long [M, len(SAME_TAPS)], k where the code is hidden, padding or off the grid. Wider taps
    (bands +-3 and +-4, columns +-2, the diagonals) scored no better on held-out drums."""
    n, b, t = where
    row = codes[:, q]                                                              # [N, B, T]
    if pad is not None:
        row = row.masked_fill(pad[:, None, :], k)
    row = F.pad(row, (1, 1, 2, 2), value=k)                                        # [N, B + 4, T + 2]
    return torch.stack([row[n, b + 2 + db, t + 1 + dt] for db, dt in SAME_TAPS], 1)


LATENT_PARTS = 6   # the mixture's parts at most: both neighbours, the recall, the network, the kernel recall, the context
MAX_GAP = 16   # distances to the nearest visible code are told apart up to this many columns


def nearest_visible(codes: torch.Tensor, mask_index: int, pad: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every cell, the nearest visible code of the same level and band to its left and to its right.

    codes long [N, L, B, T] (mask_index = hidden) -> (left, right, gap_left, gap_right), each [N, L, B, T]:
    codes (mask_index where none) and distances in columns (0 = the cell itself is visible, MAX_GAP + 1 =
    none or farther). Held notes and repeated frames make the neighbours the best single guess, and
    a column embedding cannot carry 48 codes to copy; this hands them to every cell directly."""
    return neighbours(codes, mask_index, *nearest_positions(codes, mask_index, pad))


def nearest_positions(codes: torch.Tensor, mask_index: int, pad: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns of each cell's nearest visible code of its level and band, left and right (-1 = none):
    codes long [N, L, B, T] -> two long [N, L, B, T]; padding (pad bool [N, T]) is never visible."""
    N, L, B, T = codes.shape
    visible = codes != mask_index
    if pad is not None:
        visible = visible & ~pad[:, None, None, :]
    pos = torch.arange(T).expand(N, L, B, T)
    left_idx = torch.where(visible, pos, torch.full_like(pos, -1)).cummax(-1).values
    right_rev = torch.where(visible.flip(-1), pos, torch.full_like(pos, -1)).cummax(-1).values
    right_idx = torch.where(right_rev >= 0, T - 1 - right_rev, torch.full_like(pos, -1)).flip(-1)
    return left_idx, right_idx


def neighbours(codes: torch.Tensor, mask_index: int, left_idx: torch.Tensor, right_idx: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The codes at `nearest_positions` and their distances (see nearest_visible), each long [N, L, B, T]."""
    pos = torch.arange(codes.shape[-1]).expand_as(codes)
    none = torch.full_like(codes, mask_index)
    left = torch.where(left_idx >= 0, codes.gather(-1, left_idx.clamp(min=0)), none)
    right = torch.where(right_idx >= 0, codes.gather(-1, right_idx.clamp(min=0)), none)
    far = MAX_GAP + 1
    gap_l = torch.where(left_idx >= 0, (pos - left_idx).clamp(max=far), torch.full_like(pos, far))
    gap_r = torch.where(right_idx >= 0, (right_idx - pos).clamp(max=far), torch.full_like(pos, far))
    return left, right, gap_l, gap_r


def build_prior(cfg: PriorConfig, tensors: dict[str, torch.Tensor] | None = None) -> CodePrior:
    """A CodePrior from its config and (optionally) saved tensors; PriorError when they do not match.

    The skeleton is built on the meta device first and compared with the tensors, so a crafted
    config never allocates more than the file holds."""
    if tensors is None:
        return CodePrior(cfg).eval()
    with torch.device("meta"):
        skeleton = CodePrior(cfg)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        diff = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise PriorError(f"prior weights do not match its settings (e.g. {diff[0]})")
    if any(not torch.isfinite(v).all() for v in tensors.values()):
        raise PriorError("prior weights are not finite")
    model = CodePrior(cfg)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def prior_tensors(model: CodePrior) -> dict[str, torch.Tensor]:
    """The prior's weights named for the model file (`prior.` + parameter name), contiguous CPU copies."""
    return {PRIOR_PREFIX + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------- masks
MASK_KINDS = ("tokens", "span", "rect", "level")


def cosine_ratio(u: float) -> float:
    """MaskGIT's schedule: u ~ U(0, 1) -> share masked, weighted toward heavy masking."""
    return math.cos(math.pi * u / 2)


def training_mask(levels: int, bands: int, columns: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """bool [levels, bands, columns]: the cells to hide for one training example, shaped like edits.

    tokens: random cells at a cosine ratio. span: whole columns, 1 + Geometric(1/6) wide 80% of the time, else
    1 to the window (capped at it). rect: a band x time rectangle of such a width.
    level: a whole level at a cosine ratio (SoundStorm). In span/rect/level one level q is the one being
    drawn: coarser levels stay visible, finer ones are hidden too (usually) or kept, and level q's
    cells inside the shape are hidden at a cosine ratio, the states iterative decoding passes through.
    Never empty."""
    kind = kind or str(rng.choice(MASK_KINDS, p=(0.15, 0.45, 0.25, 0.15)))
    m = np.zeros((levels, bands, columns), dtype=bool)
    if kind == "tokens":
        m = rng.random(m.shape) < cosine_ratio(rng.random())
    else:
        if kind == "level":
            r0, r1, c0, c1 = 0, bands - 1, 0, columns - 1
        else:
            width = int(min(columns, 1 + rng.geometric(1 / 6) if rng.random() < 0.8 else rng.integers(1, columns + 1)))
            c0 = int(rng.integers(0, columns - width + 1))
            c1 = c0 + width - 1
            if kind == "rect":
                h = int(rng.integers(1, bands + 1))
                r0 = int(rng.integers(0, bands - h + 1))
                r1 = r0 + h - 1
            else:
                r0, r1 = 0, bands - 1
        q = int(rng.integers(0, levels))
        shape = m[q, r0:r1 + 1, c0:c1 + 1].shape
        m[q, r0:r1 + 1, c0:c1 + 1] = rng.random(shape) < cosine_ratio(rng.random())
        if rng.random() < 0.75:
            m[q + 1:, r0:r1 + 1, c0:c1 + 1] = True
    if not m.any():
        m[tuple(int(rng.integers(0, n)) for n in m.shape)] = True
    return m


def edit_mask(levels: int, bands: int, columns: int, rng: np.random.Generator, keep_levels: int = 1,
              max_span: int = 16) -> np.ndarray:
    """bool [levels, bands, columns]: the benchmark's and validation's edit-shaped mask: a span of 1-max_span
    columns, every band, levels from `keep_levels` up hidden (Structure kept by default)."""
    width = int(rng.integers(1, min(max_span, columns) + 1))
    c0 = int(rng.integers(0, columns - width + 1))
    m = np.zeros((levels, bands, columns), dtype=bool)
    m[min(keep_levels, levels - 1):, :, c0:c0 + width] = True
    return m


# ---------------------------------------------------------------------- data
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


# ---------------------------------------------------------------------- training
@dataclass
class PriorResult:
    """A trained prior plus what `distill info` shows about it."""

    model: CodePrior
    meta: dict = field(default_factory=dict)   # config, codec fingerprint, files, steps, best validation bits


def log_frequencies(corpus: CodeCorpus, k: int) -> np.ndarray:
    """float [levels, bands, K]: log of each (level, band)'s code frequencies in the corpus (add-one)."""
    L, B = corpus.grids[0].shape[:2]
    counts = np.ones((L, B, k))
    for g in corpus.grids:
        for q in range(L):
            for b in range(B):
                counts[q, b] += np.bincount(g[q, b], minlength=k)[:k]
    return np.log(counts / counts.sum(-1, keepdims=True))


def copy_gains(corpus: CodeCorpus, log_freq: np.ndarray) -> np.ndarray:
    """float [levels, MAX_GAP + 2]: the logit bonus that makes "the nearest visible code, `gap` columns away"
    as likely as it is in the corpus (the share of cells whose code equals the one `gap` columns earlier in
    the same band), on top of code frequencies of perplexity-many codes; split between the two sides."""
    L = log_freq.shape[0]
    out = np.zeros((L, MAX_GAP + 2))
    for q in range(L):
        p = np.exp(log_freq[q])
        typical = float(np.exp(-(p * log_freq[q]).sum(-1)).mean())      # perplexity: how many codes are in play
        base = 1.0 / max(typical, 1.0)
        for gap in range(1, MAX_GAP + 1):
            same = [float((g[q, :, gap:] == g[q, :, :-gap]).mean()) for g in corpus.grids if g.shape[2] > gap]
            if not same:
                continue
            share = float(np.clip(np.mean(same), 1e-3, 0.999))
            out[q, gap] = max(0.0, 0.5 * math.log(share * (1 - base) / (base * (1 - share))))
    return out


def initial_prior(cfg: PriorConfig, corpus: CodeCorpus, codebooks: torch.Tensor | None = None) -> CodePrior:
    """An untrained CodePrior that already scores like the baselines it must beat: the code frequencies of
    `corpus` (what randomize draws from), a bonus for copying the nearest visible code and, with the codec's
    codewords (float [levels, K, latent_dim], needed when cfg.latent_dim > 0), the latent path."""
    model = CodePrior(cfg)
    log_freq = log_frequencies(corpus, cfg.codebook_size)
    logf = torch.from_numpy(log_freq).float()
    with torch.no_grad():
        model.bias.copy_(logf)
        gains = torch.from_numpy(copy_gains(corpus, log_freq)).float()
        model.copy_gain.copy_(gains[:, None, :].expand_as(model.copy_gain))
        if cfg.latent_dim:
            if codebooks is None:
                raise PriorError("a prior with a latent path needs the codec's codewords")
            model.books.copy_(torch.as_tensor(codebooks).float())
            model.latent_bias.copy_(0.5 * logf)   # half the frequencies inside a side's Gaussian scored best
            model.given_structure.copy_(torch.from_numpy(structure_gain(corpus, cfg.codebook_size)).float())
    return model


CONTEXT_WIDTH = 64        # the context part's hidden width (64 and 128 within noise on drums, 64 is faster)
CONTEXT_CELLS = 16384     # most training cells per level the context part is fitted on (a 500-clip corpus has ~1M)
# of the prior's budget the context part may take. Its fit is what a short budget buys: at the default share's 24 s
# (prior held-out bits, drums / tonal, two or three runs each) 0.4 gave 5.70-5.76 / 3.84-3.87, 0.9 5.39-5.53 /
# 3.74-3.78; the transformer's training after it moved nothing beyond the held-out noise. At 2 minutes the fit
# stops on its step cap first (0.4: 5.109, 0.9: 5.101). 0.85: the calibration after it still ends near the budget.
CONTEXT_SHARE = 0.85


@dataclass
class ContextCells:
    """Cells of one level for fitting its context part (context_examples): inputs float [M, F] (context_inputs),
    band long [M], codes long [M] (the level's code at each), same long [M, S] (same_level_codes of the whole
    grid, every one drawn; the fit hides a random share of them, as the sampler has drawn a random share)."""

    inputs: torch.Tensor
    band: torch.Tensor
    codes: torch.Tensor
    same: torch.Tensor


def context_examples(model: CodePrior, corpus: CodeCorpus, q: int, cap: int, rng: np.random.Generator) -> ContextCells:
    """Up to `cap` random cells of the corpus for the context part of level q. Every coarser code is known, as
    when it is used."""
    total = sum(g.shape[1] * g.shape[2] for g in corpus.grids)
    share = min(1.0, cap / max(total, 1))
    K = model.cfg.codebook_size
    xs, bands, ys, same = [], [], [], []
    for g in corpus.grids:
        pick = (rng.random(g.shape[1:]) < share).nonzero()
        if not len(pick[0]):
            continue
        b, t = (torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in pick)
        codes = torch.from_numpy(g)[None]
        where = (torch.zeros_like(b), b, t)
        xs.append(context_inputs(model.books, codes, q, where))
        same.append(same_level_codes(codes, q, K, where))
        bands.append(b)
        ys.append(codes[0, q, b, t])
    if not xs:
        empty = torch.zeros(0, dtype=torch.long)
        return ContextCells(torch.zeros(0, CONTEXT_TAPS * model.cfg.latent_dim + model.cfg.bands), empty, empty,
                            torch.zeros(0, len(SAME_TAPS), dtype=torch.long))
    return ContextCells(torch.cat(xs), torch.cat(bands), torch.cat(ys), torch.cat(same))


def partly_drawn(same: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """same_level_codes long [M, S] with each cell's taps hidden (k) but for a random share r ~ U(0, 1) of them:
    while a level is drawn, anything from none to nearly all of the cells around a cell are drawn already."""
    r = torch.rand(len(same), 1, generator=gen)
    return same.masked_fill(torch.rand(same.shape, generator=gen) >= r, k)


def fit_context(model: CodePrior, train: CodeCorpus, val: CodeCorpus | None, steps: int = 1000, seed: int = 0,
                seconds: float = math.inf) -> float:
    """Fit the context part (cfg.context_width > 0) of every level below Structure: the map from the coarser
    codewords around a cell to its own, on the training files' cells, keeping the state that scores best on
    the held-out files' cells (fit_context_level; `steps` and `seconds` are split evenly over the levels;
    150 steps without held-out files). ~30 s on 2 cores for 5800 cells per level; its gain grows slowly with
    steps (drums: 200 steps 17.4%, 400 19.9%, up to 1000 20.7% below the frequencies, benchmarks/README.md).
    Returns the held-out bits/code of the part alone (nan without held-out files)."""
    cfg = model.cfg
    if not cfg.context_width:
        return math.nan
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    total, count = 0.0, 0
    start = time.perf_counter()
    for q in range(1, cfg.levels):
        cells = context_examples(model, train, q, CONTEXT_CELLS, rng)
        held = context_examples(model, val, q, CONTEXT_CELLS // 2, rng) if val is not None else None
        if not len(cells.codes):
            continue
        deadline = start + seconds * q / (cfg.levels - 1)
        if held is None or not len(held.codes):
            fit_context_level(model, q, cells, None, 150, deadline, gen)
            continue
        best = fit_context_level(model, q, cells, held, steps, deadline, gen)
        total += best * len(held.codes)
        count += len(held.codes)
    model.eval()
    return total / count / math.log(2) if count else math.nan


def fit_context_level(model: CodePrior, q: int, cells: ContextCells, held: ContextCells | None, steps: int,
                      deadline: float, gen: torch.Generator, batch: int = 512, patience: int = 200) -> float:
    """Train level q's context members on `cells` (each member on its own loss), checking the held-out cells every
    25 steps and keeping the best state, until `patience` steps bring no gain or `steps` or the clock (deadline,
    perf_counter seconds) run out. Returns the kept state's held-out nats/code (inf without held-out cells).
    With the drawn codes' taps, each batch hides a fresh random share of them (partly_drawn); the held-out cells
    keep one fixed draw, so their scores compare."""
    net, books, K = model.context[q - 1], model.books[q], model.cfg.codebook_size
    taps = [net.same, net.same_seen] if model.cfg.context_same else []
    opt = torch.optim.AdamW([{"params": [net.inp.weight, net.inp.bias, net.out, net.out_bias, *taps], "weight_decay": 0.1},
                             {"params": [net.prec, net.freq], "weight_decay": 0.0}], lr=3e-3)
    use_same = bool(model.cfg.context_same)
    held_same = partly_drawn(held.same, K, torch.Generator().manual_seed(1)) if held is not None and use_same else None

    def score() -> float:
        if held is None:
            return math.inf
        model.eval()
        with torch.no_grad():
            mu = net(held.inputs, held_same, books)
            return float(F.nll_loss(model.context_logits(mu, q, held.band), held.codes))

    best, best_state, last_gain = score(), copy.deepcopy(net.state_dict()), 0
    for step in range(steps):
        model.train()
        idx = torch.randint(0, len(cells.codes), (min(batch, len(cells.codes)),), generator=gen)
        same = partly_drawn(cells.same[idx], K, gen) if use_same else None
        logp = model.context_logits(net(cells.inputs[idx], same, books), q, cells.band[idx], members=True)
        loss = -logp.gather(-1, cells.codes[idx].expand(len(logp), -1)[..., None]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if held is not None and step % 25 == 24:
            now = score()
            if now < best:
                best, best_state, last_gain = now, copy.deepcopy(net.state_dict()), step
            elif step - last_gain >= patience:   # held-out cells stopped improving: it only overfits from here
                break
        if time.perf_counter() > deadline:
            break
    if held is not None:
        net.load_state_dict(best_state)
    model.eval()
    return best


CALIBRATION_STEPS = 50    # Adam steps on the latent path's mixing tables (~100 numbers): as good as 100, half the time


def calibration_mask(levels: int, bands: int, columns: int, rng: np.random.Generator) -> np.ndarray:
    """An edit-shaped mask (edit_mask) that keeps Structure half the time, redraws every level a quarter of the
    time and keeps Structure + Timbre the rest: the selections Regenerate is used on."""
    keep = int(rng.choice([0, 1, 2], p=[0.25, 0.5, 0.25]))
    return edit_mask(levels, bands, columns, rng, keep_levels=min(keep, levels - 1))


def part_drawn_stages(hide: torch.Tensor, gen: torch.Generator) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """One pass per level, like level_stages, caught part-way through drawing it: in each crop a random share
    r ~ U(0, 1) of the level's hidden cells is drawn already (visible, true codes) and the rest is scored.
    That is where the sampler's steps find a level, so the mixture is fitted for it in one pass per level
    (drawing_stages' every step would cost ~8x as long)."""
    out = []
    for q in range(hide.shape[1]):
        cells = hide[:, q]
        r = torch.rand(len(hide), 1, 1, generator=gen)
        scored_q = cells & (torch.rand(cells.shape, generator=gen) >= r)
        if not bool(scored_q.any()):
            continue
        out.append(stage_of(hide, q, scored_q, scored_q))
    return out


def calibrate_latent(model: CodePrior, corpus: CodeCorpus, steps: int = CALIBRATION_STEPS, crops: int = 96,
                     seed: int = 0) -> float:
    """Fit the latent path's mixing tables (each side's precision and weight by gap, the recall's sharpness and
    weight, the network's weight and how much of the Structure gain to trust) to edit-shaped masks of
    `corpus`, level by level as the sampler draws; everything else stays. Their starting values are guesses; how far a note holds, or how often a hit
    recurs, is the corpus's own. The evidence is computed once and only the mixing is repeated, so this
    takes seconds. Returns the fitted bits/code on those masks. Give it held-out files: the code tables
    were counted on the training files, which flatters them there."""
    cfg = model.cfg
    K = cfg.codebook_size
    rng = np.random.default_rng(seed)
    files = corpus.subset(sorted(rng.permutation(len(corpus.grids))[:crops].tolist()))
    sets = [fixed_eval_set(files, cfg.window, K, per_file=2, limit=crops, seed=seed + i, mask_fn=calibration_mask)
            for i in range(max(1, min(16, math.ceil(crops / min(crops, 2 * len(files.grids))))))]
    codes, pad, hide = (torch.cat(parts) for parts in zip(*sets, strict=True))   # a few files: more masks each
    evidence = []
    model.eval()
    with torch.no_grad():
        for q, shown, scored in part_drawn_stages(hide, torch.Generator().manual_seed(seed)):
            cells = scored[:, q]
            f = model.features(codes.masked_fill(shown, K), pad)
            parts = model.latent_parts(f, q, cells.nonzero().unbind(1), model.network_logits(f, q, cells))
            evidence.append((q, parts, codes[:, q][cells]))
    if not evidence:
        return math.nan
    opt = torch.optim.Adam(model.mixing_tables(), lr=0.05)
    count = sum(len(target) for _, _, target in evidence)
    for _ in range(steps):
        loss = sum(-model.mix(parts, q).gather(1, target[:, None]).sum() for q, parts, target in evidence) / count
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        bits = float(sum(-model.mix(parts, q).gather(1, target[:, None]).sum() for q, parts, target in evidence)
                     / count / math.log(2))
    return bits


STRUCTURE_SMOOTHING = 16.0   # pseudo-counts toward the code frequencies (the best of 1-64 in prior_ceiling.py)


def structure_gain(corpus: CodeCorpus, k: int, smoothing: float = STRUCTURE_SMOOTHING) -> np.ndarray:
    """float [levels, k + 1, k]: log P(code | the same cell's Structure code) - log P(code) for every level
    (level 0 and row k, "Structure hidden", are 0): counts smoothed toward the code frequencies, so a Structure
    code seen a few times says little and an unseen one nothing. One-shots masked whole have no other cue."""
    L = corpus.grids[0].shape[0]
    out = np.zeros((L, k + 1, k))
    for q in range(1, L):
        counts = np.zeros((k, k))
        for g in corpus.grids:
            np.add.at(counts, (g[0].ravel(), g[q].ravel()), 1.0)
        freq = (counts.sum(0) + 1.0) / (counts.sum() + k)
        cond = (counts + smoothing * freq) / (counts.sum(1, keepdims=True) + smoothing)
        out[q, :k] = np.log(cond) - np.log(freq)
    return out


MIN_VAL_GAIN = 0.01   # bits/code a checkpoint must gain on the held-out files to replace the kept one


def improves(bits: float, best: float) -> bool:
    """Whether a validation score replaces the best so far. A gain within the held-out set's noise (~0.01
    bits/code on ~15 files) is not taken: on drums a 0.006-bit better checkpoint scored 0.07 worse on the
    test files than the fitted start it would have replaced (benchmarks/README.md)."""
    return math.isfinite(bits) and (not math.isfinite(best) or bits < best - MIN_VAL_GAIN)


def split_names(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Held-out files for the prior: every file is in one side; at least one training file."""
    if n < 3 or val_fraction <= 0:
        return list(range(n)), []
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    k = max(1, int(round(n * val_fraction)))
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


class PriorTrainer:
    """Train a CodePrior on a corpus within a wall-clock budget, streaming TrainEvents (stage "prior").

    Held-out files are scored every few seconds on edit-shaped masks (bits/code); the best of those
    is kept. cancel() (or the stop file) ends the run with the best so far.
    """

    def __init__(self, corpus: CodeCorpus, codebook_size: int, minutes: float, codec_fingerprint: str = "",
                 config: PriorConfig | None = None, val_names: Sequence[str] | None = None,
                 stop: Callable[[], bool] | None = None, log_every_s: float = 1.0, validate_every_s: float = 5.0,
                 codebooks: torch.Tensor | np.ndarray | None = None):
        """codebooks float [levels, codebook_size, D]: the codec's codewords (Codec.codebooks), which the
        latent path needs; without them the prior has none (config latent_dim 0)."""
        if not (math.isfinite(minutes) and minutes > 0):
            raise PriorError(f"prior minutes must be > 0, got {minutes}")
        L, B = corpus.grids[0].shape[:2]
        codebooks = None if codebooks is None else torch.as_tensor(codebooks).detach().float().cpu()
        D = 0 if codebooks is None else int(codebooks.shape[-1])
        self.config = config or PriorConfig(levels=L, bands=B, codebook_size=codebook_size, latent_dim=D,
                                            context_width=CONTEXT_WIDTH if D else 0, recall_kernel=int(D > 0),
                                            context_same=int(D > 0), product=int(D > 0))
        if (self.config.levels, self.config.bands, self.config.codebook_size) != (L, B, codebook_size):
            raise PriorError(f"prior settings {self.config.levels}x{self.config.bands}x{self.config.codebook_size} "
                             f"do not match the codes {L}x{B}x{codebook_size}")
        if self.config.latent_dim and (codebooks is None or tuple(codebooks.shape) != (L, codebook_size, self.config.latent_dim)):
            raise PriorError(f"a prior with a latent path needs the codec's codewords [{L}, {codebook_size}, "
                             f"{self.config.latent_dim}], got {None if codebooks is None else tuple(codebooks.shape)}")
        self.codebooks = None if codebooks is None else codebooks.clone()
        self.corpus = corpus
        self.minutes = float(minutes)
        self.codec_fingerprint = codec_fingerprint
        self.val_names = None if val_names is None else set(val_names)
        self.stop = stop or (lambda: False)
        self.log_every_s = log_every_s
        self.validate_every_s = validate_every_s
        self.encode_note = ""
        self.shifted: CodeCorpus | None = None   # more encodings of the training files, for the context part
        self._cancelled = False
        self.result: PriorResult | None = None

    @classmethod
    def from_audio(cls, codec: Codec, items: Sequence[tuple[str, torch.Tensor]], minutes: float,
                   stop: Callable[[], bool] | None = None, search_steps: int | None = None) -> PriorTrainer:
        """Encode (name, log-mel) pairs with `codec` and make a trainer for them. The encoding counts against
        `minutes`; by default it uses the codec's default search unless that costs over half the budget
        (`search_steps` as in Codec.encode_mel: an explicit N searches N Adam steps, 0 not at all). Where the
        budget allows (context_shifts), the training clips are encoded again, shifted by parts of a column
        (shifted_items), for the context part alone; the held-out clips never are."""
        if not items:
            raise PriorError("no clips to train the prior on")
        t0 = time.perf_counter()
        if search_steps is None:
            seconds = sum(int(mel.shape[-1]) for _, mel in items) * codec.mel_cfg.hop_length / codec.sample_rate
            search_steps = corpus_search_steps(seconds, minutes * 60.0)
        corpus = encode_corpus(codec, items, search_steps)
        spent = time.perf_counter() - t0
        trainer = cls(corpus, codec.codebook_size, minutes, codec.fingerprint, stop=stop,
                      val_names=(codec.info.dataset or {}).get("val_files"), codebooks=codec.codebooks)
        how = "the default search" if search_steps is None else f"search {search_steps}"
        note = f"encoded {len(items)} clips ({corpus.columns} columns, {how}) in {spent:.1f} s"
        train_idx = trainer._split_indices()[0]
        train_cells = sum(corpus.grids[i].shape[1] * corpus.grids[i].shape[2] for i in train_idx)
        shifts = context_shifts(spent * len(train_idx) / max(1, len(items)), minutes * 60.0 - spent, train_cells)
        if shifts and trainer.config.context_width:
            t1 = time.perf_counter()
            trainer.shifted = encode_corpus(codec, shifted_items([items[i] for i in train_idx], shifts,
                                                                 codec.frames_per_column, silence_frame(codec)),
                                            search_steps)
            note += f", and the training clips {shifts}x more, shifted by parts of a column, in {time.perf_counter() - t1:.1f} s"
        spent = time.perf_counter() - t0
        trainer.minutes = max(minutes * 0.25, minutes - spent / 60.0)
        trainer.encode_note = note + "; "
        return trainer

    def cancel(self) -> None:
        self._cancelled = True

    def _split_indices(self) -> tuple[list[int], list[int]]:
        """The corpus's training and held-out files: the codec's own held-out files where their names line up,
        else the prior's own split."""
        n = len(self.corpus.names)
        if self.val_names is not None:
            val = [i for i, name in enumerate(self.corpus.names) if name in self.val_names]
            held = set(val)
            train = [i for i in range(n) if i not in held]
            if train and val:
                return train, val
        return split_names(n, self.config.val_fraction, self.config.seed)

    def _split(self) -> tuple[CodeCorpus, CodeCorpus | None]:
        train, val = self._split_indices()
        return self.corpus.subset(train), (self.corpus.subset(val) if val else None)

    def run(self) -> Iterator[TrainEvent]:
        t0 = time.perf_counter()   # the budget includes the start and the latent path's fitting
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        train, val = self._split()
        model = initial_prior(cfg, train, self.codebooks)
        K = cfg.codebook_size
        held = val or train
        more = train if self.shifted is None else CodeCorpus(train.names + self.shifted.names,
                                                             train.grids + self.shifted.grids)
        context_bits = fit_context(model, more, val, seed=cfg.seed, seconds=CONTEXT_SHARE * self.minutes * 60.0)
        fitted = list(model.context.parameters()) if cfg.context_width else []
        for p in fitted:   # fitted above, like the mixing tables; training them with the rest only overfits
            p.requires_grad_(False)
        weights = np.array([min(g.shape[2], 10 * cfg.window) for g in train.grids], dtype=np.float64)
        weights /= weights.sum()
        val_set = fixed_eval_set(held, cfg.window, K)
        # a few scalars per code, without decay. Without the latent path they move 10x faster (600 steps moved them
        # too little to matter); with it the start is already near its best for edit-shaped masks and faster
        # tables drifted toward the training masks' mix (held-out bits rose from step 0; benchmarks/README.md)
        tables = [model.bias, model.copy_gain, *model.mixing_tables()]
        if cfg.latent_dim:
            tables += [model.latent_bias, model.given_structure]
        rest = [p for p in model.parameters() if p.requires_grad and all(p is not f for f in tables)]
        opt = torch.optim.AdamW([{"params": rest, "scale": 1.0, "weight_decay": cfg.weight_decay},
                                 {"params": tables, "scale": 1.0 if cfg.latent_dim else 10.0, "weight_decay": 0.0}],
                                lr=cfg.learning_rate)
        budget = self.minutes * 60.0
        yield TrainEvent("start", 0, 0.0, 0.0, eta_s=budget, stage="prior",
                         message=f"prior: {self.encode_note}{len(train.grids)} training / {len(val.grids) if val else 0} validation "
                                 f"files, {train.columns} columns"
                                 f"{'' if val else ' (too few files to hold any out: validating on training files)'}")
        note = ""
        if cfg.latent_dim:
            # 96 crops: 8 s on one core for 256 codes; 48 (half that, ~0.02 bits/code worse) in a budget under a minute
            fit = calibrate_latent(model, held, seed=cfg.seed, crops=96 if self.minutes >= 1.0 else 48)
            context = f", its context part alone {context_bits:.3f}" if math.isfinite(context_bits) else ""
            note = f"; latent path fitted to {len(held.grids)} files' edit-shaped masks: {fit:.3f} bits/code{context}"
        best, best_state, step, history = math.inf, None, 0, []
        last_log = last_val = 0.0
        acc, n_acc, step_times = 0.0, 0, []

        def elapsed() -> float:
            return time.perf_counter() - t0

        def validate(now: float, note: str = "") -> TrainEvent:
            nonlocal best, best_state
            bits = evaluate_bits(model, *val_set)
            if improves(bits, best):
                best, best_state = bits, copy.deepcopy(model.state_dict())
            history.append({"step": step, "val": round(bits, 4)})
            return TrainEvent("validation", step, 0.0, now, max(0.0, budget - now), val_loss=bits,
                              best_val_loss=best, stage="prior",
                              message=f"prior held-out {bits:.3f} bits/code (best {best:.3f}){note}")

        yield validate(elapsed(), note)
        while not (self._cancelled or self.stop()) and elapsed() < budget:
            model.train()
            progress = elapsed() / budget
            lr = cfg.learning_rate * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * progress))
            for g in opt.param_groups:
                g["lr"] = lr * g["scale"]
            ts = time.perf_counter()
            codes, pad = crop_batch(train, cfg.window, cfg.batch_size, rng, weights, K)
            hide = torch.from_numpy(np.stack([training_mask(cfg.levels, cfg.bands, cfg.window, rng)
                                              for _ in range(cfg.batch_size)]))
            hide &= ~pad[:, None, None, :]
            if not hide.any():
                continue
            loss = masked_nll(model, codes, pad, hide, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                acc += float(loss.detach())
                n_acc += 1
            step += 1
            step_times = (step_times + [time.perf_counter() - ts])[-20:]
            now = elapsed()
            if now - last_log >= self.log_every_s and n_acc:
                last_log = now
                mean = acc / n_acc / math.log(2)
                acc, n_acc = 0.0, 0
                history.append({"step": step, "train": round(mean, 4)})
                yield TrainEvent("step", step, 0.0, now, max(0.0, budget - now), None,
                                 len(step_times) / max(sum(step_times), 1e-9), lr, loss=mean, best_val_loss=best,
                                 stage="prior")
            if now - last_val >= self.validate_every_s:
                yield validate(now)
                last_val = elapsed()
        now = elapsed()
        yield validate(now)
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        stopped = self._cancelled or self.stop()
        meta = {"config": cfg.to_dict(), "codec": self.codec_fingerprint, "steps": step,
                "train_seconds": round(now, 1), "best_val_bits": round(best, 4) if math.isfinite(best) else None,
                "train_files": list(train.names)[:500], "val_files": list(val.names)[:500] if val else [],
                "columns": train.columns, "history": history[-300:], "cancelled": bool(stopped)}
        self.result = PriorResult(model, meta)
        yield TrainEvent("done", step, 0.0, now, 0.0, best_val_loss=best, stage="prior",
                         message="prior: cancelled, kept the best so far" if stopped else "prior: finished")


# ---------------------------------------------------------------------- sampling
def hidden_after(total: int, step: int, steps: int) -> int:
    """How many of a level's `total` cells to draw are still hidden after decoding step `step` (0-based) of
    `steps`: the cosine schedule (MaskGIT), few at first, most at the end; the first step draws at least one
    and the last draws the rest."""
    if step + 1 >= steps or total <= 1:
        return 0
    return min(int(math.floor(total * math.cos(math.pi / 2 * (step + 1) / steps))), total - 1)


def level_steps(steps: int, rank: int) -> int:
    """Decoding steps for the rank-th redrawn level (0 = coarsest): steps, steps/3, steps/6, ..."""
    return max(1, int(round(steps / (1, 3, 6, 8, 8, 8, 8, 8)[min(rank, 7)])))


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

    def __init__(self, model: CodePrior, settings: RegenerateSettings):
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


def selection_cells(grid: CodeGrid, region: Region, strength: float, seed: int) -> np.ndarray:
    """bool [levels, bands, columns]: the region's cells to redraw: all of them at strength 1, a seeded
    random share otherwise (round(strength * cells), so strength 0 redraws nothing)."""
    region.validate(grid)
    cells = np.zeros(grid.codes.shape, dtype=bool)
    cells[region.index()] = True
    if strength >= 1.0:
        return cells
    idx = np.flatnonzero(cells)
    keep = int(round(strength * idx.size))
    chosen = np.random.default_rng(int(seed)).choice(idx, size=keep, replace=False) if keep else idx[:0]
    out = np.zeros(cells.size, dtype=bool)
    out[chosen] = True
    return out.reshape(cells.shape)


def sample_cells(model: CodePrior, codes: np.ndarray, todo: np.ndarray, settings: RegenerateSettings) -> list[np.ndarray]:
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
        a = int(np.clip((start + stop + 1) // 2 - window // 2, 0, max(0, T - window)))
        b = min(T, a + window)
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


def _seam_columns(todo: np.ndarray, T: int) -> list[int]:
    """Columns of the selection within EDGE_COLUMNS of a boundary with untouched audio (not the clip's ends)."""
    sel = todo.any(axis=(0, 1))
    out = set()
    for c in np.flatnonzero(sel):
        lo, hi = max(0, c - EDGE_COLUMNS), min(T - 1, c + EDGE_COLUMNS)
        if any(not sel[k] for k in range(lo, hi + 1)):
            out.add(int(c))
    return sorted(out)


def regenerate_region(model: CodePrior | None, grid: CodeGrid, region: Region,
                      settings: RegenerateSettings | None = None) -> list[EditResult]:
    """Redraw `region` of `grid` with the prior: one EditResult per candidate.

    The region's levels are redrawn (coarse to fine), everything else conditions the draw and is
    returned bit-identical. Strength 0 returns the grid unchanged."""
    if model is None:
        raise EditError(NO_PRIOR_HELP)
    settings = settings or RegenerateSettings()
    cfg = model.cfg
    if (grid.num_levels, grid.num_bands) != (cfg.levels, cfg.bands):
        raise EditError(f"the prior is for {cfg.levels} levels x {cfg.bands} bands, the clip has "
                        f"{grid.num_levels} x {grid.num_bands}")
    todo = selection_cells(grid, region, settings.strength, settings.seed)
    with torch.inference_mode():
        drawn = sample_cells(model, grid.codes, todo, settings)
    what = region.describe(grid)
    defaults = RegenerateSettings()
    extra = "".join(f", {name} {value:g}" for name, value, default in (
        ("strength", settings.strength, 1.0), ("temperature", settings.temperature, defaults.temperature),
        ("steps", settings.steps, defaults.steps)) if value != default)
    out = []
    for i, codes in enumerate(drawn):
        codes = np.where(todo, codes, grid.codes)   # belt and braces: only the chosen cells can change
        # the candidates of one draw share a generator: (seed, version i of N) is what reproduces one
        tag = f", version {i + 1} of {settings.candidates}" if settings.candidates > 1 else ""
        label = f"regenerate {what} (seed {settings.seed}{tag}{extra})"
        out.append(EditResult(grid.with_codes(codes), label, region))
    return out


# ---------------------------------------------------------------------- corpus from audio
DEFAULT_SEARCH_SECONDS_PER_SECOND = 0.02  # the default encode's cost per second of audio, two cores: ~1/5 of 20 Adam steps' 0.1
MAX_CORPUS_SECONDS_PER_FILE = 120.0   # longer files add their first two minutes: enough context, bounded time


CONTEXT_SHIFTS = 2          # more encodings of each training clip for the context part (benchmarks/README.md)
SHIFT_SHARE = 0.25          # of the prior's budget (after the corpus's own encoding) they may take


def context_shifts(encode_seconds: float, budget_s: float, cells: int) -> int:
    """How many shifted encodings of the training clips the context part gets (shifted_items): CONTEXT_SHIFTS, fewer
    when encoding them (`encode_seconds` each, what the training clips took once) would take over SHIFT_SHARE of
    the budget left, none when the clips already give the part all the cells it takes (CONTEXT_CELLS)."""
    if cells >= CONTEXT_CELLS:
        return 0
    affordable = int(SHIFT_SHARE * budget_s // max(encode_seconds, 1e-3))
    return max(0, min(CONTEXT_SHIFTS, affordable))


def silence_frame(codec: Codec) -> torch.Tensor:
    """The log-mel column [n_mels, 1] the codec's front end makes of silence."""
    return codec.logmel(torch.zeros(4 * codec.mel_cfg.hop_length))[:, :1]


def shifted_items(items: Sequence[tuple[str, torch.Tensor]], shifts: int, frames_per_column: int,
                  silence: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Each (name, log-mel [n_mels, frames]) again `shifts` times, starting 1/(shifts+1), 2/(shifts+1), ... of a
    column later (whole mel frames of `silence` [n_mels, 1] before it). The same sounds then fall across other
    column boundaries and the codec codes them anew: a 0.17 s column cuts a hit or a loop's period where it
    happens to, so one encoding shows the context part one of many ways its sounds are coded. Fitted on the
    clips and two such copies, the part scored 0.5 bits/code better on held-out drums (benchmarks/README.md)."""
    out = []
    for s in range(1, shifts + 1):
        frames = int(round(frames_per_column * s / (shifts + 1)))
        if frames <= 0:
            continue
        out += [(name, torch.cat([silence.expand(-1, frames), mel], 1)) for name, mel in items]
    return out


def encode_corpus(codec: Codec, items: Sequence[tuple[str, torch.Tensor]], search_steps: int | None = None
                  ) -> CodeCorpus:
    """(name, log-mel [n_mels, frames]) pairs -> their code grids, as the editor's encoder makes them.

    search_steps None = the codec's default search (the codes people edit); 0 = the encoder alone."""
    limit = codec.mel_cfg.num_frames(int(MAX_CORPUS_SECONDS_PER_FILE * codec.sample_rate))
    grids = [codec.encode_mel(mel[:, :limit], search_steps) for _, mel in items]
    return CodeCorpus(tuple(name for name, _ in items), tuple(np.asarray(g, dtype=np.int64) for g in grids))


def corpus_search_steps(total_seconds: float, budget_s: float) -> int | None:
    """The search the corpus is encoded with: None, the codec's default (the codes people edit: the encoder's
    own codes are distributed differently, and a prior trained on them scored ~0.5 bits/code worse on searched
    codes, benchmarks/README.md) unless that would take over half of the prior's budget; then 0, the encoder
    alone (~4x faster; benchmarks/README.md, `encode.py`)."""
    cost = total_seconds * DEFAULT_SEARCH_SECONDS_PER_SECOND
    return None if cost <= 0.5 * budget_s else 0
