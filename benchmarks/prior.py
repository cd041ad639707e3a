"""How good is Regenerate? The prior vs code frequencies (what `randomize` draws from) and vs copying the
nearest column, on held-out real recordings, plus decoded plausibility and speed. Prints a table.

    python benchmarks/prior.py /usr/share/lmms/samples --folders drums,beats,bassloops instruments,basses,stringsnpads \
        --codec-minutes 2 --prior-minutes 2 [--json out.json]

Each folder group (comma-joined top-level folders) is one corpus: every 5th file held out, a codec trained
on the rest for --codec-minutes (one thread), then the prior for --prior-minutes (encoding included), all
in this run. Metrics on the held-out files:
  - bits/code of hidden cells for edit-shaped masks (a 1-16-column span, Structure kept, Timbre+Detail
    hidden): prior vs (a) per-level, per-band code frequencies of the training codes (add-one), and
    (b) copy the nearest visible column, mixed with (a) at the weight that scores best (its best case).
    The prior's figure is the joint NLL in the order its sampler draws (Timbre given the context, then Detail
    given Timbre too, and within a level each step's cells given the cells drawn before them, in a seeded
    random order cut into the sampler's steps: evaluate_bits(steps=...)), and (b) copies the nearest column
    visible at that moment; in brackets the chain over levels only, and every hidden cell scored alone,
    given only the visible cells;
  - decoded plausibility of a redrawn span in the middle of each clip (surgical render), regenerate vs
    randomize, for two regions: Timbre+Detail (Structure kept, as the NLL above) and all three levels
    (a span regenerated outright), next to the span re-rendered from the recording's own codes (the nearest
    drawn codes can come):
    (i) frame-to-frame log-mel change inside the span and across its two edges, summed over the clips,
    relative to the recordings' own change there (1.0 = as smooth as the real audio), and per span how far
    it is from the recording's, the mean |log ratio| (0 = each span as smooth as its recording); (ii) decode -> re-encode agreement,
    the share of the span's redrawn cells whose codes survive decoding and encoding again;
  - speed: 4 candidates for a 2 s span, sampling + surgical render of all four.

With --ablate all (or a comma list of prior_ablation.VARIANTS) it measures the prior with each of its parts
removed in turn instead, for each --prior-minutes given (benchmarks/prior_ablation.py):

    python benchmarks/prior.py /usr/share/lmms/samples --folders drums,beats,bassloops --codec-minutes 2 \
        --codec-cache /tmp/ablation_codecs --prior-minutes 2 0.4 --ablate all --json out.json

With --decoded all (or a comma list of REGEN_VARIANTS) it measures what the user hears instead (decoded_measures),
for --regions timbre_detail,all_levels (default both), at --places spans of each width per held-out clip (default
1; more steadies a figure whose gap is small, as the in-span change of Timbre+Detail is).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import holdout_split, select_files  # noqa: E402

from distill import (  # noqa: E402
    Clip,
    Codec,
    EditSession,
    RegenerateSettings,
    Region,
    Trainer,
    dsp,
    load_audio,
    load_source,
)
from distill.edits import regenerate  # noqa: E402
from distill.edits.operations import randomize_region  # noqa: E402
from distill.prior import (  # noqa: E402
    CodeCorpus,
    CodePrior,
    PriorTrainer,
    drawing_stages,
    edit_mask,
    encode_corpus,
    evaluate_bits,
    fixed_eval_set,
    log_frequencies,
    nearest_visible,
)
from distill.render import render_spectrum  # noqa: E402
from distill.session import clip_from_source  # noqa: E402


def baseline_bits(codes: torch.Tensor, pad: torch.Tensor, hide: torch.Tensor, freq: np.ndarray, k: int,
                  steps: int = 0) -> dict:
    """Bits/code of the hidden cells under (a) frequencies and (b) nearest-column copy mixed with (a). With
    `steps`, (b) copies the nearest column visible when the prior's drawing order (drawing_stages, the same
    seeds as evaluate_bits) reaches the cell, as the prior is scored; (a) does not depend on the order."""
    c, h = codes.numpy(), hide.numpy()
    n, q, b, _ = np.nonzero(h)
    pf = freq[q, b, c[h]]
    near = np.full(h.shape, k)
    for i in range(0, len(codes), 32):   # evaluate_bits' batches and seeds
        stages = drawing_stages(hide[i:i + 32], steps, i) if steps else [(None, hide[i:i + 32], hide[i:i + 32])]
        for _, shown, scored in stages:
            left, right, gl, gr = (x.numpy() for x in nearest_visible(codes[i:i + 32].masked_fill(shown, k), k,
                                                                      pad[i:i + 32]))
            s = scored.numpy()
            near[i:i + 32][s] = np.where(gl[s] <= gr[s], left[s], right[s])   # the nearest visible code (k = none)
    hit = near[h] == c[h]
    best = min(float(-np.log2((1 - a) * pf + a * hit).mean()) for a in np.linspace(0.05, 0.95, 19))
    return {"frequencies": float(-np.log2(pf).mean()), "copy_nearest": best}


def smoothness(logmel: np.ndarray, f0: int, f1: int) -> float:
    """Mean |frame-to-frame change| of log-mel [n_mels, frames] over frames f0-1 .. f1 (the span and both edges)."""
    a, b = max(1, f0), min(logmel.shape[1] - 1, f1)
    return float(np.abs(np.diff(logmel[:, a - 1:b + 1], axis=1)).mean())


def plausibility(codec: Codec, clips: list[Clip], usage: list[list[int]], levels: tuple[int, ...] = (1, 2),
                 seed: int = 0) -> dict:
    """Regenerate vs randomize of a span of `levels` in each held-out clip of >= 8 columns, decoded surgically;
    "own codes": the span re-rendered from the recording's own codes (render_spectrum with those cells forced),
    the nearest any drawn codes can come to the recording through the codec and the render."""
    out = {"regenerate": {"smooth": [], "agree": []}, "randomize": {"smooth": [], "agree": []},
           "own codes": {"smooth": [], "agree": []}}
    bases = []
    fpc = codec.frames_per_column
    for clip in clips:
        grid = clip.grid
        T = grid.num_columns
        if T < 8:
            continue
        width = min(12, T // 2)
        c0 = (T - width) // 2
        region = Region(levels, 0, grid.num_bands - 1, c0, c0 + width - 1)
        real = codec.logmel(clip.wave).numpy()
        f0, f1 = c0 * fpc, (c0 + width) * fpc
        base = smoothness(real, f0, f1)
        if base <= 0:
            continue
        bases.append(base)
        session = EditSession(codec, clip)
        drawn = {"regenerate": regenerate(codec, grid, region, RegenerateSettings(seed=seed))[0],
                 "randomize": randomize_region(grid, region, usage, seed)}
        changed = np.zeros(grid.codes.shape[1:], bool)
        changed[:, c0:c0 + width] = True
        patch = render_spectrum(codec, grid, clip.wave, grid, changed=changed)
        own = clip.wave + dsp.synthesize_span(codec.front.framing, patch.spectrum - patch.source_spectrum,
                                              patch.frame0, 0, len(clip.wave), len(clip.wave))
        renders = {name: session.preview(result).wave for name, result in drawn.items()}
        drawn["own codes"], renders["own codes"] = None, own
        cells = np.zeros(grid.codes.shape, bool)
        cells[region.index()] = True
        for name, wave in renders.items():
            result = drawn[name]
            codes = grid.codes if result is None else result.grid.codes
            out[name]["smooth"].append(smoothness(codec.logmel(wave).numpy(), f0, f1))
            again = codec.encode(wave).codes
            out[name]["agree"].append(float((again[cells] == codes[cells]).mean()))
    # pooled: summed change over all spans / the recordings' summed change (a near-silent span's tiny
    # change would otherwise dominate a mean of ratios)
    # and per span: how far each span's change is from the recording's, |log(ratio)| (0 = as smooth as the
    # recording; a span rougher and another smoother do not cancel as they can in the pooled ratio)
    return {k: {"smooth": float(np.sum(d["smooth"]) / np.sum(bases)) if bases else float("nan"),
                "smooth_off": float(np.mean(np.abs(np.log(np.maximum(d["smooth"], 1e-9) / np.array(bases)))))
                if bases else float("nan"),
                "agree": float(np.mean(d["agree"])) if d["agree"] else float("nan"), "n": len(d["smooth"])}
            for k, d in out.items()}


SPANS = (1, 2, 4, 8, 16, 32)  # columns regenerated (decoded measures); 32 = two pieces of the copy path
VERSIONS = 3


def span_mel_stats(mel: np.ndarray) -> np.ndarray:
    """A span's log-mel [n_mels, frames] summarised: per-bin mean and standard deviation, [2 * n_mels]."""
    return np.concatenate([mel.mean(1), mel.std(1)])


