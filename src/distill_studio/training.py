"""Data & Train tab: dataset report, settings -> config, streaming training with loss curves and codebook health."""

from __future__ import annotations

import copy
import html
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from distill import (
    DEFAULT_PRIOR_SHARE,
    LOSS_KEYS,
    Codec,
    FileVerdict,
    ScanReport,
    Trainer,
    TrainEvent,
    TrainingError,
    TrainResult,
    VQVAEConfig,
    adaptive_config,
    split_budget,
    train_prior_after,
)
from distill.audio import inspect_file, scan_warnings

from . import opening, threads
from .common import fail, guarded
from .state import Limits, PendingModel, Session

LIGHTS = {"Healthy": "#22a34a", "Some codes unused": "#e0a800", "Collapsed": "#d63a3a"}
# Fixed colour maps: the plot's legend is fixed by its first frame, so every curve must be named up front.
TOTAL_COLOURS = {"train": "#3b6fd8", "validation": "#e8772e"}
PRIOR_COLOURS = {"prior train (label-smoothed)": "#3b6fd8", "prior validation": "#e8772e"}
TERM_COLOURS = dict(zip(LOSS_KEYS, ("#3b6fd8", "#22a34a", "#9b59b6", "#e8772e", "#d63a3a", "#7f8c8d", "#f1c40f"),
                        strict=False))
REPORT_COLUMNS = ["file", "verdict", "seconds", "sample rate", "channels", "reason"]


