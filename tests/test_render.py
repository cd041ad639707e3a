"""Surgical rendering: untouched audio stays untouched, edits live only where they were made."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tone

from distill import render as render_mod
from distill.render import DEFAULT_DETAIL, Donor, RenderError, render_edit, render_edits, render_spectrum

TILE = 16  # frames per column


def _mix(seconds: float, seed: int = 0) -> np.ndarray:
    return tone(seconds, 220, seed=seed) + tone(seconds, 523, decay=0.3, seed=seed + 1)


def _edit(codec, grid, level: int, c0: int, c1: int, r0: int = 0, r1: int | None = None):
    """Change every code of one level in columns c0..c1-1, bands r0..r1 (a 'set' on one level)."""
    codes = grid.codes.copy()
    r1 = grid.num_bands - 1 if r1 is None else r1
    codes[level, r0:r1 + 1, c0:c1] = (codes[level, r0:r1 + 1, c0:c1] + 7) % codec.codebook_size
    return grid.with_codes(codes)


def test_unedited_grid_renders_the_source_exactly(codec):
    x = _mix(1.3)
    grid = codec.encode(x)
    for source_grid in (grid, None):
        y = render_edit(codec, grid, x, source_grid)
        assert y.dtype == np.float32 and len(y) == len(x)
        assert torch.equal(codec.logmel(y), codec.logmel(x))
        np.testing.assert_array_equal(y, x)


def test_edit_changes_nothing_beyond_the_feather(codec):
    x = _mix(2.0)
    grid = codec.encode(x)
    edited = _edit(codec, grid, level=1, c0=4, c1=7, r0=0, r1=2)
    assert not np.array_equal(edited.codes, grid.codes)
    y = render_edit(codec, edited, x, grid)
    assert len(y) == len(x)
    diff = (codec.front.stft(y) - codec.front.stft(x)).abs()
    outside_time = torch.cat([diff[:, :3 * TILE], diff[:, 8 * TILE:]], dim=1)
    assert outside_time.max() < 1e-4  # columns beyond the edit +-1 are bit-for-bit the source
    inside = diff[:, 4 * TILE:7 * TILE]
    assert inside.max() > 1e-2  # the edit is audible where it was made
    # bands 0..2 edited: mel bins above band 3 (+ half a band of feather + filter overlap) are untouched,
    # but for a trace (< 0.5% of the power) that re-analysing the resynthesised frames leaks through the window
    band = codec.mel_cfg.n_mels // grid.num_bands
    mel_diff = (codec.logmel(y) - codec.logmel(x)).abs()
    assert mel_diff[3 * band + band // 2 + 3:].max() < 5e-3
    assert mel_diff[:3 * band, 4 * TILE:7 * TILE].mean() > 1e-2
    # waveform outside the affected frames is the source itself
    first = (3 * TILE - 4) * codec.mel_cfg.hop_length
    np.testing.assert_array_equal(y[:first], x[:first])


def test_crossfade_has_no_jump_at_the_boundary(codec):
    x = _mix(2.0)
    grid = codec.encode(x)
    patch = render_spectrum(codec, _edit(codec, grid, 0, 5, 7), x, grid)
    mask = patch.mask.mean(0)  # per frame
    assert mask.max() == pytest.approx(1.0) and mask.min() == 0.0
    assert (mask[1:] - mask[:-1]).abs().max() < 0.35  # ramps over ~8 frames, no hard switch


@pytest.mark.parametrize("seconds", [0.02, 0.5, 35.0])
def test_output_length_is_exact(codec, seconds):
    x = _mix(seconds)
    grid = codec.encode(x)
    last = grid.num_columns - 1
    for c0 in {0, last}:
        y = render_edit(codec, _edit(codec, grid, 2, c0, c0 + 1), x, grid)
        assert y.shape == x.shape and np.all(np.isfinite(y))


def test_detail_zero_is_the_pure_model_and_one_restores_the_source(codec):
    x = _mix(2.0)
    grid = codec.encode(x)
    edited = _edit(codec, grid, 1, 5, 8)
    patch = render_spectrum(codec, edited, x, grid, detail=0.0)
    f0, n = patch.frame0, patch.spectrum.shape[-1]
    core = slice(5 * TILE - f0, 8 * TILE - f0)
    # detail 0: inside the edit the magnitude is exactly the plain decode of the edited codes
    expect = codec.front.logmel_to_magnitude(codec.decode_mel(edited)[:, f0:f0 + n])
    assert torch.allclose(patch.spectrum.abs()[:, core], expect[:, core], rtol=1e-3, atol=2e-4)  # float noise: up to ~1.1e-4 of 8
    # detail 1 over cells whose codes did not change: the full residual gives back the source mel
    forced = np.zeros(grid.codes.shape[1:], dtype=bool)
    forced[:, 5:8] = True
    same = render_spectrum(codec, grid, x, grid, detail=1.0, changed=forced)
    src_mel = codec.logmel(x)[:, f0:f0 + n]
    assert torch.allclose(same.target_logmel[:, core], src_mel[:, core], atol=1e-4)
    pure = render_spectrum(codec, grid, x, grid, detail=0.0, changed=forced)
    dec = codec.decode_mel(grid)[:, f0:f0 + n]
    assert torch.allclose(pure.target_logmel[:, core], dec[:, core], atol=1e-4)
    # ... and through pinv, fine structure and phase, the source's own STFT (the model alone is far off)
    assert torch.allclose(same.spectrum, same.source_spectrum, atol=1e-3)
    assert not torch.allclose(pure.spectrum, pure.source_spectrum, atol=1e-1)
    # and the default keeps some detail: between the two
    assert 0.0 < DEFAULT_DETAIL < 1.0


def test_donor_phase_and_detail_recover_a_cross_clip_swap(codec):
    a, b = _mix(2.0, seed=0), tone(2.0, 330, decay=0.1, noise=0.05, seed=5)
    ga, gb = codec.encode(a), codec.encode(b)
    codes = ga.codes.copy()
    codes[:, :, 4:8] = gb.codes[:, :, 4:8]
    edited = ga.with_codes(codes)
    core = slice(4 * TILE + 4, 8 * TILE - 4)
    target = codec.logmel(b)[:, core]
    with_donor = render_edit(codec, edited, a, ga, detail=1.0, donors=[Donor(b, 4, 4, 4, 0, ga.num_bands - 1)])
    without = render_edit(codec, edited, a, ga, detail=1.0)
    err_donor = (codec.logmel(with_donor)[:, core] - target).abs().mean()
    err_plain = (codec.logmel(without)[:, core] - target).abs().mean()
    assert err_donor < 0.05 and err_donor < 0.5 * err_plain


def test_self_donor_copy_within_the_clip(codec):
    x = _mix(2.0)
    grid = codec.encode(x)
    codes = grid.codes.copy()
    codes[:, :, 8:10] = grid.codes[:, :, 2:4]
    y = render_edit(codec, grid.with_codes(codes), x, grid, detail=1.0, donors=[Donor(x, 2, 8, 2, 0, grid.num_bands - 1)])
    core = slice(8 * TILE + 4, 10 * TILE - 4)
    moved = codec.logmel(x)[:, 2 * TILE + 4:4 * TILE - 4]
    assert (codec.logmel(y)[:, core] - moved).abs().mean() < 0.05


def test_grid_from_other_audio_or_model_is_refused(codec):
    x = _mix(1.0)
    grid = codec.encode(x)
    with pytest.raises(RenderError, match="samples"):
        render_edit(codec, grid, x[:-4800])  # codes of a longer clip
    shorter = codec.encode(x[:24000])
    with pytest.raises(RenderError, match="does not match"):
        render_edit(codec, grid, x, source_grid=shorter)
    foreign = grid.with_codes(grid.codes)
    object.__setattr__(foreign, "model", "0123456789abcdef")
    with pytest.raises(ValueError, match="not by this model"):
        render_edit(codec, foreign, x)
    with pytest.raises(RenderError, match="detail"):
        render_edit(codec, grid, x, detail=1.5)
    with pytest.raises(RenderError, match="does not fit"):
        render_edit(codec, _edit(codec, grid, 0, 0, 2), x, grid, donors=[Donor(x, 0, grid.num_columns - 1, 3, 0, 0)])


def test_cli_decode_with_source_keeps_the_recording(codec, trained, tmp_path, capsys):
    import soundfile as sf

    from distill.cli import main

    model = str(trained[1])
    x = _mix(1.5)
    b = tone(1.5, 330, decay=0.1, seed=5)
    clip, donor = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(clip, x, 48000, subtype="FLOAT")
    sf.write(donor, b, 48000, subtype="FLOAT")
    grid, codes, out = codec.encode(x), tmp_path / "a.codes.json", tmp_path / "out.wav"
    grid.save(codes)
    assert main(["decode", model, str(codes), "-o", str(out), "--source", str(clip)]) == 0
    y, _ = sf.read(out, dtype="float32")
    assert len(y) == len(x) and np.abs(y - x).max() < 2e-4  # only 16-bit rounding
    # copy 0.5 s of b (columns 3..5) onto a: a named span and a by-codes donor render the same
    new = grid.codes.copy()
    new[:, :, 3:6] = codec.encode(b).codes[:, :, 3:6]
    edited = tmp_path / "e.codes.json"
    grid.with_codes(new).save(edited)
    spc = grid.seconds_per_column
    outs = []
    for spec in (f"{donor}:{3 * spc:.4f}-{6 * spc:.4f}@{3 * spc:.4f}", str(donor)):
        path = tmp_path / f"e{len(outs)}.wav"
        assert main(["decode", model, str(edited), "-o", str(path), "--source", str(clip), "--detail", "1",
                     "--donor", spec]) == 0
        outs.append(sf.read(path, dtype="float32")[0])
    first = (2 * TILE - 4) * 512
    np.testing.assert_allclose(outs[0][:first], x[:first], atol=2e-4)
    core = slice((3 * TILE + 4) * 512, (6 * TILE - 4) * 512)
    assert np.abs(outs[0][core] - b[core]).max() < 0.01  # whole-tile copy at detail 1 = the donor itself
    # the by-codes form re-renders only cells whose codes changed (a cell where A and B already share
    # every code keeps A), so it matches the named span up to those cells: before the edit it is the
    # recording, inside it the donor's sound
    np.testing.assert_allclose(outs[1][:first], x[:first], atol=2e-4)
    energy = lambda v: float(np.sum(v[core] ** 2))  # noqa: E731
    assert energy(outs[1] - b) < 0.1 * energy(x - b)
    capsys.readouterr()
    short = tmp_path / "short.wav"
    sf.write(short, x[:24000], 48000)
    assert main(["decode", model, str(codes), "-o", str(out), "--source", str(short)]) == 2
    assert "encoded from" in capsys.readouterr().err
    assert main(["decode", model, str(codes), "-o", str(out), "--detail", "0.3"]) == 2
    assert "--source" in capsys.readouterr().err


def test_distant_edits_render_independently(codec):
    x = _mix(8.0)
    grid = codec.encode(x)
    first, second = _edit(codec, grid, 1, 3, 5), _edit(codec, grid, 0, 38, 40)
    both = grid.with_codes(np.where(first.codes != grid.codes, first.codes, second.codes))
    y = render_edit(codec, both, x, grid)
    split = 20 * TILE * codec.mel_cfg.hop_length  # each edit's neighbourhood sounds as if it were alone
    np.testing.assert_allclose(y[:split], render_edit(codec, first, x, grid)[:split], atol=1e-5)
    np.testing.assert_allclose(y[split:], render_edit(codec, second, x, grid)[split:], atol=1e-5)
    assert not np.allclose(y[:split], x[:split], atol=1e-3) and not np.allclose(y[split:], x[split:], atol=1e-3)


def test_a_span_renders_exactly_what_the_whole_render_has_there(codec):
    """Listening to one place of a long clip renders only that place; its samples are the whole render's."""
    x = _mix(12.0, seed=3)
    grid = codec.encode(x)
    edited = _edit(codec, _edit(codec, grid, 1, 3, 6), 0, 50, 53, r0=1, r1=3)
    whole = render_edit(codec, edited, x, grid)
    n = len(x)
    for start, stop in [(0, n), (0, 5000), (4000, 40000), (100_000, 120_000), (n - 777, n), (50_000, 52_000)]:
        part = render_edit(codec, edited, x, grid, span=(start, stop))
        assert part.shape == (stop - start,) and part.dtype == np.float32
        np.testing.assert_allclose(part, whole[start:stop], atol=2e-5)
    # far from both edits, the span is the recording itself, bit for bit
    far = (30 * TILE * codec.mel_cfg.hop_length, 40 * TILE * codec.mel_cfg.hop_length)
    np.testing.assert_array_equal(render_edit(codec, edited, x, grid, span=far), x[far[0]:far[1]])
    for bad in [(5, 5), (-1, 10), (0, n + 1)]:
        with pytest.raises(RenderError, match="span"):
            render_edit(codec, edited, x, grid, span=bad)


