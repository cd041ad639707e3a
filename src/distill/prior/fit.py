"""Fitting the prior's parts: the start from the corpus's code frequencies and copy bonus (initial_prior), the context part (fit_context), the latent path's mixing tables
(calibrate_latent) and the Structure gain (structure_gain)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import PriorConfig, PriorError
from .corpus import CodeCorpus, fixed_eval_set
from .evaluate import stage_of
from .masks import edit_mask
from .network import CONTEXT_TAPS, MAX_GAP, SAME_TAPS, CodePrior, context_inputs, same_level_codes


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
# 3.74-3.78; the tables' training loop after it moved nothing beyond the held-out noise. At 2 minutes the fit
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
    """Train level q's context part on `cells`, checking the held-out cells every
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
        logp = model.context_logits(net(cells.inputs[idx], same, books), q, cells.band[idx])
        loss = F.nll_loss(logp, cells.codes[idx])
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
    weight, the tables' weight and how much of the Structure gain to trust) to edit-shaped masks of
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
            parts = model.latent_parts(f, q, cells.nonzero().unbind(1), model.table_logits(f, q, cells))
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
