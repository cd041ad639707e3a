"""Region editing: every operation on synthetic grids with exact arrays, history, text syntax, decoded locality, audition."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tone

from distill.codes import CodeGrid
from distill.edits import (
    MIN_HISTORY,
    DonorPatch,
    EditError,
    EditHistory,
    EditResult,
    Region,
    apply_operation,
    blend_region,
    copy_region,
    parse_region,
    randomize_region,
    repeat_region,
    reverse_region,
    set_codes,
    shift_region,
    swap_regions,
)

SPC = 16 * 512 / 48000  # seconds per column
NAMES = ("Structure", "Timbre", "Detail")


def make_grid(columns: int = 12, offset: int = 0, model: str = "m1") -> CodeGrid:
    """3 levels x 8 bands x `columns`, every cell a distinct value (level*1000 + band*100 + column)."""
    q, r, c = np.meshgrid(np.arange(3), np.arange(8), np.arange(columns), indexing="ij")
    return CodeGrid(q * 1000 + r * 100 + c + offset, NAMES, SPC, 48000, columns * 8192, model)


# ---------------------------------------------------------------------- regions
@pytest.mark.parametrize("columns, num_samples", [(11, 81920), (12, 12 * 8192 - 100), (3, 16384), (1, 300)])
def test_region_of_the_whole_clip_reaches_its_last_column(columns, num_samples):
    """0 .. duration covers every column, as Select all does: a clip of exactly k * 8192 samples has k + 1
    columns (the encoder's last frame starts on the clip's end), and "Vary whole clip" must reach it too."""
    q, r, c = np.meshgrid(np.arange(3), np.arange(8), np.arange(columns), indexing="ij")
    grid = CodeGrid(q * 1000 + r * 100 + c, NAMES, SPC, 48000, num_samples, "m1")
    region = Region.from_seconds(grid, "Timbre", 0.0, grid.duration_s)
    assert (region.c0, region.c1) == (0, columns - 1)
    assert parse_region(region.to_text(grid), grid) == region          # the text form says the same cells
    if columns > 3:       # an end before the clip's end still stops where it says
        inner = Region.from_seconds(grid, "Timbre", 0.0, 2 * SPC)
        assert inner.c1 == 1


def test_region_from_seconds_snaps_outward_and_describes():
    g = make_grid()
    r = Region.from_seconds(g, "Timbre", 0.2, 0.5)  # 0.2 s is inside column 1, 0.5 s inside column 2
    assert (r.levels, r.r0, r.r1, r.c0, r.c1) == ((1,), 0, 7, 1, 2)
    exact = Region.from_seconds(g, ("Structure", "timbre"), SPC, 3 * SPC, bands=(2, 3))
    assert (exact.levels, exact.r0, exact.r1, exact.c0, exact.c1) == ((0, 1), 2, 3, 1, 2)
    assert exact.describe(g) == "Structure+Timbre 0.17-0.51 s, bands 2-3"
    assert exact.seconds(g) == pytest.approx((SPC, 3 * SPC))
    whole = Region.from_seconds(g, 2, 0.0, g.duration_s)
    assert (whole.c0, whole.c1) == (0, 11)


@pytest.mark.parametrize("args, message", [
    (("Pitch", 0.0, 1.0), "unknown level 'Pitch'"),
    (("Timbre", 1.0, 9.0), "past the clip's end"),
    (("Timbre", 1.0, 1.0), "0 <= start < end"),
    (("Timbre", -1.0, 1.0), "0 <= start < end"),
])
def test_region_from_seconds_refuses(args, message):
    with pytest.raises(EditError, match=message):
        Region.from_seconds(make_grid(), *args)


def test_region_validate_names_allowed_ranges():
    g = make_grid()
    with pytest.raises(EditError, match="within 0-7"):
        Region((0,), 3, 8, 0, 1).validate(g)
    with pytest.raises(EditError, match="within 0-11"):
        Region((0,), 0, 7, 5, 12).validate(g)
    with pytest.raises(EditError, match="levels are 0-2"):
        Region((3,), 0, 7, 0, 1).validate(g)
    with pytest.raises(EditError, match="at least one level"):
        Region((), 0, 7, 0, 1).validate(g)
    assert isinstance(EditError("x"), ValueError)


def test_parse_region_syntax():
    g = make_grid()
    r = parse_region("Structure+Timbre@0.5-1.5/0-3", g)
    assert (r.levels, r.r0, r.r1, r.c0, r.c1) == ((0, 1), 0, 3, 2, 8)
    r = parse_region(" timbre @ 1-2 ", g)
    assert (r.levels, r.r0, r.r1, r.c0, r.c1) == ((1,), 0, 7, 5, 11)
    r = parse_region("Detail@0-0.1/5", g)
    assert (r.r0, r.r1, r.c0, r.c1) == (5, 5, 0, 0)
    assert parse_region(r.to_text(g), g) == r
    for bad in ("Timbre", "Timbre@1", "Timbre@a-b", "@1-2", "Timbre@1-2/x"):
        with pytest.raises(EditError, match="LEVELS@START-END"):
            parse_region(bad, g)
    with pytest.raises(EditError, match="within 0-7"):
        parse_region("Timbre@0-1/6-9", g)


# ---------------------------------------------------------------------- operations (exact arrays)
def test_set_codes_fills_only_the_region():
    g = make_grid()
    res = set_codes(g, Region((1,), 2, 3, 4, 6), 7, codebook_size=32)
    want = g.codes.copy()
    want[1, 2:4, 4:7] = 7
    np.testing.assert_array_equal(res.grid.codes, want)
    assert res.region == Region((1,), 2, 3, 4, 6) and not res.clipped
    assert g.codes[1, 2, 4] == 1204  # input untouched
    for bad in (32, -1, 2.5):
        with pytest.raises(EditError, match="codes are 0-31"):
            set_codes(g, Region((1,), 0, 7, 0, 0), bad, codebook_size=32)


def test_copy_across_clips_clipped_at_the_edge():
    a, b = make_grid(), make_grid(offset=50)
    src = Region((0, 1), 0, 7, 2, 6)  # 5 columns pasted at column 9 of a 12-column grid: 3 fit
    res = copy_region(b, src, a, 9)
    want = a.codes.copy()
    want[0:2, :, 9:12] = b.codes[0:2, :, 2:5]
    np.testing.assert_array_equal(res.grid.codes, want)
    assert res.clipped and res.region == Region((0, 1), 0, 7, 9, 11)
    assert res.donors == (DonorPatch("other", 2, 9, 3, 0, 7, (0, 1), 0),)
    assert "clipped" in res.label
    inside = copy_region(b, Region((2,), 0, 1, 0, 1), a, 3, dst_r0=6)
    want = a.codes.copy()
    want[2, 6:8, 3:5] = b.codes[2, 0:2, 0:2]
    np.testing.assert_array_equal(inside.grid.codes, want)
    assert not inside.clipped
    rows_cut = copy_region(b, Region((2,), 0, 3, 0, 0), a, 0, dst_r0=6)
    assert rows_cut.clipped and rows_cut.region == Region((2,), 6, 7, 0, 0)
    with pytest.raises(EditError, match="paste column 12 is outside 0-11"):
        copy_region(b, src, a, 12)
    with pytest.raises(EditError, match="different models"):
        copy_region(make_grid(model="other"), src, a, 0)


def test_copy_within_one_clip_is_marked_self():
    a = make_grid()
    res = copy_region(a, Region((1,), 0, 7, 0, 1), a, 5, same_clip=True)
    assert res.donors[0].donor == "self"
    np.testing.assert_array_equal(res.grid.codes[1, :, 5:7], a.codes[1, :, 0:2])


def test_swap_within_one_clip():
    g = make_grid()
    ra, rb = Region((1,), 0, 7, 0, 1), Region((1,), 0, 7, 5, 6)
    res = swap_regions(g, ra, g, rb, same_clip=True)
    want = g.codes.copy()
    want[1, :, 0:2], want[1, :, 5:7] = g.codes[1, :, 5:7], g.codes[1, :, 0:2]
    np.testing.assert_array_equal(res.grid.codes, want)
    assert res.other is None and res.region == Region((1,), 0, 7, 0, 6)
    with pytest.raises(EditError, match="overlap"):
        swap_regions(g, ra, g, Region((1,), 0, 7, 1, 2), same_clip=True)
    with pytest.raises(EditError, match="same size"):
        swap_regions(g, ra, g, Region((1,), 0, 7, 5, 7), same_clip=True)
    with pytest.raises(EditError, match="same levels"):
        swap_regions(g, ra, g, Region((2,), 0, 7, 5, 6), same_clip=True)


def test_swap_between_clips_changes_both():
    a, b = make_grid(), make_grid(columns=20, offset=50)
    ra, rb = Region((0, 1), 2, 5, 1, 3), Region((0, 1), 0, 3, 15, 17)
    res = swap_regions(a, ra, b, rb, same_clip=False)
    want_a, want_b = a.codes.copy(), b.codes.copy()
    want_a[0:2, 2:6, 1:4] = b.codes[0:2, 0:4, 15:18]
    want_b[0:2, 0:4, 15:18] = a.codes[0:2, 2:6, 1:4]
    np.testing.assert_array_equal(res.grid.codes, want_a)
    np.testing.assert_array_equal(res.other.codes, want_b)
    side_b = res.for_other()
    assert side_b.grid is res.other and side_b.region == rb
    assert res.donors[0] == DonorPatch("other", 15, 1, 3, 2, 5, (0, 1), 0)


def test_shift_moves_content_and_slides_the_rest_into_the_gap():
    g = make_grid()
    later = shift_region(g, Region((1,), 0, 7, 2, 4), 2)
    want = g.codes.copy()
    want[1, :, 2:7] = g.codes[1, :, [5, 6, 2, 3, 4]].T
    np.testing.assert_array_equal(later.grid.codes, want)
    assert later.region == Region((1,), 0, 7, 2, 6)
    earlier = shift_region(g, Region((1,), 0, 7, 2, 4), -2)
    want = g.codes.copy()
    want[1, :, 0:5] = g.codes[1, :, [2, 3, 4, 0, 1]].T
    np.testing.assert_array_equal(earlier.grid.codes, want)
    with pytest.raises(EditError, match="allowed shifts are -2 to 7"):
        shift_region(g, Region((1,), 0, 7, 2, 4), 8)


def test_repeat_tiles_forward_and_cuts_at_the_end():
    g = make_grid()
    res = repeat_region(g, Region((2,), 1, 1, 1, 3), 3)
    want = g.codes.copy()
    want[2, 1, 1:10] = np.tile(g.codes[2, 1, 1:4], 3)
    np.testing.assert_array_equal(res.grid.codes, want)
    assert not res.clipped and res.region == Region((2,), 1, 1, 1, 9)
    cut = repeat_region(g, Region((2,), 1, 1, 6, 9), 3)
    want = g.codes.copy()
    want[2, 1, 6:12] = np.tile(g.codes[2, 1, 6:10], 2)[:6]
    np.testing.assert_array_equal(cut.grid.codes, want)
    assert cut.clipped
    with pytest.raises(EditError, match=">= 1"):
        repeat_region(g, Region((2,), 1, 1, 1, 3), 0)


def test_reverse_flips_columns():
    g = make_grid()
    res = reverse_region(g, Region((0, 2), 0, 7, 3, 6))
    want = g.codes.copy()
    want[[0, 2], :, 3:7] = g.codes[[0, 2], :, 3:7][..., ::-1]
    np.testing.assert_array_equal(res.grid.codes, want)
    assert [(d.src_c0, d.dst_c0) for d in res.donors] == [(3, 6), (4, 5), (5, 4), (6, 3)]


def test_randomize_draws_from_usage():
    g = make_grid()
    usage = [[0] * 32, [0] * 31 + [5], [1] * 32]
    res = randomize_region(g, Region((1,), 0, 7, 0, 3), usage, seed=1)
    want = g.codes.copy()
    want[1, :, 0:4] = 31  # the only code ever used on Timbre
    np.testing.assert_array_equal(res.grid.codes, want)
    r = Region((2,), 0, 7, 0, 11)
    a, b, c = (randomize_region(g, r, usage, seed=s).grid.codes for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a[2].min() >= 0 and a[2].max() < 32
    with pytest.raises(EditError, match="usage"):
        randomize_region(g, r, usage[:2])


# ---------------------------------------------------------------------- blend (needs a codec's codebooks)
def test_blend_endpoints_and_requantization(codec):
    wave_a, wave_b = tone(2.0, 220, seed=1), tone(2.0, 440, seed=2)
    a, b = codec.encode(wave_a), codec.encode(wave_b)
    top = a.num_bands - 1
    ra, rb = Region((0, 1, 2), 0, top, 2, 5), Region((0, 1, 2), 0, top, 6, 9)
    assert blend_region(codec, a, ra, b, rb, 0.0).grid == a
    full = blend_region(codec, a, ra, b, rb, 1.0).grid.codes
    want = a.codes.copy()
    want[:, :, 2:6] = b.codes[:, :, 6:10]
    np.testing.assert_array_equal(full, want)
    # halfway on all levels: exactly what residual VQ makes of the averaged embedding
    half = blend_region(codec, a, ra, b, rb, 0.5)
    za = codec.codes_to_latent(a.codes[:, :, 2:6])
    zb = codec.codes_to_latent(b.codes[:, :, 6:10])
    np.testing.assert_array_equal(half.grid.codes[:, :, 2:6], codec.latent_to_codes(0.5 * (za + zb)))
    np.testing.assert_array_equal(half.grid.codes[:, :, :2], a.codes[:, :, :2])
    # a Timbre-only blend keeps the other levels' codes
    timbre = blend_region(codec, a, Region((1,), 0, 7, 2, 5), b, Region((1,), 0, 7, 6, 9), 0.5).grid.codes
    np.testing.assert_array_equal(timbre[[0, 2]], a.codes[[0, 2]])
    with pytest.raises(EditError, match="within 0-1"):
        blend_region(codec, a, ra, b, rb, 1.5)


# ---------------------------------------------------------------------- history
def _step(g: CodeGrid, k: int) -> EditResult:
    return set_codes(g, Region((0,), 0, 0, k % g.num_columns, k % g.num_columns), (k + 13) % 30, codebook_size=32)


def test_history_undo_redo_and_branch_drop():
    g0 = make_grid()
    h = EditHistory(g0)
    assert not h.can_undo and not h.can_redo
    grids = [g0]
    for k in range(1, 4):
        grids.append(h.push(_step(h.current, k)))
    assert h.position == 3 and len(h.labels) == 3
    assert h.undo() == grids[2] and h.undo() == grids[1]
    assert h.can_redo and h.redo() == grids[2]
    labels = h.labels
    h.push(set_codes(h.current, Region((2,), 0, 7, 0, 0), 9, 32))
    assert h.labels == labels[:2] + ["set Detail 0.00-0.17 s, bands 0-7 = 9"]
    assert not h.can_redo and h.position == 3
    with pytest.raises(EditError, match="nothing to redo"):
        h.redo()
    for _ in range(3):
        h.undo()
    assert h.current == g0 and not h.can_undo
    with pytest.raises(EditError, match="nothing to undo"):
        h.undo()


def test_history_reset_is_undoable_and_refuses_other_clips():
    g0 = make_grid()
    h = EditHistory(g0)
    edited = h.push(_step(g0, 5))
    assert h.reset() == g0 and h.labels[-1] == "reset to original"
    assert h.undo() == edited
    with pytest.raises(EditError, match="another clip"):
        h.push(_step(make_grid(columns=13), 1))


def test_history_is_bounded_but_keeps_at_least_200_steps():
    g0 = make_grid()
    h = EditHistory(g0, limit=MIN_HISTORY)
    for k in range(MIN_HISTORY + 5):
        h.push(_step(h.current, k + 1))
    after_five = g0
    for k in range(5):
        after_five = _step(after_five, k + 1).grid
    assert len(h.labels) == MIN_HISTORY
    for _ in range(MIN_HISTORY):
        h.undo()
    assert h.current == after_five and not h.can_undo
    with pytest.raises(EditError, match="outside 200-"):
        EditHistory(g0, limit=50)


def test_history_json_round_trip_and_refuses_another_model():
    g0 = make_grid(model="abc123")
    h = EditHistory(g0)
    for k in range(1, 4):
        h.push(_step(h.current, k))
    h.undo()
    back = EditHistory.from_json(h.to_json(), "abc123")
    assert back.current == h.current and back.labels == h.labels and back.position == 2
    assert back.redo() == h.redo()
    assert back.undo() == h.undo() and back.undo() == h.undo() and back.undo() == g0
    with pytest.raises(EditError, match="not with this model"):
        EditHistory.from_json(h.to_json(), "fff999")
    with pytest.raises(EditError, match="not a Distill edit history"):
        EditHistory.from_json(g0.to_json(), "abc123")


# ---------------------------------------------------------------------- text operations
@pytest.fixture(scope="module")
def clip_a(codec) -> CodeGrid:
    """A 2 s clip's grid: 12 columns."""
    return codec.encode(tone(2.0, 220, seed=1))


