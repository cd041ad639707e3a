"""The prior over codes: what regenerate keeps, what it changes, how it is stored, and that it learns."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_PRIOR as TINY
from conftest import patterned_corpus
from safetensors import safe_open
from safetensors.torch import save_file

from distill import DEFAULT_TEMPERATURE, Codec, EditError, Region, apply_operation, parse_region
from distill.bundle import read_info
from distill.cli import candidate_path, main
from distill.edits.operations import RegenerateSettings
from distill.edits.regenerate import regenerate, regenerate_region
from distill.prior import (
    MASK_KINDS,
    CodeCorpus,
    CodePrior,
    PriorConfig,
    PriorError,
    PriorTrainer,
    build_prior,
    calibrate_latent,
    drawing_stages,
    edit_mask,
    evaluate_bits,
    fit_context,
    fixed_eval_set,
    initial_prior,
    level_stages,
    sample_cells,
    training_mask,
)


@pytest.fixture(scope="module")
def grid(prior_codec, clips):
    from distill import load_audio

    wave, sr = load_audio(clips["low"])
    return prior_codec[0].encode(wave, sr, search_steps=0)


# ---------------------------------------------------------------------- what is kept
@pytest.mark.parametrize("region_text", ["Timbre+Detail@0.5-1.2", "Structure@0.3-0.9/2-6", "Detail@0-2.0",
                                         "Structure+Timbre+Detail@1.0-1.4/0-15"])
@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_cells_outside_the_selection_come_back_bit_identical(prior_codec, grid, region_text, strength):
    codec = prior_codec[0]
    region = parse_region(region_text, grid)
    results = regenerate(codec, grid, region, RegenerateSettings(strength=strength, seed=5, candidates=3))
    inside = np.zeros(grid.codes.shape, dtype=bool)
    inside[region.index()] = True
    for r in results:
        assert np.array_equal(r.grid.codes[~inside], grid.codes[~inside])  # kept levels, bands, columns
        assert r.grid.codes.dtype == np.int64 and r.grid.codes.min() >= 0 and r.grid.codes.max() < codec.codebook_size
        assert np.array_equal(r.grid.original_codes, grid.original_codes)  # provenance: still the same recording
    changed = [(r.grid.codes != grid.codes).sum() for r in results]
    assert max(changed) > 0


def test_strength_sets_the_share_of_cells_redrawn(prior_codec, grid):
    codec = prior_codec[0]
    region = parse_region("Timbre+Detail@0.2-1.8", grid)
    cells = region.num_rows * region.num_columns * len(region.levels)
    for strength in (0.25, 0.5):
        r = regenerate(codec, grid, region, RegenerateSettings(strength=strength, seed=2))[0]
        assert (r.grid.codes != grid.codes).sum() <= round(strength * cells)


def test_strength_zero_changes_nothing(prior_codec, grid):
    region = parse_region("Timbre@0.5-1.5", grid)
    r = regenerate(prior_codec[0], grid, region, RegenerateSettings(strength=0.0, candidates=2))
    assert all(np.array_equal(x.grid.codes, grid.codes) for x in r)


def test_same_seed_same_codes_other_seed_other_codes_candidates_differ(prior_codec, grid):
    codec = prior_codec[0]
    region = parse_region("Structure+Timbre+Detail@0.3-1.6", grid)
    a = regenerate(codec, grid, region, RegenerateSettings(seed=11, candidates=3))
    b = regenerate(codec, grid, region, RegenerateSettings(seed=11, candidates=3))
    c = regenerate(codec, grid, region, RegenerateSettings(seed=12, candidates=3))
    assert all(np.array_equal(x.grid.codes, y.grid.codes) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.grid.codes, y.grid.codes) for x, y in zip(a, c, strict=True))
    assert not np.array_equal(a[0].grid.codes, a[1].grid.codes)
    assert not np.array_equal(a[1].grid.codes, a[2].grid.codes)


def test_regions_longer_than_the_window_are_drawn_whole():
    cfg = PriorConfig(levels=2, bands=3, codebook_size=8, **TINY)
    model = build_prior(cfg)
    codes = np.random.default_rng(0).integers(0, 8, size=(2, 3, 70))
    todo = np.zeros(codes.shape, dtype=bool)
    todo[1, :, 5:60] = True  # 55 columns, the window is 16
    out = sample_cells(model, codes, todo, RegenerateSettings(seed=1, candidates=2))
    for o in out:
        assert np.array_equal(o[~todo], codes[~todo])
        assert (o[todo] != codes[todo]).mean() > 0.5  # every part of the span was drawn, none left as it was
        assert o.max() < 8


def test_regenerate_is_an_operation_of_the_text_syntax(prior_codec, grid):
    codec = prior_codec[0]
    r = apply_operation(codec, grid, "regenerate Timbre+Detail@0.5-1.0 --strength 0.5 --seed 4 --temperature 0.8")
    assert "regenerate" in r.label and (r.grid.codes != grid.codes).any()
    same = apply_operation(codec, grid, "regenerate Timbre+Detail@0.5-1.0 --strength 0.5 --seed 4 --temperature 0.8")
    assert np.array_equal(r.grid.codes, same.grid.codes)
    for bad in ("regenerate Timbre@0.5-1.0 --strength 2", "regenerate Timbre@0.5-1.0 --temperature 0",
                "regenerate Timbre@0.5-1.0 --steps 0", "regenerate Timbre@0.5-1.0 --amount 1"):
        with pytest.raises(EditError):
            apply_operation(codec, grid, bad)


# ---------------------------------------------------------------------- masks and learning
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_training_masks_are_never_empty_and_keep_coarser_levels_for_shaped_masks(kind):
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = training_mask(3, 16, 24, rng, kind)
        assert m.shape == (3, 16, 24) and m.any()


def test_a_trained_prior_predicts_held_out_notes_far_better_than_code_frequencies():
    corpus = patterned_corpus(2, 4, 16, files=24, columns=48, seed=3)
    cfg = PriorConfig(levels=2, bands=4, codebook_size=16, **TINY)
    trainer = PriorTrainer(corpus.subset(range(21)), 16, 0.25, config=cfg, validate_every_s=2.0)
    events = list(trainer.run())
    assert events[-1].kind == "done" and trainer.result.meta["steps"] > 20
    held = corpus.subset(range(21, 24))
    codes, pad, hide = fixed_eval_set(held, cfg.window, 16, seed=5)
    bits = evaluate_bits(trainer.result.model, codes, pad, hide)
    frequency_bits = math.log2(16)  # every code is as common: what randomize draws from is uniform
    assert bits < 0.9 * frequency_bits  # an untrained or broken prior scores >= 4 bits


def flicker_corpus(files: int, columns: int, k: int = 32, dim: int = 4, bands: int = 4, noise: float = 0.25,
                   seed: int = 0) -> tuple[CodeCorpus, torch.Tensor]:
    """Held notes as a residual quantizer sees them: each note is a latent held 6-16 columns with a little
    noise on every column, so its codes flicker between neighbouring codewords (copying a code often
    misses; the latent it stands for does not move). -> (corpus of 2-level grids, codewords [2, k, dim])."""
    rng = np.random.default_rng(seed)
    books = np.stack([rng.normal(0, 1.0, (k, dim)), rng.normal(0, 0.4, (k, dim))]).astype(np.float32)
    grids = []
    for _ in range(files):
        z, n = np.zeros((bands, columns, dim), np.float32), 0
        while n < columns:
            length = int(rng.integers(6, 17))
            z[:, n:n + length] = rng.normal(0, 1.0, (bands, 1, dim))
            n += length
        residual, codes = z + rng.normal(0, noise, z.shape), []
        for book in books:
            idx = ((residual[..., None, :] - book) ** 2).sum(-1).argmin(-1)
            codes.append(idx)
            residual = residual - book[idx]
        grids.append(np.stack(codes).astype(np.int64))
    return CodeCorpus(tuple(f"f{i}.wav" for i in range(files)), tuple(grids)), torch.from_numpy(books)


def test_the_latent_path_hears_a_held_note_whose_codes_flicker():
    """The codec's codewords tell which codes are near each other: a prior given them predicts a held-out held
    note's hidden span far better than the same prior without them (same corpus, same start, no training)."""
    corpus, books = flicker_corpus(24, 48)
    train, held = corpus.subset(range(20)), corpus.subset(range(20, 24))
    plain = initial_prior(PriorConfig(levels=2, bands=4, codebook_size=32, **TINY), train).eval()
    latent = initial_prior(PriorConfig(levels=2, bands=4, codebook_size=32, latent_dim=4, **TINY), train, books).eval()
    data = fixed_eval_set(held, TINY["window"], 32, seed=5, mask_fn=lambda L, B, T, rng: edit_mask(L, B, T, rng))
    assert evaluate_bits(latent, *data) < 0.95 * evaluate_bits(plain, *data)   # measured 4.17 vs 4.68 bits
    with pytest.raises(PriorError, match="codewords"):
        initial_prior(latent.cfg, train)


