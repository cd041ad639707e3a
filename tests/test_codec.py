"""Codec: encode any clip to a grid, decode to exactly its length; long clips encode in chunks without seams."""

import numpy as np
import pytest
import torch
from conftest import tone

import distill.codec as codec_mod
from distill.codec import Codec


@pytest.mark.parametrize("seconds", [0.02, 0.3, 4.1])
def test_encode_decode_exact_length(codec: Codec, seconds):
    wave = tone(seconds)
    grid = codec.encode(wave)
    assert grid.codes.shape == (3, 16, -(-(len(wave) // 512 + 1) // 16))  # 8 mel bins per band, 16 frames per column
    assert len(codec.decode(grid)) == len(wave)
    assert len(codec.decode(grid, phase_from=wave)) == len(wave)


def test_35_second_clip(codec: Codec):
    wave = np.tile(tone(0.5), 70)
    grid = codec.encode(wave)
    assert grid.num_columns == -(-(len(wave) // 512 + 1) // 16) and grid.duration_s == pytest.approx(35.0)
    assert len(codec.decode(grid, phase_from=wave)) == len(wave)


def test_any_rate_and_channels(codec: Codec, tmp_path):
    stereo = np.stack([tone(1.0, sr=22050)] * 2, 1)
    grid = codec.encode(stereo, 22050)
    assert grid.num_samples == 48000 and grid.sample_rate == 48000


def test_chunked_encoding_has_no_seams(codec: Codec, monkeypatch):
    wave = np.concatenate([tone(1.5, freq=f, seed=i) for i, f in enumerate([110, 220, 330, 440, 550])])
    whole = codec.encode(wave, search_steps=0)
    monkeypatch.setattr(codec_mod, "CHUNK_COLUMNS", 7)
    pieces = codec.encode(wave, search_steps=0)
    searched = codec.encode(wave)  # the default search runs per piece: other codes, no worse a fit
    assert whole.num_columns > 3 * 7
    assert np.array_equal(whole.codes, pieces.codes)
    mel_pieces = codec.decode_mel(pieces)
    monkeypatch.setattr(codec_mod, "CHUNK_COLUMNS", 256)
    assert torch.allclose(codec.decode_mel(whole), mel_pieces, atol=1e-4)
    mel = codec.logmel(wave)
    err = lambda g: float((codec.decode_mel(g) - mel).abs().mean())  # noqa: E731
    assert searched.codes.shape == whole.codes.shape and err(searched) < err(whole)


def test_reencoding_is_deterministic(codec: Codec):
    wave = tone(2.0, freq=300)
    assert np.array_equal(codec.encode(wave).codes, codec.encode(wave).codes)


def test_decode_is_thread_safe(codec: Codec):
    from concurrent.futures import ThreadPoolExecutor

    waves = [tone(0.7, freq=f) for f in (150, 450)]
    grids = [codec.encode(w) for w in waves]
    serial = [codec.decode_mel(g) for g in grids]
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(codec.decode_mel, grids * 3))
    for i, mel in enumerate(parallel):
        assert torch.allclose(mel, serial[i % 2], atol=1e-5)


def test_encode_by_search_decodes_at_least_as_close_and_leaves_the_model_alone(codec):
    """`search_steps` picks codes whose decoded mel is no further from the clip than the encoder's
    (usually closer), stays inside the codebook, works across chunk seams, and trains nothing."""
    wave = np.concatenate([tone(0.8, freq=330.0), tone(0.7, freq=523.0)])
    before = {k: v.clone() for k, v in codec.model.state_dict().items()}
    mel = codec.logmel(wave)
    plain, found = codec.encode(wave, search_steps=0), codec.encode(wave, search_steps=15)
    err = lambda g: float((codec.decode_mel(g) - mel).abs().mean())  # noqa: E731
    assert err(found) < err(plain)  # the tiny test model leaves plenty to find
    assert found.codes.shape == plain.codes.shape and found.codes.max() < codec.codebook_size
    assert all(torch.equal(before[k], v) for k, v in codec.model.state_dict().items())
    assert all(p.grad is None for p in codec.model.parameters())
    long = np.tile(wave, 30)  # ~45 s: more than one encode chunk
    assert codec.encode(long, search_steps=2).num_columns == codec.encode(long, search_steps=0).num_columns
    default = codec.encode(wave)  # encode searches by default
    assert err(default) <= err(plain) and np.array_equal(default.codes, codec.encode(wave, search_steps=20).codes)
