"""Model: grid geometry for 2-4 levels, any length and 4/8/16 mel bins per band, no per-call state,
-1 levels contribute nothing."""

import pytest
import torch

from distill.config import VQVAEConfig, seed_config
from distill.model import ConvVQVAE

SMALL = dict(codebook_size=16, codebook_dim=16, channels=(4, 8, 8, 16))


@pytest.mark.parametrize("levels", [2, 3, 4])
@pytest.mark.parametrize("frames", [1, 2, 17, 94, 3282])  # 20 ms ... 35 s at hop 512
def test_shapes(levels, frames):
    model = ConvVQVAE(VQVAEConfig(num_quantizers=levels, **SMALL)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 128, frames))
    cols = -(-frames // 16)
    assert out.codes.shape == (1, levels, 16, cols)  # default: 8 mel bins per band, 16 frames per column
    assert out.recon.shape == (1, 1, 128, frames)
    assert out.latent.shape == (1, 16, 16, cols)
    assert (out.recon >= 0).all()  # Softplus: log1p-mel is never negative


@pytest.mark.parametrize("band_bins,bands", [(16, 8), (8, 16), (4, 32)])
def test_band_bins_set_the_number_of_bands_not_the_columns(band_bins, bands):
    model = ConvVQVAE(VQVAEConfig(band_bins=band_bins, **SMALL)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 128, 94))
    assert model.num_bands == bands
    assert out.codes.shape == (2, 3, bands, 6) and out.recon.shape == (2, 1, 128, 94)
    assert torch.equal(model.decode_codes(out.codes, 94), out.recon)


def test_band_bins_validated_and_old_models_keep_16():
    with pytest.raises(ValueError, match="4, 8 or 16"):
        VQVAEConfig(band_bins=32)
    with pytest.raises(ValueError, match="seed design"):
        VQVAEConfig(arch="seed", band_bins=8)
    old = {k: v for k, v in VQVAEConfig().to_dict().items() if k != "band_bins"}  # saved before the field existed
    assert VQVAEConfig.from_dict(old).band_bins == 16


def test_seed_architecture_builds_and_runs():
    model = ConvVQVAE(seed_config(10).replace(codebook_dim=16)).eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        out = model(torch.rand(2, 1, 128, 94))
    assert out.recon.shape == (2, 1, 128, 94) and out.codes.shape == (2, 3, 8, 6)


def test_codes_round_trip_through_latent():
    torch.manual_seed(0)
    model = ConvVQVAE(VQVAEConfig(**SMALL))
    model.train()
    model(torch.rand(8, 1, 128, 96) * 4)  # k-means init on real-ish data
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 128, 96) * 4)
        again = model.decode_codes(out.codes, 96)
    assert torch.allclose(again, out.recon, atol=1e-5)


def test_level_left_out_contributes_nothing():
    torch.manual_seed(0)
    model = ConvVQVAE(VQVAEConfig(**SMALL)).train()
    model(torch.rand(8, 1, 128, 96) * 4)  # k-means init: codebooks are zeros before the first batch
    model.eval()
    codes = torch.randint(0, 16, (1, 3, 16, 4))
    first_only = codes.clone()
    first_only[:, 1:] = -1
    lat = model.codes_to_latent(first_only)
    ref = model.codes_to_latent(codes[:, :1])  # fewer levels given = same as -1
    assert torch.allclose(lat, ref)
    assert not torch.allclose(lat, model.codes_to_latent(codes))


def test_no_attribute_changes_during_forward():
    model = ConvVQVAE(VQVAEConfig(**SMALL)).eval()
    before = {k: v for k, v in vars(model).items() if not k.startswith("_")}
    keys = set(vars(model)) | {k for m in model.modules() for k in vars(m)}
    with torch.no_grad():
        model(torch.rand(1, 1, 128, 40))
        model(torch.rand(1, 1, 128, 70))
    after_keys = set(vars(model)) | {k for m in model.modules() for k in vars(m)}
    assert after_keys == keys
    assert {k: v for k, v in vars(model).items() if not k.startswith("_")} == before


def test_encoding_is_local_in_time():
    """A change late in the clip must not change codes early on (per-position norm, no global stats)."""
    model = ConvVQVAE(VQVAEConfig(**SMALL)).eval()
    x = torch.rand(1, 1, 128, 640)
    y = x.clone()
    y[..., 480:] = 0
    with torch.no_grad():
        a, b = model(x).codes, model(y).codes
    assert torch.equal(a[..., :20], b[..., :20])
    assert not torch.equal(a, b)


def test_band_embedding_tells_the_decoder_which_band_a_code_sits_in():
    """The same code in two middle bands decodes to different tiles (a conv alone could not tell
    them apart); the seed design has no band embedding."""
    torch.manual_seed(0)
    model = ConvVQVAE(VQVAEConfig(**SMALL)).eval()
    with torch.no_grad():
        model.decoder.band.weight.normal_()
        latent = torch.ones(1, 16, 16, 6)
        mel = model.decode(latent, 96)[0, 0]
    tile = lambda band: mel[band * 8:(band + 1) * 8, 32:64]  # noqa: E731  (middle columns: no edge effects)
    assert not torch.allclose(tile(6), tile(7), atol=1e-4)
    flat = ConvVQVAE(VQVAEConfig(**SMALL, band_embedding=False)).eval()
    with torch.no_grad():
        mel = flat.decode(latent, 96)[0, 0]
    assert torch.allclose(tile(6), tile(7), atol=1e-5)
    assert not any("band" in name for name, _ in ConvVQVAE(seed_config(50)).named_parameters())