def test_fitting_the_latent_path_falls_back_to_frequencies_where_its_cues_say_nothing():
    """Codes drawn at random (no note holds, nothing recurs, codewords unrelated to the codes): fitted on held-out
    files, the mixture leaves the latent path's guesses and scores about as well as the code frequencies."""
    rng = np.random.default_rng(0)
    corpus = CodeCorpus(tuple(f"f{i}.wav" for i in range(12)), tuple(rng.integers(0, 32, size=(2, 4, 40)) for _ in range(12)))
    books = torch.from_numpy(rng.normal(0, 1, (2, 32, 4)).astype(np.float32))
    model = initial_prior(PriorConfig(levels=2, bands=4, codebook_size=32, latent_dim=4, **TINY), corpus.subset(range(8)), books)
    test = fixed_eval_set(corpus.subset(range(10, 12)), TINY["window"], 32, seed=3)
    start = evaluate_bits(model, *test)
    fitted = calibrate_latent(model, corpus.subset(range(8, 10)))
    assert math.isfinite(fitted)
    uniform = math.log2(32)
    assert start > uniform + 0.4                          # the starting guesses trust cues that are not there
    assert evaluate_bits(model, *test) < uniform + 0.2    # measured 5.87 -> 5.09 bits (uniform: 5.0)


