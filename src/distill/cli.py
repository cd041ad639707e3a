"""`distill` command line: train | prior | encode | decode | info | edit | regenerate. Argument parsing only; the work is
in the library.

Over 600 lines on purpose: seven commands, each a short function beside the argparse table it reads, so one
file shows every option and what it does; the logic they share lives in the library, not here."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import replace

import numpy as np

from .audio import (
    CLIP_LIMIT_VARIABLE,
    AudioError,
    TooLong,
    find_audio_candidates,
    load_audio,
    load_source,
    scan_paths,
    seconds_from_env,
)
from .bundle import BundleError, read_info
from .codec import Codec, keep_freed_memory
from .codes import CodeGrid, CodesError
from .config import VQVAEConfig, adaptive_config
from .dsp import DEFAULT_GL_ITERS
from .edits import OPERATIONS, EditError, parse_region, regenerate
from .edits.operations import DEFAULT_STEPS, DEFAULT_TEMPERATURE
from .edits.syntax import regenerate_settings
from .fileio import atomic_write_text, atomic_write_wav
from .melcache import known_verdicts, load_cached, load_in_memory
from .model import DOWNSAMPLE
from .parallel import launched, lost_rank
from .prior import DEFAULT_PRIOR_SHARE, PriorTrainer
from .render import parse_donor_spec
from .session import Clip, EditSession, decode_with_source, read_document
from .spectrogram import MelConfig
from .train import (
    PRIOR_MAX_SECONDS,
    ClipMels,
    Trainer,
    TrainEvent,
    TrainingError,
    prior_clips,
    resumed_config,
    split_budget,
    train_prior_after,
)


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def clip_limit() -> dict:
    """The keywords (max_seconds, variable) that hold audio to DISTILL_MAX_CLIP_SECONDS when it is set, for
    load_audio, load_source, scan_paths and load_accepted; {} when it is not (a local CLI has no limit by
    default). ValueError naming the variable when it is set to something other than a length."""
    seconds = seconds_from_env(CLIP_LIMIT_VARIABLE)
    return {} if seconds is None else {"max_seconds": seconds, "variable": CLIP_LIMIT_VARIABLE}


def check_codes_length(grid: CodeGrid, path: str) -> None:
    """Refuse codes of a clip longer than DISTILL_MAX_CLIP_SECONDS (when set), as its audio would be refused."""
    limit = clip_limit()
    if limit and grid.duration_s > limit["max_seconds"]:
        raise TooLong(os.path.basename(path), grid.duration_s, limit["max_seconds"], limit["variable"])


def fatal(message: str, code: int = 2) -> int:
    """Print one line `distill: error: ...` (a message's own line breaks become spaces) and return `code`."""
    print(f"distill: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- train
def _bar(fraction: float | None, width: int = 24) -> str:
    if fraction is None:
        return ""
    n = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * n + "." * (width - n) + f"] {fraction:4.0%}"


def format_event(ev: TrainEvent) -> str:
    """One progress line: bar, losses, codebook use per level, ETA."""
    if ev.kind in ("start", "warning"):
        return f"{ev.kind}: {ev.message}"
    parts = [_bar(ev.progress), f"{'prior ' if ev.stage == 'prior' else ''}step {ev.step}"]
    unit = " bits" if ev.stage == "prior" else ""
    if ev.loss is not None:
        parts.append(f"loss {ev.loss:.4f}{unit}")
    if ev.val_loss is not None:
        parts.append(f"val {ev.val_loss:.4f}{unit}")
    if ev.codebook:
        parts.append("use " + " ".join(f"{h.name[0]}:{h.utilization:.0%}" for h in ev.codebook))
    if ev.steps_per_s:
        parts.append(f"{ev.steps_per_s:.1f} it/s")
    if ev.eta_s is not None and ev.kind != "done":
        parts.append(f"ETA {int(ev.eta_s) // 60}:{int(ev.eta_s) % 60:02d}")
    if ev.message:
        parts.append(f"({ev.message})")
    return " | ".join(p for p in parts if p)


def _config_file(path: str) -> dict:
    """Advanced settings (any VQVAEConfig field) from a JSON object; unknown keys are an error."""
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: cannot read config JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CliError(f"{path}: config must be a JSON object of VQVAEConfig fields")
    unknown = sorted(set(data) - set(VQVAEConfig.__dataclass_fields__))
    if unknown:
        raise CliError(f"{path}: unknown config fields {unknown}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def _counter(label: str, quiet: bool = False):
    """progress(done, total) printing "label done/total" (one updating line on a terminal, every tenth else)."""
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if quiet or total < 2:
            return
        if tty:
            print(f"\r{label} {done}/{total} {_bar(done / total)}", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"{label} {done}/{total}", file=sys.stderr, flush=True)

    return progress


def _launch_gpus(n: int, argv: list[str]) -> int:
    """`distill train --gpus N ...`: the same command under torchrun, N processes on this machine."""
    if n < 1:
        raise CliError(f"--gpus must be >= 1, got {n}")
    import torch  # noqa: PLC0415 - only this path asks how many GPUs there are

    if torch.cuda.device_count() < n:
        raise CliError(f"--gpus {n}: this machine has {torch.cuda.device_count()} CUDA GPU(s); for CPU processes run "
                       "`torchrun --standalone --nproc_per_node N -m distill.cli train ...` (docs/scaling.md)")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--gpus":
            skip = True
        elif not a.startswith("--gpus="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "distill.cli", *rest]
    print("running " + shlex.join(cmd), file=sys.stderr, flush=True)
    os.execv(sys.executable, cmd)
    return 0  # not reached


def cmd_train(args: argparse.Namespace) -> int:
    if args.gpus is not None and args.gpus > 1 and not launched():
        return _launch_gpus(args.gpus, args.argv)
    paths = args.data
    main_rank = int(os.environ.get("RANK", "0")) == 0   # under torchrun rank 0 alone prints and writes
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    if workers < 1:
        raise CliError(f"--workers must be >= 1, got {workers}")
    # same walk as scan_folder; files over DISTILL_MAX_CLIP_SECONDS (when set) are rejected before they decode,
    # and the Trainer loads the rest under the same limit
    cache = None if args.no_cache else (args.cache or args.output + ".cache")
    report = scan_paths([f for p in paths for f in _existing(p)], **clip_limit(), workers=workers,
                        progress=_counter("scanned", args.quiet or not main_rank),
                        known=None if cache is None else known_verdicts(cache, MelConfig()))
    for v in report.rejected if main_rank else ():
        print(f"skipped {v.describe()}", file=sys.stderr)
    n = len(report.accepted)
    if n == 0:
        raise CliError(f"no usable audio files in {' '.join(paths)} (checked {len(report.verdicts)} files)")
    overrides = {k: v for k, v in (("num_quantizers", args.levels), ("codebook_size", args.codebook_size),
                                   ("codebook_dim", args.codebook_dim), ("batch_size", args.batch_size),
                                   ("seed", args.seed), ("device", args.device)) if v is not None}
    if args.config:
        overrides = {**_config_file(args.config), **overrides}
    # a resume continues its run's settings (this version's defaults may differ); flags and --config still apply
    cfg = resumed_config(args.resume, overrides) if args.resume else adaptive_config(n, **overrides)
    if main_rank:
        print(f"{n} files accepted, {report.total_duration_s:.1f} s; codebook {cfg.codebook_size} x "
              f"{cfg.num_quantizers} levels ({', '.join(cfg.level_names)}), dim {cfg.codebook_dim}", file=sys.stderr)
    minutes = args.minutes
    epochs = args.epochs
    if epochs is None and minutes is None and not args.resume:  # a resume without a budget keeps the checkpoint's
        epochs = cfg.max_epochs
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise CliError(f"--checkpoint-every must be >= 0 seconds, got {args.checkpoint_every:g}")
    ckpt = args.checkpoint or (args.output + ".ckpt")
    every = {} if args.checkpoint_every is None else {"checkpoint_every_s": args.checkpoint_every}
    share = _prior_share(args.prior_share)
    trainer = Trainer(report, cfg, minutes=split_budget(minutes, share), epochs=epochs, checkpoint_path=ckpt,
                      resume_from=args.resume, cache_dir=cache, workers=workers,
                      on_progress=_counter("log-mels computed", args.quiet or not main_rank), **every)
    try:
        _stream(trainer, trainer.run(), args.quiet or not main_rank, quiet_all=not main_rank)
    except TrainingError:
        raise
    except RuntimeError as exc:
        if not (trainer.world.distributed and lost_rank(exc)):
            raise
        resume = (f"; the checkpoint {ckpt} continues it: run the same command with --resume {ckpt}"
                  if os.path.exists(ckpt) else "; no checkpoint was written yet")
        raise TrainingError(f"rank {trainer.world.rank} of {trainer.world.size}: the run lost another rank (it "
                            f"stopped or was killed: {' '.join(str(exc).split())}){resume}") from exc
    if not trainer.world.main:
        return 0   # rank 0 writes the model and trains the prior
    if trainer.result is None:
        raise CliError("training was interrupted before a model existed")
    _stream(trainer, train_prior_after(trainer, minutes, share), args.quiet)
    result = trainer.result
    prior = result.codec.info.prior
    prior_text = (f"prior: {_prior_steps(prior)}held-out {prior['best_val_bits']} bits/code" if prior else
                  "no prior (--prior-share 0)" if share == 0 else "no prior")
    result.save(args.output)
    print(f"saved {args.output} (fingerprint {result.info.fingerprint}, {result.steps} steps"
          f"{', cancelled' if result.cancelled else ''}"
          f"{', stopped early on a non-finite loss: the best model so far' if result.stopped else ''}; {prior_text})")
    return 0


def _prior_steps(meta: dict) -> str:
    """"N steps, " of a prior whose tables a loop trained; "" for one fitted whole (the latent path's)."""
    return f"{meta['steps']} steps, " if meta.get("steps") else f"fitted in {meta.get('train_seconds', '?')} s, "


def _prior_share(share: float | None) -> float:
    share = DEFAULT_PRIOR_SHARE if share is None else share
    if not (0.0 <= share <= 0.9):
        raise CliError(f"--prior-share must be within 0-0.9, got {share:g}")
    return share


def _stream(worker: Trainer | PriorTrainer, events, quiet: bool, quiet_all: bool = False) -> None:
    """Print a training run's events (one updating line on a terminal); Ctrl+C stops it with the best so far
    (so does SIGTERM, which torchrun sends every rank when it is interrupted). quiet_all: only the last line
    (the other ranks of a distributed run)."""
    tty = sys.stderr.isatty() and not quiet_all

    def on_interrupt(signum, frame):  # Ctrl+C: stop at the next step and keep the best model
        if not quiet_all:
            print("\ncancelling: finishing with the best model so far...", file=sys.stderr)
        worker.cancel()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    previous_term = signal.signal(signal.SIGTERM, on_interrupt)
    try:
        for ev in events:
            if quiet_all and ev.kind != "done":
                continue
            line = format_event(ev)
            if ev.kind == "step" and tty:
                print("\r" + line[:150].ljust(150), end="", file=sys.stderr, flush=True)
            elif ev.kind != "step" or not quiet:
                print(("\n" if tty and ev.kind != "step" else "") + line, file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def _train_prior(codec: Codec, items: list, minutes: float, quiet: bool) -> tuple[Codec, str]:
    """Train a prior on the clips' codes; (codec with the prior, a summary for the last line)."""
    print(f"training the prior for {minutes:.1f} min (encoding {len(items)} clips first)", file=sys.stderr)
    trainer = PriorTrainer.from_audio(codec, items, minutes)
    _stream(trainer, trainer.run(), quiet)
    res = trainer.result
    if res is None:
        raise CliError("prior training was interrupted before a prior existed")
    return codec.with_prior(res.model, res.meta), (f"prior: {_prior_steps(res.meta)}held-out "
                                                    f"{res.meta['best_val_bits']} bits/code")


def cmd_prior(args: argparse.Namespace) -> int:
    """Add or retrain the prior of an existing model; the codec and its fingerprint stay as they are."""
    codec = Codec.load(args.model)
    if not (args.minutes > 0):
        raise CliError(f"--minutes must be > 0, got {args.minutes:g}")
    limit = clip_limit()
    report = scan_paths([f for p in args.data for f in _existing(p)], **limit)
    for v in report.rejected:
        print(f"skipped {v.describe()}", file=sys.stderr)
    cache = args.model + ".cache"   # the log-mels `distill train` kept, when it did
    if os.path.isdir(cache):   # under the limit, and no further than a little past what the scan found
        load = load_cached(cache, report.accepted, codec.mel_cfg, workers=min(8, os.cpu_count() or 1), **limit)
    else:
        load = load_in_memory(report.accepted, codec.mel_cfg, **limit)
    for w in load.warnings:
        warn(w)
    clips, note = prior_clips(load.clips, codec.mel_cfg.num_frames(int(PRIOR_MAX_SECONDS * codec.sample_rate)))
    if note:
        warn(note)
    items = ClipMels(clips)
    if not items:
        raise CliError(f"no usable audio files in {' '.join(args.data)} (checked {len(report.verdicts)} files)")
    had = "retrained" if codec.prior is not None else "added"
    codec, text = _train_prior(codec, items, args.minutes, args.quiet)
    out = args.output or args.model
    codec.save(out)
    print(f"saved {out} ({had} the prior; fingerprint {codec.fingerprint} unchanged; {text})")
    return 0


def _existing(path: str) -> list:
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file or folder")
    return find_audio_candidates(path)


# ---------------------------------------------------------------------- encode / decode
def cmd_encode(args: argparse.Namespace) -> int:
    keep_freed_memory()  # a one-shot process: reuse the search's freed memory rather than fault it in again
    wave, sr = load_audio(args.audio, **clip_limit())   # before the model: a file over the limit is said at once
    codec = Codec.load(args.model)
    grid = codec.encode(wave, sr, search_steps=args.search)  # records the file's rate and length for decode
    out = args.output or os.path.splitext(args.audio)[0] + ".codes.json"
    grid.save(out)
    print(f"wrote {out}: {grid.num_levels} levels ({', '.join(grid.level_names)}) x {grid.num_bands} bands x "
          f"{grid.num_columns} columns ({grid.seconds_per_column:.3f} s each)")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    if not args.source and (args.donor or args.detail is not None):
        raise CliError("--detail and --donor only apply with --source (the clip the codes were encoded from)")
    keep_freed_memory()  # a one-shot process: Griffin-Lim's iterations reuse freed memory instead of faulting it in
    codec = Codec.load(args.model)
    grid = _checked_codes(codec, args.codes)
    t0 = time.perf_counter()
    if args.source:
        wave, rate, how = _surgical(codec, grid, args)
    else:
        phase = load_audio(args.phase_from, codec.sample_rate, **clip_limit())[0] if args.phase_from else None
        wave = codec.decode(grid, phase_from=phase, n_iter=args.iters)
        how = "phase from " + os.path.basename(args.phase_from) if args.phase_from else ""
        wave, rate = (wave, codec.sample_rate) if args.model_rate else codec.at_source_rate(wave, grid)
    dt = time.perf_counter() - t0
    atomic_write_wav(args.output, wave, rate)
    print(f"wrote {args.output}: {len(wave)} samples, {len(wave) / rate:.3f} s at {rate} Hz "
          f"(decoded in {dt:.2f} s{', ' + how if how else ''})")
    return 0


def _surgical(codec: Codec, grid: CodeGrid, args: argparse.Namespace) -> tuple[np.ndarray, int, str]:
    """decode --source: the recording itself wherever the codes are unedited, the model inside the edits
    (session.decode_with_source, which /decode's source_audio runs too)."""
    source = load_source(args.source, **clip_limit())
    donors = []
    for spec in args.donor or []:
        path, span = parse_donor_spec(spec)
        donors.append((load_audio(path, codec.sample_rate, **clip_limit())[0], span))
    return decode_with_source(codec, grid, source, os.path.basename(args.codes), detail=args.detail, donors=donors,
                              model_rate=args.model_rate, warn=warn)


def warn(message: str) -> None:
    print(f"distill: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    info = read_info(args.model)
    if args.json:
        print(json.dumps({"fingerprint": info.fingerprint, "config": info.config.to_dict(), "mel": info.mel.to_dict(),
                          "dataset": info.dataset, "health": info.health, "history": info.history,
                          "prior": info.prior}, indent=2))
        return 0
    cfg, ds = info.config, info.dataset
    print(f"Distill model {os.path.basename(args.model)}  fingerprint {info.fingerprint}")
    print(f"  levels      {cfg.num_quantizers} ({', '.join(cfg.level_names)}), codebook {cfg.codebook_size} x dim "
          f"{cfg.codebook_dim}, arch {cfg.arch}")
    print(f"  front end   {info.mel.sample_rate} Hz, n_fft {info.mel.n_fft}, hop {info.mel.hop_length}, "
          f"{info.mel.n_mels} mels (log1p power)")
    bands = info.mel.band_ranges_hz(info.mel.n_mels // cfg.band_bins)
    print(f"  grid        {len(bands)} bands x columns of {DOWNSAMPLE * info.mel.hop_length / info.mel.sample_rate:.3f} s; "
          "bands (Hz): " + ", ".join(f"{r}: {lo:.0f}-{hi:.0f}" for r, (lo, hi) in enumerate(bands)))
    if ds:
        try:  # the dataset summary is free-form JSON: a damaged one is said, not a traceback
            lines = [f"  dataset     {ds.get('accepted', '?')} of {ds.get('files', '?')} files, "
                     f"{float(ds.get('total_seconds', 0)):.1f} s; {len(ds.get('train_files', []))} train / "
                     f"{len(ds.get('val_files', []))} validation",
                     f"  training    {ds.get('steps', '?')} steps in {ds.get('train_seconds', '?')} s"
                     f"{' (cancelled)' if ds.get('cancelled') else ''}; best validation loss {ds.get('best_val_loss')}"]
            if ds.get("training"):
                tr = ds["training"]
                lines.append(f"  trained on  {tr.get('devices')} ({tr.get('world_size')} process"
                             f"{'es' if tr.get('world_size', 1) > 1 else ''}, backend {tr.get('backend')}), "
                             f"{tr.get('crops_per_step')} crops a step")
            if ds.get("corpus"):
                co = ds["corpus"]
                lines.append(f"  mel cache   {co.get('cache')}: {co.get('files')} files, {co.get('hours')} h, "
                             f"{co.get('bytes', 0) / 1e6:.0f} MB")
            lines += [f"  rejected    {r['file']}: {r['reason']}" for r in list(ds.get("rejected", []))[:20]]
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise CliError(f"{os.path.basename(args.model)}: damaged dataset summary in the model's metadata "
                           f"({type(exc).__name__}: {exc})") from exc
        print("\n".join(lines))
    for h in info.health.get("levels", []):
        print(f"  {h['name']:<11} {h['verdict']}: {h['utilization']:.0%} of codes used on validation, perplexity "
              f"{h['perplexity']:.1f}, {h['dead_codes']} unused")
    pr = info.prior
    refused = Codec.load(args.model).prior_note if pr and not pr.get("error") else ""   # as regenerate would load it
    if pr.get("error"):
        print(f"  prior       unusable ({pr['error']}); retrain it with `distill prior MODEL FOLDER`")
    elif refused:
        print(f"  prior       unusable: {refused}")
    elif pr:
        cfg = pr.get("config") or {}
        latent = (("with the latent path and its context part" if cfg.get("context_same") else
                   "with the latent path and an older context part (`distill prior MODEL FOLDER` retrains it with "
                   "the newest)" if cfg.get("context_width") else
                   "with the latent path, no context part (`distill prior MODEL FOLDER` retrains it with one)")
                  if cfg.get("latent_dim") else
                  "no latent path (made before it: `distill prior MODEL FOLDER` retrains it with one)")
        how = f"{pr['steps']} steps in" if pr.get("steps") else "fitted in"
        bank = (f"regenerate copies from the codes of {cfg['bank_files']} training files "
                f"({cfg.get('bank_columns')} columns)" if cfg.get("bank_files") else
                "regenerate draws with the network only: no codes of the training files are kept to copy from "
                "(`distill prior MODEL FOLDER` retrains it with them)")
        print(f"  prior       {how} {pr.get('train_seconds', '?')} s on "
              f"{len(pr.get('train_files', []))} files; held-out {pr.get('best_val_bits')} bits/code, "
              f"{latent}; {bank}")
    else:
        print("  prior       none: regenerate needs one; add it with `distill prior MODEL FOLDER --minutes 2`")
    hist = [h for h in info.history if "val" in h]
    if hist:
        pts = hist[:: max(1, len(hist) // 8)] + ([hist[-1]] if len(hist) > 1 else [])
        print("  loss history " + ", ".join(f"{h['step']}:{h['val']:.3f}" for h in pts))
    return 0


# ---------------------------------------------------------------------- edit
EDIT_OPS = {name: spec.regions for name, spec in OPERATIONS.items()}
EDIT_MODIFIERS = tuple(dict.fromkeys(o for spec in OPERATIONS.values() for o in spec.options))


class _InOrder(argparse.Action):
    """Append (flag, values) to one shared list, so chained edits keep their command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        ops = list(getattr(namespace, self.dest, None) or [])
        ops.append((option_string.lstrip("-"), list(values) if isinstance(values, list) else [values]))
        setattr(namespace, self.dest, ops)


def _edit_steps(flags: list[tuple[str, list[str]]]) -> list[tuple[str, list[str], dict[str, str]]]:
    """[(flag, values)] in argv order -> [(operation, regions, {modifier: value})]; modifiers bind to the op before."""
    steps: list[tuple[str, list[str], dict[str, str]]] = []
    for flag, values in flags:
        if flag in EDIT_OPS:
            steps.append((flag, values, {}))
        elif not steps:
            raise CliError(f"--{flag} must follow the operation it modifies (e.g. --copy REGION --to 1.0)")
        elif flag in steps[-1][2]:
            raise CliError(f"--{flag} given twice for --{steps[-1][0]}")
        else:
            steps[-1][2][flag] = values[0]
    return steps


def cmd_edit(args: argparse.Namespace) -> int:
    steps = _edit_steps(args.ops or [])
    if not steps:
        raise CliError("nothing to do: give at least one of " + ", ".join(f"--{k}" for k in EDIT_OPS))
    codec = Codec.load(args.model)
    name = os.path.basename(args.codes)
    try:
        history, original = read_document(codec, _read_text(args.codes))
    except (CodesError, EditError) as exc:
        raise CliError(_named(args.codes, exc)) from exc
    check_codes_length(history.current, args.codes)
    session = EditSession(codec, Clip(name, original, None), history=history)
    hz = codec.band_ranges_hz
    loaded: dict[str, Clip] = {}
    for kind, regions, mods in steps:
        other_path, texts = None, []
        for text in regions:
            path, sep, region = text.rpartition(":")
            if sep and path:  # FILE:REGION -> a region of that codes file ("B:" to apply_operation)
                if other_path not in (None, path):
                    raise CliError(f"--{kind} can use one other codes file, got {other_path} and {path}")
                if path not in loaded:
                    grid = _checked_codes(codec, path)
                    loaded[path] = Clip(os.path.basename(path), grid, None)
                other_path = path
                text = "B:" + region
            texts.append(text)
        session.set_partner(loaded[other_path] if other_path else None)
        op = " ".join([kind, *map(shlex.quote, texts)] + [f"--{k} {shlex.quote(v)}" for k, v in mods.items()])
        result = session.apply(op)
        note = f" ({other_path} itself is not changed)" if result.other is not None else ""
        print(f"{session.history.position}. {result.label}{note}")
        print(f"   touched {result.region.describe(result.grid)}"
              f" (columns {result.region.c0}-{result.region.c1}, {hz[result.region.r0][0]:.0f}-{hz[result.region.r1][1]:.0f} Hz)"
              f"{'; clipped at the edge' if result.clipped else ''}")
    session.current.save(args.output)
    if args.history:
        atomic_write_text(args.history, session.to_json())
    n = len(steps)
    print(f"wrote {args.output} ({n} edit{'s' if n != 1 else ''})"
          f"{', history ' + args.history if args.history else ''}")
    return 0


def candidate_path(path: str, index: int) -> str:
    """OUT.codes.json -> OUT.<index>.codes.json (other names: the index goes before the extension)."""
    for ext in (".codes.json", ".json"):
        if path.endswith(ext):
            return f"{path[:-len(ext)]}.{index}{ext}"
    root, ext = os.path.splitext(path)
    return f"{root}.{index}{ext}"


def cmd_regenerate(args: argparse.Namespace) -> int:
    """Redraw a region with the model's prior; N candidates are written side by side."""
    codec = Codec.load(args.model)
    if codec.prior is None:
        raise CliError(f"{os.path.basename(args.model)}: {codec.prior_note}")
    name = os.path.basename(args.codes)
    try:
        settings = regenerate_settings({f"--{k}": str(v) for k, v in (
            ("strength", args.strength), ("temperature", args.temperature), ("seed", args.seed),
            ("steps", args.steps)) if v is not None}, candidates=args.candidates)
        settings = replace(settings, retrieve=not args.no_retrieve)
    except EditError as exc:
        raise CliError(str(exc)) from exc
    try:
        history, original = read_document(codec, _read_text(args.codes))
        before = history.current
        check_codes_length(before, args.codes)
        region = parse_region(args.region, before)
        t0 = time.perf_counter()
        results = regenerate(codec, before, region, settings)
    except (CodesError, EditError) as exc:
        raise CliError(_named(args.codes, exc)) from exc
    dt = time.perf_counter() - t0
    for i, result in enumerate(results, start=1):
        session = EditSession(codec, Clip(name, original, None), history=history.fork())  # each continues it
        session.apply(result)
        out = candidate_path(args.output, i) if len(results) > 1 else args.output
        session.current.save(out)
        hist = (candidate_path(args.history, i) if len(results) > 1 else args.history) if args.history else None
        if hist:
            atomic_write_text(hist, session.to_json())
        changed = int((result.grid.codes != before.codes).sum())
        print(f"wrote {out}: {result.label}, {changed} cells changed"
              f"{', history ' + hist if hist else ''}{'; ' + result.origin if result.origin else ''}")
    print(f"drew {len(results)} candidate{'s' if len(results) != 1 else ''} in {dt:.2f} s")
    return 0


def _named(path: str, exc: Exception) -> str:
    """An error about a file's contents, starting with the file's name (once)."""
    name = os.path.basename(path)
    return str(exc) if str(exc).startswith(f"{name}:") else f"{name}: {exc}"


def _checked_codes(codec: Codec, path: str) -> CodeGrid:
    """A codes file this model can decode (and within DISTILL_MAX_CLIP_SECONDS when set); CliError or TooLong
    naming the file otherwise."""
    try:
        grid = CodeGrid.load(path)
        codec.check(grid)
    except CodesError as exc:
        raise CliError(_named(path, exc)) from exc
    check_codes_length(grid, path)
    return grid


def _read_text(path: str) -> str:
    try:
        return open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{os.path.basename(path)}: cannot read ({exc})") from exc


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distill", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on a folder (or files) of audio")
    t.add_argument("data", nargs="+", help="folder(s) or audio files")
    t.add_argument("-o", "--output", required=True, help="model file to write (.distill)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="training budget in wall-clock minutes")
    budget.add_argument("--epochs", type=float, help="training budget in epochs (default: adaptive)")
    t.add_argument("--levels", type=int, help="RVQ levels 2-4 (default 3)")
    t.add_argument("--codebook-size", type=int, help="codes per level (default: 64/128/256 by file count)")
    t.add_argument("--codebook-dim", type=int, help="codebook dimension (default 128)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    t.add_argument("--checkpoint", help="checkpoint path (default: OUTPUT.ckpt)")
    t.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                   help="write the checkpoint at least this often (default 60; also every checkpoint_interval "
                   "validations and at the end)")
    t.add_argument("--resume", help="resume from a checkpoint (also one a run with another number of processes wrote)")
    t.add_argument("--cache", metavar="DIR", help="keep the log-mels here (default: OUTPUT.cache; reused by the "
                   "next run, --resume and `distill prior`)")
    t.add_argument("--no-cache", action="store_true", help="hold the log-mels in memory instead (small folders)")
    t.add_argument("--workers", type=int, help="processes that scan files and compute log-mels (default: the "
                   "cores, at most 8)")
    t.add_argument("--gpus", type=int, metavar="N", help="train on N CUDA GPUs of this machine (runs the command "
                   "under torchrun; docs/scaling.md)")
    t.add_argument("--prior-share", type=float, metavar="F",
                   help=f"share 0-0.9 of --minutes spent training the prior that regenerate uses, after the codec "
                   f"(default {DEFAULT_PRIOR_SHARE:g}; 0 = no prior). With --epochs the prior trains for F/(1-F) of "
                   "the codec's time")
    t.add_argument("--config", help="JSON file of advanced VQVAEConfig fields (e.g. learning_rate, channels)")
    t.add_argument("-q", "--quiet", action="store_true", help="no per-step lines when not on a terminal")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("encode", help="encode a clip to a codes JSON file")
    e.add_argument("model")
    e.add_argument("audio")
    e.add_argument("-o", "--output")
    e.add_argument("--search", type=int, default=None, metavar="STEPS",
                   help="refine the encoder's codes by STEPS steps of Adam search (~0.1 s per second of audio "
                   "for 20); 0: the encoder alone. Default: the fast search, 3 sign steps (~0.02 s per second)")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="decode a codes JSON file to a WAV")
    d.add_argument("model")
    d.add_argument("codes")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--phase-from", help="take the STFT phase from this clip (the one the codes came from)")
    d.add_argument("--iters", type=int, default=DEFAULT_GL_ITERS, help="Griffin-Lim iterations without --phase-from")
    d.add_argument("--source", help="the clip the codes were encoded from: keep it exactly wherever no code changed")
    d.add_argument("--detail", type=float, help="with --source: fraction (0-1) of the source's fine detail kept "
                   "inside edits; 0 = pure model (default 0.75)")
    d.add_argument("--donor", action="append", metavar="CLIP[:START-END@DST]",
                   help="with --source: clip whose phase/detail edited cells came from; CLIP alone matches its "
                   "codes at the same columns, CLIP:START-END@DST (seconds) names a copied span. Repeatable")
    d.add_argument("--model-rate", action="store_true", help="write at the model's rate; by default the file comes "
                   "back at the rate and exact length the codes were encoded from (when the codes record it)")
    d.set_defaults(func=cmd_decode)

    i = sub.add_parser("info", help="describe a model file")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    ed = sub.add_parser("edit", help="edit regions of a codes JSON file (operations apply in the order given)",
                        epilog="REGION is LEVELS@START-END[/BANDLO-BANDHI], e.g. Timbre@1.0-2.0 or "
                               "Structure+Timbre@0.5-1.5/0-3; FILE:REGION takes it from another codes file.")
    ed.add_argument("model")
    ed.add_argument("codes")
    ed.add_argument("-o", "--output", required=True, help="edited codes file to write")
    ed.add_argument("--history", help="also write the edit history (JSON, reloadable in the studio)")
    op_help = {name: spec.help for name, spec in OPERATIONS.items()}
    for name, nargs in EDIT_OPS.items():
        ed.add_argument(f"--{name}", nargs=nargs, action=_InOrder, dest="ops", metavar="REGION", help=op_help[name])
    for name in EDIT_MODIFIERS:
        ed.add_argument(f"--{name}", action=_InOrder, dest="ops", metavar=name.upper(),
                        help="modifies the operation before it")
    ed.set_defaults(func=cmd_edit, ops=None)

    pr = sub.add_parser("prior", help="add or retrain the prior (for regenerate) of an existing model",
                        description="Trains the masked-token prior on the codes of the given audio (the folder the "
                        "model was trained on) and stores it in the model file. The codec and its fingerprint are "
                        "not changed, so codes and histories made with the model stay valid.")
    pr.add_argument("model")
    pr.add_argument("data", nargs="+", help="folder(s) or audio files")
    pr.add_argument("--minutes", type=float, default=2.0, help="training budget, encoding included (default 2)")
    pr.add_argument("-o", "--output", help="write to this file instead of updating MODEL in place")
    pr.add_argument("-q", "--quiet", action="store_true", help="no per-step lines when not on a terminal")
    pr.set_defaults(func=cmd_prior)

    rg = sub.add_parser("regenerate", help="redraw a region of a codes file with the model's prior",
                        epilog="The levels named in the region are redrawn, coarse to fine; everything else is kept "
                               "exactly and conditions the draw. Example: distill regenerate m.distill a.codes.json "
                               "-o b.codes.json --region Timbre+Detail@1.0-2.0 --candidates 4")
    rg.add_argument("model")
    rg.add_argument("codes", help="a codes file or an edit history (JSON)")
    rg.add_argument("-o", "--output", required=True, help="codes file to write; with --candidates N > 1, "
                    "OUT.1.codes.json ... OUT.N.codes.json")
    rg.add_argument("--region", required=True, help="LEVELS@START-END[/BANDLO-BANDHI], e.g. Timbre+Detail@1.0-2.0")
    rg.add_argument("--strength", type=float, help="share 0-1 of the region's cells redrawn (default 1: all)")
    rg.add_argument("--temperature", type=float, help=f"sampling temperature (default {DEFAULT_TEMPERATURE:g}; "
                    "lower = safer, higher = wilder)")
    rg.add_argument("--seed", type=int, help="random seed (default 0); the same seed gives the same codes")
    rg.add_argument("--steps", type=int, help=f"decoding steps for the coarsest level (default {DEFAULT_STEPS})")
    rg.add_argument("--candidates", type=int, default=1, help="how many versions to draw (default 1)")
    rg.add_argument("--no-retrieve", action="store_true",
                    help="draw with the prior's network even where every level is redrawn (by default such a region "
                         "is copied from a matching passage of the training files)")
    rg.add_argument("--history", help="also write the edit history (JSON, reloadable in the studio)")
    rg.set_defaults(func=cmd_regenerate)
    return p


INPUT_ARGS = ("model", "codes", "audio")   # the files a command reads; named before any model is loaded


def missing_input(args: argparse.Namespace) -> str:
    """The error for the first input file that does not exist ('' if all do): said at once, not after the
    seconds a model takes to load."""
    for name in INPUT_ARGS:
        path = getattr(args, name, None)
        if isinstance(path, str) and not os.path.exists(path):
            return f"{path}: no such file or folder (the {name} to read)"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if missing := missing_input(args):
        return fatal(missing)
    try:
        return args.func(args)
    except (CliError, AudioError, BundleError, CodesError, TrainingError, ValueError, OSError) as exc:
        return fatal(str(exc))
    except Exception as exc:  # a bug, not a bad input: still one line, and where to report it
        return fatal(f"unexpected {type(exc).__name__}: {exc} (this is a bug in Distill; please report it with "
                     "the command you ran)")


if __name__ == "__main__":
    sys.exit(main())