def test_plain_decode_of_a_span_equals_the_whole_decode_there(codec):
    from distill.render import decode_span

    x = _mix(9.0, seed=5)
    grid = codec.encode(x)
    whole = codec.decode(grid, phase_from=x)
    n = len(x)
    for start, stop in [(0, 3000), (33_333, 90_000), (n - 4000, n)]:
        part = decode_span(codec, grid.codes, n, start, stop, phase_from=x)
        assert part.shape == (stop - start,)
        np.testing.assert_allclose(part, whole[start:stop], atol=1e-4)
    no_phase = decode_span(codec, grid.codes, n, 40_000, 60_000)  # Griffin-Lim of the span alone
    assert no_phase.shape == (20_000,) and np.isfinite(no_phase).all() and np.abs(no_phase).max() > 1e-4


def test_export_of_far_apart_edits_resamples_each_alone_and_keeps_the_samples_between(codec):
    """to_source_rate resamples each edit's difference on its own (cost follows the edits, not the span
    between them); the file's samples between the edits stay bit for bit."""
    from distill import SourceAudio
    from distill.render import to_source_rate

    src = SourceAudio("x", tone(10.0, 220, sr=44100, seed=7), 44100)
    model_wave = codec.load_wave(src.samples, src.rate)
    grid = codec.encode(model_wave)
    first, second = _edit(codec, grid, 1, 3, 5), _edit(codec, grid, 0, 45, 48)
    both = grid.with_codes(np.where(first.codes != grid.codes, first.codes, second.codes))
    outs = [to_source_rate(render_edit(codec, g, model_wave, grid), model_wave, src, codec.sample_rate)
            for g in (first, second, both)]
    np.testing.assert_allclose(outs[2] - src.samples, (outs[0] - src.samples) + (outs[1] - src.samples), atol=1e-6)
    mid = slice(int(1.5 * 44100), int(6.0 * 44100))   # between the two edits
    np.testing.assert_array_equal(outs[2][mid], src.samples[mid])