def one_shot_corpus(files: int, k: int = 32, dim: int = 4, bands: int = 4, seed: int = 0) -> tuple[CodeCorpus, torch.Tensor]:
    """Short hits (2-5 columns) as a residual quantizer sees them: each column's Structure latent is random,
    and the finer latent is a fixed function of the Structure latents of its band and the band above, plus
    noise. Redrawn whole, a hit has no visible neighbours at the finer level, only its Structure codes; a
    band's own Structure code does not decide its finer code. -> (corpus of 2-level grids, codewords)."""
    rng = np.random.default_rng(seed)
    books = np.stack([rng.normal(0, 1.0, (k, dim)), rng.normal(0, 0.6, (k, dim))]).astype(np.float32)
    mix = rng.normal(0, 0.5, (2 * dim, dim)).astype(np.float32)
    grids = []
    for _ in range(files):
        T = int(rng.integers(2, 6))
        s = rng.integers(0, k, size=(bands, T))
        above = np.concatenate([s[1:], s[:1]])
        fine = np.concatenate([books[0][s], books[0][above]], -1) @ mix + rng.normal(0, 0.15, (bands, T, dim))
        t = ((fine[..., None, :] - books[1]) ** 2).sum(-1).argmin(-1)
        grids.append(np.stack([s, t]).astype(np.int64))
    return CodeCorpus(tuple(f"hit{i}.wav" for i in range(files)), tuple(grids)), torch.from_numpy(books)


def test_the_context_part_hears_a_hit_redrawn_whole_from_the_structure_around_it():
    """A one-shot's finer codes hidden whole: the context part, fitted on the training hits, reads the coarser
    codewords around each cell and scores held-out hits far better than the same prior without it."""
    corpus, books = one_shot_corpus(240)
    train, val, test = corpus.subset(range(160)), corpus.subset(range(160, 200)), corpus.subset(range(200, 240))
    data = fixed_eval_set(test, TINY["window"], 32, per_file=1, limit=40, seed=5,
                          mask_fn=lambda L, B, T, rng: edit_mask(L, B, T, rng))
    scores = {}
    for width in (0, 32):
        model = initial_prior(PriorConfig(levels=2, bands=4, codebook_size=32, latent_dim=4, context_width=width,
                                          **TINY), train, books)
        alone = fit_context(model, train, val)
        assert math.isfinite(alone) == bool(width)
        calibrate_latent(model, val)
        scores[width] = evaluate_bits(model, *data)
    assert scores[32] < 0.8 * scores[0], scores   # measured 1.57 vs 3.09 bits
    with pytest.raises(PriorError, match="latent path"):
        PriorConfig(levels=2, bands=4, codebook_size=32, context_width=8)


