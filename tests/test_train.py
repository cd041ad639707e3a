"""Training: loss goes down, events carry codebook health, cancel keeps a model, NaN steps are skipped,
runs are reproducible and resumable, bad files never stop a run."""

import math

import numpy as np
import pytest
import torch

import distill.train as train_mod
from distill import Trainer, TrainingError
from distill.bundle import state_to_tensors
from distill.melcache import MemoryClip
from distill.train import train


def _files(corpus_dir):
    return sorted(corpus_dir.iterdir())


def test_training_reduces_loss_and_reports_health(trained):
    result, _ = trained
    vals = [h["val"] for h in result.info.history if "val" in h]
    assert vals[0] == result.info.history[0]["val"] and result.info.history[0]["step"] == 0  # untrained baseline
    assert min(vals) < 0.9 * vals[0]
    assert result.best_val_loss == pytest.approx(min(vals))
    assert result.steps > 0 and not result.cancelled


def test_events_stream(corpus_dir, tiny_config):
    trainer = Trainer(_files(corpus_dir)[:3], tiny_config, epochs=12, validate_every=4, log_every_s=0)
    events = list(trainer.run())
    kinds = [e.kind for e in events]
    assert kinds[0] == "warning" and "designed for 5-500" in events[0].message  # 3 files: warned, still trains
    assert "start" in kinds and kinds[-1] == "done" and "step" in kinds
    val = [e for e in events if e.kind == "validation"]
    assert val and all(len(e.codebook) == 3 for e in val)
    assert all(0 <= h.utilization <= 1 and h.perplexity >= 1 for e in val for h in e.codebook)
    steps = [e for e in events if e.kind == "step"]
    assert all(e.loss is not None and math.isfinite(e.loss) and e.eta_s is not None for e in steps)
    assert steps[-1].total_steps == events[-1].step


def test_cancel_keeps_best_model(corpus_dir, tiny_config):
    trainer = Trainer(_files(corpus_dir), tiny_config, minutes=5, validate_every=3)
    for ev in trainer.run():
        if ev.kind == "validation" and ev.step >= 6:
            trainer.cancel()
    result = trainer.result
    assert result.cancelled and result.steps < 20
    grid = result.codec.encode(np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1)
    assert len(result.codec.decode(grid)) == 24000


def test_nan_steps_are_skipped_and_counted(corpus_dir, tiny_config, monkeypatch):
    real = train_mod.total_loss
    calls = {"n": 0}

    def sometimes_nan(losses, cfg):
        calls["n"] += 1
        out = real(losses, cfg)
        return out * float("nan") if calls["n"] in (2, 3) else out

    monkeypatch.setattr(train_mod, "total_loss", sometimes_nan)
    result = train(_files(corpus_dir), config=tiny_config, epochs=8, validate_every=100)
    assert result.skipped_steps == 2
    assert all(torch.isfinite(t).all() for t in state_to_tensors(result.codec.model).values())


def test_fixed_seed_is_reproducible(corpus_dir, tiny_config):
    a = train(_files(corpus_dir), config=tiny_config, epochs=6, validate_every=100)
    b = train(_files(corpus_dir), config=tiny_config, epochs=6, validate_every=100)
    assert a.info.fingerprint == b.info.fingerprint


def test_checkpoint_and_resume(corpus_dir, tiny_config, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    first = Trainer(_files(corpus_dir), tiny_config, epochs=5, checkpoint_path=ckpt, validate_every=2)
    list(first.run())
    assert ckpt.exists()
    resumed = Trainer(_files(corpus_dir), tiny_config, epochs=10, resume_from=ckpt, validate_every=2)
    events = list(resumed.run())
    start = next(e for e in events if e.kind == "start")
    assert start.step == first.result.steps
    assert resumed.result.steps == 2 * first.result.steps


def test_bad_files_reported_training_still_runs(tmp_path, corpus_dir, tiny_config):
    files = _files(corpus_dir)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + b"\x01" * 60)
    (tmp_path / "empty.wav").write_bytes(b"")
    trainer = Trainer(files + [tmp_path / "corrupt.wav", tmp_path / "empty.wav"], tiny_config, epochs=2)
    list(trainer.run())
    rejected = {r["file"] for r in trainer.result.info.dataset["rejected"]}
    assert rejected == {"corrupt.wav", "empty.wav"}


def test_no_usable_files_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(TrainingError, match="no usable audio files"):
        Trainer([tmp_path / "a.txt"])


def test_default_validation_cadence_bounds_its_share_of_time():
    """A time budget buys training steps: by default a validation waits until it costs <= 5% of the
    time since the last one; an explicit `validate_every` is kept exactly."""
    due = train_mod.validation_due
    assert not due(9, 10, 100.0, 0.0, throttle=True)          # not enough steps yet
    assert due(10, 10, 100.0, 1.0, throttle=True)             # 1 s of 101 s
    assert not due(10, 10, 5.0, 1.0, throttle=True)           # 1 s of 6 s: wait
    assert due(10, 10, 5.0, 1.0, throttle=False)              # explicit cadence



