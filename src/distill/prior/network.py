"""The prior's model: CodePrior (code-frequency and copy tables with the latent path on top), its ContextNet,
the features they read (nearest visible codes, coarser codewords, same-level taps), and
building / naming its weights for the model file."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import PRIOR_PREFIX, PriorConfig, PriorError
from .retrieval import CodeBank, Codewords, bank_from_tensors, bank_tensors


class CodePrior(nn.Module):
    """The prior over code grids: codes [N, L, B, T] with index `codebook_size` meaning MASK -> log-probabilities
    [N, L, B, T, K] of every cell's code (benchmarks/README.md has the figures behind each part).

    Tables: each (level, band)'s code frequencies (`bias`) and a bonus for the nearest visible code of the
    same level and band, by side and distance (`copy_gain`): together "the code frequencies, and the note
    goes on". Without the latent path (cfg.latent_dim 0) they are the prior.

    Latent path (cfg.latent_dim > 0): a code index says nothing about which codes are near it, but the codec's
    codewords do. A held note's latent barely moves, so the nearest visible column's latent minus the cell's
    own known coarser codewords predicts the residual the hidden code quantizes; each side's prediction gives
    a distribution over codes by distance to the codewords (a Gaussian, its precision by level and gap). The
    output is a mixture of the left, the right, the recall, the tables (times the Structure gain) and the
    context part, weighted by level and gap as fitted to the corpus (calibrate_latent). The recall: the visible
    cells of the same level and band whose known coarser codewords match the cell's (a drum hit that recurs in
    a loop) lend their codes, weighted by how close the match is. The context part (cfg.context_width > 0;
    ContextNet, fit_context) predicts the hidden level's codeword from the coarser codewords around the cell
    (its band and the two beside it, two columns either side, the column's mean): a drum one-shot redrawn whole
    has no visible neighbours at its level, only its Structure. With cfg.context_same it also reads the level's
    codes the sampler has drawn around the cell (a hit's Timbre across a column is one shape).

    Removed by the ablation (benchmarks/README.md, "Prior ablation": each cost < 1% of the bits on both
    corpora): the transformer over columns and bands (its output was 0 or nearly at every budget measured,
    so the tables were its whole share), the context part's ensemble, the recall's codeword kernel and the
    product sharpening.
    """

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        L, B, K = cfg.levels, cfg.bands, cfg.codebook_size
        self.bias = nn.Parameter(torch.zeros(L, B, K))                   # log code frequencies by level and band
        # logit bonus for the nearest visible codes, by level / side / gap; it starts as "copy the nearest column"
        # (a strong guess for held sounds) and initial_prior sets it from the corpus
        gap = torch.arange(MAX_GAP + 2, dtype=torch.float32)
        start = torch.where(gap <= MAX_GAP, 2.0 * torch.exp(-gap / 4.0), torch.zeros(()))
        self.copy_gain = nn.Parameter(start.expand(L, 2, MAX_GAP + 2).clone())
        D = cfg.latent_dim
        if D:
            self.register_buffer("books", torch.zeros(L, K, D))                      # the codec's codewords
            g = torch.arange(MAX_GAP + 2, dtype=torch.float32)
            self.latent_prec = nn.Parameter(torch.full((L, MAX_GAP + 2), math.log(3.0)))   # log precision by gap
            self.latent_mix = nn.Parameter((-0.25 * g).expand(L, 2, MAX_GAP + 2).clone())  # log weight of a side by gap
            self.latent_rest = nn.Parameter(torch.zeros(L))                            # log weight of the tables' part
            self.latent_recall = nn.Parameter(torch.zeros(L))                          # log weight of the recall part
            self.recall_sharp = nn.Parameter(torch.full((L,), math.log(0.2)))          # log sharpness of its match
            self.latent_bias = nn.Parameter(torch.zeros(L, B, K))                      # code frequencies inside a side
            self.given_structure = nn.Parameter(torch.zeros(L, K + 1, K))   # log P(code | the cell's Structure) / P(code)
            self.structure_weight = nn.Parameter(torch.ones(L))             # how much of it the corpus bears out
        if cfg.context_width:   # one per level below Structure (see ContextNet)
            self.context = nn.ModuleList(ContextNet(CONTEXT_TAPS * D + B, cfg.context_width, D,
                                                    len(SAME_TAPS) if cfg.context_same else 0) for _ in range(L - 1))
            self.latent_context = nn.Parameter(torch.zeros(L))   # log weight of the part in the mixture
        if cfg.bank_columns:    # the training files' own codes, which regenerate copies from (distill.prior.retrieval)
            self.register_buffer("bank_codes", torch.zeros(L, B, cfg.bank_columns, dtype=torch.int16))
            self.register_buffer("bank_starts", torch.zeros(cfg.bank_files + 1, dtype=torch.int64))
            self.register_buffer("bank_names", torch.zeros(cfg.bank_name_bytes, dtype=torch.uint8))
        self._bank: tuple[CodeBank, Codewords] | None = None
        self._bank_lock = threading.Lock()

    def set_bank(self, bank: CodeBank) -> None:
        """Fill the bank buffers (the config must have been made with retrieval.bank_config(bank))."""
        with torch.no_grad():
            for name, t in bank_tensors(bank).items():
                getattr(self, name).copy_(t)
        self._bank = None

    def bank(self) -> tuple[CodeBank, Codewords] | None:
        """(the code bank, the codewords its matches are measured with), or None: a prior without a bank or
        without codewords (made before either) cannot copy from its corpus. Built once (under a lock: the prior
        is shared by the studio's sessions), then read-only."""
        if not self.cfg.bank_columns or not self.cfg.latent_dim:
            return None
        with self._bank_lock:
            if self._bank is None:
                self._bank = (bank_from_tensors(self.cfg, self.bank_codes, self.bank_starts, self.bank_names),
                              Codewords(self.books.detach().cpu().float().numpy()))
            return self._bank

    def __getstate__(self) -> dict:
        """Pickled (a trained prior crosses the studio's training process): without the lock and the built bank."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        return {**state, "_bank": None, "_bank_lock": None}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._bank_lock = threading.Lock()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        """nn.Module's, and the bank built from the old buffers is dropped."""
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._bank = None
        return out

    def mixing_tables(self) -> list[nn.Parameter]:
        """The latent path's mixing weights (~100 numbers) that calibrate_latent fits; [] without the path."""
        if not self.cfg.latent_dim:
            return []
        extra = [self.latent_context] if self.cfg.context_width else []
        return [self.latent_prec, self.latent_mix, self.latent_rest, self.latent_recall, self.recall_sharp,
                self.structure_weight, *extra]

    @property
    def mask_index(self) -> int:
        return self.cfg.codebook_size

    def features(self, codes: torch.Tensor, pad: torch.Tensor | None = None) -> PriorFeatures:
        """codes long [N, L, B, T] (T <= window; MASK where unknown), pad bool [N, T] (True = padding) -> each
        cell's nearest visible codes of its level and band, from which `logits` scores any cells."""
        if codes.shape[-1] > self.cfg.window:
            raise PriorError(f"{codes.shape[-1]} columns exceed the prior's window of {self.cfg.window}")
        pos_l, pos_r = nearest_positions(codes, self.mask_index, pad)                 # [N, L, B, T] each
        left, right, gap_l, gap_r = neighbours(codes, self.mask_index, pos_l, pos_r)
        return PriorFeatures(left, right, gap_l, gap_r, codes, pos_l, pos_r, pad)

    def logits(self, f: PriorFeatures, q: int, cells: torch.Tensor | None = None,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of level q: for every cell [N, B, T, K], or only where `cells` (bool [N, B, T]) is set [M, K].
        With the latent path they are log-probabilities (the mixture); without, the tables' logits.

        Scoring only the cells a loss or a draw needs keeps training and sampling cheap with 256 codes. `context`
        [M, K]: the context part's log-probabilities at those cells when the caller has them (context_from)."""
        out = self.table_logits(f, q, cells)
        if not self.cfg.latent_dim:
            return out
        shape, K = out.shape, self.cfg.codebook_size
        sel = torch.ones(f.codes[:, q].shape, dtype=torch.bool) if cells is None else cells
        parts = self.latent_parts(f, q, sel.nonzero().unbind(1), out.reshape(-1, K), context)
        return self.mix(parts, q).reshape(shape)

    def table_logits(self, f: PriorFeatures, q: int, cells: torch.Tensor | None = None) -> torch.Tensor:
        """The tables' logits of level q (the code frequencies and the copy bonus), shaped as `logits`."""
        K = self.cfg.codebook_size
        if cells is None:
            def pick(t: torch.Tensor) -> torch.Tensor:
                return t[:, q]
            out = self.bias[q][None, :, None, :].expand(*f.codes[:, q].shape, K)         # [N, B, T, K]
        else:
            def pick(t: torch.Tensor) -> torch.Tensor:
                return t[:, q][cells]
            out = self.bias[q][cells.nonzero()[:, 1]]                                    # [M, K]
        # a direct route for "the note goes on": a learned bonus on the neighbours' codes, by distance
        for side, (code, gap) in enumerate(((f.left, f.gap_l), (f.right, f.gap_r))):
            c, g = pick(code), pick(gap)
            bonus = self.copy_gain[q, side][g] * (c < K)
            out = out.scatter_add(-1, c.clamp(max=K - 1)[..., None], bonus[..., None])
        return out

    def latent_parts(self, f: PriorFeatures, q: int, where: tuple[torch.Tensor, ...], rest: torch.Tensor,
                     context: torch.Tensor | None = None) -> LatentParts:
        """What the latent path knows about level q at the M cells `where` = (n, b, t), before its tables weigh it
        (see the class doc); `rest` [M, K] is the tables' logits, `context` [M, K] the context part's if
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
        [M, H]; None without the part or at Structure. It changes only when a coarser level does, so the
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

    def context_logits(self, mu: torch.Tensor, q: int, band: torch.Tensor) -> torch.Tensor:
        """The context part's log-probabilities [M, K] of level q >= 1 from its expected codewords mu [M, D]
        (ContextNet) at cells of the bands `band` [M]: a Gaussian over the codewords around mu, on top of the
        band's code frequencies."""
        net, books = self.context[q - 1], self.books[q]
        return (net.prec.exp() * codeword_scores(mu, books) + net.freq * self.bias[q][band]).log_softmax(-1)

    def mix(self, parts: LatentParts, q: int) -> torch.Tensor:
        """Log-probabilities [M, K] of level q: the mixture of both neighbours' Gaussians over the codewords (their
        precision by gap), the recall (its sharpness), the tables (with the Structure gain) and the context part,
        weighted by gap (the class doc)."""
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
        if parts.context is not None and parts.context_ok is not None:
            comps.append(parts.context.log_softmax(-1))
            weights.append(self.latent_context[q].expand_as(weights[0]).masked_fill(~parts.context_ok, -1e4))
        raw, parts_logp = torch.stack(weights, -1), torch.stack(comps, -1)       # [M, parts], [M, K, parts]
        return (parts_logp + raw.log_softmax(-1)[:, None, :]).logsumexp(-1)

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
    """What CodePrior.features computes once per pass: per cell, the nearest visible codes of its level and band,
    their distances and columns (long [N, L, B, T])."""

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
    visible bool [M, T] (the recall's band row), rest float [M, K] (the tables' logits), structure float
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
    """The latent path's context part for one level: a small network mapping a cell's context_inputs [M, F] to
    the codeword of the level [M, D] it expects, with a precision and a weight of the code frequencies.
    (An ensemble of 4 scored 0.6-0.8% better on both corpora, below the ablation's 1%: benchmarks/README.md.)

    With `same` taps (PriorConfig.context_same) the first layer also reads the level's own codes already drawn
    around the cell (same_level_codes): the bands beside it in its column and its band's neighbouring columns.
    A drum hit's Timbre across the bands of one column is one spectral shape, so each code the sampler draws
    tells the cells still hidden in that column what to expect. Each tap adds W_s c + v_s for a drawn code
    with codeword c and nothing for a hidden one: linear in the codeword, so codes that sound alike weigh alike."""

    def __init__(self, inputs: int, width: int, dim: int, same: int = 0):
        super().__init__()
        self.inp = nn.Linear(inputs, width)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Parameter(torch.randn(width, dim) / math.sqrt(width))
        self.out_bias = nn.Parameter(torch.zeros(dim))
        self.prec = nn.Parameter(torch.zeros(()))     # log precision of its Gaussian
        self.freq = nn.Parameter(torch.ones(()))      # weight of the code frequencies inside it
        if same:   # zero at first: the part starts as it is without the taps
            self.same = nn.Parameter(torch.zeros(same, dim, width))
            self.same_seen = nn.Parameter(torch.zeros(same, width))

    def forward(self, x: torch.Tensor, same: torch.Tensor | None = None, books: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x: context_inputs [M, F] (and with taps, same_level_codes long [M, S] and the level's codewords books
        [K, D]) -> the expected codewords [M, D]."""
        return self.head(self.inp(x) + self.same_term(same, books))

    def same_term(self, same: torch.Tensor | None, books: torch.Tensor | None, table: torch.Tensor | None = None
                  ) -> torch.Tensor | float:
        """The first layer's share from the drawn codes around the cells: same long [M, S] (K = hidden, padding or
        off the grid), books float [K, D] -> [M, H]; 0 without taps. `table`: same_table(books) if the caller
        keeps it (it depends on the weights and codewords only)."""
        if same is None or not hasattr(self, "same"):
            return 0.0
        table = self.same_table(books) if table is None else table
        return table[torch.arange(same.shape[1]), same].sum(1)

    def same_table(self, books: torch.Tensor) -> torch.Tensor:
        """Each tap's first-layer share for each code [S, K + 1, H] (row K, a hidden code: nothing)."""
        table = torch.einsum("kd,sdh->skh", books, self.same) + self.same_seen[:, None]        # [S, K, H]
        return F.pad(table, (0, 0, 0, 1))

    def head(self, pre: torch.Tensor) -> torch.Tensor:
        """The first layer's output pre [M, H] -> the expected codewords [M, D]."""
        return self.drop(F.gelu(pre)) @ self.out + self.out_bias


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


# the top-level weight names of the parts the ablation removed (the transformer, the recall kernel, the product); every
# prior saved with the context part's ensemble has the transformer's too
RETIRED_WEIGHTS = frozenset({"embed", "proj_in", "pos", "blocks", "norm", "to_bands", "near_gap", "cell_in", "band",
                             "band_pos", "band_blocks", "band_norm", "proj_out", "recall_prec", "latent_recall_near",
                             "latent_product"})


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
    retired = sorted(k for k in set(found) - set(expected) if k.split(".")[0] in RETIRED_WEIGHTS)
    if retired:
        raise PriorError(f"this prior was made by an earlier version of distill and has weights for parts since removed "
                         f"(e.g. {retired[0]}; benchmarks/README.md, \"Prior ablation\"): retrain it with "
                         "`distill prior MODEL.distill FOLDER` (the folder the model was trained on)")
    if expected != found:
        diff = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise PriorError(f"prior weights do not match its settings (e.g. {diff[0]})")
    if any(not torch.isfinite(v).all() for v in tensors.values()):
        raise PriorError("prior weights are not finite")
    model = CodePrior(cfg)
    model.load_state_dict(tensors, strict=True)
    if cfg.bank_columns:
        bank_from_tensors(cfg, model.bank_codes, model.bank_starts, model.bank_names)   # PriorError if broken
    return model.eval()


def prior_tensors(model: CodePrior) -> dict[str, torch.Tensor]:
    """The prior's weights named for the model file (`prior.` + parameter name), contiguous CPU copies."""
    return {PRIOR_PREFIX + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
