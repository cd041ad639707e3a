"""Codec: encode any clip to a grid, decode to exactly its length; long clips encode in chunks without seams."""

import json
import math
import platform

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone

import distill.codec as codec_mod
from distill import cli
from distill.codec import Codec, _chunked_over_columns, _tile_error
from distill.codes import CodeGrid
from distill.model import DOWNSAMPLE, grid_width


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


def test_encode_reports_progress_piece_by_piece(codec: Codec, monkeypatch):
    """A long encode tells its caller how far it is after each piece (the studio draws it as a bar), rising to 1;
    the codes are the same as without a listener."""
    wave = np.concatenate([tone(1.5, freq=f, seed=i) for i, f in enumerate([110, 220, 330, 440])])
    monkeypatch.setattr(codec_mod, "CHUNK_COLUMNS", 7)
    seen: list[float] = []
    grid = codec.encode(wave, 48000, search_steps=0, progress=seen.append)
    assert len(seen) == -(-grid.num_columns // 7) >= 3
    assert seen == sorted(seen) and seen[0] < 0.5 and seen[-1] == 1.0
    assert np.array_equal(grid.codes, codec.encode(wave, 48000, search_steps=0).codes)
    short: list[float] = []
    monkeypatch.setattr(codec_mod, "CHUNK_COLUMNS", 256)
    codec.encode(tone(0.5), 48000, progress=short.append)
    assert short == [1.0]


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
    default = codec.encode(wave)  # encode searches by default: the fast search
    assert err(default) <= err(plain) and (default.search_steps, default.search_method) == (3, "fast")


def _search_before_the_fast_default(model, mel: torch.Tensor, steps: int, lr: float = 0.01) -> torch.Tensor:
    """`search_codes` as it was when it was the default encode (20 Adam steps), frozen here so that an
    explicit `search_steps=N` can be checked to stay exactly that search."""
    frames = mel.shape[-1]
    z = model.encode(mel).detach().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best, best_err, best_tiles = None, math.inf, None
    with torch.enable_grad():
        for step in range(steps + 1):
            q, codes, _ = model.quantize(z)
            err = (model.decode(z + (q - z).detach(), frames) - mel).abs()
            loss = err.mean()
            with torch.no_grad():
                tiles = _tile_error(err, codes.shape[-2:])
                if best is None:
                    best, best_tiles = codes.clone(), tiles
                else:
                    better = tiles < best_tiles
                    best = torch.where(better[:, None], codes, best)
                    best_tiles = torch.minimum(tiles, best_tiles)
                value = float(loss.detach())
                if value < best_err:
                    whole, best_err = codes.clone(), value
            if step < steps:
                (z.grad,) = torch.autograd.grad(loss, z)
                opt.step()
    with torch.no_grad():
        mixed_err = float((model.decode_codes(best, frames) - mel).abs().mean())
    return best if mixed_err < best_err else whole


def test_explicit_search_steps_is_the_adam_search_it_always_was(codec: Codec, monkeypatch):
    """`search_steps=20` (and any explicit N) is exactly the 20-step search that was the default before the
    fast search: same codes, chunk by chunk, recorded as such."""
    wave = np.concatenate([tone(0.9, freq=196.0, seed=5), tone(0.8, freq=660.0, noise=0.1, seed=6)])
    mel = codec.logmel(wave)
    monkeypatch.setattr(codec_mod, "CHUNK_COLUMNS", 5)  # several chunks, as a long recording has
    cols = grid_width(mel.shape[-1])
    for steps in (20, 2):
        ref = _chunked_over_columns(lambda piece, n=steps: _search_before_the_fast_default(codec.model, piece, n)[0],
                                    mel[None, None], cols, in_scale=DOWNSAMPLE, out_scale=1).numpy()
        grid = codec.encode(wave, search_steps=steps)
        assert np.array_equal(grid.codes, ref)
        assert grid.encoder_record() == {"search_steps": steps, "method": "adam"}
    assert codec.encode(wave, search_steps=0).encoder_record() == {"search_steps": 0}


def test_fast_search_decodes_no_worse_than_the_encoder_and_is_deterministic(codec: Codec, monkeypatch):
    """The default (fast) search: never further from the clip than the encoder's own codes, over chunk seams
    too, the same codes every time, and no trace left on the model."""
    before = {k: v.clone() for k, v in codec.model.state_dict().items()}
    for i, wave in enumerate([np.concatenate([tone(0.6, freq=f, noise=0.05 * k, seed=k) for k, f in
                                              enumerate([110.0, 415.0, 247.0, 880.0])]),
                              tone(2.2, freq=150.0, decay=0.2, noise=0.2, seed=11)]):
        if i:
            monkeypatch.setattr(codec_mod, "CHUNK_COLUMNS", 4)
        mel = codec.logmel(wave)
        err = lambda g: float((codec.decode_mel(g) - mel).abs().mean())  # noqa: E731, B023
        plain, fast = codec.encode(wave, search_steps=0), codec.encode(wave)
        assert fast.codes.shape == plain.codes.shape and 0 <= fast.codes.min() and fast.codes.max() < codec.codebook_size
        assert err(fast) <= err(plain)
        assert np.array_equal(fast.codes, codec.encode(wave).codes)
    assert all(torch.equal(before[k], v) for k, v in codec.model.state_dict().items())
    assert all(p.grad is None for p in codec.model.parameters())


def test_quantize_nearest_picks_the_quantizers_codes(codec: Codec):
    torch.manual_seed(3)
    with torch.no_grad():
        z = codec.model.encode(codec.logmel(tone(1.5, freq=300.0, noise=0.2))[None, None])
        for latent in (z, z + 0.3 * torch.randn_like(z)):
            q, codes, _ = codec.model.quantize(latent)
            q2, codes2 = codec.model.quantize_nearest(latent)
            assert torch.equal(codes, codes2) and torch.allclose(q, q2, atol=1e-5)


def test_codes_record_which_search_made_them(codec: Codec):
    """The JSON form says what was done; files from before the method was recorded load as the Adam search."""
    grid = codec.encode(tone(0.5), 48000)
    d = grid.to_dict()
    assert d["encoder"] == {"search_steps": 3, "method": "fast"}
    again = CodeGrid.from_json(grid.to_json())
    assert (again.search_steps, again.search_method) == (3, "fast") and again.knows_original
    legacy = {**d, "encoder": {"search_steps": 20}}
    assert CodeGrid.from_dict(legacy).search_method == "adam"
    assert CodeGrid.from_dict({**d, "encoder": {"search_steps": 0}}).search_method is None
    assert CodeGrid.from_dict({k: v for k, v in d.items() if k != "encoder"}).search_method is None
    with pytest.raises(ValueError, match="method"):
        CodeGrid.from_dict({**d, "encoder": {"search_steps": 3, "method": 7}})


def test_cli_encode_search_flag(trained, tmp_path):
    """`distill encode` searches fast by default; `--search N` is N Adam steps, `--search 0` the encoder alone."""
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.1, freq=262.0, sr=44100), 44100)
    records = {}
    for flag in ([], ["--search", "4"], ["--search", "0"]):
        out = tmp_path / f"c{len(records)}.codes.json"
        assert cli.main(["encode", str(trained[1]), str(clip), "-o", str(out), *flag]) == 0
        records[" ".join(flag)] = json.loads(out.read_text())
    assert records[""]["encoder"] == {"search_steps": 3, "method": "fast"}
    assert records["--search 4"]["encoder"] == {"search_steps": 4, "method": "adam"}
    assert records["--search 0"]["encoder"] == {"search_steps": 0}
    assert len({json.dumps(r["codes"]) for r in records.values()}) >= 2  # the searches change codes
    assert codec_mod.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")  # what `distill encode` asks


@pytest.mark.parametrize("field", ["levels", "bands", "codebook_size"])
def test_a_prior_for_another_grid_is_refused_at_load_with_the_reason(codec, tmp_path, field):
    """Issue 25: a model file whose prior was made for another grid (a hand-assembled file, or one from before
    priors recorded their codec) loaded, and regenerate then failed deep inside the network. The codec still
    loads; the prior is left out and prior_note names the mismatch."""
    from dataclasses import replace

    from distill.bundle import save_bundle
    from distill.prior import PriorConfig, build_prior, prior_tensors

    geometry = dict(levels=len(codec.level_names), bands=codec.num_bands, codebook_size=codec.codebook_size)
    geometry[field] += 1
    cfg = PriorConfig(**geometry, window=8)
    info = replace(codec.info, prior={"config": cfg.to_dict(), "codec": ""})
    path = tmp_path / "mismatched.distill"
    save_bundle(path, codec.model, info, prior_tensors(build_prior(cfg)))
    loaded = Codec.load(path)
    assert loaded.prior is None
    assert field.replace("_", " ") in loaded.prior_note or field in loaded.prior_note
    assert np.array_equal(loaded.encode(tone(0.5)).codes, codec.encode(tone(0.5)).codes)  # the codec itself is fine
