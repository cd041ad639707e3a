"""Regenerate from the user's own material (distill.prior.retrieval): patches of real codes copied from the bank the
prior keeps, cells outside the selection untouched, reproducible, and saying where each version came from."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from distill import Codec, RegenerateSettings, Region
from distill.codes import CodeGrid
from distill.edits.regenerate import regenerate_region, selection_cells
from distill.prior import (
    NO_BANK_NOTE,
    CodeCorpus,
    CodePrior,
    PriorConfig,
    PriorError,
    PriorTrainer,
    bank_config,
    build_prior,
    describe_origins,
    make_bank,
    prior_tensors,
    retrieval,
)
from distill.prior.retrieval import Origin, retrieve
from distill.prior.sampler import KEPT_NOTE

L, B, K, D = 3, 4, 16, 4


def bank_prior(files: int = 5, columns: int = 30, seed: int = 0, grids: list[np.ndarray] | None = None) -> CodePrior:
    """An untrained prior (its network only weighs in) whose bank holds `files` random grids (or `grids`)."""
    rng = np.random.default_rng(seed)
    grids = grids or [rng.integers(0, K, (L, B, columns)) for _ in range(files)]
    bank = make_bank([f"folder/f{i}.wav" for i in range(len(grids))], grids)
    cfg = PriorConfig(levels=L, bands=B, codebook_size=K, latent_dim=D, window=32, **bank_config(bank))
    model = CodePrior(cfg)
    with torch.no_grad():
        model.books.copy_(torch.from_numpy(rng.standard_normal((L, K, D))).float())
    model.set_bank(bank)
    return model.eval()


def grid_of(codes: np.ndarray) -> CodeGrid:
    T = codes.shape[2]
    return CodeGrid(codes=codes.astype(np.int64), level_names=("Structure", "Timbre", "Detail"),
                    sample_rate=16000, num_samples=T * 1000, seconds_per_column=1000 / 16000)


REGIONS = {
    "timbre+detail span": Region((1, 2), 0, B - 1, 10, 17),
    "all levels": Region((0, 1, 2), 0, B - 1, 10, 17),
    "band rectangle": Region((1, 2), 1, 2, 5, 12),
    "one column": Region((2,), 0, B - 1, 20, 20),
    "clip start": Region((0, 1, 2), 0, B - 1, 0, 5),
    "clip end": Region((1, 2), 0, B - 1, 34, 39),
    "longer than a piece and than any file": Region((1, 2), 0, B - 1, 2, 37),
}


@pytest.mark.parametrize("name", list(REGIONS))
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_kept_cells_are_bit_identical_and_filled_cells_are_real_codes_from_where_the_origin_says(name, strength):
    model = bank_prior()
    bank, words = model.bank()
    grid = grid_of(np.random.default_rng(9).integers(0, K, (L, B, 40)))
    region = REGIONS[name]
    todo = selection_cells(grid, region, strength, 4)
    results = regenerate_region(model, grid, region, RegenerateSettings(strength=strength, candidates=3, seed=4))
    for r in results:                            # copied or drawn by the network: only the selection changes
        assert np.array_equal(r.grid.codes[~todo], grid.codes[~todo])
        assert r.origin.startswith("from f") == (strength == 1.0 and region.levels == (0, 1, 2))
    for codes, origins in retrieve(bank, words, grid.codes, todo, 3, 1.0, 4, score=None):
        assert np.array_equal(codes[~todo], grid.codes[~todo])
        c = region.c0
        for o in origins:                        # pieces left to right: each one copied from its origin
            src = bank.codes[:, :, bank.starts[bank.names.index(o.name)] + o.column:][:, :, :o.columns]
            assert o.columns >= 1 and src.shape[2] == o.columns
            cells = todo[:, :, c:c + o.columns]
            assert np.array_equal(codes[:, :, c:c + o.columns][cells], src[cells])
            c += o.columns
        assert c == region.c1 + 1


def test_a_selection_that_keeps_cells_is_drawn_by_the_network_and_says_so():
    model = bank_prior()
    grid = grid_of(np.random.default_rng(1).integers(0, K, (L, B, 40)))
    for region, strength in ((REGIONS["timbre+detail span"], 1.0), (REGIONS["all levels"], 0.5)):
        for r in regenerate_region(model, grid, region, RegenerateSettings(strength=strength, candidates=2)):
            assert r.origin == KEPT_NOTE


def test_same_seed_same_codes_and_versions_differ():
    model = bank_prior()
    grid = grid_of(np.random.default_rng(1).integers(0, K, (L, B, 40)))
    region = REGIONS["all levels"]
    a = regenerate_region(model, grid, region, RegenerateSettings(candidates=4, seed=2))
    b = regenerate_region(model, grid, region, RegenerateSettings(candidates=4, seed=2))
    assert all(np.array_equal(x.grid.codes, y.grid.codes) and x.origin == y.origin for x, y in zip(a, b, strict=True))
    assert len({x.grid.codes.tobytes() for x in a}) == 4 and len({x.origin for x in a}) == 4
    c = regenerate_region(model, grid, region, RegenerateSettings(candidates=4, seed=3, temperature=3.0))
    assert any(not np.array_equal(x.grid.codes, y.grid.codes) for x, y in zip(a, c, strict=True))


def test_a_clip_from_the_bank_is_never_given_its_own_codes_back():
    model = bank_prior()
    bank = model.bank()[0]
    own = bank.codes[:, :, bank.starts[2]:bank.starts[3]]          # file f2, as if the user opened a training clip
    grid = grid_of(own.copy())
    region = Region((0, 1, 2), 0, B - 1, 8, 15)
    todo = selection_cells(grid, region, 1.0, 0)
    for r in regenerate_region(model, grid, region, RegenerateSettings(candidates=3, temperature=0.05)):
        assert not np.array_equal(r.grid.codes[todo], grid.codes[todo])


def test_the_best_match_is_the_place_whose_surroundings_are_the_holes_and_it_goes_on_copying_it(monkeypatch):
    monkeypatch.setattr(retrieval, "RERANK", 0.0)   # this prior's network is untrained: its say is noise here
    rng = np.random.default_rng(5)
    grids = [rng.integers(0, K, (L, B, 60)) for _ in range(4)]
    query = rng.integers(0, K, (L, B, 50))
    query[:, :, 5:45] = grids[3][:, :, 12:52]   # the clip holds 40 columns of f3, from its column 12
    query[:, :, 7:43] = rng.integers(0, K, (L, B, 36))   # the user redraws 36 of them, every level
    model = bank_prior(grids=grids)
    region = Region((0, 1, 2), 0, B - 1, 7, 42)                # 36 columns: three pieces
    best = regenerate_region(model, grid_of(query), region, RegenerateSettings(temperature=0.05))[0]
    assert best.origin == describe_origins([Origin("f3.wav", 14, 36)], 1000 / 16000)
    assert np.array_equal(best.grid.codes[:, :, 7:43], grids[3][:, :, 14:50])


def test_origins_read_as_files_and_seconds():
    spc = 0.1
    assert describe_origins([Origin("kick_03.wav", 12, 7)], spc) == "from kick_03.wav 1.2–1.9 s"
    many = [Origin(f"{n}.wav", 0, 10) for n in "abcd"]
    assert describe_origins(many, spc) == "from a.wav 0.0–1.0 s, b.wav 0.0–1.0 s and 2 more"
    assert describe_origins([], spc) == ""


def test_the_bank_keeps_names_without_folders_and_a_cap_keeps_evenly_chosen_whole_files():
    grids = [np.zeros((L, B, 10), dtype=np.int64) + i for i in range(10)]
    bank = make_bank([f"a/b\\c{i}.wav" for i in range(10)], grids, max_columns=35)
    assert bank.columns <= 35 and bank.names[0] == "c0.wav" and len(bank.names) == 3
    assert [int(bank.codes[0, 0, s]) for s in bank.starts[:-1]] == [int(n[1:-4]) for n in bank.names]


def test_the_bank_travels_in_the_model_file_and_a_broken_one_is_refused(prior_codec, tmp_path):
    codec, path = prior_codec
    loaded = Codec.load(path)
    bank = loaded.prior.bank()[0]
    assert bank.names == codec.prior.bank()[0].names and bank.columns == codec.prior.cfg.bank_columns
    tensors = {k[len("prior."):]: v for k, v in prior_tensors(loaded.prior).items()}
    bad = dict(tensors, bank_codes=tensors["bank_codes"].clone().fill_(codec.codebook_size))
    with pytest.raises(PriorError, match="outside the codebook"):
        build_prior(loaded.prior.cfg, bad)
    bad = dict(tensors, bank_starts=tensors["bank_starts"].flip(0))
    with pytest.raises(PriorError, match="file bounds"):
        build_prior(loaded.prior.cfg, bad)


def test_a_prior_without_a_bank_draws_with_its_network_and_says_why():
    model = bank_prior()
    cfg = dataclasses.replace(model.cfg, bank_columns=0, bank_files=0, bank_name_bytes=0)
    plain = CodePrior(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("bank_")}
    plain.load_state_dict(state)
    grid = grid_of(np.random.default_rng(1).integers(0, K, (L, B, 40)))
    region = REGIONS["all levels"]
    results = regenerate_region(plain.eval(), grid, region, RegenerateSettings(candidates=2))
    assert all(r.origin == NO_BANK_NOTE for r in results)
    asked = regenerate_region(model, grid, REGIONS["all levels"], RegenerateSettings(candidates=2, retrieve=False))
    assert all("network" in r.origin and "network" in r.label for r in asked)


def test_the_bank_holds_exactly_the_files_the_prior_was_trained_on_never_others(codec):
    rng = np.random.default_rng(0)
    names = tuple(f"train_{i}.wav" for i in range(6))
    L_, B_, K_ = len(codec.level_names), codec.num_bands, codec.codebook_size
    corpus = CodeCorpus(names, tuple(rng.integers(0, K_, (L_, B_, 20)) for _ in names))
    trainer = PriorTrainer(corpus, K_, 0.02, codec.fingerprint, codebooks=codec.codebooks)
    list(trainer.run())
    bank = trainer.result.model.bank()[0]
    assert bank.names == names                # a benchmark's held-out files are never given, so never copied
    assert np.array_equal(bank.codes, np.concatenate(corpus.grids, axis=2))


@pytest.mark.parametrize("files, columns, c0, width", [(5, 3, 10, 16), (1, 10, 5, 16), (1, 2, 5, 2), (3, 1, 0, 40)])
def test_a_bank_shorter_than_the_hole_and_its_surroundings_still_fills_it(files, columns, c0, width):
    """A few short one-shots: the bank holds fewer columns than a piece and its compared neighbours."""
    model = bank_prior(files=files, columns=columns)
    grid = grid_of(np.random.default_rng(3).integers(0, K, (L, B, 40)))
    region = Region((0, 1, 2), 0, B - 1, c0, min(39, c0 + width - 1))
    todo = selection_cells(grid, region, 1.0, 0)
    for r in regenerate_region(model, grid, region, RegenerateSettings(candidates=3)):
        assert np.array_equal(r.grid.codes[~todo], grid.codes[~todo]) and r.origin.startswith("from f")


def test_with_nothing_around_to_match_versions_come_from_all_over_the_bank():
    """A whole clip redrawn: every place fits equally, and the bank's first files must not always win."""
    model = bank_prior(files=40, columns=20)
    grid = grid_of(np.random.default_rng(3).integers(0, K, (L, B, 12)))
    region = Region((0, 1, 2), 0, B - 1, 0, 11)
    sources = set()
    for seed in range(5):
        for r in regenerate_region(model, grid, region, RegenerateSettings(candidates=8, seed=seed)):
            sources.add(r.origin.split()[1])
    assert len(sources) >= 25 and any(int(name[1:-4]) >= 20 for name in sources)


