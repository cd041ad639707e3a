"""Do the prior's parts earn their place? (issue 26) Held-out bits/code and 4 x 2 s regenerate time with each
part of the prior removed in turn, on the corpora and held-out files of `prior.py`.

    python benchmarks/prior.py /usr/share/lmms/samples --folders drums,beats,bassloops --codec-minutes 2 \
        --codec-cache /tmp/ablation_codecs --prior-minutes 2 0.4 --ablate all --threads 1 --json out.json
    python benchmarks/prior_ablation.py drums.json tonal.json      # one markdown table from the runs' --json

Per corpus the codec is trained once (or read from --codec-cache), the training clips' log-mels and the held-out
clips' codes are made once, then the prior is trained once per variant and budget (--prior-minutes, each in
turn) the way `PriorTrainer.from_audio` trains it in the product (encoding included), with the same seed, the
same corpus and the same held-out split for every variant. Each variant is scored as `prior.py`'s main figure:
the held-out bits/code of Timbre + Detail under a 1-16-column span, in the order the sampler draws
(`evaluate_bits(steps=...)`), and the median of three 4 x 2 s Regenerate candidates, sampled and rendered.

What each variant removes (VARIANTS; join names with + to remove several together, as the backward elimination
of issue 26 did: each round's baseline is the previous round's cheapest removal). Parts without a config switch
are switched off here, by replacing a function in the module that calls it (never by editing src/):
  - no latent path: latent_dim 0 (so no context part, recall or calibration either): the code tables alone;
  - no context part: context_width 0 (context_same 0 with it, which needs the part; and so no shifted encodings);
  - no same-level context: context_same 0;
  - no shifted encodings: context_shifts returns 0 (the context part is fitted on the training clips only);
  - no loop: the masked-token loop over the tables runs with a loss of zero gradient (the fitted start is kept);
  - no calibration: calibrate_latent is skipped, the mixing tables keep their initial values (the training
    loop still moves them, as it does after calibration);
  - full again: the full prior a second time, last: how far the wall-clock budget alone moves the figures.
The transformer, the context ensemble, the recall kernel and the product sharpening were removed from src/ by
that elimination (each cost < 1% of the bits on both corpora when it went; benchmarks/README.md, "Prior
ablation"); their variants went with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior import group_codec, training_items  # noqa: E402

from distill import RegenerateSettings, load_source  # noqa: E402
from distill.prior import (  # noqa: E402
    PriorTrainer,
    edit_mask,
    encode_corpus,
    evaluate_bits,
    fixed_eval_set,
)
from distill.session import clip_from_source  # noqa: E402

LATENT_OFF = {"latent_dim": 0, "context_width": 0, "context_same": 0}


@contextlib.contextmanager
def replaced(namespace: dict, name: str, value: object) -> Iterator[None]:
    """`namespace[name]` (a module's globals, as the calling function looks it up) is `value` inside the block.
    KeyError when the name is not there: a renamed function must fail here, not leave the part switched on."""
    old = namespace[name]
    namespace[name] = value
    try:
        yield
    finally:
        namespace[name] = old


def _from_audio_globals() -> dict:
    return PriorTrainer.from_audio.__func__.__globals__


def _run_globals() -> dict:
    return PriorTrainer.run.__globals__


def _still(model, *args, **kwargs) -> torch.Tensor:
    """A loss whose gradient is zero everywhere: the loop runs and validates, and no table moves (AdamW without
    decay makes no update from zero gradients)."""
    return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)


def _uncalibrated(*args, **kwargs) -> float:
    return math.nan


# name -> (what is removed, config overrides, context manager factory or None)
VARIANTS: dict[str, tuple[str, dict, Callable[[], contextlib.AbstractContextManager] | None]] = {
    "full": ("nothing (the shipped prior)", {}, None),
    "no_latent": ("the latent path (and with it context, recall, kernel, product, calibration)", LATENT_OFF, None),
    "no_context": ("the context part (and same-level context, shifted encodings)",
                   {"context_width": 0, "context_same": 0}, None),
    "no_same": ("same-level context", {"context_same": 0}, None),
    "no_shifts": ("the shifted encodings", {},
                  lambda: replaced(_from_audio_globals(), "context_shifts", lambda *a, **k: 0)),
    "no_loop": ("the masked-token loop over the tables (the fitted start is kept)", {},
                lambda: replaced(_run_globals(), "masked_nll", _still)),
    "no_calibration": ("the calibrated mixing (initial mixing tables)", {},
                       lambda: replaced(_run_globals(), "calibrate_latent", _uncalibrated)),
    "full_again": ("nothing (the full prior again, last: the budget's own noise)", {}, None),
}


def variant(name: str) -> tuple[str, dict, Callable[[], contextlib.AbstractContextManager] | None]:
    """VARIANTS[name], or for "a+b+..." the parts of a, b, ... removed together (backward elimination: the
    next round's baseline is the last round's cheapest removal): the overrides merged, the patches stacked."""
    parts = name.split("+")
    if len(parts) == 1:
        return VARIANTS[name]
    chosen = [VARIANTS[p] for p in parts]
    overrides = {k: v for _, o, _ in chosen for k, v in o.items()}
    patches = [f for _, _, f in chosen if f]

    @contextlib.contextmanager
    def stacked() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for f in patches:
                stack.enter_context(f())
            yield

    return " and ".join(w for w, _, _ in chosen), overrides, stacked if patches else None


def trainer_class(overrides: dict) -> type[PriorTrainer]:
    """PriorTrainer whose default config has `overrides` (from_audio builds it with cls(...))."""
    if not overrides:
        return PriorTrainer

    class Ablated(PriorTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.config = dataclasses.replace(self.config, **overrides)

    return Ablated


def parse_variants(spec: str) -> list[str]:
    names = list(VARIANTS) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if any(p not in VARIANTS for p in n.split("+"))]
    if unknown:
        raise SystemExit(f"unknown ablation variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}, all "
                         "(join with + to remove several together)")
    return names


def prepare_group(root: str, group: str, codec_minutes: float, model: str | None, cache: str | None) -> dict:
    """The codec (trained once or cached), the training clips' log-mels, the held-out clips and their codes."""
    t0 = time.perf_counter()
    codec, train, test = group_codec(root, group, codec_minutes, model, cache)
    codec_seconds = time.perf_counter() - t0
    items = training_items(codec, train)
    test_clips = []
    for p in test:
        try:
            test_clips.append(clip_from_source(codec, load_source(p)))
        except Exception:  # noqa: BLE001
            continue
    held = encode_corpus(codec, [(c.name, codec.logmel(c.wave)) for c in test_clips])
    return {"paths": train + test, "train": train, "codec": codec, "codec_seconds": codec_seconds, "items": items,
            "test_clips": test_clips, "held": held}


def run_variant(prep: dict, name: str, minutes: float) -> dict:
    from prior import speed  # noqa: PLC0415 - prior.py imports this module

    what, overrides, patch = variant(name)
    codec, k = prep["codec"], prep["codec"].codebook_size
    with patch() if patch else contextlib.nullcontext():
        torch.manual_seed(0)
        t0 = time.perf_counter()
        pt = trainer_class(overrides).from_audio(codec, prep["items"], minutes)
        for _ in pt.run():
            pass
        prior_seconds = time.perf_counter() - t0
        with_prior = codec.with_prior(pt.result.model, pt.result.meta)
        cfg = with_prior.prior.cfg
        codes, pad, hide = fixed_eval_set(prep["held"], cfg.window, k, seed=7,
                                          mask_fn=lambda L, B, T, rng: edit_mask(L, B, T, rng, keep_levels=1))
        t1 = time.perf_counter()
        bits = evaluate_bits(with_prior.prior, codes, pad, hide, steps=RegenerateSettings().steps)
        eval_seconds = time.perf_counter() - t1
        longest = max(prep["test_clips"], key=lambda c: c.grid.num_samples)
        seconds_4x2 = speed(with_prior, longest)
    meta = pt.result.meta
    return {"variant": name, "removed": what, "minutes": minutes, "bits": bits, "steps": meta["steps"],
            "prior_seconds": round(prior_seconds, 1), "eval_seconds": round(eval_seconds, 1),
            "best_val_bits": meta.get("best_val_bits"), "speed_4x2s": seconds_4x2,
            "shifted": "shifted by parts of a column" in pt.encode_note, "encode_note": pt.encode_note.strip("; "),
            "config": {f: getattr(cfg, f) for f in ("latent_dim", "context_width", "context_same")}}


def run_ablation(root: str, groups: list[str], codec_minutes: float, budgets: list[float], variants: list[str],
                 model: str | None, cache: str | None, json_path: str | None) -> list[dict]:
    out = []
    for group in groups:
        prep = prepare_group(root, group, codec_minutes, model, cache)
        r = {"group": group, "files": len(prep["paths"]), "train": len(prep["train"]), "test": len(prep["test_clips"]),
             "codec_seconds": round(prep["codec_seconds"], 1), "runs": []}
        out.append(r)
        print(f"{group}: {r['train']} train / {r['test']} test files, codec in {r['codec_seconds']} s", flush=True)
        for minutes in budgets:
            for name in variants:
                v = run_variant(prep, name, minutes)
                r["runs"].append(v)
                print(json.dumps({"group": group, **v}), flush=True)
                if json_path:
                    Path(json_path).write_text(json.dumps(out, indent=2))
    print(table(out))
    return out


def speed_pass(root: str, groups: list[str], variants: list[str], cache: str, rounds: int = 5,
               minutes: float = 0.1, json_path: str | None = None) -> dict:
    """The 4 x 2 s time alone, on a machine quieter than a long run's: each variant's prior trained briefly (its
    shape, not its fit, sets the time), then `rounds` rounds over the variants in turn (so a busy moment falls
    on all of them alike), three draws each; the median of the rounds' medians per variant."""
    from prior import speed  # noqa: PLC0415

    out = {}
    for group in groups:
        prep = prepare_group(root, group, 0.0, None, cache)
        codec = prep["codec"]
        longest = max(prep["test_clips"], key=lambda c: c.grid.num_samples)
        priors = {}
        for name in variants:
            _, overrides, patch = variant(name)
            with patch() if patch else contextlib.nullcontext():
                pt = trainer_class(overrides).from_audio(codec, prep["items"], minutes)
                for _ in pt.run():
                    pass
            priors[name] = codec.with_prior(pt.result.model, pt.result.meta)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name in variants:
                patch = variant(name)[2]
                with patch() if patch else contextlib.nullcontext():
                    times[name].append(speed(priors[name], longest))
        out[group] = {name: {"median": float(np.median(t)), "rounds": t} for name, t in times.items()}
        print(json.dumps({group: {n: round(v["median"], 3) for n, v in out[group].items()}}), flush=True)
        if json_path:
            Path(json_path).write_text(json.dumps(out, indent=2))
    return out


def table(results: list[dict], speeds: dict | None = None) -> str:
    """One markdown table: per corpus and budget, each variant's bits/code, change vs full, steps, 4 x 2 s (in
    the run; and from speed_pass's `speeds` where given)."""
    lines = ["| corpus | prior budget | variant | bits/code as drawn | vs full | prior steps | 4 x 2 s candidates |"
             + (" 4 x 2 s, speed pass |" if speeds else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if speeds else "")]
    for r in results:
        for minutes in dict.fromkeys(v["minutes"] for v in r["runs"]):
            runs = [v for v in r["runs"] if v["minutes"] == minutes]
            full = next((v["bits"] for v in runs if v["variant"] == "full"), math.nan)
            for v in runs:
                change = "" if v["variant"] == "full" else f"{100 * (v['bits'] / full - 1):+.1f}%"
                lines.append(f"| {r['group']} | {minutes:g} min | {v['variant']} | {v['bits']:.3f} | {change} | "
                             f"{v['steps']} | {v['speed_4x2s']:.2f} s |"
                             + (f" {speeds[r['group']][v['variant']]['median']:.2f} s |"
                                if speeds and v["variant"] in speeds.get(r["group"], {}) else (" |" if speeds else "")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`table RUN.json ... [--speeds SPEED.json]`: the markdown table of `prior.py --ablate` runs; `speed ROOT
    --folders ... --codec-cache DIR`: speed_pass on the cached codecs."""
    import argparse  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("runs", nargs="+")
    t.add_argument("--speeds")
    sp = sub.add_parser("speed")
    sp.add_argument("root")
    sp.add_argument("--folders", nargs="+", required=True)
    sp.add_argument("--codec-cache", required=True)
    sp.add_argument("--variants", default="all")
    sp.add_argument("--rounds", type=int, default=5)
    sp.add_argument("--prior-minutes", type=float, default=0.1)
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--json")
    args = ap.parse_args(argv)
    if args.cmd == "table":
        results = []
        for p in args.runs:
            results += json.loads(Path(p).read_text())
        print(table(results, json.loads(Path(args.speeds).read_text()) if args.speeds else None))
        return 0
    torch.set_num_threads(args.threads)
    speed_pass(args.root, args.folders, parse_variants(args.variants), args.codec_cache, args.rounds,
               args.prior_minutes, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