def test_mixed_precision_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    assert train_mod.autocast_dtype("fp32", cpu) is None
    assert train_mod.autocast_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(train_mod, "_native_bf16", lambda device: False)
    assert train_mod.autocast_dtype("auto", cpu) is None      # emulated bf16 would be slower
    monkeypatch.setattr(train_mod, "_native_bf16", lambda device: True)
    assert train_mod.autocast_dtype("auto", cpu) == torch.bfloat16


def test_bf16_training_gives_an_fp32_model(corpus_dir, tiny_config):
    result = train(_files(corpus_dir), config=tiny_config.replace(precision="bf16"), epochs=3, validate_every=100)
    tensors = [t for t in result.codec.model.state_dict().values() if t.is_floating_point()]
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
    wave = np.random.default_rng(0).standard_normal(12000).astype(np.float32) * 0.1
    assert len(result.codec.decode(result.codec.encode(wave))) == 12000


def test_padding_after_a_short_clip_is_not_scored():
    """Short clips are padded with silence to the crop length; the loss must score only real frames."""
    from distill.config import VQVAEConfig
    from distill.losses import compute_losses
    cfg = VQVAEConfig(spectral_weight=0.0)
    target = torch.rand(2, 1, 16, 32) * 4
    recon = target.clone()
    recon[0, ..., 20:] += 3.0                       # wrong only where crop 0 is padding
    valid = train_mod.frame_mask([20, 32], 32)
    assert valid.shape == (2, 1, 1, 32) and valid[0, 0, 0, :20].all() and not valid[0, 0, 0, 20:].any()
    zero = torch.zeros(())
    masked = compute_losses(recon, target, zero, None, cfg, valid)
    assert all(float(masked[k]) == 0.0 for k in ("recon/mse", "recon/multiscale", "recon/logpower"))
    recon[1, ..., 25] += 1.0                        # a real frame of crop 1 is wrong: scored
    assert float(compute_losses(recon, target, zero, None, cfg, valid)["recon/mse"]) > 0


def test_validation_crops_mark_their_real_frames(corpus_dir):
    clips = [MemoryClip("short", torch.rand(128, 40)), MemoryClip("long", torch.rand(128, 300))]
    crops, valid = train_mod.fixed_crops(clips, 96)
    assert crops.shape[0] == valid.shape[0]
    assert int(valid[0].sum()) == 40 and bool(valid[1:].all())


def test_validation_loss_is_the_training_loss_on_the_same_batch(corpus_dir, tiny_config):
    """Fault 9: both curves are plotted together, so validation must score the quantity training minimises.

    The quantizer's commitment term sums every level's error against its own residual; validation
    used the final residual (latent minus the sum of all levels) alone, a different, smaller number.
    """
    from distill.losses import compute_losses, total_loss
    from distill.model import ConvVQVAE
    from distill.spectrogram import MelFrontEnd

    torch.manual_seed(0)
    cfg = tiny_config.replace(quantize_dropout=False, dropout=0.0)  # train mode == eval mode but for the loss
    model = ConvVQVAE(cfg)
    batch = torch.rand(6, 1, 128, 96) * 4
    mask = train_mod.frame_mask([96, 96, 60, 96, 96, 96], 96)
    pinv = MelFrontEnd().fbank_pinv
    model.train()
    with torch.no_grad():
        model(batch)  # k-means initialises the codebooks
    trainer = Trainer(_files(corpus_dir), cfg)
    ev = trainer._validate(model, batch, mask, pinv, train_mod._RunState(), 1, 0.0, 0.0, 1, 0.0, 0.0)
    model.train()
    with torch.no_grad():  # the codes are chosen before this step's EMA update: same codebooks as validation's
        out = model(batch)
    train_losses = compute_losses(out.recon, batch, out.commit_loss, pinv, cfg, mask)
    assert float(out.commit_loss) > 0
    assert ev.val_losses["vq/commitment"] == pytest.approx(float(train_losses["vq/commitment"]), rel=1e-4)
    assert ev.val_loss == pytest.approx(float(total_loss(train_losses, cfg)), rel=1e-4)


def test_stop_file_stops_the_run_at_the_next_step_and_keeps_the_best_model(corpus_dir, tiny_config, tmp_path):
    """The stop file works where cancel() cannot (a ZeroGPU worker process): the run checks it before every step."""
    stop = tmp_path / "stop"
    trainer = Trainer(_files(corpus_dir), tiny_config, minutes=5, validate_every=3, stop_file=stop)
    stopped_at = None
    for ev in trainer.run():
        if ev.kind == "validation" and ev.step >= 6 and stopped_at is None:
            stop.touch()
            stopped_at = ev.step
    result = trainer.result
    assert stopped_at is not None and result.steps == stopped_at      # not one step more
    assert result.cancelled and trainer.cancelled and result.info.dataset["cancelled"]
    assert result.best_val_loss is not None and math.isfinite(result.best_val_loss)
    grid = result.codec.encode(np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1)
    assert len(result.codec.decode(grid)) == 24000