def gpu(duration: int = 120):
    """spaces.GPU on a ZeroGPU Space, an identity decorator everywhere else."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


@dataclass(frozen=True)
class Settings:
    """What the settings panel holds, before it becomes a VQVAEConfig."""

    levels: int = 3
    codebook_size: str = "auto"
    codebook_dim: int = 128
    commitment_weight: float = 0.25
    budget: str = "minutes"       # "minutes" | "epochs"
    amount: float = 2.0
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "auto"


def uploaded_paths(folder: list | None, files: list | None) -> list[str]:
    """Both upload widgets -> one list of paths (gradio gives str or objects with .name)."""
    out = []
    for item in list(folder or []) + list(files or []):
        path = item if isinstance(item, str) else getattr(item, "name", None) or getattr(item, "path", None)
        if path:
            out.append(str(path))
    return out


def distinct_names(paths: list[str]) -> list[str]:
    """Uploaded paths -> paths whose file names all differ. A folder upload flattens its subfolders (Gradio keeps
    each file's name, not its folder), so two `kick.wav` would share one name in the table, the training report
    and the clip list, where the second replaced the first. Each later namesake gets a link (a copy where links
    are not allowed) named `kick (2).wav`, `kick (3).wav`, ... in a fresh folder; the file stays where it was."""
    used: set[str] = set()
    out: list[str] = []
    folder: Path | None = None
    for path in paths:
        name = os.path.basename(path)
        if name in used:
            stem, ext = os.path.splitext(name)
            n = 2
            while f"{stem} ({n}){ext}" in used:
                n += 1
            name = f"{stem} ({n}){ext}"
            folder = folder or Path(tempfile.mkdtemp(prefix="distill-upload-"))
            alias = folder / name
            try:
                os.symlink(os.path.abspath(path), alias)
            except OSError:
                try:
                    shutil.copyfile(path, alias)   # into the fresh mkdtemp() folder above
                except OSError:   # unreadable, or a folder: keep the path (its verdict says what is wrong)
                    alias = Path(path)
            path = str(alias)
        used.add(name)
        out.append(path)
    return out


def limited_scan(paths: list[str], limits: Limits) -> ScanReport:
    """scan_paths plus the Space's limits: files past max_files, files over max_file_mb (Gradio's upload limit
    already refuses them from a browser; files reaching here by other routes are checked too) and audio past the
    total duration are rejected with a reason that names the limit and its environment variable.

    Each file's length is checked against what is left of the total before it is decoded (from its header;
    Ogg / MP3 stop decoding there): an hour of FLAC silence, 0.7 MB, is refused without decoding an hour."""
    over_count = [FileVerdict(p, False, limits.too_many_files()) for p in paths[limits.max_files:]]
    too_big, kept, total = [], [], 0.0
    budget = limits.max_total_minutes * 60
    for p in paths[:limits.max_files]:
        try:
            mb = os.path.getsize(p) / 2**20
        except OSError:
            mb = 0.0  # unreadable: inspect_file says why
        if mb > limits.max_file_mb:
            too_big.append(FileVerdict(p, False, limits.file_too_big(mb)))
            continue
        left = budget - total
        v = inspect_file(p, left, "DISTILL_MAX_TOTAL_MINUTES")
        if v.over_limit:
            reason = limits.over_total_left(v.duration_s, left if v.over_limit == "decoded" else None)
            v = FileVerdict(v.path, False, reason, v.duration_s, v.sample_rate, v.channels, v.over_limit)
        total += v.duration_s if v.accepted else 0.0
        kept.append(v)
    return ScanReport(tuple(kept) + tuple(too_big) + tuple(over_count),
                      scan_warnings(sum(v.accepted for v in kept)))


def report_table(report: ScanReport) -> pd.DataFrame:
    rows = [[v.name, "accepted" if v.accepted else "rejected", round(v.duration_s, 2), v.sample_rate, v.channels, v.reason]
            for v in report.verdicts]
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def report_summary(report: ScanReport, cfg: VQVAEConfig | None) -> str:
    n, total = len(report.accepted), report.total_duration_s
    lines = [f"**{n} of {len(report.verdicts)} files accepted**, {total:.1f} s of audio "
             f"({total / 60:.1f} min)."]
    lines += [f"**Warning:** {html.escape(w)}" for w in report.warnings]
    if n == 0:
        lines.append("Nothing to train on: add WAV, FLAC, OGG, MP3 or AIFF files.")
    if cfg is not None:
        lines.append(f"Adaptive settings for {n} files: codebook **{cfg.codebook_size}** codes × "
                     f"**{cfg.num_quantizers}** levels ({', '.join(cfg.level_names)}), dim {cfg.codebook_dim}, "
                     f"EMA decay {cfg.decay}, up to **{cfg.max_epochs} epochs**.")
    return "  \n".join(lines)


def scan(s: Session | None, folder: list | None, files: list | None, limits: Limits):
    """Upload -> (session, table, summary, settings updates). Bad files are listed with reasons, never fatal."""
    s = s or Session()
    paths = distinct_names(uploaded_paths(folder, files))
    if not paths:
        raise fail("The upload is empty: choose a folder or some audio files.")
    report = limited_scan(paths, limits)
    n = len(report.accepted)
    cfg = adaptive_config(n, **limits.preset_overrides()) if n else None
    with s.lock:   # a running training took its own report at its start (train_stream): this is for the next
        s.report, s.config = report, cfg
    settings = Settings() if cfg is None else Settings(levels=cfg.num_quantizers, codebook_dim=cfg.codebook_dim,
                                                      commitment_weight=cfg.commitment_weight, batch_size=cfg.batch_size)
    return s, report_table(report), report_summary(report, cfg), settings


def build_config(n_files: int, st: Settings, limits: Limits) -> VQVAEConfig:
    """Adaptive defaults for the file count, then the user's choices; ValueError says which setting is wrong."""
    overrides = dict(limits.preset_overrides())
    overrides.update(num_quantizers=int(st.levels), commitment_weight=float(st.commitment_weight),
                     batch_size=int(st.batch_size), learning_rate=float(st.learning_rate), seed=int(st.seed),
                     device=st.device)
    if limits.preset != "tiny":
        overrides["codebook_dim"] = int(st.codebook_dim)
    if str(st.codebook_size).strip().lower() not in ("", "auto"):
        try:
            overrides["codebook_size"] = int(st.codebook_size)
        except ValueError:
            raise ValueError(f"codebook size must be 'auto' or a whole number, got {st.codebook_size!r}") from None
    return adaptive_config(max(1, n_files), **overrides)


def budget(st: Settings, limits: Limits) -> tuple[float | None, float | None]:
    """(minutes, epochs); minutes are capped by the Space's limit."""
    amount = float(st.amount)
    if amount <= 0:
        raise ValueError(f"the training budget must be more than 0 {st.budget}")
    if st.budget == "minutes":
        return min(amount, limits.max_train_minutes), None
    return None, amount


def health_html(levels) -> str:
    """Per-level codebook health with a traffic light (green Healthy, yellow Some codes unused, red Collapsed)."""
    if not levels:
        return "<div class='hm-empty'>Codebook health appears at the first validation.</div>"
    rows = "".join(
        f"<tr><td><span title='{h.verdict}' style='display:inline-block;width:12px;height:12px;border-radius:6px;"
        f"background:{LIGHTS.get(h.verdict, '#888')}'></span></td><td><b>{html.escape(h.name)}</b></td>"
        f"<td>{h.verdict}</td><td>{h.utilization:.0%} used</td><td>perplexity {h.perplexity:.1f}</td>"
        f"<td>{h.dead_codes} dead</td></tr>" for h in levels)
    return f"<table class='health'>{rows}</table>"