def test_candidates_rendered_together_sound_as_each_alone_and_share_one_source_decode(codec, monkeypatch):
    x = _mix(8.0)
    grid = codec.encode(x)
    # four versions of one span (as regenerate draws them), one of them also edited far away
    edits = [_edit(codec, grid, level=1 + i % 2, c0=3, c1=6 + i % 2, r0=i, r1=i + 2) for i in range(3)]
    edits.append(_edit(codec, edits[0], level=2, c0=grid.num_columns - 2, c1=grid.num_columns))
    span = (2000, len(x) - 1000)
    alone = [render_edit(codec, e, x, grid, span=span) for e in edits]
    windows = []
    real = render_mod._decode_window
    monkeypatch.setattr(render_mod, "_decode_window", lambda c, w: windows.append(len(w)) or real(c, w))
    together = render_edits(codec, edits, x, grid, span=span)
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose(t, a, atol=1e-6)
    assert not np.array_equal(together[0], together[1])
    # versions 0, 2 and 3's near patch decode the same columns: one batch with the source's codes there;
    # version 1 (a column longer) and version 3's far patch each decode their own window, with the source's
    assert sorted(windows) == [2, 2, 4]   # 8 windows; one by one: 10, the source decoded again for every patch
    assert render_edits(codec, [], x, grid) == []
    with pytest.raises(RenderError, match="donor lists"):
        render_edits(codec, edits, x, grid, donors=[()])


