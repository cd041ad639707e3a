"""Training speed: where one training step's time goes, and crops/s of the default against other configs, same run.

    python benchmarks/train_speed.py [DATA_DIR] [--rounds 10] [--ops 12] [--vs NAME=JSON ...]

Every arm is one training step exactly as `Trainer.run` takes it (random 1 s crops of the clips' log-mels,
computed once ahead, as the Trainer does; forward under the Trainer's autocast; the losses; backward;
gradient clipping; AdamW), timed part by part. The arms run in this one process on one torch thread,
interleaved step by step, round after round, so a shared machine's load falls on all of them alike;
the figures are medians over the rounds. Arms:

- **default**: `adaptive_config(n)`, the shipped default.
- **previous**: the default before issue 15 (channels 32/64/128/256, the quantizer library's own
  rotation-trick transform), the design `benchmarks/README.md`'s 2026-11-27 tables measured.
- **seed**: `seed_config(n)`, the seed design (batch 32).
- any `--vs NAME=JSON` (overrides for `adaptive_config`; `"_library_rotation": true` uses the library's
  rotation transform for that arm).

Without DATA_DIR the crops are random log-mel-like noise (the step time does not depend on the audio).
`--ops N` also prints the N most expensive operators of the default's step (torch.profiler, self time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from distill.audio import load_audio, scan_folder  # noqa: E402
from distill.config import VQVAEConfig, adaptive_config, seed_config  # noqa: E402
from distill.losses import compute_losses, total_loss  # noqa: E402
from distill.melcache import MemoryClip as Clip  # noqa: E402
from distill.model import ConvVQVAE, use_fast_rotation  # noqa: E402
from distill.spectrogram import MelConfig, MelFrontEnd  # noqa: E402
from distill.train import autocast_dtype, crop_frames, frame_mask, random_crop  # noqa: E402

PREVIOUS = {"channels": [32, 64, 128, 256], "_library_rotation": True}
PARTS = ("data", "encoder fwd", "quantizer fwd", "decoder fwd", "losses fwd", "backward", "clip grad", "optimizer")


@dataclass
class Arm:
    name: str
    cfg: VQVAEConfig
    library_rotation: bool
    model: ConvVQVAE
    opt: torch.optim.Optimizer
    amp: torch.dtype | None
    times: dict

    @classmethod
    def build(cls, name: str, cfg: VQVAEConfig, library_rotation: bool = False) -> Arm:
        torch.manual_seed(cfg.seed)
        model = ConvVQVAE(cfg).to(memory_format=torch.channels_last)  # the Trainer's layout on a CPU
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        return cls(name, cfg, library_rotation, model, opt, autocast_dtype(cfg.precision, torch.device("cpu")),
                   {p: [] for p in PARTS})


def load_clips(data_dir: str | None, limit: int) -> list[Clip]:
    if not data_dir:
        g = torch.Generator().manual_seed(0)
        return [Clip(f"noise{i}", torch.rand(128, 300, generator=g) * 6) for i in range(limit)]
    front = MelFrontEnd(MelConfig())
    accepted = sorted(v.path for v in scan_folder(data_dir).accepted)[:limit]
    return [Clip(os.path.basename(p), front.logmel(load_audio(p, 48000)[0])) for p in accepted]


def step(arm: Arm, clips: list[Clip], rng: np.random.Generator, pinv: torch.Tensor, record: bool) -> None:
    """One training step as Trainer.run takes it, each part timed."""
    use_fast_rotation(not arm.library_rotation)
    cfg, model, opt = arm.cfg, arm.model, arm.opt
    marks = [time.perf_counter()]
    length = crop_frames(cfg, MelConfig())
    idx = rng.choice(len(clips), size=cfg.batch_size)
    batch = torch.stack([random_crop(clips[i], length, rng) for i in idx])[:, None]
    batch = batch.contiguous(memory_format=torch.channels_last)
    mask = frame_mask([min(clips[i].frames, length) for i in idx], length)
    marks.append(time.perf_counter())
    model.train()
    with torch.autocast("cpu", dtype=arm.amp or torch.float32, enabled=arm.amp is not None):
        latent = model.encode(batch)
        marks.append(time.perf_counter())
        quantized, _, commit = model.quantize(latent)
        marks.append(time.perf_counter())
        recon = model.decode(quantized, batch.shape[-1])
        marks.append(time.perf_counter())
    losses = compute_losses(recon.float(), batch, commit.float(), pinv, cfg, mask)
    loss = total_loss(losses, cfg)
    marks.append(time.perf_counter())
    opt.zero_grad(set_to_none=True)
    if bool(torch.isfinite(loss)):
        loss.backward()
        marks.append(time.perf_counter())
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.gradient_clip_norm)
        bool(torch.isfinite(norm))
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
    for v in losses.values():
        float(v.detach())
    if record and len(marks) == len(PARTS) + 1:
        for part, a, b in zip(PARTS, marks[:-1], marks[1:], strict=True):
            arm.times[part].append(b - a)


def report(arms: list[Arm]) -> None:
    print("\nper-part time of one step (median over rounds, ms; share of the step)\n")
    print("| part | " + " | ".join(a.name for a in arms) + " |")
    print("|---|" + "---|" * len(arms))
    med = {a.name: {p: statistics.median(a.times[p]) for p in PARTS} for a in arms}
    steps = {a.name: statistics.median(map(sum, zip(*(a.times[p] for p in PARTS), strict=True))) for a in arms}
    for p in PARTS:
        print(f"| {p} | " + " | ".join(f"{med[a.name][p] * 1e3:.1f} ({med[a.name][p] / steps[a.name]:.0%})"
                                       for a in arms) + " |")
    print("| whole step | " + " | ".join(f"{steps[a.name] * 1e3:.0f}" for a in arms) + " |")
    first = arms[0]
    base = first.cfg.batch_size / steps[first.name]
    print(f"\n| arm | batch | params | steps/s | crops/s | crops/s vs {first.name} |")
    print("|---|---|---|---|---|---|")
    for a in arms:
        cps = a.cfg.batch_size / steps[a.name]
        params = sum(p.numel() for p in a.model.parameters())
        print(f"| {a.name} | {a.cfg.batch_size} | {params / 1e6:.2f} M | {1 / steps[a.name]:.2f} | {cps:.1f} | "
              f"{cps / base:.2f}x |")


def op_profile(arm: Arm, clips: list[Clip], rng: np.random.Generator, pinv: torch.Tensor, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step(arm, clips, rng, pinv, record=False)
    print(f"\n{arm.name}: the {top} most expensive operators over 3 steps (self CPU time)\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", nargs="?", default=None)
    ap.add_argument("--files", type=int, default=60, help="clips to load (sorted order); sets the codebook tier")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--vs", action="append", default=[], help="NAME=JSON: another arm (adaptive_config overrides)")
    ap.add_argument("--no-previous", action="store_true")
    ap.add_argument("--no-seed", action="store_true")
    ap.add_argument("--ops", type=int, default=0, help="also profile the default's operators, top N")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    clips = load_clips(args.data_dir, args.files)
    n = len(clips)
    arms = [Arm.build("default", adaptive_config(n))]
    if not args.no_previous:
        prev = dict(PREVIOUS)
        arms.append(Arm.build("previous", adaptive_config(n, **{k: v for k, v in prev.items() if k[0] != "_"}),
                              prev["_library_rotation"]))
    if not args.no_seed:
        arms.append(Arm.build("seed", seed_config(n)))
    for spec in args.vs:
        name, _, js = spec.partition("=")
        over = json.loads(js or "{}")
        library = bool(over.pop("_library_rotation", False))
        arms.append(Arm.build(name, adaptive_config(n, **over), library))
    pinv = MelFrontEnd(MelConfig()).fbank_pinv
    rng = np.random.default_rng(0)
    print(f"{n} clips{'' if args.data_dir else ' of noise'}; {args.threads} thread(s); "
          f"{args.rounds} rounds (+{args.warmup} untimed), arms interleaved: {', '.join(a.name for a in arms)}; "
          f"precision: {', '.join(f'{a.name} {a.amp or torch.float32}' for a in arms)}", flush=True)
    for r in range(args.warmup + args.rounds):
        for arm in arms:
            step(arm, clips, rng, pinv, record=r >= args.warmup)
    report(arms)
    if args.ops:
        op_profile(arms[0], clips, rng, pinv, args.ops)
    use_fast_rotation(True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