def column_corpus(files: int, k: int = 32, dim: int = 4, bands: int = 4, seed: int = 0) -> tuple[CodeCorpus, torch.Tensor]:
    """Hits whose finer codes across the bands of a column are one spectral shape (one latent per column, a little
    noise per band) and whose Structure codes say nothing about it: only the finer codes already drawn in a
    column tell the others. -> (corpus of 2-level grids, codewords [2, k, dim])."""
    rng = np.random.default_rng(seed)
    books = rng.normal(0, 1.0, (2, k, dim)).astype(np.float32)
    grids = []
    for _ in range(files):
        T = int(rng.integers(3, 8))
        shape = rng.normal(0, 1.0, (1, T, dim)) + rng.normal(0, 0.15, (bands, T, dim))
        fine = ((shape[..., None, :] - books[1]) ** 2).sum(-1).argmin(-1)
        grids.append(np.stack([rng.integers(0, k, size=(bands, T)), fine]).astype(np.int64))
    return CodeCorpus(tuple(f"col{i}.wav" for i in range(files)), tuple(grids)), torch.from_numpy(books)


def test_the_context_part_hears_the_codes_already_drawn_in_the_column():
    """A hit's finer codes hidden whole, Structure telling nothing: scored in the order the sampler draws, each
    code drawn tells the cells still hidden in its column what to expect. The prior whose context part reads
    them (context_same) scores held-out hits far better than the one without; scored with nothing drawn yet
    (levels only) it gains nothing."""
    corpus, books = column_corpus(300)
    train, val, test = corpus.subset(range(200)), corpus.subset(range(200, 250)), corpus.subset(range(250, 300))
    data = fixed_eval_set(test, TINY["window"], 32, per_file=1, limit=50, seed=5,
                          mask_fn=lambda L, B, T, rng: edit_mask(L, B, T, rng))
    drawn, levels = {}, {}
    for same in (0, 1):
        model = initial_prior(PriorConfig(levels=2, bands=4, codebook_size=32, latent_dim=4, context_width=32,
                                          context_same=same, **TINY), train, books)
        fit_context(model, train, val, steps=400)
        calibrate_latent(model, val)
        drawn[same], levels[same] = evaluate_bits(model, *data, steps=8), evaluate_bits(model, *data)
    assert drawn[1] < 0.8 * drawn[0], drawn          # measured 3.17 vs 4.80 bits
    assert levels[1] > 0.95 * levels[0], levels      # the gain is the drawn codes' (5.20 vs 4.81 with none drawn)
    with pytest.raises(PriorError, match="context part"):
        PriorConfig(levels=2, bands=4, codebook_size=32, latent_dim=4, context_same=1)


@pytest.mark.parametrize("same", [0, 1])
def test_the_samplers_once_per_level_context_is_the_context_the_prior_computes_itself(same):
    """The sampler computes the context part's share of the coarser levels once per level (they stay fixed while a
    level is drawn) and adds the share of the codes drawn so far at each step; the logits it gets are the
    prior's own, to the bit, part-way through drawing a level."""
    corpus, books = one_shot_corpus(40)
    model = initial_prior(PriorConfig(levels=2, bands=4, codebook_size=32, latent_dim=4, context_width=8,
                                      context_same=same, **TINY), corpus, books)
    fit_context(model, corpus.subset(range(30)), corpus.subset(range(30, 40)), steps=50)
    codes = torch.from_numpy(np.stack([np.pad(g, ((0, 0), (0, 0), (0, 6 - g.shape[2]))) for g in corpus.grids[:3]]))
    span = torch.zeros(3, 4, 6, dtype=torch.bool)
    span[:, :, 1:4] = True
    x = codes.clone()
    x[:, 1][span] = 32                                    # the finer level hidden in a span, Structure known
    base = torch.zeros(3, 4, 6, 8)
    base[span] = model.context_base(x, 1, span.nonzero().unbind(1))      # once, before the level is drawn
    x[:, 1, :2, 2] = codes[:, 1, :2, 2]                   # part-way: a few of the span's codes drawn
    cells = x[:, 1] == 32
    where = cells.nonzero().unbind(1)
    with torch.no_grad():
        f = model.features(x)
        cached = model.logits(f, 1, cells, model.context_from(base[cells], x, 1, where))
        assert torch.equal(cached, model.logits(f, 1, cells))
        assert not torch.equal(cached, model.logits(f, 1, cells, torch.zeros_like(cached)))   # the part is used