def test_copy_from_an_edited_region_takes_no_phase_from_the_recording_there(codec):
    """Issue 25: copying cells whose codes an earlier edit replaced carries codes the recording never held
    there, so its phase at the source means nothing for them: those cells get Griffin-Lim, exactly as if
    the codes had been written directly; the untouched part of a partly edited source still lends its phase."""
    from distill.session import Clip, EditSession

    x = _mix(3.0)
    grid = codec.encode(x)
    spc = grid.seconds_per_column
    s = EditSession(codec, Clip("x", grid, x))
    s.apply(f"set Structure+Timbre+Detail@{2 * spc:.4f}-{5.5 * spc:.4f}=3")      # columns 2..5
    s.apply(f"copy Structure+Timbre+Detail@{2 * spc:.4f}-{5.5 * spc:.4f} --to {12 * spc:.4f}")  # -> 12..15
    assert np.array_equal(s.current.codes[:, :, 12:16], s.current.codes[:, :, 2:6])
    donors = s.donors()
    plain = render_edit(codec, s.current, x, grid, detail=1.0)                       # no donor anywhere
    copied = render_edit(codec, s.current, x, grid, detail=1.0, donors=donors)
    core = slice(12 * TILE, 16 * TILE)
    assert (codec.logmel(copied)[:, core] - codec.logmel(plain)[:, core]).abs().max() < 1e-4

    # only columns 2..3 edited, copy 0..5 -> 12..17: 12..13 come from unedited 0..1 and keep the recording's
    # phase and detail (away from the seam with 14..15, which came from the set cells and get none)
    s2 = EditSession(codec, Clip("x", grid, x))
    s2.apply(f"set Structure+Timbre+Detail@{2 * spc:.4f}-{3.5 * spc:.4f}=3")      # columns 2..3
    s2.apply(f"copy Structure+Timbre+Detail@0-{5.5 * spc:.4f} --to {12 * spc:.4f}")  # 0..5 -> 12..17
    kept = render_edit(codec, s2.current, x, grid, detail=1.0, donors=s2.donors())
    moved = codec.logmel(x)[:, 4:TILE + 2]
    assert (codec.logmel(kept)[:, 12 * TILE + 4:13 * TILE + 2] - moved).abs().mean() < 0.05


@pytest.mark.parametrize("num_samples", [10 * 8192, 10 * 8192 - 700])
def test_a_donor_span_reaching_bs_end_takes_bs_last_column_as_the_copy_did(codec, num_samples):
    """`--donor B.wav:0-END@0` names the cells `copy B:...@0-END --to 0` wrote; for a B of exactly k columns'
    samples the copy (Region.from_seconds) takes its extra last column, and so must the donor."""
    from distill.edits import Region

    b = tone(num_samples / codec.sample_rate, 330, sr=codec.sample_rate)[:num_samples]
    gb = codec.encode(b)
    region = Region.from_seconds(gb, (0, 1, 2), 0.0, num_samples / codec.sample_rate)
    donor = render_mod.donor_from_seconds(codec, b, 0.0, num_samples / codec.sample_rate, 0.0)
    assert (donor.src_c0, donor.n_cols) == (region.c0, region.num_columns) == (0, gb.num_columns)
