"""Issue 13, crash points: a loss that turns NaN/inf never writes a broken model. A single bad step whose
weights stay finite is skipped (and said, naming the step); once the weights themselves go non-finite, or
the loss stays non-finite, training stops with a message naming the step and keeps the best model so far."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import distill.train as train_mod
from distill import Codec, Trainer, TrainingError
from distill.cli import main
from distill.codec import load_bundle
from distill.train import MAX_BAD_STEPS, nonfinite_tensors, read_checkpoint


def _files(corpus_dir):
    return sorted(corpus_dir.iterdir())


def _bad_loss_from(monkeypatch, steps, value=float("inf")):
    """total_loss returns `value` on the given training steps (1-based; validation runs without grad)."""
    real = train_mod.total_loss
    count = {"n": 0}

    def patched(losses, cfg):
        out = real(losses, cfg)
        if not torch.is_grad_enabled():
            return out
        count["n"] += 1
        return out * value if count["n"] in steps else out

    monkeypatch.setattr(train_mod, "total_loss", patched)


def _stopped_step(message: str) -> int:
    m = re.search(r"stopped at step (\d+)", message)
    assert m, message
    return int(m.group(1))


def test_one_bad_step_is_skipped_and_named(corpus_dir, tiny_config, monkeypatch):
    _bad_loss_from(monkeypatch, {3})
    trainer = Trainer(_files(corpus_dir), tiny_config, epochs=4, validate_every=100)
    events = list(trainer.run())
    warnings = [e for e in events if e.kind == "warning" and "step 3" in e.message]
    assert len(warnings) == 1 and warnings[0].step == 3
    assert warnings[0].message == "step 3: the loss was inf; skipped it (weights unchanged)"
    result = trainer.result
    assert result.steps == 8 and result.skipped_steps == 1 and not result.stopped
    assert events[-1].message == "finished"


def test_extreme_input_stops_training_and_keeps_the_best_model(corpus_dir, tiny_config, monkeypatch, tmp_path):
    """An inf in a training crop poisons the quantizer's EMA codebook in the forward pass: the run stops at
    that step; the checkpoint and the model file hold the best finite weights; the model decodes finite audio."""
    real_crop, armed = train_mod.random_crop, {"on": False}

    def crop(clip, length, rng):
        x = real_crop(clip, length, rng)
        if armed["on"]:
            x = x.clone()
            x[:, :4] = float("inf")
        return x

    monkeypatch.setattr(train_mod, "random_crop", crop)
    written = []
    real_save = train_mod._save_checkpoint
    monkeypatch.setattr(train_mod, "_save_checkpoint",
                        lambda *a, **k: written.append(real_save(*a, **k)) or written[-1])
    ckpt = tmp_path / "run.ckpt"
    trainer = Trainer(_files(corpus_dir), tiny_config, epochs=6, validate_every=4, log_every_s=0,
                      checkpoint_path=ckpt, checkpoint_every_s=0)
    events = []
    for ev in trainer.run():
        events.append(ev)
        if ev.kind == "validation" and ev.step == 4:
            armed["on"] = True  # every batch from step 5 on carries an extreme value
    result = trainer.result
    stop = next(e for e in events if e.kind == "warning" and "stopped at" in e.message)
    assert _stopped_step(stop.message) == stop.step == 5 == result.steps
    assert "the weights are no longer finite" in stop.message
    assert stop.message.endswith("kept the best model so far (step 4, validation loss "
                                 f"{result.best_val_loss:.4f})")
    assert events[-1].kind == "done" and events[-1].message == stop.message
    assert result.stopped and result.stopped in stop.message and not result.cancelled
    assert not [e for e in events if e.kind == "validation" and e.step >= 5]  # the broken model is never validated

    # no checkpoint with non-finite weights was written: the one on disk is from step 4
    assert written == [True] * 4
    payload = read_checkpoint(ckpt)
    assert payload["step"] == 4 and not nonfinite_tensors(payload["model"]) and not nonfinite_tensors(
        payload["best_state"])
    broken = train_mod.ConvVQVAE(tiny_config)
    with torch.no_grad():
        next(broken.parameters()).view(-1)[0] = float("inf")
    before = ckpt.read_bytes()
    assert real_save(ckpt, broken, torch.optim.AdamW(broken.parameters()), np.random.default_rng(0),
                     train_mod._RunState(step=99), {}) is False  # the checkpoint writer refuses it too
    assert ckpt.read_bytes() == before
    # the model file is the best finite model, and it decodes to finite audio
    path = tmp_path / "m.distill"
    result.save(path)
    model, info = load_bundle(path)
    assert not nonfinite_tensors(model)
    assert info.dataset["stopped"] == result.stopped and info.dataset["best_val_loss"] == result.best_val_loss
    assert all(torch.equal(model.state_dict()[k], v) for k, v in payload["best_state"].items())
    codec = Codec.load(path)
    wave = 0.1 * np.random.default_rng(0).standard_normal(24000).astype(np.float32)
    out = codec.decode(codec.encode(wave, search_steps=0))
    assert len(out) == 24000 and np.all(np.isfinite(out))


def test_a_loss_that_stays_nonfinite_stops_the_run(corpus_dir, tiny_config, monkeypatch):
    _bad_loss_from(monkeypatch, set(range(5, 100)), float("nan"))
    trainer = Trainer(_files(corpus_dir), tiny_config, epochs=10, validate_every=4)
    events = list(trainer.run())
    last = MAX_BAD_STEPS + 4
    assert trainer.result.stopped == (f"stopped at step {last}: the loss was nan and {MAX_BAD_STEPS} steps in a "
                                      f"row were not finite (since step 5)")
    skipped = [e.message for e in events if e.kind == "warning" and "skipped it" in e.message]
    assert skipped[0] == "step 5: the loss was nan; skipped it (weights unchanged)" and len(skipped) == MAX_BAD_STEPS - 1
    assert trainer.result.steps == last and trainer.result.skipped_steps == MAX_BAD_STEPS
    assert not nonfinite_tensors(trainer.result.codec.model)


def test_nonfinite_before_any_validated_model_writes_nothing(corpus_dir, tiny_config, monkeypatch, tmp_path,
                                                             capsys):
    _bad_loss_from(monkeypatch, set(range(1, 100)), float("nan"))
    (tmp_path / "tiny.json").write_text(__import__("json").dumps(tiny_config.to_dict()))
    out = tmp_path / "m.distill"
    rc = main(["train", str(corpus_dir), "-o", str(out), "--epochs", "4", "--config", str(tmp_path / "tiny.json"),
               "--prior-share", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1] == (f"distill: error: training stopped at step {MAX_BAD_STEPS}: the loss was nan and "
                       f"{MAX_BAD_STEPS} steps in a row were not finite (since step 1), before any model was "
                       "validated: nothing was written. Check the training files for extreme or corrupt audio, "
                       "or lower learning_rate")
    assert not out.exists() and not (tmp_path / "m.distill.ckpt").exists()


def test_a_model_with_nonfinite_weights_is_never_saved(corpus_dir, tiny_config, tmp_path):
    trainer = Trainer(_files(corpus_dir), tiny_config, epochs=1)
    list(trainer.run())
    good = tmp_path / "m.distill"
    trainer.result.save(good)
    before = good.read_bytes()
    with torch.no_grad():
        next(trainer.result.codec.model.parameters()).view(-1)[0] = float("nan")
    for path in (good, tmp_path / "new.distill"):
        with pytest.raises(TrainingError, match=rf"{path.name} not written: the model's weights are not finite"):
            trainer.result.save(path)
    assert good.read_bytes() == before and not (tmp_path / "new.distill").exists()