def test_scoring_in_drawing_order_scores_each_hidden_cell_once_coarse_to_fine():
    """drawing_stages: every hidden cell is scored exactly once, after every coarser level and given only the
    cells of its level drawn before it; one step per level is the level-by-level chain."""
    rng = np.random.default_rng(3)
    hide = torch.from_numpy(rng.random((3, 3, 4, 10)) < 0.5)
    hide[0, 0] = False                                    # one crop keeps Structure: its Timbre is drawn first
    stages = drawing_stages(hide, 12, seed=1)
    count = torch.zeros(hide.shape, dtype=torch.int)
    last_level = 0
    for q, shown, scored in stages:
        assert q >= last_level and not (scored & ~shown).any() and (shown[:, :q] == False).all()   # noqa: E712
        assert (shown[:, q + 1:] == hide[:, q + 1:]).all()                                         # finer: hidden
        count += scored.int()
        last_level = q
    assert torch.equal(count, hide.int())
    assert 4 < len([s for s in stages if s[0] == 1]) <= 12   # crop 0's Timbre is drawn first: 12 steps, not 4
    one = [(q, shown, scored) for q, shown, scored in drawing_stages(hide, 1)]
    assert [(q, sh.tolist(), sc.tolist()) for q, sh, sc in one] == \
        [(q, sh.tolist(), sc.tolist()) for q, sh, sc in level_stages(hide)]


def test_a_prior_with_the_removed_parts_leaves_the_codec_usable_and_says_to_retrain(prior_codec, tmp_path):
    """Priors saved before the ablation (benchmarks/README.md, "Prior ablation") hold the settings and weights of
    parts since removed (the transformer, the context ensemble, the recall kernel, the product): their settings
    are read and ignored, their weights refused with a note that says how to retrain; the codec is untouched."""
    codec, path = prior_codec
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    record = json.loads(meta["prior"])
    record["config"].update(width=32, layers=1, heads=2, cell_dim=8, band_width=16, band_layers=1, dropout=0.1,
                            weight_decay=0.01, context_members=4, recall_kernel=1, product=1)
    assert PriorConfig.from_dict(record["config"]) == PriorConfig.from_dict(json.loads(meta["prior"])["config"])
    old = dict(tensors, **{"prior.embed": torch.zeros(2, 33, 8), "prior.latent_product": torch.zeros(2, 6)})
    stale = tmp_path / "old_prior.distill"
    save_file(old, str(stale), metadata=dict(meta, prior=json.dumps(record)))
    loaded = Codec.load(stale)
    assert loaded.prior is None and "parts since removed" in loaded.prior_note
    assert "distill prior MODEL.distill FOLDER" in loaded.prior_note
    assert loaded.fingerprint == codec.fingerprint


def test_a_draw_keeps_to_the_nucleus_and_its_odds():
    """top_p keeps the smallest set of codes holding that much probability, renormalised: the least likely code
    here is never drawn, the others as often as their odds within the set; top_p 1 draws every code."""
    from distill.prior import draw_top_p

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(100000, 4).contiguous()
    p = logits[0].softmax(-1)                                             # 0.64, 0.24, 0.09, 0.03
    codes, logp = draw_top_p(logits, 0.9, torch.Generator().manual_seed(0))
    share = torch.bincount(codes, minlength=4).float() / len(codes)
    assert share[3] == 0 and torch.allclose(share[:3], p[:3] / p[:3].sum(), atol=0.01)
    assert torch.allclose(logp.exp(), (p[:3] / p[:3].sum())[codes], atol=1e-5)
    every = draw_top_p(logits, 1.0, torch.Generator().manual_seed(0))[0]
    assert torch.allclose(torch.bincount(every, minlength=4).float() / len(every), p, atol=0.01)
    assert torch.equal(draw_top_p(logits, 0.01, torch.Generator().manual_seed(0))[0], torch.zeros(100000, dtype=torch.long))


def test_a_checkpoint_must_beat_the_kept_one_by_more_than_noise():
    from distill.prior import MIN_VAL_GAIN, improves

    assert improves(6.5, math.inf)                                  # the fitted start is always kept first
    assert not improves(6.5 - MIN_VAL_GAIN / 2, 6.5)                # within noise: keep what we have
    assert improves(6.5 - 2 * MIN_VAL_GAIN, 6.5)
    assert not improves(math.nan, math.inf) and not improves(7.0, 6.5)


