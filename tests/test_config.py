"""Config: adaptive tiers by file count, validated ranges with messages that say what is allowed."""

import pytest

from distill.config import VQVAEConfig, adaptive_config, seed_config


@pytest.mark.parametrize("n,size", [(1, 64), (5, 64), (20, 64), (21, 128), (100, 128), (101, 256), (500, 256),
                                    (2000, 256)])
def test_codebook_tiers(n, size):
    cfg = adaptive_config(n)
    assert cfg.codebook_size == size
    assert cfg.num_quantizers == 3 and cfg.codebook_dim == 128
    assert cfg.level_names == ("Structure", "Timbre", "Detail")


def test_tiers_scale_decay():
    assert adaptive_config(10).decay < adaptive_config(50).decay < adaptive_config(300).decay


@pytest.mark.parametrize("field,value,allowed", [("num_quantizers", 5, "2-4"), ("num_quantizers", 1, "2-4"),
                                                 ("codebook_dim", 4, "8-1024"), ("arch", "x", "distill"),
                                                 ("decay", 1.0, "(0, 1)")])
def test_out_of_range_raises_with_allowed_values(field, value, allowed):
    with pytest.raises(ValueError, match=allowed.replace("(", r"\(").replace(")", r"\)")):
        VQVAEConfig(**{field: value})


def test_four_levels_named_fine():
    assert VQVAEConfig(num_quantizers=4).level_names[-1] == "Fine"


def test_json_round_trip_and_seed_design():
    cfg = adaptive_config(50, num_quantizers=4)
    assert VQVAEConfig.from_dict(cfg.to_dict()) == cfg
    seed = seed_config(10)
    assert seed.arch == "seed" and seed.norm == "batch" and seed.codebook_size == 64 and seed.dropout == 0.4


def test_precision_settings():
    """The seed design trains in fp32 as its document does; Distill picks bf16 where it is native;
    models saved before the field existed were trained in fp32."""
    assert seed_config(10).precision == "fp32" and adaptive_config(10).precision == "auto"
    legacy = {k: v for k, v in adaptive_config(10).to_dict().items() if k != "precision"}
    assert VQVAEConfig.from_dict(legacy).precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        VQVAEConfig(precision="fp16")


def test_default_widths_and_old_widths_still_load(tmp_path):
    """Issue 15: the default trains with narrower widths (~1.6x the crops/s on a CPU, benchmarks/README.md);
    the seed design keeps its own, and a model saved with the widths of before loads with them, same weights."""
    import torch

    from distill import Codec, MelConfig
    from distill.config import DEFAULT_CHANNELS, SEED_CHANNELS
    from distill.model import ConvVQVAE

    assert DEFAULT_CHANNELS == (24, 48, 96, 192) and SEED_CHANNELS == (32, 64, 128, 256)
    assert VQVAEConfig().channels == DEFAULT_CHANNELS
    assert all(adaptive_config(n).channels == DEFAULT_CHANNELS for n in (5, 50, 300))
    assert seed_config(50).channels == SEED_CHANNELS
    old_cfg = adaptive_config(50, channels=SEED_CHANNELS)
    old = {**old_cfg.to_dict(), "channels": [32, 64, 128, 256]}  # as a model saved before the change stores it
    assert VQVAEConfig.from_dict(old).channels == SEED_CHANNELS
    assert VQVAEConfig.from_dict(old) == old_cfg
    path = tmp_path / "old-widths.distill"
    torch.manual_seed(0)
    model = ConvVQVAE(old_cfg).eval()
    saved = Codec(model, MelConfig())
    saved.save(path)
    loaded = Codec.load(path)
    assert loaded.config.channels == SEED_CHANNELS and loaded.fingerprint == saved.fingerprint
    want, got = model.state_dict(), loaded.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
