"""Trainer: random crops from a folder of clips -> a trained Codec, streaming progress events.

The CLI and the studio both consume `Trainer.run()`'s events. Cancel at any time: the model with
the best validation loss so far is kept. Checkpoints let a run resume where it stopped.

Over 600 lines on purpose: the training loop, its run state and its checkpoint/resume rules change together
(a checkpoint is the loop's state); the data side (scan, limits) is in audio.py and the prior in prior/.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .audio import FileVerdict, ScanReport, scan_paths
from .bundle import BundleError, BundleInfo, _one_line, fingerprint, mel_json, read_info, state_to_tensors
from .codec import Codec
from .config import VQVAEConfig, adaptive_config
from .events import TrainEvent
from .fileio import atomic_write
from .health import LOW_UTILIZATION, LevelHealth, code_counts, health_from_counts, level_health
from .losses import compute_losses, total_loss
from .melcache import BuildStopped, Clip, CorpusLoad, load_cached, load_in_memory
from .model import DOWNSAMPLE, ConvVQVAE
from .parallel import World, average_norm_statistics, decide, finish, reduce_sum, start_world, step_plan
from .prior import PriorError, PriorTrainer
from .spectrogram import MelConfig, MelFrontEnd

MAX_VAL_CROPS = 64
MAX_VAL_FILES_CROPS = 256   # with more held-out files than MAX_VAL_CROPS, one crop from each of at most this many
VAL_TIME_SHARE = 0.05  # default validation cadence: at most ~5% of training time (it was 17% on lmms)
MAX_USAGE_SECONDS_PER_FILE = 60.0
PRIOR_MAX_SECONDS = 3600.0   # the prior after training encodes about an hour of the corpus at most
MAX_USAGE_SECONDS_TOTAL = 3600.0  # the code-usage pass reads about an hour at most: evenly chosen files past that
CHECKPOINT_FORMAT = "distill-checkpoint"
CHECKPOINT_VERSION = 2  # 2: records the config, the files (name, size, SHA-256) and the budget
CHECKPOINT_EVERY_S = 60.0  # default: a kill -9 loses at most about a minute of training
MAX_BAD_STEPS = 5  # this many non-finite steps in a row (weights still finite) stop a run
# settings that say where and how often, not what is trained: a resumed run may change them
RESUME_FREE_FIELDS = frozenset({"device", "num_workers", "checkpoint_interval", "preview_interval", "max_checkpoints"})

log = logging.getLogger("distill.train")


class TrainingError(RuntimeError):
    """Training cannot start (e.g. no usable files); the message says what to do."""


@dataclass
class TrainResult:
    """What a finished (or cancelled) run leaves behind."""

    codec: Codec
    steps: int
    cancelled: bool
    best_val_loss: float | None
    skipped_steps: int
    stopped: str = ""  # why training stopped early on a non-finite loss (the best model so far was kept)

    @property
    def info(self) -> BundleInfo:
        """What the model file records: the codec's own (one copy, so adding a prior updates it too)."""
        return self.codec.info

    def save(self, path: str | os.PathLike) -> None:
        """Write the .distill file atomically; a model with non-finite weights is never written."""
        bad = nonfinite_tensors(self.codec.model)
        if bad:
            raise TrainingError(f"{os.path.basename(os.fspath(path))} not written: the model's weights are not "
                                f"finite ({', '.join(bad[:3])})")
        self.codec.save(path)


def resolve_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision type for training, or None for plain fp32.

    "auto" uses bf16 only where the processor computes it natively (AVX512-BF16/AMX CPUs, recent
    GPUs): there a training step is ~1.4x faster (benchmarks/README.md), so a time budget buys
    more steps; elsewhere bf16 would be emulated and slower. Inference always runs in fp32.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if _native_bf16(device) else None


def _native_bf16(device: torch.device) -> bool:
    try:
        if device.type == "cpu":
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
    except (AttributeError, RuntimeError) as exc:  # private API may change: train in fp32 and say why
        log.info("bf16 support check failed on %s (%s); training in fp32", device, exc)
    return False