def test_every_cell_gets_a_distribution_even_without_any_context():
    """Log-probabilities sum to 1 in every cell: with neighbours, with none (a span over the whole clip), in
    padding, at every level."""
    corpus, books = flicker_corpus(4, 12, seed=1)
    model = initial_prior(PriorConfig(levels=2, bands=4, codebook_size=32, latent_dim=4, context_width=8,
                                      context_same=1, **TINY), corpus, books)
    fit_context(model, corpus, None)
    codes = torch.from_numpy(np.stack([g for g in corpus.grids]))[:, :, :, :12]
    codes = torch.nn.functional.pad(codes, (0, 4), value=32)             # 4 columns of padding
    pad = torch.zeros(4, 16, dtype=torch.bool)
    pad[:, 12:] = True
    codes[0, 1:] = 32                                                      # clip 0: only Structure is known
    codes[1, :, :, 3:7] = 32                                               # clip 1: a span hidden at every level
    with torch.no_grad():
        logp = model.eval()(codes, pad)                                   # [4, 2, 4, 16, 32]
    assert torch.isfinite(logp).all()
    assert torch.allclose(logp.exp().sum(-1), torch.ones(()), atol=1e-4)


def test_scoring_level_by_level_is_the_chain_rule_over_levels(prior_codec):
    """With one level hidden the joint and the one-pass score agree; with two, the finer level is scored
    given the true coarser codes (what the sampler has drawn by then), so the two differ."""
    codec = prior_codec[0]
    corpus = patterned_corpus(3, codec.num_bands, codec.codebook_size, files=3, columns=20, seed=9)
    one = fixed_eval_set(corpus, 16, codec.codebook_size, seed=1,
                         mask_fn=lambda L, B, T, rng: edit_mask(L, B, T, rng, keep_levels=2))
    assert evaluate_bits(codec.prior, *one) == pytest.approx(evaluate_bits(codec.prior, *one, by_level=False), abs=1e-5)
    two = fixed_eval_set(corpus, 16, codec.codebook_size, seed=1)
    assert evaluate_bits(codec.prior, *two) != pytest.approx(evaluate_bits(codec.prior, *two, by_level=False), abs=1e-4)


# ---------------------------------------------------------------------- storage
def test_adding_a_prior_keeps_the_fingerprint_and_codes_stay_valid(codec, prior_codec, trained, grid):
    with_prior, path = prior_codec
    assert with_prior.fingerprint == codec.fingerprint == read_info(trained[1]).fingerprint
    assert with_prior.prior is not None and read_info(path).prior["codec"] == codec.fingerprint
    codec.check(grid)  # codes made with the prior model decode with the plain one and back
    plain = Codec.load(trained[1])
    assert plain.prior is None and "distill prior" in plain.prior_note
    # round trip: the prior's weights come back exactly
    again = Codec.load(path)
    for (k, v), (k2, v2) in zip(with_prior.prior.state_dict().items(), again.prior.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_info_says_when_a_prior_predates_the_newest_parts(prior_codec, capsys):
    """A prior made before its context part read the codes drawn around a cell still works; `distill info` says
    a retrain would give it the newest parts."""
    assert main(["info", str(prior_codec[1])]) == 0
    out = capsys.readouterr().out
    assert "an older context part (`distill prior MODEL FOLDER` retrains it with the newest)" in out
    assert "regenerate copies from the codes of 6 training files" in out


def test_a_model_without_a_prior_says_how_to_add_one(codec, grid):
    assert codec.prior is None
    with pytest.raises(EditError, match="distill prior"):
        apply_operation(codec, grid, "regenerate Timbre@0.5-1.0")
    with pytest.raises(EditError, match="no prior"):
        regenerate_region(None, grid, parse_region("Timbre@0.5-1.0", grid))


def test_a_damaged_prior_never_blocks_the_codec(prior_codec, tmp_path):
    _, path = prior_codec
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in tensors if k.startswith("prior.") and tensors[k].ndim == 2)
    tensors[key] = torch.zeros(3, 3)
    broken = tmp_path / "broken_prior.distill"
    save_file(tensors, str(broken), metadata=meta)
    codec = Codec.load(broken)
    assert codec.prior is None and "cannot be used" in codec.prior_note
    meta2 = dict(meta, prior=json.dumps({"config": {"levels": "three"}}))
    save_file(tensors, str(tmp_path / "bad_meta.distill"), metadata=meta2)
    assert "levels" in read_info(tmp_path / "bad_meta.distill").prior["error"]   # said, not raised
    codec = Codec.load(tmp_path / "bad_meta.distill")
    assert codec.prior is None and "cannot be used" in codec.prior_note