def test_apply_operation_matches_the_functions(codec, clip_a):
    a = clip_a
    b = codec.encode(tone(1.0, 330, seed=2))
    r = parse_region("Timbre@0.5-1.0", a)
    assert apply_operation(codec, a, "set Timbre@0.5-1.0=17").grid == set_codes(a, r, 17, codec.codebook_size).grid
    # 0.0-0.5 s snaps to columns 0-2 and 1.0-1.5 s to 5-8: the second takes the first's width
    swap = apply_operation(codec, a, "swap Timbre@0.0-0.5 Timbre@1.0-1.5")
    top = a.num_bands - 1  # a region without /BANDS covers every band
    assert swap.grid == swap_regions(a, Region((1,), 0, top, 0, 2), a, Region((1,), 0, top, 5, 7), same_clip=True).grid
    cross = apply_operation(codec, a, "swap B:Timbre@0.0-0.5 Timbre@1.0-1.5", other=b)
    assert cross.other is not None and cross.region == parse_region("Timbre@1.0-1.5", a)
    copy = apply_operation(codec, a, "copy B:Structure@0.0-0.5 --to 1.9", other=b)  # 3 columns onto the last
    assert copy.clipped and (copy.region.c0, copy.region.c1) == (11, 11) == (a.num_columns - 1, a.num_columns - 1)
    np.testing.assert_array_equal(copy.grid.codes[0, :, 11], b.codes[0, :, 0])
    blend = apply_operation(codec, a, "blend B:Timbre@0.0-0.5 --to 1.0 --amount 1", other=b)
    np.testing.assert_array_equal(blend.grid.codes[1, :, 5:8], b.codes[1, :, 0:3])
    assert apply_operation(codec, a, "reverse Detail@1.0-2.0").grid == reverse_region(a, parse_region("Detail@1-2", a)).grid
    shifted = apply_operation(codec, a, "shift Timbre@0-0.5 --by 0.5")
    assert shifted.grid == shift_region(a, parse_region("Timbre@0-0.5", a), 3).grid
    assert apply_operation(codec, a, "repeat Timbre@0-0.5 --times 2").region.c1 == 5
    rnd = apply_operation(codec, a, "randomize Timbre@0-1 --seed 3")
    assert rnd.grid == apply_operation(codec, a, "randomize Timbre@0-1 --seed 3").grid