def test_output_layer_stays_fp32_under_mixed_precision():
    """bf16 training must not round the decoded log-mel (its step is 0.06 between 8 and 16)."""
    model = ConvVQVAE(VQVAEConfig(codebook_size=16, codebook_dim=16, channels=(4, 8, 8, 16))).eval()
    mel = torch.rand(1, 1, 128, 32) * 12
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(mel)
    assert out.recon.dtype == torch.float32
    rounded = out.recon.to(torch.bfloat16).float()
    assert (out.recon != rounded).any()  # values between bf16 steps survive


def test_codes_to_latent_is_the_quantizers_own_lookup_bit_for_bit():
    """Our direct codeword lookup (no per-shape einx graph) equals vector-quantize-pytorch's, levels left out too."""
    cfg = VQVAEConfig(codebook_size=32, codebook_dim=16, channels=(8, 16, 16, 32), res_blocks=1)
    model = ConvVQVAE(cfg, n_mels=128)
    torch.manual_seed(0)
    model(torch.rand(4, 1, 128, 112) * 3)   # k-means initialises the codebooks
    model.eval()
    assert model.codebooks.abs().sum() > 0
    codes = torch.randint(0, 32, (2, cfg.num_quantizers, 8, 7))
    codes[0, 2, :, 3:] = -1
    for q in range(1, cfg.num_quantizers + 1):
        part = codes[:, :q]
        idx = part.permute(0, 2, 3, 1).reshape(2, 56, q)
        idx = torch.cat([idx, idx.new_full((2, 56, cfg.num_quantizers - q), -1)], dim=-1)
        ref = model.quantizer.get_output_from_indices(idx).reshape(2, 8, 7, -1).permute(0, 3, 1, 2)
        assert torch.equal(model.codes_to_latent(part), ref)


def test_rotation_trick_transform_is_the_librarys_with_the_same_gradients():
    """Training routes the quantizer's rotation trick through our per-row form (issue 15: the library's
    batched 1 x D matrix products were ~4% of a CPU step); values and gradients must be the library's."""
    import vector_quantize_pytorch.vector_quantize_pytorch as lib

    import distill.model as model_mod

    model_mod.vq_library()
    assert lib.efficient_rotation_trick_transform is model_mod.rotation_trick_transform  # installed on first use
    library = model_mod.vq_library().rotation
    assert library is not None and library is not model_mod.rotation_trick_transform
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(300, 128, generator=g), dim=1).requires_grad_()
    q = torch.nn.functional.normalize(torch.randn(300, 128, generator=g), dim=1).requires_grad_()
    e = (torch.randn(300, 128, generator=g) * 3).requires_grad_()
    weight = torch.randn(300, 128, generator=g)
    outs, grads = [], []
    for fn in (library, model_mod.rotation_trick_transform):
        out = fn(u, q, e)
        outs.append(out)
        grads.append(torch.autograd.grad((out * weight).sum(), e))
        assert not torch.autograd.grad(out.sum(), (u, q), allow_unused=True, materialize_grads=True)[0].any()
    assert outs[0].shape == outs[1].shape == e.shape
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    try:
        model_mod.use_fast_rotation(False)
        assert lib.efficient_rotation_trick_transform is library
    finally:
        model_mod.use_fast_rotation(True)
    assert lib.efficient_rotation_trick_transform is model_mod.rotation_trick_transform


def test_commands_that_only_read_files_do_not_import_the_quantizer_library(trained):
    """`distill info` and `--help` do not pay the quantizer library's ~3 s import; building a model does."""
    import subprocess
    import sys

    probe = ("import sys\nfrom distill.cli import main\ntry:\n    main({args})\nexcept SystemExit:\n    pass\n"
             "print('LOADED' if 'vector_quantize_pytorch' in sys.modules else 'NOT LOADED')")
    for args in (["info", str(trained[1])], ["--help"]):
        run = subprocess.run([sys.executable, "-c", probe.format(args=args)], capture_output=True, text=True,
                             timeout=120)
        assert run.stdout.strip().splitlines()[-1] == "NOT LOADED", (args, run.stdout, run.stderr)
    build = "import sys; from distill import ConvVQVAE, VQVAEConfig; ConvVQVAE(VQVAEConfig()); print('vector_quantize_pytorch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", build], capture_output=True, text=True, timeout=120).stdout.strip() == "True"


def test_training_step_with_the_fast_rotation_matches_the_library():
    """A whole training step (quantizer included) gives the library's gradients."""
    import distill.model as model_mod

    cfg = VQVAEConfig(codebook_size=16, codebook_dim=16, channels=(4, 8, 8, 16))
    torch.manual_seed(0)
    mel = torch.rand(4, 1, 128, 48) * 4
    grads = []
    try:
        for fast in (False, True):
            model_mod.use_fast_rotation(fast)
            torch.manual_seed(1)
            model = ConvVQVAE(cfg).train()
            out = model(mel)
            ((out.recon - mel).square().mean() + out.commit_loss).backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    finally:
        model_mod.use_fast_rotation(True)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