def test_prior_config_refuses_wrong_types_and_ranges():
    for bad in ({"levels": 3, "bands": 16}, {"levels": 3, "bands": 16, "codebook_size": 64.5},
                {"levels": 3, "bands": 16, "codebook_size": 64, "window": 10**9}, {"levels": True, "bands": 1,
                                                                                    "codebook_size": 8}):
        with pytest.raises(PriorError):
            PriorConfig.from_dict(bad)


# ---------------------------------------------------------------------- CLI
def test_candidate_file_names():
    assert candidate_path("out.codes.json", 2) == "out.2.codes.json"
    assert candidate_path("dir/out.json", 1) == "dir/out.1.json"
    assert candidate_path("out.txt", 3) == "out.3.txt"
    assert candidate_path("out", 4) == "out.4"


def test_cli_regenerate_writes_candidates_and_histories(prior_codec, grid, tmp_path, capsys):
    _, model = prior_codec
    codes = tmp_path / "a.codes.json"
    grid.save(codes)
    out = tmp_path / "b.codes.json"
    rc = main(["regenerate", str(model), str(codes), "-o", str(out), "--region", "Timbre+Detail@0.5-1.5",
               "--candidates", "3", "--seed", "7", "--history", str(tmp_path / "h.json")])
    assert rc == 0
    grids = [json.loads((tmp_path / f"b.{i}.codes.json").read_text()) for i in (1, 2, 3)]
    assert len({json.dumps(g["codes"]) for g in grids}) == 3
    assert all((tmp_path / f"h.{i}.json").exists() for i in (1, 2, 3)) and not out.exists()
    # the history continues in the editor: one undoable step
    rc = main(["edit", str(model), str(tmp_path / "h.2.json"), "-o", str(tmp_path / "c.codes.json"),
               "--reverse", "Structure@0.2-0.8"])
    assert rc == 0