def test_files_that_share_a_name_get_labels_that_tell_them_apart_and_never_merge():
    from distill.prior.retrieval import _merge, file_labels

    assert file_labels(["drums/kick.wav", "fx/kick.wav", "a/b/snare.wav", "x/kick.wav", "y/x/kick.wav"]) == (
        "drums/kick.wav", "fx/kick.wav", "snare.wav", "x/kick.wav", "x/kick.wav (2)")
    assert file_labels(["bad\x1b[31mname\n.wav"]) == ("bad?[31mname?.wav",)
    merged = _merge([Origin("kick.wav", 0, 8, 0), Origin("kick.wav", 8, 8, 1), Origin("kick.wav", 16, 8, 1)])
    assert merged == [Origin("kick.wav", 0, 8, 0), Origin("kick.wav", 8, 16, 1)]


def test_the_networks_say_on_a_patch_hears_its_surroundings_even_in_a_small_window():
    from distill.prior.sampler import patch_scores

    rng = np.random.default_rng(0)
    for window in (8, 16, 32):
        model = bank_prior()
        model.cfg = dataclasses.replace(model.cfg, window=window)
        xs = np.repeat(rng.integers(0, K, (1, L, B, 40)), 2, axis=0)
        xs[1, :, :, 10:12] = (xs[0, :, :, 10:12] + 1) % K      # same patch, other left neighbours
        cells = np.zeros((L, B, 40), bool)
        cells[:, :, 12:28] = True
        scores = patch_scores(model, xs, cells, cells)
        assert scores[0] != scores[1], window


def test_a_prior_with_its_bank_crosses_a_process_boundary():
    """The studio trains in another process and sends the prior back pickled (its bank's lock is not sent)."""
    import pickle

    model = bank_prior()
    model.bank()
    again = pickle.loads(pickle.dumps(model))
    assert again.bank()[0].names == model.bank()[0].names
    grid = grid_of(np.random.default_rng(1).integers(0, K, (L, B, 40)))
    a = regenerate_region(model, grid, REGIONS["all levels"], RegenerateSettings(candidates=2))
    b = regenerate_region(again, grid, REGIONS["all levels"], RegenerateSettings(candidates=2))
    assert all(np.array_equal(x.grid.codes, y.grid.codes) for x, y in zip(a, b, strict=True))
