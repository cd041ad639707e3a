"""Shared fixtures: synthetic audio (tests never read real recordings) and one tiny trained model."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from distill import Codec, VQVAEConfig
from distill.prior import CodeCorpus, PriorConfig, PriorTrainer
from distill.train import train

SR = 48000

# One intra-op thread: the tests' tiny networks gain nothing from a second thread, and on a busy
# 2-core runner two threads per process oversubscribe the CPU (a tiny training step: 2 s vs 0.13 s).
torch.set_num_threads(1)


def tone(seconds: float, freq: float = 220.0, sr: int = SR, decay: float = 1.5, noise: float = 0.02,
         seed: int = 0) -> np.ndarray:
    """A decaying harmonic tone with a little noise: cheap, deterministic, has spectral structure."""
    rng = np.random.default_rng(seed)
    t = np.arange(max(1, int(round(seconds * sr)))) / sr
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 5)) * np.exp(-decay * t)
    return (0.3 * wave + noise * rng.standard_normal(t.size)).astype(np.float32)


def write_corpus(folder: Path, n: int = 6, sr: int = 44100) -> list[Path]:
    """n short synthetic clips at a non-model rate, mixed mono/stereo, wav and flac."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        wave = tone(0.4 + 0.25 * i, freq=110 * (1 + i % 4), sr=sr, seed=i)
        if i % 2:
            wave = np.stack([wave, 0.5 * wave], axis=1)
        p = folder / (f"clip{i}.flac" if i % 3 == 2 else f"clip{i}.wav")
        sf.write(p, wave, sr)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_config() -> VQVAEConfig:
    """Small enough to train in seconds on 2 cores; same code paths as the default."""
    return VQVAEConfig(codebook_size=32, codebook_dim=32, channels=(8, 16, 16, 32), res_blocks=1,
                       batch_size=4, warmup_steps=2, decay=0.8)


@pytest.fixture(scope="session")
def trained(corpus_dir, tiny_config, tmp_path_factory):
    """(TrainResult, saved model path) for a model trained a few dozen steps on the synthetic corpus."""
    torch.manual_seed(0)
    files = sorted(corpus_dir.iterdir())
    result = train(files, config=tiny_config, epochs=30, validate_every=10)
    path = tmp_path_factory.mktemp("model") / "tiny.distill"
    result.save(path)
    return result, path


@pytest.fixture(scope="session")
def codec(trained) -> Codec:
    return Codec.load(trained[1])


TINY_PRIOR = dict(window=16, batch_size=8, warmup_steps=5)


def patterned_corpus(levels: int, bands: int, k: int, files: int = 6, columns: int = 40, seed: int = 0) -> CodeCorpus:
    """Held notes: every file is a run of "notes" 6-16 columns long, each a random column of codes held
    unchanged. A prior can learn that a note goes on; code frequencies cannot (every code is as common)."""
    rng = np.random.default_rng(seed)
    grids = []
    for _ in range(files):
        pieces, n = [], 0
        while n < columns:
            length = int(rng.integers(6, 17))
            pieces.append(np.repeat(rng.integers(0, k, size=(levels, bands, 1)), length, axis=2))
            n += length
        grids.append(np.concatenate(pieces, axis=2)[:, :, :columns])
    return CodeCorpus(tuple(f"f{i}.wav" for i in range(files)), tuple(grids))


@pytest.fixture(scope="session")
def prior_codec(codec, tmp_path_factory):
    """The tiny test codec with a tiny prior trained for a few seconds on its own codes, saved and reloaded."""
    corpus = patterned_corpus(len(codec.level_names), codec.num_bands, codec.codebook_size)
    cfg = PriorConfig(levels=len(codec.level_names), bands=codec.num_bands, codebook_size=codec.codebook_size,
                      latent_dim=codec.codebooks.shape[-1], context_width=16, **TINY_PRIOR)
    trainer = PriorTrainer(corpus, codec.codebook_size, 0.1, codec.fingerprint, config=cfg, codebooks=codec.codebooks)
    list(trainer.run())
    path = tmp_path_factory.mktemp("prior") / "with_prior.distill"
    codec.with_prior(trainer.result.model, trainer.result.meta).save(path)
    return Codec.load(path), path


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, str]:
    """Two 2-second studio clips with different spectra (name -> path), so swapping regions changes codes."""
    folder = tmp_path_factory.mktemp("studio_clips")
    out = {}
    for name, freq, noise in (("low", 110.0, 0.01), ("bright", 880.0, 0.2)):
        path = folder / f"{name}.wav"
        sf.write(path, tone(2.0, freq, noise=noise, decay=0.3), SR)
        out[name] = str(path)
    return out


@pytest.fixture
def session(codec, clips):
    """A studio session on the tiny model with clips low (A) and bright (B) open."""
    from distill_studio import handlers
    from distill_studio.state import Limits

    s, _ = handlers.start(codec, "tiny", None, clips, Limits(), "low", "bright")
    return s


@contextmanager
def running_studio(model_path: Path, clips_dir: Path, max_train_minutes: float) -> Iterator[str]:
    """Launch the real studio on a free local port with a tiny training preset; yields its URL."""
    from distill_studio import build_app
    from distill_studio.app import launch_kwargs
    from distill_studio.state import Limits

    limits = Limits(preset="tiny", demo_model=str(model_path), demo_clips=str(clips_dir),
                    max_train_minutes=max_train_minutes)
    demo = build_app(limits)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(limits))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