def test_cli_regenerate_without_a_prior_is_one_line(trained, grid, tmp_path, capsys):
    codes = tmp_path / "a.codes.json"
    grid.save(codes)
    rc = main(["regenerate", str(trained[1]), str(codes), "-o", str(tmp_path / "x.json"), "--region", "Timbre@0-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "no prior" in err and "distill prior" in err and "Traceback" not in err


def test_prior_share_splits_the_budget_and_bad_shares_are_refused(corpus_dir, tmp_path, capsys):
    from distill import split_budget

    assert split_budget(10.0, 0.2) == pytest.approx(8.0) and split_budget(None, 0.2) is None
    assert split_budget(10.0, 0.0) == 10.0
    with pytest.raises(ValueError):
        split_budget(10.0, 0.95)
    rc = main(["train", str(corpus_dir), "-o", str(tmp_path / "m.distill"), "--minutes", "1", "--prior-share", "1.5"])
    assert rc == 2 and "--prior-share must be within 0-0.9" in capsys.readouterr().err


def test_a_stopped_run_trains_no_prior_and_says_how_to_add_one(corpus_dir, tiny_config):
    from distill import Trainer, train_prior_after

    trainer = Trainer(sorted(corpus_dir.iterdir()), tiny_config, epochs=2)
    trainer.cancel()
    list(trainer.run())
    events = list(train_prior_after(trainer, None, 0.2))
    assert trainer.result.codec.prior is None
    assert [e.kind for e in events] == ["warning"] and "distill prior" in events[0].message


def test_the_context_part_also_learns_from_the_training_clips_shifted_by_parts_of_a_column(codec, corpus_dir):
    """The training clips are encoded again, starting a third and two thirds of a column later (silence before),
    for the context part; the held-out clips never are, and a budget too small for them gets none."""
    from distill import load_audio
    from distill.prior import context_shifts, shifted_items, silence_frame

    mel = torch.rand(codec.mel_cfg.n_mels, 40)
    silence = silence_frame(codec)
    out = shifted_items([("a.wav", mel)], 2, 16, silence)
    assert [(name, m.shape[1]) for name, m in out] == [("a.wav", 45), ("a.wav", 51)]
    assert torch.equal(out[0][1][:, 5:], mel) and torch.equal(out[1][1][:, :11], silence.expand(-1, 11))
    assert context_shifts(2.0, 60.0, 1000) == 2                      # 4 s of 60: affordable
    assert context_shifts(10.0, 60.0, 1000) == 1 and context_shifts(20.0, 60.0, 1000) == 0
    assert context_shifts(2.0, 60.0, 10**6) == 0                      # the clips already give it all it takes
    items = [(p.name, codec.logmel(load_audio(p, codec.sample_rate)[0])) for p in sorted(corpus_dir.iterdir())]
    trainer = PriorTrainer.from_audio(codec, items, 1.0)
    train, val = trainer._split()
    assert trainer.shifted is not None and val is not None and "shifted" in trainer.encode_note
    assert sorted(trainer.shifted.names) == sorted(2 * list(train.names))
    assert not set(trainer.shifted.names) & set(val.names)


@pytest.mark.parametrize("levels, columns", [(2, 1), (4, 3), (3, 200)])
@pytest.mark.parametrize("latent_dim, context_width, newest", [(0, 0, 0), (6, 0, 0), (6, 8, 0), (6, 8, 1)])
def test_any_grid_size_regenerates_whole_with_kept_cells_exact(levels, columns, latent_dim, context_width, newest):
    """A one-column clip (20 ms), a 4-level model, a clip far longer than the window, with the latent path and
    its context part, and without them (priors saved before them): every selected cell is drawn, nothing else
    moves."""
    from distill import CodeGrid

    cfg = PriorConfig(levels=levels, bands=4, codebook_size=16, latent_dim=latent_dim, context_width=context_width,
                      context_same=newest, **TINY)
    model = CodePrior(cfg)
    if latent_dim:
        model.books.normal_(generator=torch.Generator().manual_seed(levels))
    with torch.no_grad():   # the drawn codes' taps start at 0: give them a say
        for name, p in model.named_parameters():
            if "same" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(levels))
    model = build_prior(cfg, model.state_dict())   # and back through the loader, as from a file
    rng = np.random.default_rng(levels)
    grid = CodeGrid(rng.integers(0, 16, size=(levels, 4, columns)), tuple(f"L{q}" for q in range(levels)), 0.171,
                    48000, max(1, int(columns * 0.171 * 48000)))
    region = Region(tuple(range(1, levels)), 1, 3, 0, columns - 1)
    results = regenerate_region(model, grid, region, RegenerateSettings(seed=3, candidates=2))
    inside = np.zeros(grid.codes.shape, dtype=bool)
    inside[region.index()] = True
    for r in results:
        assert np.array_equal(r.grid.codes[~inside], grid.codes[~inside])
        assert r.grid.codes.min() >= 0 and r.grid.codes.max() < 16


def test_a_prior_record_this_version_cannot_use_never_blocks_the_codec(prior_codec, tmp_path, capsys):
    """A prior whose settings this version refuses (e.g. from a newer Distill) leaves the codec usable,
    `info` says so, and `distill prior` can replace it."""
    _, path = prior_codec
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    record = json.loads(meta["prior"])
    record["config"]["context_same"] = 3
    odd = tmp_path / "newer_prior.distill"
    save_file(tensors, str(odd), metadata=dict(meta, prior=json.dumps(record)))
    codec = Codec.load(odd)
    assert codec.prior is None and "cannot be used" in codec.prior_note and "context_same" in codec.prior_note
    assert main(["info", str(odd)]) == 0 and "unusable" in capsys.readouterr().out


def test_a_prior_that_fails_to_train_keeps_the_trained_codec(corpus_dir, tiny_config, monkeypatch):
    from distill import Trainer, train_prior_after
    from distill import prior as prior_module

    trainer = Trainer(sorted(corpus_dir.iterdir()), tiny_config, epochs=2)
    list(trainer.run())

    def boom(self):
        raise RuntimeError("out of memory")
        yield

    monkeypatch.setattr(prior_module.PriorTrainer, "run", boom)
    events = list(train_prior_after(trainer, 0.1, 0.2))
    assert events[-1].kind == "warning" and "could not be trained" in events[-1].message
    assert trainer.result.codec.prior is None and trainer.result.codec.model is not None


def test_versions_are_labelled_so_they_can_be_drawn_again(prior_codec, grid):
    codec = prior_codec[0]
    region = parse_region("Timbre@0.5-1.5", grid)
    results = regenerate(codec, grid, region, RegenerateSettings(seed=4, candidates=3, temperature=0.8))
    assert "(seed 4, version 2 of 3, temperature 0.8)" in results[1].label
    plain = regenerate(codec, grid, region, RegenerateSettings(seed=4))
    assert f"(seed 4, temperature {DEFAULT_TEMPERATURE:g})" in plain[0].label   # a default that changed stays named
    again = regenerate(codec, grid, region, RegenerateSettings(seed=4, candidates=3, temperature=0.8))
    assert np.array_equal(again[1].grid.codes, results[1].grid.codes)