def frechet_diag(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two sets of vectors [n, d] as diagonal Gaussians (mean and per-dimension spread)."""
    ma, mb, sa, sb = a.mean(0), b.mean(0), a.std(0), b.std(0)
    return float(np.sum((ma - mb) ** 2) + np.sum((sa - sb) ** 2))


def decoded_span(codec: Codec, codes: np.ndarray, c0: int, width: int, cells: np.ndarray, margin: int = 8
                 ) -> tuple[float, float, np.ndarray]:
    """Decode a window of codes [L, B, T] around columns c0..c0+width-1 (model domain: codes -> log-mel, no
    phase, no surgical render) -> (share of the region's cells `cells` bool [L, B, T] that survive re-encoding
    by the encoder alone, mean |frame-to-frame log-mel change| inside the span, the span's log-mel)."""
    T = codes.shape[2]
    a, b = max(0, c0 - margin), min(T, c0 + width + margin)
    mel = codec.decode_mel(codes[:, :, a:b]).cpu().numpy()
    again = np.asarray(codec.encode_mel(torch.from_numpy(mel), search_steps=0))
    w = min(again.shape[2], b - a)
    region = cells[:, :, a:a + w]
    agree = float((again[:, :, :w][region] == codes[:, :, a:a + w][region]).mean()) if region.any() else float("nan")
    fpc = codec.frames_per_column
    f0, f1 = (c0 - a) * fpc, min(mel.shape[1], (c0 - a + width) * fpc)
    span = mel[:, f0:f1]
    change = float(np.abs(np.diff(span, axis=1)).mean()) if span.shape[1] > 1 else float("nan")
    return agree, change, span


def draw_methods(codec: Codec, grid, region: Region, usage: list[list[int]], variants: dict) -> dict[str, list]:
    """Per method, VERSIONS code arrays [L, B, T] for `region`: randomize (seeds 0..), and each regenerate variant
    (name -> RegenerateSettings overrides, or a callable(settings) -> list of EditResults), drawn as one call of
    VERSIONS candidates (what the studio's versions panel shows)."""
    out = {"original": [grid.codes], "randomize": [randomize_region(grid, region, usage, v).grid.codes
                                                   for v in range(VERSIONS)]}
    for name, how in variants.items():
        settings = RegenerateSettings(candidates=VERSIONS, **how.get("settings", {}))
        with how.get("patch", _nothing)():
            out[name] = [r.grid.codes for r in regenerate(codec, grid, region, settings)]
    return out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def span_places(T: int, rng: np.random.Generator, places: int) -> list[tuple[int, int]]:
    """(width, first column) of each span drawn in a clip of T columns: for each width of SPANS that leaves a
    column of context either side, `places` different seeded places (fewer where the clip has fewer)."""
    out = []
    for width in SPANS:
        if T < width + 2:
            continue
        if places == 1:
            out.append((width, int(rng.integers(1, T - width))))   # as before --places: the same spans
        else:
            starts = np.arange(1, T - width)
            out += [(width, int(c)) for c in sorted(rng.choice(starts, min(places, starts.size), replace=False))]
    return out


REGIONS = {"timbre_detail": (1, 2), "all_levels": (0, 1, 2)}   # the levels each decoded region redraws


def decoded_measures(codec: Codec, clips: list[Clip], usage: list[list[int]], levels: tuple[int, ...],
                     variants: dict, seed: int = 0, places: int = 1) -> dict:
    """Each held-out clip, each span width of SPANS that leaves context on both sides, at `places` seeded places:
    per method, decode -> re-encode agreement of the redrawn cells, in-span frame-to-frame log-mel change (each
    the mean over spans and versions), the diagonal Fréchet distance between the spans' log-mel statistics and
    the recordings' own (real audio at the same places), and how much the versions differ from each other."""
    rng = np.random.default_rng(seed)
    acc: dict[str, dict[str, list]] = {}
    real_stats = []
    fpc = codec.frames_per_column
    for clip in clips:
        grid = clip.grid
        T = grid.num_columns
        real = codec.logmel(clip.wave).numpy()
        for width, c0 in span_places(T, rng, places):
            region = Region(levels, 0, grid.num_bands - 1, c0, c0 + width - 1)
            cells = np.zeros(grid.codes.shape, bool)
            cells[region.index()] = True
            span_real = real[:, c0 * fpc:(c0 + width) * fpc]
            if span_real.shape[1] < 2:
                continue
            real_stats.append(span_mel_stats(span_real))
            for name, versions in draw_methods(codec, grid, region, usage, variants).items():
                d = acc.setdefault(name, {"agree": [], "change": [], "stats": [], "differ": []})
                for codes in versions:
                    agree, change, span = decoded_span(codec, codes, c0, width, cells)
                    d["agree"].append(agree)
                    d["change"].append(change)
                    d["stats"].append(span_mel_stats(span[:, :span_real.shape[1]]))
                if len(versions) > 1:
                    pairs = [(i, j) for i in range(len(versions)) for j in range(i + 1, len(versions))]
                    d["differ"].append(float(np.mean([(versions[i][cells] != versions[j][cells]).mean()
                                                      for i, j in pairs])))
    real_arr = np.array(real_stats)
    out = {}
    for name, d in acc.items():
        out[name] = {"agree": float(np.nanmean(d["agree"])), "change": float(np.nanmean(d["change"])),
                     "fd": frechet_diag(np.array(d["stats"]), real_arr),
                     "differ": float(np.mean(d["differ"])) if d["differ"] else float("nan"), "n": len(d["agree"])}
    for name, r in out.items():
        r["closes_agree"] = closes(out, name, "agree")
        r["closes_change"] = closes(out, name, "change")
        r["closes_fd"] = closes(out, name, "fd")
    return out


def closes(out: dict, name: str, key: str) -> float:
    """Share of the gap from randomize to the original codes that `name` closes on measure `key`:
    1 - |name - original| / |randomize - original| (1 = as the original codes, 0 = no better than randomize;
    overshooting the original counts against, as being rougher does)."""
    gap = abs(out["randomize"][key] - out["original"][key])
    return float(1 - abs(out[name][key] - out["original"][key]) / gap) if gap > 0 else float("nan")


def _patch(module: str = "retrieval", **values):
    """A context that sets a distill.prior module's settings (read at call time) for one variant."""
    import importlib  # noqa: PLC0415
    from unittest import mock  # noqa: PLC0415

    return lambda: mock.patch.multiple(importlib.import_module(f"distill.prior.{module}"), **values)


# regenerate as shipped, then each part of it removed (or changed) in turn: the ablation on the decoded measures
REGEN_VARIANTS = {
    "regenerate": {},
    "network": {"settings": {"retrieve": False}},                       # the prior's network draws cell by cell
    "copy_kept": {"patch": _patch("sampler", keeps_cells=lambda todo: False)},   # copy onto kept Structure too
    "no_neighbours": {"patch": _patch(CONTEXT_COLUMNS=0)},              # match nothing around the hole
    "no_rerank": {"patch": _patch(RERANK=0.0)},                         # codeword distance alone chooses
    "spread_1": {"patch": _patch(SPREAD=1.0)},                          # SPREAD 1, not 0.25: draws further down the list
    "best_only": {"settings": {"temperature": 0.05}},                   # always the best-matching places
    "short_pieces": {"patch": _patch(PATCH_COLUMNS=4)},                 # copy 4 columns at a time
    "temperature_1": {"settings": {"temperature": 1.0}},                # the default before 0.7 (network and copies)
    **{f"temperature_{t:g}": {"settings": {"temperature": t}} for t in (0.5, 0.6, 0.8)},   # the sweep around 0.7
    "network_t1": {"settings": {"retrieve": False, "temperature": 1.0}},
    "steps_24": {"settings": {"steps": 24}},                            # 24 decoding steps for the network, not 10
    "steps_4": {"settings": {"steps": 4}},
}


def run_decoded(root: str, group: str, codec_minutes: float, prior_minutes: float, model: str | None,
                cache: str | None, variants: list[str], regions: tuple[str, ...] = ("timbre_detail", "all_levels"),
                places: int = 1) -> dict:
    """The decoded measures (decoded_measures) of one corpus's held-out clips, for each of `regions` (REGIONS)."""
    codec, train, test = group_codec(root, group, codec_minutes, model, cache)
    t0 = time.perf_counter()
    pt = PriorTrainer.from_audio(codec, training_items(codec, train), prior_minutes)
    for _ in pt.run():
        pass
    prior_seconds = time.perf_counter() - t0
    codec = codec.with_prior(pt.result.model, pt.result.meta)
    held = {os.path.basename(p) for p in test}
    leaked = held & set(codec.prior.bank()[0].names)
    if leaked:   # retrieval must never copy from the files it is measured on
        raise SystemExit(f"held-out files in the prior's bank: {sorted(leaked)[:3]}")
    clips = []
    for p in test:
        try:
            clips.append(clip_from_source(codec, load_source(p)))
        except Exception:  # noqa: BLE001 - a benchmark skips what it cannot read
            continue
    k = codec.codebook_size
    usage = [[int(x) for x in np.bincount(np.concatenate([g[q].ravel() for g in pt.corpus.grids]), minlength=k)]
             for q in range(len(codec.level_names))]
    chosen = {v: REGEN_VARIANTS[v] for v in variants}
    longest = max(clips, key=lambda c: c.grid.num_samples)
    return {"group": group, "train": len(train), "test": len(clips), "prior_seconds": round(prior_seconds, 1),
            "bank_files": len(codec.prior.bank()[0].names),
            **{key: decoded_measures(codec, clips, usage, REGIONS[key], chosen, places=places) for key in regions},
            "speed_4x2s": speed(codec, longest), "speed_4x2s_all": speed(codec, longest, levels=codec.level_names),
            "speed_clip_s": round(longest.grid.duration_s, 2)}


def decoded_table(results: list[dict]) -> str:
    lines = ["| corpus | region | method | re-encode agreement | in-span change | mel-statistics distance to the "
             "recordings | gap closed: agreement / change / distance | versions differ |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for key, what in (("timbre_detail", "Timbre+Detail"), ("all_levels", "all levels")):
            for name, m in r.get(key, {}).items():
                closed = "" if name in ("original", "randomize") else \
                    f"{100 * m['closes_agree']:.0f}% / {100 * m['closes_change']:.0f}% / {100 * m['closes_fd']:.0f}%"
                lines.append(f"| {r['group']} | {what} | {name} | {m['agree']:.3f} | {m['change']:.4f} | {m['fd']:.2f} | "
                             f"{closed} | {m['differ']:.2f} |")
    lines += ["", "| corpus | files train/test | bank files | prior s | 4 x 2 s versions: Timbre+Detail / all levels |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['train']}/{r['test']} | {r['bank_files']} | {r['prior_seconds']} | "
              f"{r['speed_4x2s']:.2f} s / {r.get('speed_4x2s_all', float('nan')):.2f} s |" for r in results]
    return "\n".join(lines)


def speed(codec: Codec, clip: Clip, repeats: int = 3, levels: tuple[str, ...] = ("Timbre", "Detail")) -> float:
    """Median seconds: 4 candidates for a 2 s span of `levels` (Timbre+Detail: the network draws; all levels:
    copied from the bank), drawn and surgically rendered (together, as the studio does: EditSession.preview_many)."""
    grid = clip.grid
    region = Region.from_seconds(grid, list(levels), max(0.0, grid.duration_s / 2 - 1), grid.duration_s / 2 + 1)
    session = EditSession(codec, clip)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        results = regenerate(codec, grid, region, RegenerateSettings(seed=r, candidates=4))
        session.preview_many(results)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def per_file_bits(prior: CodePrior, held: CodeCorpus, freq: np.ndarray, k: int) -> list[dict]:
    """Each held-out file on its own edit-shaped masks: prior vs frequencies, with its length in columns (a clip
    no longer than the span has no context to predict from)."""
    out = []
    for i, name in enumerate(held.names):
        codes, pad, hide = fixed_eval_set(held.subset([i]), prior.cfg.window, k, seed=7,
                                          mask_fn=lambda L, B, T, rng: edit_mask(L, B, T, rng, keep_levels=1))
        f = baseline_bits(codes, pad, hide, freq, k)["frequencies"]
        out.append({"file": name, "columns": int(held.grids[i].shape[2]), "cells": int(hide.sum()),
                    "prior": evaluate_bits(prior, codes, pad, hide, steps=RegenerateSettings().steps), "frequencies": f})
    return out


def group_codec(root: str, group: str, codec_minutes: float, model: str | None, cache: str | None
                ) -> tuple[Codec, list, list]:
    """(codec, training files, held-out files) of a folder group: `model` when given, else the codec cached for
    the group in `cache`, else one trained on the training files for `codec_minutes` (and cached)."""
    paths = select_files(root, group.split(","), None)
    train, test = holdout_split(paths, 5)
    cached = os.path.join(cache, group.replace(",", "+") + ".distill") if cache else None
    if model:
        return Codec.load(model), train, test
    if cached and os.path.exists(cached):
        return Codec.load(cached), train, test
    trainer = Trainer(train, minutes=codec_minutes)
    for _ in trainer.run():
        pass
    codec = trainer.result.codec
    if cached:
        os.makedirs(cache, exist_ok=True)
        codec.save(cached)
    return codec, train, test


def training_items(codec: Codec, paths: list) -> list[tuple[str, torch.Tensor]]:
    """(file name, log-mel [n_mels, frames]) of each training file the codec's front end can read."""
    items = []
    for p in paths:
        try:
            items.append((os.path.basename(p), codec.logmel(load_audio(p, codec.sample_rate)[0])))
        except Exception:  # noqa: BLE001 - a benchmark skips what it cannot read
            continue
    return items


def run_group(root: str, group: str, codec_minutes: float, prior_minutes: float, model: str | None,
              cache: str | None = None, by_file: bool = False) -> dict:
    codec, train, test = group_codec(root, group, codec_minutes, model, cache)
    items = training_items(codec, train)
    t0 = time.perf_counter()
    pt = PriorTrainer.from_audio(codec, items, prior_minutes)
    for _ in pt.run():
        pass
    prior_seconds = time.perf_counter() - t0
    codec = codec.with_prior(pt.result.model, pt.result.meta)
    test_clips = []
    for p in test:
        try:
            test_clips.append(clip_from_source(codec, load_source(p)))
        except Exception:  # noqa: BLE001
            continue
    k = codec.codebook_size
    held = encode_corpus(codec, [(c.name, codec.logmel(c.wave)) for c in test_clips])
    codes, pad, hide = fixed_eval_set(held, codec.prior.cfg.window, k, seed=7,
                                      mask_fn=lambda L, B, T, rng: edit_mask(L, B, T, rng, keep_levels=1))
    steps = RegenerateSettings().steps
    prior_bits = evaluate_bits(codec.prior, codes, pad, hide, steps=steps)         # in the order the sampler draws
    level_bits = evaluate_bits(codec.prior, codes, pad, hide)                      # coarse to fine, levels only
    marginal_bits = evaluate_bits(codec.prior, codes, pad, hide, by_level=False)   # every hidden cell alone
    freq = np.exp(log_frequencies(pt.corpus, k))   # what randomize draws from, add-one
    base = baseline_bits(codes, pad, hide, freq, k, steps)
    base["copy_nearest_alone"] = baseline_bits(codes, pad, hide, freq, k)["copy_nearest"]
    usage = [[int(x) for x in np.bincount(np.concatenate([g[q].ravel() for g in pt.corpus.grids]), minlength=k)]
             for q in range(len(codec.level_names))]
    longest = max(test_clips, key=lambda c: c.grid.num_samples)
    extra = {"per_file": per_file_bits(codec.prior, held, freq, k)} if by_file else {}
    return {**extra, "group": group, "files": len(train) + len(test), "train": len(train), "test": len(test_clips),
            "prior_steps": pt.result.meta["steps"], "prior_seconds": round(prior_seconds, 1),
            "bits": {"prior": prior_bits, "prior_levels": level_bits, "prior_marginal": marginal_bits, **base},
            "plausibility": plausibility(codec, test_clips, usage),
            "plausibility_all_levels": plausibility(codec, test_clips, usage, levels=(0, 1, 2)),
            "speed_4x2s": speed(codec, longest), "speed_clip_s": round(longest.grid.duration_s, 2)}


def table(results: list[dict]) -> str:
    lines = ["| corpus | files (train/test) | prior (steps, s) | bits/code prior as drawn (levels only; each cell alone) "
             "| frequencies (a) | copy nearest (b) as drawn (alone) | prior vs (a) | 4 x 2 s candidates |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        b = r["bits"]
        lines.append(f"| {r['group']} | {r['train']}/{r['test']} | {r['prior_steps']}, {r['prior_seconds']} | "
                     f"{b['prior']:.3f} ({b['prior_levels']:.3f}; {b['prior_marginal']:.3f}) | {b['frequencies']:.3f} | "
                     f"{b['copy_nearest']:.3f} ({b['copy_nearest_alone']:.3f}) | "
                     f"{100 * (1 - b['prior'] / b['frequencies']):.1f}% lower | {r['speed_4x2s']:.2f} s |")
    lines += ["", "| corpus | region redrawn | spans | smooth, pooled: regen / randomize / own codes (1 = the recording) "
              "| per-span |log ratio|: regen / randomize / own codes (0 = the recording) "
              "| re-encode agreement: regen / randomize / own codes |",
              "|---|---|---|---|---|---|"]
    for r in results:
        for key, what in (("plausibility", "Timbre+Detail"), ("plausibility_all_levels", "all levels")):
            p = r[key]
            trio = ("regenerate", "randomize", "own codes")
            lines.append(f"| {r['group']} | {what} | {p['regenerate']['n']} | "
                         + " / ".join(f"{p[k]['smooth']:.2f}" for k in trio) + " | "
                         + " / ".join(f"{p[k]['smooth_off']:.3f}" for k in trio) + " | "
                         + " / ".join(f"{p[k]['agree']:.2f}" for k in trio) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--folders", nargs="+", required=True, help="groups of top-level folders, comma-joined")
    ap.add_argument("--codec-minutes", type=float, default=2.0)
    ap.add_argument("--prior-minutes", type=float, nargs="+", default=[2.0],
                    help="the prior's budget; with --ablate, one or more (each in turn)")
    ap.add_argument("--model", help="use this codec instead of training one per group")
    ap.add_argument("--codec-cache", help="folder to keep each group's trained codec in and reuse it from")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-file", action="store_true", help="also print each held-out file's bits/code")
    ap.add_argument("--ablate", help="all, or a comma list of variants (benchmarks/prior_ablation.py): "
                                     "held-out bits and speed with each part of the prior removed in turn")
    ap.add_argument("--decoded", help="all, or a comma list of regenerate variants (REGEN_VARIANTS): what the user "
                                      "hears, decoded, per corpus (decoded_measures)")
    ap.add_argument("--regions", default="timbre_detail,all_levels",
                    help="with --decoded: which regions to redraw (timbre_detail, all_levels)")
    ap.add_argument("--places", type=int, default=1, help="with --decoded: spans of each width per held-out clip")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.decoded:
        names = list(REGEN_VARIANTS) if args.decoded == "all" else args.decoded.split(",")
        unknown = [n for n in names if n not in REGEN_VARIANTS]
        if unknown:
            ap.error(f"unknown variants {unknown}; known: {', '.join(REGEN_VARIANTS)}")
        regions = tuple(args.regions.split(","))
        bad = [r for r in regions if r not in REGIONS]
        if bad or args.places < 1:
            ap.error(f"unknown --regions {bad} (known: {', '.join(REGIONS)})" if bad else "--places must be at least 1")
        results = []
        for group in args.folders:
            r = run_decoded(args.root, group, args.codec_minutes, args.prior_minutes[0], args.model,
                            args.codec_cache, names, regions, args.places)
            print(json.dumps(r), flush=True)
            results.append(r)
        return finish(results, decoded_table(results), args.json)
    if args.ablate:
        from prior_ablation import parse_variants, run_ablation  # noqa: PLC0415
        run_ablation(args.root, args.folders, args.codec_minutes, args.prior_minutes, parse_variants(args.ablate),
                     args.model, args.codec_cache, args.json)
        return 0
    if len(args.prior_minutes) != 1:
        ap.error("one --prior-minutes without --ablate")
    args.prior_minutes = args.prior_minutes[0]
    results = []
    for group in args.folders:
        r = run_group(args.root, group, args.codec_minutes, args.prior_minutes, args.model, args.codec_cache,
                      args.per_file)
        for f in r.get("per_file", []):
            print(f"{f['file']:32s} {f['columns']:5d} columns {f['cells']:6d} cells  prior {f['prior']:.3f}  "
                  f"frequencies {f['frequencies']:.3f}  {100 * (1 - f['prior'] / f['frequencies']):5.1f}% lower")
        print(json.dumps(r), flush=True)
        results.append(r)
    return finish(results, table(results), args.json)


def finish(results: list[dict], text: str, path: str | None) -> int:
    """Print a run's table and keep its figures as JSON when asked."""
    print(text)
    if path:
        Path(path).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