@pytest.mark.parametrize("op, message", [
    ("set Timbre@0.5-1.0=32", "codes are 0-31"),
    ("set Pitch@0.5-1.0=3", "unknown level 'Pitch'"),
    ("set Timbre@0.5-9.0=3", "past the clip's end"),
    ("set Timbre@0.5-1.0", "REGION=CODE"),
    ("explode Timbre@0-1", "unknown operation"),
    ("copy B:Timbre@0-1 --to 0.5", "no second clip"),
    ("copy Timbre@0-1", "needs --to"),
    ("copy Timbre@0-1 --to 5", "outside the clip"),
    ("shift Timbre@0-1 --by 0.01", "shift by 0 columns"),
    ("reverse Timbre@0-1 --seed 2", "does not take --seed"),
    ("swap Timbre@0-1", "takes 2 region"),
    ("blend Timbre@0-0.5 --to 1 --amount x", "--amount must be a number"),
])
def test_apply_operation_refusals(codec, clip_a, op, message):
    with pytest.raises(EditError, match=message):
        apply_operation(codec, clip_a, op)


# ---------------------------------------------------------------------- decoding and audition
def test_decoded_edit_changes_audio_only_near_the_region(codec):
    wave = tone(4.0, 180, seed=3, decay=0.3)
    grid = codec.encode(wave)
    region = Region((0, 1, 2), 0, 7, 10, 13)
    edited = set_codes(grid, region, int(grid.codes[0, 0, 0] + 7) % codec.codebook_size, codec.codebook_size).grid
    plain = codec.decode(grid, phase_from=wave)
    changed = codec.decode(edited, phase_from=wave)
    assert len(changed) == len(wave)
    diff = (changed - plain) ** 2
    n = 16 * 512
    near = np.zeros(len(wave), bool)
    near[(region.c0 - 2) * n:(region.c1 + 3) * n] = True
    inside = diff[region.c0 * n:(region.c1 + 1) * n].mean()
    outside = diff[~near].mean()
    assert inside > 0 and outside < 0.01 * inside


def test_preview_code_length_and_loudness(codec):
    a = codec.preview_code("Timbre", 3)
    assert a.dtype == np.float32 and a.shape == (24000,)
    rms, peak = float(np.sqrt(np.mean(a.astype(np.float64) ** 2))), float(np.abs(a).max())
    assert rms == pytest.approx(0.1, rel=1e-3) or peak == pytest.approx(0.89, rel=1e-3)
    assert peak <= 0.89 + 1e-4
    short = codec.preview_code(0, 3, seconds=0.25)
    assert short.shape == (12000,)
    assert not np.allclose(short, codec.preview_code(0, 4, seconds=0.25))
    assert codec.preview_code(1, 5, band=2).shape == (24000,)
    with pytest.raises(ValueError, match="codes are 0-31"):
        codec.preview_code(0, 32)
    with pytest.raises(ValueError, match="unknown level 'Pitch'"):
        codec.preview_code("Pitch", 1)


def test_usage_health_per_level(codec):
    health = codec.usage_health()
    assert [h.name for h in health] == list(codec.level_names)
    for h, counts in zip(health, codec.info.usage, strict=True):
        assert h.dead_codes == sum(1 for c in counts if c == 0)
        assert h.verdict in ("Healthy", "Some codes unused", "Collapsed")
