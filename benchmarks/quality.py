"""Quality benchmark: the seed reference design vs Distill's default, same wall-clock minutes, held-out files.

    python benchmarks/quality.py DATA_DIR --minutes 8 [--holdout-every 5] [--files N] [--subdirs drums,beats]

(a) seed: seed_config (4 stride-2 convs + BatchNorm + Dropout, 1x1 projections, Softplus, avg-pool MSE),
    decoded with Griffin-Lim, 128 iterations from random phase.
(b) distill: adaptive_config defaults, encoded with Codec.encode's default (the fast search; 20 Adam steps
    before benchmarks/encode.py), decoded with Codec.decode(grid, phase_from=clip), the default path whenever
    the source clip is known.
    (a) encodes with its encoder alone and trains in fp32, as the seed document does; (b) trains in bf16
    mixed precision where the processor has it natively (config `precision="auto"`).
Both train at once in two spawned processes with one torch thread each, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metrics import AudioMetrics, Distances  # noqa: E402

from distill import Codec, dsp  # noqa: E402
from distill.audio import load_audio, scan_folder  # noqa: E402
from distill.config import VQVAEConfig, adaptive_config, seed_config  # noqa: E402
from distill.health import code_counts, health_from_counts  # noqa: E402
from distill.render import render_edit  # noqa: E402
from distill.train import Trainer  # noqa: E402

SEED_GL_ITERS = 128
MAX_EVAL_SECONDS = 30.0
LENGTHS_S = (0.02, 0.0213, 0.05, 0.1707, 0.5, 1.0, 3.3333, 10.0, 35.0)
TARGETS = {"logmel_l1": 0.55, "mrstft": 0.55, "model_mel_l1": 0.6}
DECODE_TARGET_S = 0.15
USE_TARGET = 0.6


@dataclass(frozen=True)
class Arm:
    """One contender: its config, how it decodes, where its model goes."""

    name: str
    config: dict
    phase_locked: bool
    bundle: str
    search: int | None = None  # encode search steps: None = Codec's default, 0 = the encoder alone (the seed's)
    share: float = 1.0         # of --minutes this arm's codec trains (Distill's codec gets 1 - the prior share)


# ------------------------------------------------------------------ file selection
def select_files(root: str, subdirs: list[str], limit: int | None) -> list[str]:
    """Accepted files under root (optionally only some top-level folders), sorted; `limit` spreads evenly."""
    report = scan_folder(root)
    paths = sorted(v.path for v in report.accepted)
    if subdirs:
        keep = tuple(os.path.join(os.path.abspath(root), s) + os.sep for s in subdirs)
        paths = [p for p in paths if os.path.abspath(p).startswith(keep)]
    if limit and limit < len(paths):
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return paths


def holdout_split(paths: list[str], every: int) -> tuple[list[str], list[str]]:
    """Every `every`-th file (1-based, sorted order) is held out."""
    test = [p for i, p in enumerate(paths) if (i + 1) % every == 0]
    train = [p for i, p in enumerate(paths) if (i + 1) % every != 0]
    return train, test


# ------------------------------------------------------------------ one arm (runs in its own process)
def decode_audio(codec: Codec, grid, wave: np.ndarray, phase_locked: bool) -> np.ndarray:
    """The arm's decode path: the clip's own phase, or Griffin-Lim-128 from random phase (the seed's)."""
    if phase_locked:
        return codec.decode(grid, phase_from=wave)
    mel = codec.decode_mel(grid)
    magnitude = codec.front.logmel_to_magnitude(mel)
    return codec.front.griffin_lim(magnitude, grid.num_samples, n_iter=SEED_GL_ITERS,
                                   init_phase=dsp.random_phase(tuple(magnitude.shape))).numpy()  # as the seed does


def run_arm(arm: Arm, train: list[str], test: list[str], minutes: float) -> dict:
    """Train for `minutes` on one thread, save the model, score the held-out files."""
    torch.set_num_threads(1)
    cfg = VQVAEConfig.from_dict(arm.config)
    trainer = Trainer(train, config=cfg.replace(val_fraction=0.0), minutes=minutes, log_every_s=30)
    for ev in trainer.run():
        if ev.kind in ("validation", "done"):
            use = " ".join(f"{h.utilization:.0%}" for h in ev.codebook)
            print(f"[{arm.name}] {ev.kind} step {ev.step} {ev.elapsed_s:.0f}s val {ev.val_loss or 0:.4f} use {use}",
                  file=sys.stderr, flush=True)
    result = trainer.result
    result.save(arm.bundle)
    codec = result.codec
    t0 = time.perf_counter()
    scores = evaluate(codec, test, arm.phase_locked, arm.search)
    scores["eval_s"] = time.perf_counter() - t0
    scores["train_use"] = training_use(codec, train)
    scores["steps"] = result.steps
    scores["train_s"] = float(result.info.dataset["train_seconds"])
    scores["batch_size"] = cfg.batch_size
    return scores


@torch.no_grad()
def evaluate(codec: Codec, test: list[str], phase_locked: bool, search: int | None = None) -> dict:
    """Held-out distances of the decoded audio, model-domain mel L1, per-level codebook use."""
    metrics = AudioMetrics(codec.sample_rate)
    dist, oracle = Distances(), Distances()
    mel_err, mel_n = 0.0, 0
    counts = np.zeros((len(codec.level_names), codec.codebook_size), dtype=np.int64)
    for path in test:
        wave, _ = load_audio(path, codec.sample_rate)
        wave = wave[: int(MAX_EVAL_SECONDS * codec.sample_rate)]
        mel = codec.logmel(wave)
        grid = codec.encode(wave, search_steps=search)
        recon = codec.decode_mel(grid)
        mel_err += float((recon - mel).abs().sum())
        mel_n += mel.numel()
        counts += code_counts(grid.codes, codec.codebook_size)
        dist = dist + metrics.distances(wave, decode_audio(codec, grid, wave, phase_locked))
        if phase_locked:  # the floor: the true mel with the clip's own phase
            oracle = oracle + metrics.distances(wave, codec.front.invert(mel, len(wave), phase_from=wave).numpy())
    out = {**dist.mean(), "model_mel_l1": mel_err / max(mel_n, 1), "levels": [], "positions": int(counts[0].sum())}
    for q, name in enumerate(codec.level_names):
        h = health_from_counts(counts[q], name)
        out["levels"].append({"name": name, "use": h.utilization, "perplexity": h.perplexity})
    if phase_locked:
        out["oracle"] = oracle.mean()
    return out


@torch.no_grad()
def training_use(codec: Codec, train: list[str]) -> list[float]:
    """Per-level codebook use on the training files: with a small held-out set (5 short files are
    ~200 code positions for a 64-code book) held-out use measures the sample, not the codebook.
    The encoder's own codes (no search): this row is about the codebooks, and it stays cheap."""
    counts = np.zeros((len(codec.level_names), codec.codebook_size), dtype=np.int64)
    for path in train:
        wave, _ = load_audio(path, codec.sample_rate)
        grid = codec.encode(wave[: int(MAX_EVAL_SECONDS * codec.sample_rate)], search_steps=0)
        counts += code_counts(grid.codes, codec.codebook_size)
    return [health_from_counts(c, name).utilization for c, name in zip(counts, codec.level_names, strict=True)]


# ------------------------------------------------------------------ checks in the parent
def ten_second_clip(test: list[str], sr: int, seconds: float = 10.0) -> np.ndarray:
    """Held-out audio laid end to end (repeated if needed) to exactly `seconds`."""
    waves = [load_audio(p, sr)[0] for p in test]
    joined = np.concatenate(waves) if waves else np.zeros(1, np.float32)
    n = int(seconds * sr)
    return np.resize(joined, n).astype(np.float32) if joined.size < n else joined[:n]


def edit(grid):
    """A region edit: copy a block of Structure+Timbre codes from the clip's start into its middle."""
    codes = grid.codes.copy()
    cols = grid.num_columns
    w = max(1, cols // 4)
    codes[:2, 2:6, cols // 2:cols // 2 + w] = codes[:2, 2:6, :w]
    return grid.with_codes(codes)


def time_encode(codec: Codec, wave: np.ndarray, search: int | None) -> float:
    """Seconds from a waveform to its code grid (the arm's encode path), best of three."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        codec.encode(wave, search_steps=search)
        times.append(time.perf_counter() - t0)
    return float(min(times))


def time_decode(codec: Codec, wave: np.ndarray, phase_locked: bool) -> float:
    """Seconds from an edited grid to a waveform, best of several runs (timeit's rule: the
    machine is shared, and the minimum is the figure least disturbed by other processes)."""
    grid = edit(codec.encode(wave, search_steps=0))
    times = []
    for _ in range(7 if phase_locked else 2):
        t0 = time.perf_counter()
        decode_audio(codec, grid, wave, phase_locked)
        times.append(time.perf_counter() - t0)
    return float(min(times))


def time_render(codec: Codec, wave: np.ndarray) -> float:
    """Seconds for the studio's surgical render of the same edit (source audio outside the edited cells)."""
    source = codec.encode(wave, search_steps=0)
    edited = edit(source)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        render_edit(codec, edited, wave, source)
        times.append(time.perf_counter() - t0)
    return float(min(times))


def length_failures(codec: Codec, wave: np.ndarray, phase_locked: bool, search: int | None) -> list[str]:
    """Durations (20 ms .. 35 s, odd sample counts too) whose decode is not exactly as long as the input."""
    bad = []
    for s in LENGTHS_S:
        n = int(round(s * codec.sample_rate)) + 7
        clip = np.resize(wave, n).astype(np.float32)
        if phase_locked:
            grid = codec.encode(clip, search_steps=search)
            outs = [codec.decode(grid, phase_from=clip), codec.decode(grid, n_iter=4)]
        else:
            mel = codec.decode_mel(codec.encode(clip, search_steps=search))
            outs = [codec.front.griffin_lim(codec.front.logmel_to_magnitude(mel), n, n_iter=4).numpy()]
        bad += [f"{n} samples -> {len(o)}" for o in outs if len(o) != n]
    return bad


# ------------------------------------------------------------------ report
def table(a: dict, b: dict, info: dict) -> str:
    def row(label: str, va: float, vb: float, target: str = "", ok: bool | None = None, fmt: str = "{:.4f}") -> str:
        ratio = vb / va if va else float("nan")
        mark = "" if ok is None else ("yes" if ok else "NO")
        return f"| {label} | {fmt.format(va)} | {fmt.format(vb)} | {ratio:.2f}x | {target} | {mark} |"

    lines = ["| metric (held-out) | (a) seed | (b) distill | (b)/(a) | target | met |", "|---|---|---|---|---|---|"]
    for key, label in (("logmel_l1", "log-mel L1 (DAC-style, decoded audio)"),
                       ("mrstft", "MR-STFT (SC + log-mag L1, decoded audio)"),
                       ("model_mel_l1", "model-domain log1p-mel L1 (network output)")):
        lines.append(row(label, a[key], b[key], f"<= {TARGETS[key]}x", b[key] <= TARGETS[key] * a[key]))
    for la, lb in zip(a["levels"], b["levels"], strict=True):
        lines.append(row(f"{lb['name']} codebook use", la["use"], lb["use"], f">= {USE_TARGET:.0%}",
                         lb["use"] >= USE_TARGET, "{:.0%}"))
        lines.append(row(f"{lb['name']} perplexity", la["perplexity"], lb["perplexity"], fmt="{:.1f}"))
    lines.append(f"| held-out code positions per level (codebook {info['codebook']}) | {a['positions']} | {b['positions']} "
                 f"| | | |")
    use_a, use_b = (" / ".join(f"{u:.0%}" for u in arm["train_use"]) for arm in (a, b))
    lines.append(f"| codebook use on the training files (per level) | {use_a} | {use_b} | | | |")
    sa, sb = a["steps"] / a["train_s"], b["steps"] / b["train_s"]
    lines.append(row("training steps/s", sa, sb, fmt="{:.2f}"))
    lines.append(row("training crops/s", sa * a["batch_size"], sb * b["batch_size"], fmt="{:.1f}"))
    lines.append(row("encode 10 s clip (s)", info["encode_a"], info["encode_b"], fmt="{:.3f}"))
    lines.append(row("decode 10 s clip, edit -> waveform (s)", info["decode_a"], info["decode_b"],
                     f"<= {DECODE_TARGET_S} s", info["decode_b"] <= DECODE_TARGET_S, "{:.3f}"))
    lines.append(f"| decode 10 s clip, studio surgical render of the same edit (s) | | {info['render_b']:.3f} | | | |")
    o = b.get("oracle")
    if o:
        lines.append(f"| floor: true mel + own phase | | {o['logmel_l1']:.4f} / {o['mrstft']:.4f} | | | |")
    lines.append(f"| exact decoded length, {LENGTHS_S[0] * 1000:.0f} ms - {LENGTHS_S[-1]:.0f} s | "
                 f"{'ok' if not info['len_a'] else info['len_a']} | {'ok' if not info['len_b'] else info['len_b']} "
                 f"| | equal | {'yes' if not (info['len_a'] or info['len_b']) else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--holdout-every", type=int, default=5)
    ap.add_argument("--files", type=int, default=None, help="use N files spread evenly over the sorted list")
    ap.add_argument("--subdirs", default="", help="comma-separated top-level folders to keep, e.g. drums,beats")
    ap.add_argument("--set", default="", help="JSON overrides for (b)'s config, for tuning, e.g. '{\"res_blocks\": 0}'")
    ap.add_argument("--vs", default="", help="tuning: replace (a) by Distill with these JSON overrides (own phase)")
    ap.add_argument("--keep", default=None, help="copy both trained models into this folder")
    ap.add_argument("--json", default=None, help="also write all figures to this file")
    ap.add_argument("--prior-share", type=float, default=0.0,
                    help="Distill's codec trains for (1 - F) of --minutes, as `distill train --prior-share F` gives it "
                    "(the prior itself is not trained here: benchmarks/prior.py measures it)")
    args = ap.parse_args(argv)

    paths = select_files(args.data_dir, [s for s in args.subdirs.split(",") if s], args.files)
    train, test = holdout_split(paths, args.holdout_every)
    if len(train) < 2 or not test:
        raise SystemExit(f"need at least {args.holdout_every} usable files, found {len(paths)}")
    n = len(train)
    seed_cfg = seed_config(n)
    ours = adaptive_config(n, **json.loads(args.set or "{}"))
    print(f"{len(paths)} files: {n} train / {len(test)} held out; codebook {ours.codebook_size}; "
          f"{args.minutes} min each, concurrently, 1 thread each", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        first = (Arm("seed", seed_cfg.to_dict(), False, str(Path(tmp) / "seed.distill"), search=0) if not args.vs else
                 Arm("vs", adaptive_config(n, **json.loads(args.vs)).to_dict(), True, str(Path(tmp) / "vs.distill")))
        arms = [first,
                Arm("distill", ours.to_dict(), True, str(Path(tmp) / "distill.distill"), share=1 - args.prior_share)]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_arm, arm, train, test, args.minutes * arm.share) for arm in arms]
            a, b = (f.result() for f in futures)
        wall = time.perf_counter() - t0
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for arm in arms:
                shutil.copy(arm.bundle, args.keep)
        torch.set_num_threads(1)  # time decoding as the worker processes ran: one thread, no oversubscription
        codec_a, codec_b = Codec.load(arms[0].bundle), Codec.load(arms[1].bundle)
        clip = ten_second_clip(test, codec_b.sample_rate)
        pa, sa = arms[0].phase_locked, arms[0].search
        info = {"encode_a": time_encode(codec_a, clip, sa), "encode_b": time_encode(codec_b, clip, None),
                "decode_a": time_decode(codec_a, clip, pa), "decode_b": time_decode(codec_b, clip, True),
                "render_b": time_render(codec_b, clip),
                "len_a": length_failures(codec_a, clip, pa, sa), "len_b": length_failures(codec_b, clip, True, None),
                "codebook": ours.codebook_size}

    print(f"\n{args.data_dir} {args.subdirs or ''} --minutes {args.minutes}: {n} train / {len(test)} held-out files, "
          f"codebook {ours.codebook_size}; steps (a) {a['steps']} (b) {b['steps']}; wall {wall / 60:.1f} min\n")
    print(table(a, b, info))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seed": a, "distill": b, **info,
                                               "distill_config": ours.to_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