def loss_frames(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """History rows -> (train/validation totals, per-term curves, the prior's curves in bits/code) in the long
    form gr.LinePlot wants."""
    df = pd.DataFrame(rows or [], columns=["step", "loss", "curve"]).astype({"step": "int64", "loss": "float64"})
    totals = df[df["curve"].isin(["train", "validation"])].reset_index(drop=True)
    prior = df[df["curve"].isin(list(PRIOR_COLOURS))].reset_index(drop=True)
    parts = df[~df["curve"].isin(["train", "validation", *PRIOR_COLOURS])].reset_index(drop=True)
    return totals, parts, prior


def plottable(frame: pd.DataFrame, needed: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """The frame, or None while it would break gr.LinePlot: its first frame fixes the axes and the legend,
    so an empty frame (or one missing a curve that comes later) must never be the first one sent."""
    if frame.empty or not set(needed) <= set(frame["curve"]):
        return None
    return frame


def event_rows(ev: TrainEvent) -> list[dict]:
    if ev.stage == "prior":
        if ev.kind == "step" and ev.loss is not None:
            return [{"step": ev.step, "loss": float(ev.loss), "curve": "prior train (label-smoothed)"}]
        if ev.kind == "validation" and ev.val_loss is not None:
            return [{"step": ev.step, "loss": float(ev.val_loss), "curve": "prior validation"}]
        return []
    if ev.kind == "step" and ev.loss is not None:
        rows = [{"step": ev.step, "loss": float(ev.loss), "curve": "train"}]
        rows += [{"step": ev.step, "loss": float(v), "curve": k} for k, v in ev.losses.items() if v]
        return rows
    if ev.kind == "validation" and ev.val_loss is not None:
        return [{"step": ev.step, "loss": float(ev.val_loss), "curve": "validation"}]
    return []


def status_line(ev: TrainEvent) -> str:
    if ev.stage == "prior":
        parts = [f"**prior {ev.kind}**", f"step {ev.step}"]
    else:
        parts = [f"**{ev.kind}**", f"step {ev.step}", f"epoch {ev.epoch:.1f}"]
    if ev.progress is not None:
        parts.append(f"{ev.progress:.0%}")
    if ev.steps_per_s:
        parts.append(f"{ev.steps_per_s:.1f} steps/s")
    if ev.eta_s is not None and ev.kind != "done":
        parts.append(f"ETA {int(ev.eta_s) // 60}:{int(ev.eta_s) % 60:02d}")
    if ev.best_val_loss is not None and math.isfinite(ev.best_val_loss):
        parts.append(f"best held-out {ev.best_val_loss:.3f} bits/code" if ev.stage == "prior"
                     else f"best validation loss {ev.best_val_loss:.4f}")
    if ev.message:
        parts.append(html.escape(ev.message))
    return " · ".join(parts)


@dataclass(frozen=True)
class Progress:
    """One streamed update of the training panel."""

    totals: pd.DataFrame | None   # None: leave the plot as it is
    parts: pd.DataFrame | None
    health: str
    status: str
    model_file: str | None = None
    prior: pd.DataFrame | None = None


def train_stream(s: Session, st: Settings, limits: Limits) -> Iterator[Progress]:
    """Run training for the session's dataset, yielding panel updates. On finish the new model is offered
    (offer_model): the session switches to it at once only when clip A has no edits.

    Stop (stop()) creates the run's stop file, which the Trainer polls every step, in this process or in a
    ZeroGPU worker; the loop still ends with the best model so far.

    The dataset report is taken once, here: a folder uploaded during the run (scan) is for the next one, and
    must not become the clip list or the "skipped" files of this one.
    """
    with s.lock:
        report = s.report
    if report is None or not report.accepted:
        raise fail("Upload a folder (or files) with at least one usable audio clip first.")
    try:
        cfg = build_config(len(report.accepted), st, limits)
        minutes, epochs = budget(st, limits)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    s.loss_rows = []
    health = health_html(())
    lines: list[str] = []
    if minutes is not None and float(st.amount) > minutes:  # budget() capped it at the Space's limit: say so
        lines.append(html.escape(limits.train_minutes_capped(float(st.amount))))
    result: TrainResult | None = None
    holder: list[Trainer] = []
    run_dir = tempfile.mkdtemp(prefix="distill-train-")
    stop_file = s.stop_file = os.path.join(run_dir, "stop")
    events = (train_events_gpu(report, cfg, minutes, epochs, stop_file) if on_zero_gpu()
              else train_events(report, cfg, minutes, epochs, holder, stop_file))
    try:
        for ev in threads.each_step(iter(events), threads.TRAIN_THREADS):
            if holder and s.trainer is None:
                s.trainer = holder[0]
            if isinstance(ev, TrainResult):
                result = ev
                continue
            s.loss_rows += event_rows(ev)
            if ev.codebook:
                health = health_html(ev.codebook)
            if ev.kind == "warning" or (ev.kind == "start" and ev.stage == "codec"):  # the prior's start shows below
                lines.append(html.escape(ev.message))
            totals, parts, prior = loss_frames(s.loss_rows)
            more = [f"… and {len(lines) - 3} more warning{'s' if len(lines) > 4 else ''}"] if len(lines) > 3 else []
            yield Progress(plottable(totals, ("train", "validation")), plottable(parts), health,
                           "  \n".join(lines[-3:] + more + [status_line(ev)]),
                           prior=plottable(prior, tuple(PRIOR_COLOURS)))
    except (TrainingError, ValueError) as exc:
        raise fail(str(exc)) from exc
    finally:
        s.trainer = None
        if s.stop_file == stop_file:
            s.stop_file = None
        shutil.rmtree(run_dir, ignore_errors=True)
    if result is None:
        raise fail("Training stopped before a model existed; nothing was changed.")
    folder = Path(tempfile.mkdtemp(prefix="distill-model-"))
    path = folder / "model.distill"
    try:
        result.save(path)
    except OSError as exc:
        raise fail(f"Training finished but the model could not be saved ({exc}); nothing was changed.") from exc
    done = (f"**Model ready:** {result.steps} steps{' (stopped: kept the best model so far)' if result.cancelled else ''}"
            + (f", best validation loss {result.best_val_loss:.4f}" if result.best_val_loss is not None else ""))
    prior_info = result.codec.info.prior
    done += (f"; prior for Regenerate: held-out {prior_info.get('best_val_bits')} bits/code" if prior_info else
             "; no prior (training was stopped before it): Regenerate needs one")
    label = f"trained here ({result.steps} steps{', stopped early' if result.cancelled else ''})"
    clips = trained_clips(report, result)
    try:
        offer_model(s, result.codec, label, str(path), clips, fresh_clips=True)
        if s.pending_model is not None and s.pending_model.path == str(path):
            done += (". Download it below. Your edits on clip A are kept with the current model: press "
                     "**Use the new model** (top of the page) to switch.")
        else:
            done += ". Download it below, or go to **Edit & Listen**."
    except gr.Error as exc:   # saved but not usable here: say so, keep the download
        done += f". It is saved (download it below) but could not be opened here: {html.escape(exc.message)}"
    left_out = [v.name for v in report.accepted if v.name not in clips]
    if left_out:   # the run skipped them (changed since the scan) or they are gone: the clip list cannot offer them
        more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        done += (f"  \nNot in the clip list (skipped during training or gone since): "
                 f"{html.escape(', '.join(left_out[:5]))}{more}.")
    totals, parts, prior = loss_frames(s.loss_rows)
    yield Progress(plottable(totals), plottable(parts), health, done, str(path), plottable(prior))


def trained_clips(report: ScanReport, result: TrainResult) -> dict[str, str]:
    """The clip list a trained model brings, name -> path: the files it trained on that are still there. Files the
    scan accepted but the run skipped (vanished or changed since the scan) are left out, as are files gone since."""
    ds = result.info.dataset or {}
    if "train_files" in ds:
        used = set(ds["train_files"]) | set(ds.get("val_files", []))
    else:   # a model record without the file lists: leave out what it says was rejected
        used = {v.name for v in report.accepted} - {r.get("file") for r in ds.get("rejected", [])}
    return {v.name: v.path for v in report.accepted if v.name in used and os.path.isfile(v.path)}


def has_edits(s: Session | None) -> bool:
    """Clip A's history has at least one step: switching models would throw that work away."""
    return s is not None and s.history is not None and bool(getattr(s.history, "labels", None))


def pending_note(s: Session | None) -> str:
    """The status line shown next to "Use the new model" while a model waits; "" when none does."""
    if s is None or s.pending_model is None:
        return ""
    return (f"**A new model is ready** ({html.escape(s.pending_model.label)}). Your edits on clip A stay with the "
            "current model until you press **Use the new model**: switching re-encodes the open clips with the new "
            "model and starts a new history, so export the history first (Edit & Listen → Save / load) to keep it.")


def _switch(s: Session, codec: Codec, label: str, path: str | None, clips: dict[str, str], fresh_clips: bool) -> None:
    """opening.set_model, all or nothing: if it fails the session is put back and the user is told why."""
    saved = {k: copy.copy(v) if isinstance(v, (list, dict)) else v for k, v in vars(s).items()}
    try:
        if fresh_clips:   # a model trained here: its dataset's clips replace the open ones
            s.close_clips()
        opening.set_model(s, codec, label, path)
    except Exception as exc:  # any failure must be visible, and must not leave half a switch behind
        vars(s).update(saved)
        raise fail(f"The new model ({label}) could not be opened: {exc}. The current model and clips are unchanged.") from exc
    s.clips = dict(clips) if fresh_clips else {**s.clips, **clips}
    s.pending_model = None


@guarded
def offer_model(s: Session, codec: Codec, label: str, path: str | None, clips: dict[str, str] | None = None,
                *, fresh_clips: bool = False) -> Session:
    """A new model arrived. With no edits on clip A the session switches to it now; otherwise it becomes
    s.pending_model and the open clips and history stay until use_pending_model(). Holds the tab's lock, so
    an edit running meanwhile finishes first and counts.

    `clips` come with the model (a training set) and join the clip list on switching; `fresh_clips` (training)
    closes the open clips and replaces the list, as an automatic switch after training always has.
    Raises gr.Error, with the session unchanged, when the switch fails.
    """
    clips = dict(clips or {})
    if has_edits(s):
        s.pending_model = PendingModel(codec, label, path, clips)
    else:
        _switch(s, codec, label, path, clips, fresh_clips)
    return s


@guarded
def use_pending_model(s: Session | None) -> tuple[Session, str]:
    """"Use the new model": switch to the waiting model (re-encodes the open clips, starts a new history)."""
    if s is None or s.pending_model is None:
        raise fail("No new model is waiting: the studio already uses the latest one.")
    p = s.pending_model
    _switch(s, p.codec, p.label, p.path, p.clips, fresh_clips=False)
    return s, f"Now using **{html.escape(p.label)}**: the open clips were re-encoded and a new history started."


def on_zero_gpu() -> bool:
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def train_events(report: ScanReport, cfg: VQVAEConfig, minutes: float | None, epochs: float | None,
                 holder: list | None = None, stop_file: str | None = None) -> Iterator[TrainEvent | TrainResult]:
    """Every TrainEvent, then the TrainResult. Inputs and outputs pickle, as ZeroGPU's worker process needs;
    `holder` (same process only) receives the Trainer; the run stops when `stop_file` appears (any process)."""
    trainer = Trainer(report, cfg, minutes=split_budget(minutes, DEFAULT_PRIOR_SHARE), epochs=epochs, log_every_s=0.5,
                      stop_file=stop_file)
    if holder is not None:
        holder.append(trainer)
    yield from trainer.run()
    yield from train_prior_after(trainer, minutes, DEFAULT_PRIOR_SHARE)  # the prior that Regenerate samples
    if trainer.result is not None:
        result = trainer.result
        result.codec.model.cpu()
        yield result


@gpu(duration=300)
def train_events_gpu(report: ScanReport, cfg: VQVAEConfig, minutes: float | None,
                     epochs: float | None, stop_file: str | None = None) -> Iterator[TrainEvent | TrainResult]:
    """train_events on a borrowed ZeroGPU GPU. The run is in a worker process, where the main process's
    Trainer.cancel() cannot reach it: Stop creates `stop_file` instead, which the Trainer polls every step."""
    yield from train_events(report, cfg, minutes, epochs, stop_file=stop_file)


def stop(s: Session | None) -> str:
    """Stop button: create the run's stop file (seen by the Trainer in whatever process runs it) and cancel a
    Trainer running in this process."""
    if s is None or (s.trainer is None and s.stop_file is None):
        return "Nothing is training."
    if s.stop_file is not None:
        try:
            Path(s.stop_file).touch()
        except OSError as exc:
            if s.trainer is None:
                return f"Could not ask the run to stop ({html.escape(str(exc))}); it ends at its budget."
    if s.trainer is not None:
        s.trainer.cancel()
    return "Stop requested: the run ends at its next step and keeps the best model so far."


def load_model_file(s: Session | None, path: str | None) -> Session:
    """Upload a .distill to skip training; a foreign or damaged file leaves the current model in place.
    With edits on clip A the model waits as s.pending_model (see offer_model)."""
    s = s or Session()
    if not path:
        raise fail("Choose a .distill model file.")
    name = os.path.basename(path)
    try:
        codec = Codec.load(path)
    except Exception as exc:  # whatever is wrong with the file, the user is told, and nothing changes
        raise fail(str(exc) if name in str(exc) else f"{name}: {exc}") from exc
    return offer_model(s, codec, f"uploaded {name}", path)
