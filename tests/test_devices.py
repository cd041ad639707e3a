"""The CUDA path: training, encode (with search), decode, preview and the surgical render with the model on a GPU.

The front end (STFT, mel filterbank, Griffin-Lim) runs on the CPU by design; what enters the network must be on
the network's device and what comes back to the front end must be on the CPU. Skipped, with the reason, where
torch sees no CUDA device. Run it on a GPU machine with:

    python -m pytest -q -p no:cacheprovider tests/test_devices.py -rs
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone

import distill.train as train_mod
from distill import Codec, EditSession, load_audio, load_clip
from distill.model import ConvVQVAE
from distill.render import render_edit

SR = 48000


def _cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False here (the CUDA path runs on a GPU machine)")
    return torch.device("cuda")


def _tensors(args) -> list[torch.Tensor]:
    out = []
    for a in args:
        if torch.is_tensor(a):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += _tensors(a)
    return out


class _Watch:
    """Forward pre-hooks on the network's parts: every tensor that enters must be on `device`."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.device, self.calls, self.wrong = device, 0, []
        self.handles = [m.register_forward_pre_hook(self.hook) for m in (model.encoder, model.quantizer, model.decoder)]

    def hook(self, module, args):
        self.calls += 1
        for t in _tensors(args):
            if t.device.type != self.device.type:
                self.wrong.append(f"{type(module).__name__} got a tensor on {t.device}")

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _exercise(device: torch.device, corpus_dir, tiny_config, tmp_path, monkeypatch) -> None:
    """Everything the CUDA test checks, for any device (the CPU run of it is how it was written and checked)."""
    # ---- training on the device: batches and weights there, a resumable checkpoint, a usable model
    seen: list[tuple[str, str]] = []

    class Recording(ConvVQVAE):
        def forward(self, mel):
            seen.append((mel.device.type, next(self.parameters()).device.type))
            return super().forward(mel)

    monkeypatch.setattr(train_mod, "ConvVQVAE", Recording)
    files = sorted(corpus_dir.iterdir())
    cfg = dataclasses.replace(tiny_config, device=device.type)
    ckpt = tmp_path / "run.ckpt"
    trainer = train_mod.Trainer(files, cfg, epochs=3, validate_every=5, checkpoint_path=ckpt)
    events = list(trainer.run())
    assert f"on {device.type}" in events[0].message
    assert seen and all(s == (device.type, device.type) for s in seen), set(seen)
    assert all(np.isfinite(e.loss) for e in events if e.kind == "step" and e.loss is not None)
    resumed = train_mod.Trainer(files, cfg, epochs=4, validate_every=5, resume_from=ckpt)
    list(resumed.run())
    assert resumed.result.steps > trainer.result.steps
    model_path = tmp_path / "dev.distill"
    trainer.result.save(model_path)
    if device.type == "cuda":
        assert torch.cuda.max_memory_allocated() > 0

    # ---- the codec with its network on the device
    codec = Codec.load(model_path, device=str(device))
    cpu = Codec.load(model_path)
    assert codec.device.type == device.type and codec.fingerprint == cpu.fingerprint
    watch = _Watch(codec.model, device)
    a_path, b_path = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a_path, tone(1.7, 220.0, sr=44100, decay=0.4), 44100)      # not the model rate: exact lengths matter
    sf.write(b_path, tone(1.3, 330.0, noise=0.1, seed=3), SR)
    wave, sr = load_audio(a_path)
    try:
        mel = codec.logmel(codec.load_wave(wave, sr))
        assert mel.device.type == "cpu" and codec.front.fbank.device.type == "cpu"   # front end: CPU by design

        grid = codec.encode(wave, sr)                                    # 20 steps of search on the device
        codec.check(grid)
        assert grid.source_samples == len(wave) and grid.source_rate == sr
        fast = codec.encode(wave, sr, search_steps=0)
        same = float((fast.codes == cpu.encode(wave, sr, search_steps=0).codes).mean())
        print(f"encoder codes equal on {device.type} and cpu: {same:.1%}")
        assert same >= 0.5   # near-ties may flip (TF32 convolutions on a GPU); wrong math agrees ~1/codebook size

        dec = codec.decode_mel(grid)
        assert dec.device.type == "cpu" and bool(torch.isfinite(dec).all())
        err = (dec - cpu.decode_mel(grid)).abs()
        print(f"decoded log-mel, {device.type} vs cpu: mean abs difference {float(err.mean()):.2e}, "
              f"max {float(err.max()):.2e}")
        assert float(err.mean()) < 0.05

        model_wave = codec.load_wave(wave, sr)
        for phase in (model_wave, None):                                # own phase and Griffin-Lim
            out = codec.decode(grid, phase_from=phase)
            assert out.dtype == np.float32 and len(out) == grid.num_samples and np.all(np.isfinite(out))
        back, rate = codec.at_source_rate(codec.decode(grid, phase_from=model_wave), grid)
        assert rate == sr and len(back) == len(wave) and np.all(np.isfinite(back))

        prev = codec.preview_code("Timbre", 3, band=2)
        assert len(prev) == round(0.5 * SR) and np.all(np.isfinite(prev))

        session = EditSession(codec, load_clip(codec, a_path), partner=load_clip(codec, b_path))
        session.apply("copy B:Timbre@0.0-0.5 --to 0.6")
        session.apply("blend B:Structure+Timbre+Detail@0.2-0.6 --to 0.2 --amount 0.5")  # latent math on the device
        session.apply("set Detail@1.0-1.3=5")
        rendered = session.render()
        assert rendered.mode == "surgical" and not rendered.note, rendered.note
        assert len(rendered.wave) == session.current.num_samples and np.all(np.isfinite(rendered.wave))
        exported, rate = session.export_audio(rendered)
        assert rate == sr and len(exported) == len(wave) and np.all(np.isfinite(exported))
        direct = render_edit(codec, session.current, session.clip.wave, session.original)
        assert len(direct) == len(session.clip.wave) and np.all(np.isfinite(direct))
        plain = session.render(mode="plain")
        assert len(plain.wave) == session.current.num_samples and np.all(np.isfinite(plain.wave))
    finally:
        watch.close()
    assert watch.calls > 0 and not watch.wrong, watch.wrong[:5]


def test_training_encode_decode_and_render_on_cuda(corpus_dir, tiny_config, tmp_path, monkeypatch):
    _exercise(_cuda(), corpus_dir, tiny_config, tmp_path, monkeypatch)


def test_training_from_the_mel_cache_on_cuda_trains_what_it_trains_on_the_cpu(corpus_dir, tiny_config, tmp_path):
    """The disk-backed corpus on a GPU: crops read from the cache, page-locked and copied to the device, train a
    finite model that encodes; the loss curve is summed on the device and read back only when logged."""
    device = _cuda()
    from distill.train import Trainer

    cfg = dataclasses.replace(tiny_config, device=device.type)
    trainer = Trainer(sorted(corpus_dir.iterdir()), cfg, epochs=3, cache_dir=tmp_path / "cache")
    events = list(trainer.run())
    steps = [e for e in events if e.kind == "step"]
    assert steps and all(np.isfinite(e.loss) for e in steps)
    assert trainer.result.info.dataset["training"]["devices"] == "cuda"
    assert trainer.result.info.dataset["corpus"]["files"] == len(trainer.clips)
    codec = trainer.result.codec
    assert codec.encode(tone(1.0)).codes.shape[0] == cfg.num_quantizers
