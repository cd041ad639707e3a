"""Codes JSON and .distill files: round trips, refusal of foreign or damaged files with clear messages."""

import json

import numpy as np
import pytest
import torch
from conftest import tone
from safetensors.torch import save_file

from distill import BundleError, Codec, CodeGrid, CodesError, read_info


def _grid(**kw) -> CodeGrid:
    base = dict(codes=np.arange(2 * 8 * 3).reshape(2, 8, 3) % 7, level_names=("Structure", "Timbre"),
                seconds_per_column=0.17, sample_rate=48000, num_samples=24000, model="abc")
    base.update(kw)
    return CodeGrid(**base)


def test_json_round_trip_and_documented_fields(tmp_path):
    grid = _grid()
    d = json.loads(grid.to_json())
    assert set(d) == {"format", "version", "model", "levels", "codes", "seconds_per_column", "sample_rate",
                      "num_samples"}
    assert d["format"] == "distill-codes" and d["version"] == 1
    assert d["codes"][1][7][2] == int(grid.codes[1, 7, 2])  # levels x bands x columns
    grid.save(tmp_path / "g.codes.json")
    assert CodeGrid.load(tmp_path / "g.codes.json") == grid


def test_source_rate_round_trips_and_older_files_still_read(codec):
    """A grid records the rate and length of the file it came from; codes written without them
    (older Distill) read as 'unknown' and decode at the model rate."""
    wave = tone(0.7, sr=22050)[:-1]
    grid = codec.encode(wave, 22050)
    assert (grid.source_rate, grid.source_samples) == (22050, len(wave))
    back = CodeGrid.from_json(grid.to_json())
    assert (back.source_rate, back.source_samples) == (22050, len(wave))
    out, rate = codec.at_source_rate(codec.decode(back, n_iter=2), back)
    assert rate == 22050 and len(out) == len(wave)
    old = grid.to_dict()
    del old["source_rate"], old["source_samples"]
    legacy = CodeGrid.from_dict(old)
    assert legacy.source_rate == 0
    out, rate = codec.at_source_rate(codec.decode(legacy, n_iter=2), legacy)
    assert rate == codec.sample_rate and len(out) == legacy.num_samples
    with pytest.raises(CodesError, match="source_rate"):
        _grid(source_rate=-1)


def test_grid_is_immutable():
    grid = _grid()
    with pytest.raises(ValueError):
        grid.codes[0, 0, 0] = 5


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(format="other"), "not a Distill codes file"),
    (lambda d: d.update(version=9), "unsupported codes version"),
    (lambda d: d.pop("num_samples"), "missing the field 'num_samples'"),
    (lambda d: d.update(codes=[[1, 2]]), "levels x bands x columns"),
])
def test_bad_codes_json_is_refused(mutate, message):
    d = _grid().to_dict()
    mutate(d)
    with pytest.raises(CodesError, match=message):
        CodeGrid.from_dict(d)


def test_codec_refuses_grid_from_another_model_or_out_of_range(codec):
    grid = codec.encode(tone(0.5))
    codec.check(grid)
    with pytest.raises(CodesError, match="made by model"):
        codec.check(CodeGrid(grid.codes, grid.level_names, grid.seconds_per_column, 48000, grid.num_samples, "feed"))
    bad = grid.codes.copy()
    bad[0, 0, 0] = codec.codebook_size
    with pytest.raises(CodesError, match=f"0-{codec.codebook_size - 1}"):
        codec.decode(grid.with_codes(bad))


def test_save_load_gives_identical_codes(trained, codec):
    result, _ = trained
    wave = tone(1.2, freq=330)
    a = result.codec.encode(wave)
    b = codec.encode(wave)
    assert np.array_equal(a.codes, b.codes)
    assert a.model == b.model == codec.fingerprint


def test_info_has_dataset_health_history(trained):
    info = read_info(trained[1])
    assert info.dataset["accepted"] == 6
    assert len(info.dataset["train_files"]) + len(info.dataset["val_files"]) == 6
    assert [h["name"] for h in info.health["levels"]] == ["Structure", "Timbre", "Detail"]
    assert info.history and "val" in info.history[-1]
    assert len(info.usage) == 3 and len(info.usage[0]) == info.config.codebook_size


def test_foreign_and_corrupt_model_files_are_refused(tmp_path, trained):
    (tmp_path / "text.distill").write_text("hello world, not a model")
    save_file({"w": torch.zeros(3)}, tmp_path / "other.distill", metadata={"format": "someone-else"})
    raw = bytearray(trained[1].read_bytes())
    raw[-100:] = b"\x00" * 100  # damage the weights
    (tmp_path / "damaged.distill").write_bytes(bytes(raw))
    (tmp_path / "empty.distill").write_bytes(b"")
    for name, msg in [("text.distill", "not a Distill model"), ("other.distill", "from something else"),
                      ("damaged.distill", "damaged|fingerprint"), ("empty.distill", "not a Distill model"),
                      ("missing.distill", "no such model file")]:
        with pytest.raises(BundleError, match=msg) as exc:
            Codec.load(tmp_path / name)
        assert name in str(exc.value)


def test_save_is_atomic(tmp_path, trained):
    result, _ = trained
    path = tmp_path / "m.distill"
    result.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.distill"]


def test_model_saved_before_newer_config_fields_still_loads(tmp_path, tiny_config):
    """A .distill whose stored config predates fields added since (legacy defaults) loads, same fingerprint."""
    from safetensors.torch import load_file

    from distill import MelConfig
    from distill.bundle import BundleInfo, fingerprint, save_bundle
    from distill.config import LEGACY_DEFAULTS
    from distill.model import ConvVQVAE

    cfg = tiny_config.replace(**LEGACY_DEFAULTS)
    model = ConvVQVAE(cfg)
    path = tmp_path / "old.distill"
    save_bundle(path, model, BundleInfo(config=cfg, mel=MelConfig(), fingerprint="x"))
    old_json = json.dumps({k: v for k, v in cfg.to_dict().items() if k not in LEGACY_DEFAULTS}, sort_keys=True)
    info = read_info(path)
    tensors = load_file(path)
    fp = fingerprint(tensors, old_json, info.mel)
    save_file(tensors, path, metadata={**info.metadata(), "config": old_json, "fingerprint": fp})
    codec = Codec.load(path)
    assert codec.fingerprint == fp
    assert codec.config == cfg