def crop_frames(cfg: VQVAEConfig, mel: MelConfig) -> int:
    """Training crop length in frames, rounded up to whole code columns (1 s -> 96 frames)."""
    frames = mel.num_frames(int(round(cfg.chunk_duration_s * mel.sample_rate)))
    return -(-frames // DOWNSAMPLE) * DOWNSAMPLE


def split_files(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """File-level split. With fewer than 5 files there is no held-out set (validation uses training files)."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = int(round(n * val_fraction)) if n >= 5 else 0
    n_val = min(n_val, n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def random_crop(clip: Clip, length: int, rng: np.random.Generator) -> torch.Tensor:
    """[n_mels, length]; short clips start at their onset and are padded with silence."""
    if clip.frames <= length:
        return torch.nn.functional.pad(clip.window(0, length), (0, length - clip.frames))
    start = int(rng.integers(0, clip.frames - length + 1))
    return clip.window(start, length)


def crop_from(clip: Clip, first: int, length: int) -> torch.Tensor:
    """[n_mels, length]: random_crop of the clip's frames from `first` on, drawn with a generator seeded 0 (so a
    validation crop is the same in every run)."""
    rest = clip.frames - first
    if rest <= length:
        return torch.nn.functional.pad(clip.window(first, length), (0, length - rest))
    return clip.window(first + int(np.random.default_rng(0).integers(0, rest - length + 1)), length)


def usage_files(clips: Sequence[Clip], train_idx: Sequence[int], per_file: int, total: int) -> list[int]:
    """The training files the code-usage pass encodes (their first `per_file` frames): all of them while that is
    under `total` frames, else evenly spaced ones up to it (a 20-hour library would otherwise encode for minutes)."""
    cost = [min(clips[i].frames, per_file) for i in train_idx]
    if sum(cost) <= total:
        return list(train_idx)
    keep = max(1, int(len(train_idx) * total / sum(cost)))
    return [train_idx[j] for j in np.linspace(0, len(train_idx) - 1, keep).astype(int)]


def frame_mask(valid: Sequence[int], length: int) -> torch.Tensor:
    """[N, 1, 1, length] True on each crop's real frames, False on the silence padded after a short clip."""
    return (torch.arange(length)[None, :] < torch.as_tensor(list(valid))[:, None])[:, None, None, :]


def fixed_crops(clips: Sequence[Clip], length: int, limit: int = MAX_VAL_CROPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic evenly spaced crops for validation: ([N, 1, n_mels, length], frame mask)."""
    if not clips:
        raise ValueError("no clips")
    per_file = max(1, limit // len(clips))
    crops, valid = [], []
    for clip in clips:
        n = min(per_file, max(1, clip.frames // length))
        starts = np.linspace(0, max(0, clip.frames - length), n).astype(int) if n > 1 else [0]
        for s in starts:
            crops.append(crop_from(clip, int(s), length))
            valid.append(min(clip.frames - int(s), length))
    most = max(limit, min(len(clips), MAX_VAL_FILES_CROPS))
    if len(crops) > most:   # a library's thousands of held-out files: evenly chosen ones, one crop each
        pick = np.linspace(0, len(crops) - 1, most).astype(int)
        crops, valid = [crops[i] for i in pick], [valid[i] for i in pick]
    return torch.stack(crops)[:, None], frame_mask(valid, length)


class Trainer:
    """Train a ConvVQVAE on audio files, yielding TrainEvents.

    Args:
        files: paths (each is checked; bad ones are reported and skipped) or a ScanReport.
        config: settings; default adaptive_config(number of usable files).
        minutes / epochs: the budget (minutes wins if both are given; default: config.max_epochs).
        checkpoint_path: where to write a resumable checkpoint: every `checkpoint_every_s` seconds, every
            `checkpoint_interval` validations and at the end (atomically: a kill leaves the previous one).
        resume_from: a checkpoint written by a previous run with the same files and config (anything else is
            refused with a TrainingError saying what differs). Without a budget, the checkpoint's is used.
        stop_file: a path polled before every step; once a file exists there the run stops as if
            cancel() had been called (the best model so far is kept). Unlike cancel(), this works
            from another process, e.g. when the run executes in a ZeroGPU worker.
        max_seconds / limit_variable: the longest file used and the variable that sets it (named when a
            file is refused): paths are scanned under it; a ScanReport's own limit is the default. Each file
            is loaded under it, and never decoded more than SCAN_MARGIN_S past the length its scan found, so
            a file replaced by a long one after the scan is skipped with a warning, not decoded whole.
        cache_dir / workers / on_progress: keep the log-mels in a cache on disk there (distill.melcache: memory
            does not grow with the corpus, a second run reuses them), computed by `workers` processes (default:
            the cores, at most 8), `on_progress(done, total)` after each file computed. None: in memory.
    """

    def __init__(self, files: Sequence[str | os.PathLike] | ScanReport, config: VQVAEConfig | None = None,
                 mel: MelConfig | None = None, minutes: float | None = None, epochs: float | None = None,
                 checkpoint_path: str | os.PathLike | None = None, resume_from: str | os.PathLike | None = None,
                 log_every_s: float = 1.0, validate_every: int | None = None,
                 stop_file: str | os.PathLike | None = None, checkpoint_every_s: float = CHECKPOINT_EVERY_S,
                 max_seconds: float | None = None, limit_variable: str = "", cache_dir: str | os.PathLike | None = None,
                 workers: int | None = None, on_progress: Callable[[int, int], None] | None = None):
        self.report = files if isinstance(files, ScanReport) else scan_paths(files, max_seconds, limit_variable)
        if max_seconds is None:
            max_seconds, limit_variable = self.report.max_seconds, self.report.variable
        self.max_seconds, self.limit_variable = max_seconds, limit_variable
        accepted = self.report.accepted
        if not accepted:
            reasons = "; ".join(v.describe() for v in self.report.verdicts[:5]) or "no files given"
            raise TrainingError(f"no usable audio files to train on ({reasons})")
        self.config = config or adaptive_config(len(accepted))
        self.mel_cfg = mel or MelConfig()
        self.minutes = minutes
        self._budget_given = epochs is not None or minutes is not None
        self.epochs = epochs if self._budget_given else self.config.max_epochs
        if minutes is not None and minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {minutes}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        self.checkpoint_path = checkpoint_path
        self.resume_from = resume_from
        self.checkpoint_every_s = checkpoint_every_s
        self.log_every_s = log_every_s
        self.validate_every = validate_every
        self.stop_file = stop_file
        self._cancel = threading.Event()
        self.result: TrainResult | None = None
        self.load_warnings: list[str] = []
        self.skipped: list[FileVerdict] = []  # accepted by the scan, unusable when loaded (changed since)
        self.clips: list[Clip] = []
        self.cache_dir, self.workers, self.on_progress = cache_dir, workers, on_progress
        self.corpus: dict = {}  # what the cache did (distill.melcache.CorpusLoad.cache); {} in memory
        self.world = World()    # set by run(): this process's rank under torchrun (distill.parallel)

    def cancel(self) -> None:
        """Ask the run to stop at the next step; the best model so far is kept."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _stop_requested(self) -> bool:
        """cancel() was called, or the stop file has appeared (then the run counts as cancelled)."""
        if not self._cancel.is_set() and self.stop_file is not None and os.path.exists(self.stop_file):
            self._cancel.set()
        return self._cancel.is_set()

    # ---------------------------------------------------------------- data
    def _load_clips(self) -> CorpusLoad:
        """Every accepted file's log-mel (under the limit, and no further than a little past what the scan found):
        through the cache in `cache_dir` when given (computed once, read crop by crop), else in memory. One that
        vanished, grew or changed into something unusable since the scan is skipped with a warning naming it
        (and recorded in self.skipped), and training goes on."""
        accepted = self.report.accepted
        if self.cache_dir is not None:
            try:
                load = load_cached(self.cache_dir, accepted, self.mel_cfg, self.max_seconds, self.limit_variable,
                                   self.workers, self.on_progress, stop=self._stop_requested)
            except BuildStopped as exc:
                raise TrainingError(f"{exc}: nothing was trained") from exc
        else:
            load = load_in_memory(accepted, self.mel_cfg, self.max_seconds, self.limit_variable)
        self.load_warnings, self.skipped = load.warnings, load.skipped
        return load

    # ---------------------------------------------------------------- main loop
    def run(self) -> Iterator[TrainEvent]:
        cfg, mel_cfg = self.config, self.mel_cfg
        world, device_name = start_world(cfg.device)   # under torchrun: join the other ranks (distill.parallel)
        self.world = world
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        device = resolve_device(device_name)
        front = MelFrontEnd(mel_cfg)

        load = self._load_clips()
        clips, used = load.clips, load.used
        self.clips, self.corpus = clips, load.cache  # the prior (distill.prior) is trained on these clips' codes afterwards
        for w in list(self.report.warnings) + self.load_warnings:
            yield TrainEvent("warning", 0, 0.0, 0.0, message=w)
        if not clips:
            raise TrainingError("none of the accepted files could be loaded: they changed since the scan ("
                                + "; ".join(f"{v.name}: {v.reason}" for v in self.skipped[:5]) + ")")
        payload = read_checkpoint(self.resume_from) if self.resume_from else None
        # the files' SHA-256 (a resume checks them): rank 0 alone reads every byte, the others follow its checks
        files = file_records(used) if (self.checkpoint_path or payload is not None) and world.main else []
        budget = {"minutes": self.minutes, "epochs": None if self.minutes is not None else self.epochs}
        if payload is not None:
            check_resumable(self.resume_from, payload, cfg, mel_cfg, files if world.main else None)
            before = json.loads(payload["budget_json"])
            if not self._budget_given:  # `--resume` alone continues the run it resumes
                budget = before
                self.minutes, self.epochs = before["minutes"], before["epochs"]
            elif before != budget:
                yield TrainEvent("warning", 0, 0.0, 0.0, message=f"resuming a run of {_budget_text(before)} with a "
                                 f"budget of {_budget_text(budget)}: the learning-rate schedule follows the new budget")
        meta = {"config_json": cfg.to_json(), "mel_json": mel_json(mel_cfg), "files_json": json.dumps(files),
                "budget_json": json.dumps(budget)}
        train_idx, val_idx = split_files(len(clips), cfg.val_fraction, cfg.seed)
        train_clips = [clips[i] for i in train_idx]
        val_clips = [clips[i] for i in val_idx] or train_clips
        length = crop_frames(cfg, mel_cfg)
        val_batch, val_mask = fixed_crops(val_clips, length)
        val_batch, val_mask = val_batch.to(device), val_mask.to(device)
        weights = np.array([min(c.frames, 10 * length) for c in train_clips], dtype=np.float64)
        weights /= weights.sum()
        crops_per_epoch = sum(max(1, c.frames // length) for c in train_clips)
        steps_per_epoch = max(1, math.ceil(crops_per_epoch / (cfg.batch_size * world.size)))  # all ranks' crops
        total_steps = None if self.minutes is not None else max(1, int(round(self.epochs * steps_per_epoch)))
        budget_s = self.minutes * 60 if self.minutes is not None else None
        validate_every = self.validate_every or max(10, min(200, steps_per_epoch))
        throttle = self.validate_every is None  # an explicit cadence is kept exactly

        model = ConvVQVAE(cfg, n_mels=mel_cfg.n_mels, sync_codebook=world.distributed).to(device)
        amp = autocast_dtype(cfg.precision, device)
        layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format  # oneDNN's fast layout
        model.to(memory_format=layout)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        pinv = front.fbank_pinv.to(device)
        state = _RunState()
        resumed = ""
        if payload is not None:
            state = _restore_checkpoint(self.resume_from, payload, model, opt, rng, device)
            resumed = f"resumed at step {state.step} from {os.path.basename(os.fspath(self.resume_from))}; "
        if world.distributed:  # each rank its own crops, from (seed, rank, step): any world size can resume a run
            rng = np.random.default_rng([cfg.seed, world.rank, state.step])
            resumed += f"rank {world.rank} of {world.size} ({world.backend}); "
        net = model if not world.distributed else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        # DDP copies rank 0's buffers before each forward (BatchNorm statistics stay one model's); the codebooks'
        # EMA updates in that forward are reduced by sync_codebook, so they stay one codebook after it too
        yield TrainEvent("start", state.step, state.step / steps_per_epoch, state.elapsed,
                         total_steps=total_steps,
                         message=f"{resumed}{_corpus_text(self.corpus)}{len(train_clips)} training / "
                                 f"{len(val_idx)} validation files"
                                 f"{'' if val_idx else ' (too few files to hold any out: validating on training files)'}"
                                 f"; {steps_per_epoch} steps per epoch on {device.type}")

        elapsed_before = state.elapsed
        t_run = time.perf_counter()
        last_log = 0.0
        window: list[float] = []
        losses_acc: dict[str, torch.Tensor] = {}   # summed on the device: read back only when a line is logged
        n_acc = 0

        def elapsed() -> float:
            return elapsed_before + time.perf_counter() - t_run

        def progress(steps_ahead: int = 0) -> float:
            """Share of the budget spent (with `steps_ahead` more steps done, for an epoch budget)."""
            if budget_s is not None:
                return min(1.0, elapsed() / budget_s)
            return min(1.0, (state.step + steps_ahead) / total_steps)

        if state.step == 0:  # the untrained baseline, so curves show how far training got
            init_rng = np.random.default_rng(  # k-means init from training crops, not validation ones
                cfg.seed + 1 if not world.distributed else [cfg.seed + 1, world.rank])
            init = [random_crop(train_clips[i], length, init_rng)
                    for i in init_rng.choice(len(train_clips), size=max(cfg.batch_size, 8), p=weights)]
            with torch.no_grad():
                model.train()
                model(torch.stack(init)[:, None].to(device))
            yield self._validate(model, val_batch, val_mask, pinv, state, steps_per_epoch, 0.0, budget_s, total_steps, 0.0, 0.0)
        last_val_step, last_val_end = state.last_val_step, elapsed()
        last_ckpt, bad_run, first_bad = elapsed(), 0, 0
        # rank 0 decides the budget, Stop and the cadences for every rank (distill.parallel: one collective a step)
        prog, go = decide(world, [progress(), float(not (self._stop_requested() or progress() >= 1.0))], device)
        while go:
            model.train()
            lr = _lr_at(cfg, state.step, prog)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = rng.choice(len(train_clips), size=cfg.batch_size, p=weights)
            batch = torch.stack([random_crop(train_clips[i], length, rng) for i in idx])[:, None]
            if device.type == "cuda":   # page-locked, so the copy overlaps the previous step's work
                batch = batch.pin_memory()
            batch = batch.to(device, non_blocking=True).contiguous(memory_format=layout)
            mask = frame_mask([min(train_clips[i].frames, length) for i in idx], length).to(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                out = net(batch)
            losses = compute_losses(out.recon.float(), batch, out.commit_loss.float(), pinv, cfg, mask)
            loss = total_loss(losses, cfg)
            opt.zero_grad(set_to_none=True)
            # backward even when the loss is not finite (every rank must join DDP's gradient all-reduce), then one
            # read-back a step: whether the loss and the gradient were finite (a step that is not is skipped)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.gradient_clip_norm)
            ok = bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm))
            now = elapsed()
            plan = [float(now - last_log >= self.log_every_s),
                    float(validation_due(state.step + 1 - last_val_step, validate_every, now - last_val_end,
                                         state.val_cost, throttle)),
                    float(now - last_ckpt >= self.checkpoint_every_s),
                    float(self._stop_requested() or progress(1) >= 1.0), progress(1)] if world.main else [0.0] * 5
            bad, log_due, val_due, ckpt_due, stop, prog = step_plan(world, not ok, plan, device)
            local_ok, ok = ok, bad == 0   # a step any rank found not finite is skipped on all of them
            if ok:
                opt.step()
                for k, v in {**losses, "total": loss}.items():
                    losses_acc[k] = losses_acc[k] + v.detach() if k in losses_acc else v.detach().clone()
                n_acc += 1
                bad_run = 0
            else:  # the optimizer never sees this step (the quantizer's EMA update in the forward pass may have:
                state.skipped += 1  # the weights are checked below)
                opt.zero_grad(set_to_none=True)
                bad_run += 1
            state.step += 1
            window.append(time.perf_counter() - t0)
            window = window[-20:]
            if not ok:
                what = ("a step on another rank was not finite" if local_ok else
                        f"the loss was {float(loss.detach())}" if not math.isfinite(float(loss.detach()))
                        else f"the gradient norm was {float(grad_norm)}")
                first_bad = state.step if bad_run == 1 else first_bad
                broken = nonfinite_tensors(model)
                if broken or bad_run >= MAX_BAD_STEPS:
                    state.stopped = (f"stopped at step {state.step}: {what} and "
                                     + (f"the weights are no longer finite ({broken[0]})" if broken else
                                        f"{bad_run} steps in a row were not finite (since step {first_bad})"))
                    yield TrainEvent("warning", state.step, state.step / steps_per_epoch, elapsed(),
                                     skipped_steps=state.skipped, message=state.stopped + _kept(state))
                    break
                if state.skipped <= 5 or state.skipped % 100 == 0:
                    yield TrainEvent("warning", state.step, state.step / steps_per_epoch, elapsed(),
                                     skipped_steps=state.skipped,
                                     message=f"step {state.step}: {what}; skipped it (weights unchanged"
                                             f"{f', {state.skipped} steps skipped so far' if state.skipped > 1 else ''})")

            now = elapsed()
            sps = len(window) / max(sum(window), 1e-9)
            eta = (budget_s - now) if budget_s is not None else (total_steps - state.step) / max(sps, 1e-9)
            if log_due and n_acc:
                last_log = now
                names = sorted(losses_acc)
                sums = reduce_sum(world, [float(n_acc)] + torch.stack([losses_acc[k].float() for k in names]).tolist(),
                                  device)  # the global curve
                mean = {k: v / sums[0] for k, v in zip(names, sums[1:], strict=True)}
                losses_acc, n_acc = {}, 0
                state.history.append({"step": state.step, "train": mean["total"],
                                      **{k: mean[k] for k in mean if k != "total"}})
                yield TrainEvent("step", state.step, state.step / steps_per_epoch, now, max(0.0, eta), total_steps,
                                 sps, lr, {k: v for k, v in mean.items() if k != "total"}, mean["total"],
                                 best_val_loss=state.best_val, skipped_steps=state.skipped)
            validated = False
            if val_due:
                ev = self._validate(model, val_batch, val_mask, pinv, state, steps_per_epoch, now, eta, total_steps, sps, lr)
                yield ev
                last_val_step, last_val_end, validated = state.step, elapsed(), True
                broken = [] if math.isfinite(ev.val_loss) else nonfinite_tensors(model)
                if broken:
                    state.stopped = (f"stopped at step {state.step}: the validation loss was {ev.val_loss} and the "
                                     f"weights are no longer finite ({broken[0]})")
                    yield TrainEvent("warning", state.step, state.step / steps_per_epoch, elapsed(),
                                     skipped_steps=state.skipped, message=state.stopped + _kept(state))
                    break
            if self.checkpoint_path and ((validated and state.validations % max(1, cfg.checkpoint_interval) == 0)
                                         or ckpt_due):
                state.elapsed, state.last_val_step = elapsed(), last_val_step
                if world.main:   # rank 0 alone writes files
                    _save_checkpoint(self.checkpoint_path, model, opt, rng, state, meta)
                last_ckpt = elapsed()
            # alone, a Stop (or the budget running out) during the validation or checkpoint above ends the run now;
            # ranks keep to the plan they share (a Stop then takes one more step)
            go = not stop and (world.distributed or not (self._stop_requested() or progress() >= 1.0))

        now = elapsed()
        if state.stopped:  # the current weights are broken: never validated, checkpointed or saved
            if state.best_state is None:
                raise TrainingError(f"training {state.stopped}, before any model was validated: nothing was "
                                    "written. Check the training files for extreme or corrupt audio, or lower "
                                    "learning_rate")
        else:
            yield self._validate(model, val_batch, val_mask, pinv, state, steps_per_epoch, now, 0.0, total_steps, 0.0, 0.0)
            if self.checkpoint_path and world.main:  # the run as it stands (not the best model): a resume continues it
                state.elapsed, state.last_val_step = now, state.step
                _save_checkpoint(self.checkpoint_path, model, opt, rng, state, meta)
        ranks = ""
        if world.distributed:  # the last collective: from here rank 0 goes on alone (model file, prior)
            ranks = f"; rank {world.rank} of {world.size}, codebooks {codebook_digest(model)}"
            finish(world)
            if not world.main:
                yield TrainEvent("done", state.step, state.step / steps_per_epoch, now, 0.0, total_steps,
                                 best_val_loss=state.best_val, skipped_steps=state.skipped,
                                 message=f"finished{ranks} (rank 0 writes the model)")
                return
        if state.best_state is not None:
            model.load_state_dict(state.best_state)
        bad = nonfinite_tensors(model)
        if bad:
            raise TrainingError(f"training ended with non-finite weights ({', '.join(bad[:3])}): nothing was written")
        model.eval()
        model.to(memory_format=torch.contiguous_format)
        info = self._bundle_info(model, clips, used, train_idx, val_idx, val_batch, state, now, device)
        codec = Codec(model.cpu(), mel_cfg, info)
        self.result = TrainResult(codec, state.step, self._cancel.is_set(), state.best_val, state.skipped,
                                  state.stopped)
        health = tuple(LevelHealth(**{k: v for k, v in h.items() if k != "verdict"}) for h in info.health["levels"])
        yield TrainEvent("done", state.step, state.step / steps_per_epoch, now, 0.0, total_steps,
                         best_val_loss=state.best_val, codebook=health, skipped_steps=state.skipped,
                         message=state.stopped + _kept(state) if state.stopped else
                         "cancelled: kept the best model so far" if self._cancel.is_set() else f"finished{ranks}")

    # ---------------------------------------------------------------- helpers
    @torch.no_grad()
    def _validate(self, model, val_batch, val_mask, pinv, state, steps_per_epoch, now, eta, total_steps, sps, lr) -> TrainEvent:
        """Validation on fixed crops, in eval mode: the same loss terms as training (the curves are plotted together).

        The quantizer reports zero commitment in eval mode, so the model computes training's term itself.
        """
        t0 = time.perf_counter()
        cfg = self.config
        world = self.world
        average_norm_statistics(world, model)   # every rank is here together: one model's statistics to score
        model.eval()
        # each rank scores its share of the fixed crops; the sums and code counts are reduced over the ranks
        share = list(range(world.rank, len(val_batch), world.size)) or [0]
        weight = 1.0 if world.rank < len(val_batch) else 0.0   # a rank past the crops counts nothing
        crops, crops_mask = val_batch[share], val_mask[share]
        sums: dict[str, float] = {}
        counts = np.zeros((cfg.num_quantizers, cfg.codebook_size), dtype=np.int64)
        for chunk, chunk_mask in zip(torch.split(crops, 16), torch.split(crops_mask, 16), strict=True):
            latent = model.encode(chunk)
            quantized, codes, _ = model.quantize(latent)
            recon = model.decode(quantized, chunk.shape[-1])
            commit = model.commitment_loss(latent, codes)  # training's term: every level against its own residual
            losses = compute_losses(recon, chunk, commit, pinv, cfg, chunk_mask)
            losses["total"] = total_loss({k: v for k, v in losses.items()}, cfg)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(chunk) * weight
            counts += code_counts(codes.permute(1, 0, 2, 3).cpu().numpy(), cfg.codebook_size) * int(weight)
        names = sorted(sums)
        reduced = reduce_sum(world, [sums[k] for k in names] + counts.reshape(-1).astype(float).tolist(),
                             val_batch.device)
        n = len(val_batch)
        mean = {k: v / n for k, v in zip(names, reduced[:len(names)], strict=True)}
        val = mean.pop("total")
        counts = np.rint(reduced[len(names):]).astype(np.int64).reshape(counts.shape)
        health = tuple(health_from_counts(counts[q], name) for q, name in enumerate(cfg.level_names))
        state.validations += 1
        state.val_cost = time.perf_counter() - t0
        # the untrained baseline (step 0) is for the curves only: it must never be the model that is kept
        if (state.step > 0 and math.isfinite(val) and (state.best_val is None or val < state.best_val)
                and not nonfinite_tensors(model)):
            state.best_val, state.best_step = val, state.step
            state.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        last = state.history[-1] if state.history else None
        if last is not None and last["step"] == state.step and "val" not in last:
            last["val"] = val  # same step as the latest training point: one row
        else:
            state.history.append({"step": state.step, "val": val})
        low = [h.name for h in health if h.utilization < LOW_UTILIZATION]
        msg = (f"low codebook use on {', '.join(low)} (< {LOW_UTILIZATION:.0%} of codes)" if low else "")
        return TrainEvent("validation", state.step, state.step / steps_per_epoch, now,
                          None if eta is None else max(0.0, eta), total_steps,
                          sps, lr, val_loss=val, val_losses=mean, best_val_loss=state.best_val, codebook=health,
                          skipped_steps=state.skipped, message=msg)

    @torch.no_grad()
    def _bundle_info(self, model, clips, used, train_idx, val_idx, val_batch, state, now,
                     device: torch.device) -> BundleInfo:
        cfg = self.config
        usage = np.zeros((cfg.num_quantizers, cfg.codebook_size), dtype=np.int64)
        max_frames = self.mel_cfg.num_frames(int(MAX_USAGE_SECONDS_PER_FILE * self.mel_cfg.sample_rate))
        device = next(model.parameters()).device
        for i in usage_files(clips, train_idx, max_frames, self.mel_cfg.num_frames(int(MAX_USAGE_SECONDS_TOTAL * self.mel_cfg.sample_rate))):
            mel = clips[i].window(0, max_frames).to(device)[None, None]
            _, codes, _ = model.quantize(model.encode(mel))
            usage += code_counts(codes[0].cpu().numpy(), cfg.codebook_size)
        val_codes = torch.cat([model.quantize(model.encode(chunk))[1] for chunk in torch.split(val_batch, 16)])
        val_health = level_health(val_codes.permute(1, 0, 2, 3).cpu().numpy(), cfg.codebook_size, cfg.level_names)
        tensors = state_to_tensors(model)
        dataset = {
            "files": len(self.report.verdicts), "accepted": len(used),
            "rejected": [{"file": v.name, "reason": v.reason} for v in self.report.rejected + self.skipped][:500],
            "train_files": [clips[i].name for i in train_idx], "val_files": [clips[i].name for i in val_idx],
            "total_seconds": round(sum(v.duration_s for v in used), 3),
            "steps": state.step, "skipped_steps": state.skipped, "train_seconds": round(now, 1),
            "cancelled": self._cancel.is_set(), "best_val_loss": state.best_val,
            "training": {**self.world.record(device), "batch_per_rank": cfg.batch_size,
                         "crops_per_step": cfg.batch_size * self.world.size},
            **({"corpus": self.corpus} if self.corpus else {}),
        }
        if state.stopped:
            dataset["stopped"] = state.stopped
        health = {"levels": [h.to_dict() for h in val_health],
                  "training_usage": [health_from_counts(usage[q], n).to_dict() for q, n in enumerate(cfg.level_names)]}
        return BundleInfo(config=cfg, mel=self.mel_cfg, fingerprint=fingerprint(tensors, cfg, self.mel_cfg),
                          dataset=dataset, health=health, history=_thin(state.history, 500), usage=usage.tolist())


@dataclass
class _RunState:
    step: int = 0
    skipped: int = 0
    validations: int = 0
    elapsed: float = 0.0
    best_val: float | None = None
    best_state: dict | None = None
    val_cost: float = 0.0  # seconds the last validation took
    history: list = field(default_factory=list)
    best_step: int = 0
    last_val_step: int = 0
    stopped: str = ""  # set when a non-finite loss stopped the run


def codebook_digest(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the model's state, weights and buffers (codebooks, BatchNorm statistics):
    the ranks of a run print it to show they hold one model."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def nonfinite_tensors(model: torch.nn.Module | dict) -> list[str]:
    """Names of the parameters and buffers (or state-dict entries) holding NaN or inf; [] when all are finite."""
    items = model.items() if isinstance(model, dict) else [*model.named_parameters(), *model.named_buffers()]
    return [k for k, v in items
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v.detach()).all())]


def _kept(state: _RunState) -> str:
    if state.best_state is None:
        return ""
    return f"; kept the best model so far (step {state.best_step}, validation loss {state.best_val:.4f})"


def _corpus_text(corpus: dict) -> str:
    """What the mel cache did, for the start line ("" in memory)."""
    if not corpus:
        return ""
    how = (f"{corpus['computed']} computed in {corpus['built_s']:g} s ({corpus['workers']} workers), "
           f"{corpus['reused']} reused" if corpus["computed"] else f"all {corpus['reused']} reused")
    return (f"mel cache {corpus['cache']}: {corpus['files']} files, {corpus['hours']:g} h, "
            f"{corpus['bytes'] / 1e6:.0f} MB ({how}); ")


def _budget_text(budget: dict) -> str:
    return f"{budget['minutes']:g} minutes" if budget.get("minutes") is not None else f"{budget['epochs']:g} epochs"


def file_records(verdicts: Sequence[FileVerdict]) -> list[dict]:
    """What a checkpoint records of the files a run trains on, in order: name, size and SHA-256 of the bytes."""
    records = []
    for v in verdicts:
        h, size = hashlib.sha256(), -1
        try:
            with open(v.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            size, digest = os.path.getsize(v.path), h.hexdigest()
        except OSError:  # vanished since it was loaded: recorded as unreadable, so a resume sees it changed
            digest = ""
        records.append({"name": v.name, "size": size, "sha256": digest})
    return records


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's contents, loaded with torch.load(weights_only=True): tensors, numbers and strings only,
    never arbitrary pickled objects. TrainingError (naming the file) for anything else."""
    name = os.path.basename(os.fspath(path))
    if not os.path.isfile(path):
        raise TrainingError(f"{name}: no such checkpoint")
    try:
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            read_info(path)
        except BundleError:
            raise TrainingError(f"{name}: not a Distill checkpoint (it holds objects other than tensors, numbers "
                                "and strings, which are never unpickled)") from exc
        raise TrainingError(f"{name} is a Distill model, not a checkpoint: resume from the .ckpt file written "
                            "next to it") from exc
    except Exception as exc:  # torch raises KeyError, EOFError, RuntimeError... for files it did not write
        raise TrainingError(f"{name}: not a Distill checkpoint (unreadable: {type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        if isinstance(payload, dict) and "np_rng_json" in payload:
            raise TrainingError(f"{name}: a checkpoint from an older Distill, which does not record the settings and "
                                "files it trained on: start a new run without --resume")
        raise TrainingError(f"{name}: not a Distill checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{name}: checkpoint version {payload.get('version')!r} is not supported (this Distill "
                            f"reads version {CHECKPOINT_VERSION})")
    return payload


def resumed_config(path: str | os.PathLike, overrides: dict) -> VQVAEConfig:
    """The settings of the run a checkpoint continues, with those a command sets explicitly (`overrides`): a resume
    continues that run even when this Distill's defaults differ (the default widths changed in issue 15). An
    explicit setting that differs is then refused by `check_resumable`, naming it."""
    try:
        before = VQVAEConfig.from_dict(json.loads(read_checkpoint(path)["config_json"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"{os.path.basename(os.fspath(path))}: damaged checkpoint ({exc})") from exc
    return before.replace(**overrides)


def check_resumable(path, payload: dict, cfg: VQVAEConfig, mel: MelConfig, files: list[dict] | None) -> None:
    """TrainingError saying what differs unless this run has the checkpoint's settings and files (files None: the
    settings only; the other ranks of a distributed run leave the files to rank 0)."""
    diffs = []
    try:
        before = VQVAEConfig.from_dict(json.loads(payload["config_json"])).to_dict()
        mel_before = payload["mel_json"]
        files_before = json.loads(payload["files_json"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"{os.path.basename(os.fspath(path))}: damaged checkpoint ({exc})") from exc
    now = cfg.to_dict()
    diffs += [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
              if k not in RESUME_FREE_FIELDS and before.get(k) != now.get(k)]
    if mel_before != mel_json(mel):
        diffs.append("mel front-end settings differ")
    if files is not None and files_before != files:
        old = {f["name"]: f for f in files_before}
        new = {f["name"]: f for f in files}
        parts = [f"{label} {_names(names)}" for label, names in (
            ("missing", [n for n in old if n not in new]), ("new", [n for n in new if n not in old]),
            ("changed", [n for n in new if n in old and old[n] != new[n]])) if names]
        diffs.append("files: " + ("; ".join(parts) if parts else "same files in a different order"))
    if diffs:
        raise TrainingError(f"cannot resume from {os.path.basename(os.fspath(path))}: this run differs from the one "
                            f"that wrote it ({'; '.join(diffs)}). Resume with the same files and settings "
                            "(--config, --levels, ...), or start a new run without --resume")


def _names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def validation_due(steps_since: int, every: int, seconds_since: float, cost_s: float, throttle: bool) -> bool:
    """Validate every `every` steps; by default also wait until the last validation's cost is at
    most VAL_TIME_SHARE of the time since, so a time budget buys training steps, not evaluations."""
    if steps_since < every:
        return False
    return not throttle or cost_s <= VAL_TIME_SHARE * (seconds_since + cost_s)


def _lr_at(cfg: VQVAEConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to 10% of the base rate."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    return cfg.learning_rate * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _thin(history: list, limit: int) -> list:
    if len(history) <= limit:
        return history
    idx = np.linspace(0, len(history) - 1, limit).astype(int)
    return [history[i] for i in idx]


def _save_checkpoint(path, model, opt, rng: np.random.Generator, state: _RunState, meta: dict) -> bool:
    """Model, optimizer, RNGs, progress, and what was trained (config, mel settings, files, budget), atomically.

    Only tensors, numbers and strings (read back with weights_only=True). Weights that are not finite are
    never written: the previous checkpoint stays. Returns whether it was written.
    """
    if nonfinite_tensors(model):
        return False
    device = next(model.parameters()).device
    payload = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **meta,
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "step": state.step, "skipped": state.skipped, "validations": state.validations, "elapsed": state.elapsed,
        "best_val": state.best_val if state.best_val is not None else float("nan"), "best_step": state.best_step,
        "last_val_step": state.last_val_step,
        "best_state": state.best_state or {}, "history_json": json.dumps(state.history),
        "torch_rng": torch.get_rng_state(), "np_rng_json": json.dumps(rng.bit_generator.state),
    }
    if device.type == "cuda":
        payload["cuda_rng"] = torch.cuda.get_rng_state(device)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return True


def _restore_checkpoint(path, payload: dict, model, opt, rng: np.random.Generator, device: torch.device) -> _RunState:
    try:
        model.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in payload:
            torch.cuda.set_rng_state(payload["cuda_rng"], device)
        rng.bit_generator.state = json.loads(payload["np_rng_json"])
        best = float(payload["best_val"])
        return _RunState(step=int(payload["step"]), skipped=int(payload["skipped"]),
                         validations=int(payload["validations"]), elapsed=float(payload["elapsed"]),
                         best_val=None if math.isnan(best) else best, best_state=payload["best_state"] or None,
                         history=json.loads(payload["history_json"]), best_step=int(payload["best_step"]),
                         last_val_step=int(payload["last_val_step"]))
    except Exception as exc:
        raise TrainingError(f"{os.path.basename(os.fspath(path))}: damaged checkpoint, cannot resume "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc


def split_budget(minutes: float | None, prior_share: float) -> float | None:
    """The codec's minutes when a run of `minutes` gives `prior_share` (0-0.9) of them to the prior."""
    if not (isinstance(prior_share, (int, float)) and 0.0 <= prior_share <= 0.9):
        raise ValueError(f"prior share must be within 0-0.9, got {prior_share!r}")
    return None if minutes is None else minutes * (1.0 - prior_share)


class ClipMels(Sequence):
    """(name, log-mel [n_mels, frames]) of each clip, read when asked for: the prior's corpus without holding
    every log-mel at once (a cached clip reads its file's rows from disk)."""

    def __init__(self, clips: Sequence[Clip]):
        self.clips = list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.clips[i].name, self.clips[i].mel


def prior_clips(clips: Sequence[Clip], max_frames: int) -> tuple[list[Clip], str]:
    """The clips the prior learns from: all of them up to `max_frames` in total, else evenly spaced ones up to
    it (its encoding is paid from its share of the budget), with a note saying so ("" when all)."""
    total = sum(c.frames for c in clips)
    if total <= max_frames:
        return list(clips), ""
    keep = max(1, int(len(clips) * max_frames / total))
    chosen = [clips[j] for j in np.linspace(0, len(clips) - 1, keep).astype(int)]
    return chosen, (f"the prior learns from {len(chosen)} of the {len(clips)} files (evenly chosen, about "
                    f"{PRIOR_MAX_SECONDS / 3600:g} h of audio): encoding all of them would cost more than its budget")


def train_prior_after(trainer: Trainer, minutes: float | None, prior_share: float) -> Iterator[TrainEvent]:
    """After `trainer.run()` finished: train the prior on the same clips' codes for its share of the budget
    (of `minutes`, or share/(1 - share) of the codec's time when the budget was in epochs), streaming its
    events; the trainer's result then carries the codec with its prior. Nothing happens when the share
    is 0, or the run was stopped or cancelled (a warning says how to add a prior later); Stop during
    this phase keeps the best prior so far."""
    split_budget(minutes, prior_share)   # the share's range is checked in one place
    result = trainer.result
    if result is None or prior_share <= 0:
        return
    if result.stopped or trainer.cancelled:
        yield TrainEvent("warning", result.steps, 0.0, 0.0, stage="prior",
                         message="training was stopped, so no prior was trained (regenerate needs one); add it "
                                 "later with `distill prior MODEL FOLDER`")
        return
    seconds = minutes * 60 * prior_share if minutes is not None else \
        float(result.info.dataset.get("train_seconds", 60)) * prior_share / (1 - prior_share)
    try:   # the codec is done: nothing that goes wrong with the prior may cost it
        clips, note = prior_clips(trainer.clips, trainer.mel_cfg.num_frames(int(PRIOR_MAX_SECONDS * result.codec.sample_rate)))
        if note:
            yield TrainEvent("warning", result.steps, 0.0, 0.0, stage="prior", message=note)
        prior = PriorTrainer.from_audio(result.codec, ClipMels(clips), max(seconds, 5.0) / 60,
                                        stop=trainer._stop_requested)
        yield from prior.run()
        broken = nonfinite_tensors(prior.result.model) if prior.result is not None else ["no result"]
        if broken:
            raise PriorError(f"its weights are not finite ({broken[0]})")
    except (PriorError, RuntimeError, ValueError, MemoryError) as exc:
        log.warning("prior training failed: %s", exc)
        yield TrainEvent("warning", result.steps, 0.0, 0.0, stage="prior",
                         message=f"the prior could not be trained ({_one_line(exc)}); the model is saved without "
                                 "one (regenerate needs it): add it later with `distill prior MODEL FOLDER`")
        return
    result.codec = result.codec.with_prior(prior.result.model, prior.result.meta)


def train(files: Sequence[str | os.PathLike] | ScanReport, **kwargs) -> TrainResult | None:
    """Run a Trainer to the end and return its result (for scripts that need no progress). Under torchrun only
    rank 0 has one: the other ranks get None (they train with it, rank 0 keeps the model)."""
    trainer = Trainer(files, **kwargs)
    for _ in trainer.run():
        pass
    if trainer.result is None and not trainer.world.main:
        return None
    assert trainer.result is not None
    return trainer.result
