"""Surgical rendering of an edited grid: the source recording untouched outside the edit, the model inside it.

Over 600 lines on purpose: it is one pipeline (changed cells -> windows -> donors' phase and detail -> mask ->
Griffin-Lim -> back to the file's rate), and its steps share private window/mask helpers that mean nothing apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import dsp
from .audio import SourceAudio, resample
from .codes import CodeGrid
from .edits import ActiveDonor, column_of, last_column_in
from .model import DOWNSAMPLE, grid_width

if TYPE_CHECKING:
    from .codec import Codec
    from .spectrogram import MelFrontEnd

# Fraction of the source's residual (source mel minus its plain decode) kept inside edits.
# benchmarks/surgical.py, 6 lmms clips, known-target edits (+6 dB, low-pass, mix with B, replaced by B),
# inside log-mel L1 to the target for detail 0/.25/.5/.75/1: mean 1.006/.883/.814/.761/.746; 0.75 has the
# smallest worst-case loss (replaced-by-B: 0.98 at 0, 1.32 at .75, 1.44 at 1, where A's detail is a ghost).
DEFAULT_DETAIL = 0.75
EDIT_GL_ITERS = 8  # constrained Griffin-Lim iterations inside an edit (known phase all around it)
DEFAULT_FEATHER = 0.5        # crossfade width, in code tiles (16 frames x one band of mel bins)
DECODE_CONTEXT_COLUMNS = 6   # clustering gap / 2; each decode window's context comes from decoder_reach()
ENCODE_CONTEXT_COLUMNS = 8   # encoder receptive field ~166 frames; same value the codec chunks with


class RenderError(ValueError):
    """An edited grid cannot be rendered against the given audio; the message says why."""


@dataclass(frozen=True)
class Donor:
    """Where some edited cells' content came from, so their phase (and detail) can be transplanted.

    Columns src_c0..src_c0+n_cols-1 of `audio`'s grid, bands r0..r1 (inclusive), were copied to
    columns dst_c0.. of the edited grid. `audio` is at the model rate and may be the source itself.
    """

    audio: np.ndarray
    src_c0: int
    dst_c0: int
    n_cols: int
    r0: int
    r1: int
    src_r0: int | None = None  # first source band when the copy also moved in frequency
    codes: np.ndarray | None = None  # int64 [levels, bands, columns]: the donor clip's own codes, when known
    levels: tuple[int, ...] = ()  # the levels the copy wrote (all when empty): they must match the recording

    def __post_init__(self) -> None:
        audio = np.asarray(self.audio, dtype=np.float32)
        if audio.ndim != 1:
            raise RenderError(f"donor audio must be mono [samples], got shape {audio.shape}")
        object.__setattr__(self, "audio", audio)
        object.__setattr__(self, "levels", tuple(int(v) for v in self.levels))
        for name in ("src_c0", "dst_c0", "n_cols", "r0", "r1"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.src_c0 < 0 or self.dst_c0 < 0 or self.n_cols < 1:
            raise RenderError(f"donor columns must be >= 0 with n_cols >= 1, got src {self.src_c0}, "
                              f"dst {self.dst_c0}, n_cols {self.n_cols}")
        if not 0 <= self.r0 <= self.r1:
            raise RenderError(f"donor bands must satisfy 0 <= r0 <= r1, got {self.r0}..{self.r1}")

    @property
    def moved_in_frequency(self) -> bool:
        """Phase of other frequencies means nothing here: such cells get Griffin-Lim instead."""
        return self.src_r0 is not None and int(self.src_r0) != self.r0


def donors_from_active(active: Sequence[ActiveDonor], source_audio: np.ndarray,
                       partner_audio: np.ndarray | None = None, partner: str = "",
                       source_codes: np.ndarray | None = None,
                       partner_codes: np.ndarray | None = None) -> tuple[Donor, ...]:
    """The donor records still in force (EditHistory.active_donors) -> Donors carrying the right audio.

    Each record keeps only the cells that still hold what it copied there; rows whose kept columns
    form the same runs are merged, so an untouched paste stays one Donor. "other" records made
    with another clip B than `partner` (or with no B audio at hand) are dropped: their cells are
    rendered from the model with Griffin-Lim phase instead. `source_codes` / `partner_codes`
    ([levels, bands, columns], the clips as encoded) spare a re-encode of the donor when given.
    """
    out: list[Donor] = []
    for a in active:
        p = a.patch
        if p.donor == "self":
            audio, codes = source_audio, source_codes
        elif partner_audio is not None and a.partner == partner:
            audio, codes = partner_audio, partner_codes
        else:
            continue
        runs: dict[tuple[tuple[int, int], ...], list[int]] = {}
        for r in range(p.r0, p.r1 + 1):
            key = _runs(a.cells[r])
            if key:
                runs.setdefault(key, []).append(r)
        for key, rows in runs.items():
            for r0, r1 in _consecutive(rows):
                src_r0 = None if p.src_r0 is None else p.src_r0 + (r0 - p.r0)
                out += [Donor(audio, p.src_c0 + (c0 - p.dst_c0), c0, c1 - c0, r0, r1, src_r0, codes, p.levels)
                        for c0, c1 in key]
    return tuple(out)


def _runs(row: np.ndarray) -> tuple[tuple[int, int], ...]:
    """bool [columns] -> ((start, stop), ...) of its runs of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
    return tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True))


def _consecutive(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row numbers -> (first, last) of each run of consecutive rows."""
    out: list[tuple[int, int]] = []
    for r in rows:
        if out and out[-1][1] == r - 1:
            out[-1] = (out[-1][0], r)
        else:
            out.append((r, r))
    return out


def donors_by_match(codec: Codec, edited: CodeGrid, source_grid: CodeGrid, audio: np.ndarray) -> tuple[Donor, ...]:
    """Donor regions of a clip found by its codes: edited cells that differ from the source but equal
    (on every level) the donor's own encoding at the same columns, one Donor per band and column run."""
    audio = _as_wave(audio)
    d_codes = codec.encode(audio).codes
    n = min(d_codes.shape[-1], edited.num_columns)
    hit = np.zeros(edited.codes.shape[1:], dtype=bool)
    hit[:, :n] = np.all(edited.codes[:, :, :n] == d_codes[:, :, :n], axis=0)
    hit &= changed_cells(edited, source_grid)
    out = []
    for r in range(hit.shape[0]):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], hit[r].astype(np.int8), [0]])))
        out += [Donor(audio, int(a), int(a), int(b - a), r, r) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return tuple(out)


def parse_donor_spec(text: str) -> tuple[str, tuple[float, float, float] | None]:
    """CLI form "B.wav" or "B.wav:SRC_START-SRC_END@DST_START" (seconds) -> (path, region or None)."""
    m = re.fullmatch(r"(.+):(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)@(\d+(?:\.\d*)?)", text.strip())
    if not m:
        if re.search(r"[:@]\d[\d.]*-", text) or text.strip().endswith("@"):
            raise RenderError(f"--donor {text!r}: write PATH or PATH:SRC_START-SRC_END@DST_START in seconds")
        return text, None
    start, end, dst = float(m.group(2)), float(m.group(3)), float(m.group(4))
    if end <= start:
        raise RenderError(f"--donor {text!r}: the source span must end after it starts")
    return m.group(1), (start, end, dst)


def donor_from_seconds(codec: Codec, audio: np.ndarray, start: float, end: float, dst: float) -> Donor:
    """A donor copying [start, end) seconds of `audio` to `dst` seconds, all bands.

    Seconds become columns by the same rule as `distill edit` (edits.column_of / last_column_in):
    `--donor B.wav:0-0.5@1.0` describes exactly the cells `--copy B:...@0-0.5 --to 1.0` wrote, and a span
    reaching B's end takes B's last column as the copy did.
    """
    wave = _as_wave(audio)
    spc = codec.seconds_per_column
    c0 = column_of(start, spc)
    last = last_column_in(end, len(wave) / codec.sample_rate, grid_width(codec.mel_cfg.num_frames(len(wave))), spc)
    return Donor(wave, c0, column_of(dst, spc), max(1, last - c0 + 1), 0, codec.num_bands - 1)


def to_source_rate(rendered: np.ndarray, model_wave: np.ndarray, source: SourceAudio, model_rate: int) -> np.ndarray:
    """A surgical render at the model rate -> the clip at its file's own rate and length.

    rendered, model_wave: float32 [N] at `model_rate` (model_wave is what was rendered against; the
    render equals it sample for sample outside the edits). Only the difference is resampled, over
    the span where it is non-zero plus a short margin, and added to the file's own samples; every
    other sample is the file's (mono mix) bit for bit. Returns float32 [len(source.samples)].
    """
    out = np.array(source.samples, dtype=np.float32, copy=True)
    delta = np.asarray(rendered, np.float32) - np.asarray(model_wave, np.float32)
    nz = np.flatnonzero(delta)
    if nz.size == 0:
        return out
    if source.rate == model_rate and len(out) == len(delta):
        return np.asarray(rendered, np.float32).copy()
    pad = max(64, model_rate // 100)  # 10 ms of zeros on each side: the resampler's kernel dies out in it
    period = model_rate // math.gcd(model_rate, source.rate)   # model samples per whole number of file samples
    for first, last, i0, i1 in _stretches(nz, pad, period, len(delta)):
        piece = resample(delta[i0:i1], model_rate, source.rate).astype(np.float64)
        fade = min(len(piece) // 2, max(1, pad * source.rate // model_rate // 2))
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        if first - i0 >= pad:                  # a side that ends on the clip's own edge is not faded:
            piece[:fade] *= ramp               # there the difference is still the edit's
        if i1 - last - 1 >= pad:
            piece[len(piece) - fade:] *= ramp[::-1]
        j0 = i0 // period * (source.rate // math.gcd(model_rate, source.rate))
        lo, hi = max(0, j0), min(len(out), j0 + len(piece))
        if hi > lo:
            out[lo:hi] = (out[lo:hi].astype(np.float64) + piece[lo - j0:hi - j0]).astype(np.float32)
    return out


def _stretches(nz: np.ndarray, pad: int, period: int, n: int) -> list[tuple[int, int, int, int]]:
    """Sorted indices of the non-zero difference -> (first, last, i0, i1) per stretch resampled on its own.

    Edits far apart are resampled apart, so cost follows the edits. Each stretch starts on a whole period
    of the two rates (i0), so its resampled samples fall exactly on the file's sample grid and the
    difference cancels the original's highs sample for sample. A period can be long (6000 model samples
    at 44056 Hz): a start pulled back into the stretch before merges the two, so no sample is added twice.
    """
    gaps = np.flatnonzero(np.diff(nz) > 4 * pad)
    out: list[tuple[int, int, int, int]] = []
    for first, last in zip(np.r_[nz[0], nz[gaps + 1]], np.r_[nz[gaps], nz[-1]], strict=True):
        first, last = int(first), int(last)
        i0, i1 = max(0, first - pad) // period * period, min(n, last + 1 + pad)
        if out and i0 < out[-1][3]:
            f, _, j0, _ = out.pop()
            first, i0 = f, j0
        out.append((first, last, i0, i1))
    return out


@dataclass(frozen=True)
class RenderedPatch:
    """The rewritten part of the STFT: frames frame0.. of the whole clip, before synthesis."""

    frame0: int
    spectrum: torch.Tensor         # complex [n_freqs, frames]: what the output's STFT should be
    source_spectrum: torch.Tensor  # complex [n_freqs, frames]: the source's own STFT there
    mask: torch.Tensor             # [n_freqs, frames] in [0, 1]: 0 = source kept exactly
    target_logmel: torch.Tensor    # [n_mels, frames]: model decode + detail x residual, before pinv
    changed: np.ndarray            # bool [bands, columns] of the whole grid


# ---------------------------------------------------------------------- public API
def changed_cells(edited: CodeGrid, source: CodeGrid) -> np.ndarray:
    """bool [bands, columns]: cells whose codes differ on any level (re-encoding is deterministic)."""
    return np.any(edited.codes != source.codes, axis=0)


def render_edit(codec: Codec, edited: CodeGrid, source_audio: np.ndarray, source_grid: CodeGrid | None = None,
                detail: float = DEFAULT_DETAIL, donors: Sequence[Donor] = (), gl_iters: int = EDIT_GL_ITERS,
                feather: float = DEFAULT_FEATHER, span: tuple[int, int] | None = None) -> np.ndarray:
    """Edited grid + the audio it was encoded from -> audio of exactly len(source_audio) samples.

    Wherever no code changed, the output's STFT is the source's own (so an unedited grid gives the
    source back); inside edits it is the model's decode plus `detail` of the source's residual,
    crossfaded over `feather` tiles, with phase from the donor clip or a few constrained
    Griffin-Lim iterations. The pure codec rendering stays available as `codec.decode`.

    `span` = (start, stop) samples: only that part, float32 [stop - start], equal to the whole
    render's samples there; only the edits that reach it are rendered, so the cost of hearing one
    place of a long recording follows the edits near it, not the length of the clip.
    """
    return render_edits(codec, [edited], source_audio, source_grid, detail, [donors], gl_iters, feather, span)[0]


def render_edits(codec: Codec, edits: Sequence[CodeGrid], source_audio: np.ndarray,
                 source_grid: CodeGrid | None = None, detail: float = DEFAULT_DETAIL,
                 donors: Sequence[Sequence[Donor]] | None = None, gl_iters: int = EDIT_GL_ITERS,
                 feather: float = DEFAULT_FEATHER, span: tuple[int, int] | None = None) -> list[np.ndarray]:
    """`render_edit` of several edited grids of one source (e.g. regenerate's candidates) -> one wave each.

    The same as rendering each alone (to float rounding), but the source's side of a patch (its STFT,
    its decode, its residual) is computed once per window, and the windows the edits share are decoded
    in one batch: four candidates of one region cost one source decode, not four.
    `donors[i]` are edit i's donors (None: none for any).
    """
    source = _as_wave(source_audio)
    _check_args(detail, gl_iters, feather)
    donors = [()] * len(edits) if donors is None else list(donors)
    if len(donors) != len(edits):
        raise RenderError(f"{len(donors)} donor lists for {len(edits)} edited grids")
    if not edits:
        return []
    source_grid = check_grids(codec, edits[0], source, source_grid)
    for edited in edits[1:]:
        check_grids(codec, edited, source, source_grid)
    start, stop = check_span(span, len(source))
    jobs = []   # (edit index, changed cells of one cluster, its window)
    for i, (edited, ds) in enumerate(zip(edits, donors, strict=True)):
        changed = _changed_with_donors(codec, edited, source, source_grid, ds, None)
        for cells in _clusters(changed):  # far-apart edits are rendered separately: cost follows the edits
            if _reaches(codec, cells, feather, len(source), start, stop):
                jobs.append((i, cells, _window(codec, cells, len(source), feather)))
    sides, decoded = _prepare(codec, [(edits[i], w) for i, _, w in jobs], source, source_grid)
    outs = [source[start:stop].copy() for _ in edits]
    for (i, cells, w), dec_edit in zip(jobs, decoded, strict=True):
        patch = _render_patch(codec, edits[i], source, source_grid, cells, detail, donors[i], gl_iters, feather,
                              (w, sides[w], dec_edit))
        outs[i] += dsp.synthesize_span(codec.front.framing, patch.spectrum - patch.source_spectrum, patch.frame0,
                                       start, stop, len(source))
    return outs


def check_span(span: tuple[int, int] | None, num_samples: int) -> tuple[int, int]:
    """(start, stop) samples inside a clip of `num_samples` (None = the whole clip); RenderError otherwise."""
    if span is None:
        return 0, int(num_samples)
    start, stop = int(span[0]), int(span[1])
    if not 0 <= start < stop <= num_samples:
        raise RenderError(f"span {start}..{stop} samples is not inside the clip (0..{num_samples}) or is empty")
    return start, stop


def _patch_frames(codec: Codec, c_lo: int, c_hi: int, feather: float, n_frames: int) -> tuple[int, int]:
    """Frames f0..f1 (exclusive) an edit of columns c_lo..c_hi-1 rewrites: its tiles, the feather and one
    window of fixed frames around them (which keeps the local Griffin-Lim exact)."""
    cfg = codec.mel_cfg
    margin = int(round(feather * DOWNSAMPLE)) + cfg.n_fft // cfg.hop_length
    return max(0, c_lo * DOWNSAMPLE - margin), min(n_frames, c_hi * DOWNSAMPLE + margin)


def _reaches(codec: Codec, cells: np.ndarray, feather: float, num_samples: int, start: int, stop: int) -> bool:
    """Whether the patch rendered for `cells` changes any sample in start..stop-1."""
    cols = np.flatnonzero(cells.any(axis=0))
    cfg = codec.mel_cfg
    f0, f1 = _patch_frames(codec, int(cols[0]), int(cols[-1]) + 1, feather, cfg.num_frames(num_samples))
    pad = -(-cfg.n_fft // cfg.hop_length)   # dsp.synthesize_span's reach beyond the frames
    return (f0 - pad) * cfg.hop_length < stop and (f1 + pad) * cfg.hop_length > start


def decode_span(codec: Codec, codes: np.ndarray, num_samples: int, start: int, stop: int,
                phase_from: np.ndarray | None = None, n_iter: int = dsp.DEFAULT_GL_ITERS) -> np.ndarray:
    """Plain decode of samples start..stop-1 of a grid (codes [levels, bands, columns] of a clip of
    `num_samples`) -> float32 [stop - start], decoding only the columns that reach them.

    With `phase_from` (the clip at the model rate) it equals codec.decode(grid, phase_from)[start:stop];
    without, the span gets its own few Griffin-Lim iterations (from dsp.integrated_phase, as a whole decode).
    """
    start, stop = check_span((start, stop), num_samples)
    cfg = codec.mel_cfg
    n_frames, hop = cfg.num_frames(num_samples), cfg.hop_length
    pad = -(-cfg.n_fft // hop)
    fa, fb = max(0, start // hop - pad), min(n_frames, -(-stop // hop) + pad + 1)
    ctx = -(-decoder_reach(codec.model) // DOWNSAMPLE) + 1
    n_cols = codes.shape[-1]
    d0, d1 = max(0, fa // DOWNSAMPLE - ctx), min(n_cols, -(-fb // DOWNSAMPLE) + ctx)
    (mel,) = _decode_window(codec, [np.asarray(codes)[:, :, d0:d1]])
    magnitude = codec.front.logmel_to_magnitude(mel[:, fa - d0 * DOWNSAMPLE:fb - d0 * DOWNSAMPLE])
    framing = codec.front.framing
    if phase_from is not None:
        spec = magnitude * dsp.unit_phase(dsp.stft(framing, _as_wave(phase_from)[:num_samples], fa, fb))
    else:
        spec = dsp.griffin_lim(framing, magnitude * dsp.integrated_phase(framing, magnitude), magnitude, n_iter)
    return dsp.synthesize_span(framing, spec, fa, start, stop, num_samples)


def render_spectrum(codec: Codec, edited: CodeGrid, source_audio: np.ndarray, source_grid: CodeGrid | None = None,
                    detail: float = DEFAULT_DETAIL, donors: Sequence[Donor] = (), gl_iters: int = EDIT_GL_ITERS,
                    feather: float = DEFAULT_FEATHER, changed: np.ndarray | None = None) -> RenderedPatch | None:
    """The STFT frames `render_edit` rewrites (None when nothing changed).

    `changed` overrides which cells are re-rendered (default: where edited and source codes differ);
    everything else is computed only over the changed columns' span plus context, so the cost
    follows the size of the edit, not the length of the clip.
    """
    source = _as_wave(source_audio)
    _check_args(detail, gl_iters, feather)
    source_grid = check_grids(codec, edited, source, source_grid)
    changed = _changed_with_donors(codec, edited, source, source_grid, donors, changed)
    if not changed.any():
        return None
    return _render_patch(codec, edited, source, source_grid, changed, detail, donors, gl_iters, feather)


def _changed_with_donors(codec: Codec, edited: CodeGrid, source: np.ndarray, source_grid: CodeGrid,
                         donors: Sequence[Donor], changed: np.ndarray | None) -> np.ndarray:
    """Cells to re-render: code differences (or the override) plus every cell a donor moved content to."""
    changed = changed_cells(edited, source_grid) if changed is None else np.array(changed, dtype=bool)
    if changed.shape != edited.codes.shape[1:]:
        raise RenderError(f"changed-cell mask has shape {changed.shape}, the grid has {edited.codes.shape[1:]}")
    for d in donors:
        if not (d.src_c0 == d.dst_c0 and _same_audio(d.audio, source)):
            changed |= _donor_cells(codec, d, changed.shape)  # render it even where a code happens to match
    return changed


def _clusters(changed: np.ndarray, gap: int = 2 * DECODE_CONTEXT_COLUMNS) -> list[np.ndarray]:
    """Split changed cells into groups of columns separated by more than `gap` unchanged columns."""
    cols = np.flatnonzero(changed.any(axis=0))
    if cols.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(cols) > gap)
    out = []
    for lo, hi in zip(np.r_[0, breaks + 1], np.r_[breaks, cols.size - 1], strict=True):
        part = np.zeros_like(changed)
        part[:, cols[lo]:cols[hi] + 1] = changed[:, cols[lo]:cols[hi] + 1]
        out.append(part)
    return out


@dataclass(frozen=True)
class _Window:
    """Where a patch works: frames f0..f1-1 are rewritten, columns d0..d1-1 are decoded (with the
    decoder's receptive field and the feather, so the window's decode equals the whole clip's)."""

    f0: int
    f1: int
    d0: int
    d1: int


@dataclass(frozen=True)
class _SourceSide:
    """The source's part of a patch window: the same for every edit rendered over that window."""

    spec: torch.Tensor      # complex [n_freqs, f1 - f0]: the source's STFT
    phase: torch.Tensor     # complex [n_freqs, f1 - f0]: its unit phase
    residual: torch.Tensor  # [n_mels, f1 - f0]: source log-mel minus the decode of the source's codes
    fine: torch.Tensor      # [n_freqs, f1 - f0]: linear-bin detail the mel pinv cannot give back


def _window(codec: Codec, changed: np.ndarray, num_samples: int, feather: float) -> _Window:
    """The window of a patch for `changed` (bool [bands, columns], not empty) in a clip of `num_samples`."""
    cols = np.flatnonzero(changed.any(axis=0))
    c_lo, c_hi = int(cols[0]), int(cols[-1]) + 1
    f0, f1 = _patch_frames(codec, c_lo, c_hi, feather, codec.mel_cfg.num_frames(num_samples))
    fw = int(round(feather * DOWNSAMPLE))
    ctx = max(2, -(-(decoder_reach(codec.model) + fw) // DOWNSAMPLE))  # window decode == whole-clip decode
    return _Window(f0, f1, max(0, c_lo - ctx), min(changed.shape[1], c_hi + ctx))


def _prepare(codec: Codec, jobs: Sequence[tuple[CodeGrid, _Window]], source: np.ndarray, source_grid: CodeGrid
             ) -> tuple[dict[_Window, _SourceSide], list[torch.Tensor]]:
    """The source side of each window and each job's decode log-mel [n_mels, f1 - f0], cropped to its frames.

    Jobs decoding the same columns go in one batch with the source's codes there (decoded once)."""
    front = codec.front
    groups: dict[tuple[int, int], list[int]] = {}
    for j, (_, w) in enumerate(jobs):
        groups.setdefault((w.d0, w.d1), []).append(j)
    decoded: list[torch.Tensor] = [torch.empty(0)] * len(jobs)
    sides: dict[_Window, _SourceSide] = {}
    for (d0, d1), members in groups.items():
        mels = _decode_window(codec, [source_grid.codes[:, :, d0:d1]] + [jobs[j][0].codes[:, :, d0:d1]
                                                                         for j in members])
        for j, mel in zip(members, mels[1:], strict=True):
            w = jobs[j][1]
            crop = slice(w.f0 - d0 * DOWNSAMPLE, w.f1 - d0 * DOWNSAMPLE)
            decoded[j] = mel[:, crop]
            if w not in sides:
                spec = dsp.stft(front.framing, source, w.f0, w.f1)
                logmel = front.power_to_logmel(spec.abs().square())
                sides[w] = _SourceSide(spec, dsp.unit_phase(spec), logmel - mels[0][:, crop],
                                       spec.abs() - front.logmel_to_magnitude(logmel))
    return sides, decoded


def _render_patch(codec: Codec, edited: CodeGrid, source: np.ndarray, source_grid: CodeGrid, changed: np.ndarray,
                  detail: float, donors: Sequence[Donor], gl_iters: int, feather: float,
                  prepared: tuple[_Window, _SourceSide, torch.Tensor] | None = None) -> RenderedPatch:
    """Render the span of columns holding `changed` (non-empty); `prepared` = (window, source side, the
    edit's decode there) when `render_edits` has computed them for several edits at once."""
    front, cfg = codec.front, codec.mel_cfg
    fw = int(round(feather * DOWNSAMPLE))  # frames
    fws = (int(round(feather * cfg.n_mels / codec.num_bands)), fw)  # (mel bins, frames): half a tile each way
    if prepared is None:
        w = _window(codec, changed, len(source), feather)
        sides, (dec_edit,) = _prepare(codec, [(edited, w)], source, source_grid)
        prepared = (w, sides[w], dec_edit)
    w, side, dec_edit = prepared
    f0, f1 = w.f0, w.f1
    src_spec, phase, residual, fine = side.spec, side.phase, side.residual, side.fine

    hard = _cells_to_mel(changed, f0, f1, cfg.n_mels)
    donor_hard = torch.zeros_like(hard)
    donor_res_w = torch.zeros_like(hard)
    donor_phase = torch.zeros_like(src_spec)
    donor_res = torch.zeros_like(residual)
    src_mag = src_spec.abs()
    donor_fine = torch.zeros_like(fine)
    for d in donors:
        cells = _donor_cells(codec, d, changed.shape) & changed
        if not cells.any() or d.moved_in_frequency:
            continue
        cover, spec, same = _donor_window(codec, d, cells, edited, source, source_grid, f0, f1)
        donor_hard = torch.maximum(donor_hard, cover)
        donor_phase = torch.where(_mel_to_linear(front, _feather(cover, fws)) > 0, spec, donor_phase)
        if bool(same.any()):
            near = _feather(same, fws) > 0
            d_logmel = front.power_to_logmel(spec.abs().square())
            donor_res = torch.where(near, d_logmel - dec_edit, donor_res)
            d_fine = spec.abs() - front.logmel_to_magnitude(d_logmel)
            donor_fine = torch.where(_mel_to_linear(front, near.float()) > 0, d_fine, donor_fine)
            donor_res_w = torch.maximum(donor_res_w, same)

    # residual: where a cell holds exactly a donor's codes (all levels), that recording is the truth
    # for those codes, so detail 1 gives the donor's own spectrum there; elsewhere the source's residual.
    # detail = mel residual + the linear fine structure, so detail 1 on unchanged codes is the source itself.
    res_w = _feather(donor_res_w, fws)
    residual = (1 - res_w) * residual + res_w * donor_res
    res_w_lin = _mel_to_linear(front, res_w)
    fine = (1 - res_w_lin) * fine + res_w_lin * donor_fine
    target = dec_edit + detail * residual

    mask = _mel_to_linear(front, _feather(hard, fws))
    mask = torch.where(mask > 1e-6, mask, torch.zeros_like(mask))
    model_mag = (front.logmel_to_magnitude(target) + detail * fine).clamp(min=0)
    magnitude = (1 - mask) * src_mag + mask * model_mag

    w_donor = _mel_to_linear(front, _feather(donor_hard, fws)).clamp(0, 1) * (mask > 0)
    if bool(w_donor.any()):
        dph = donor_phase / donor_phase.abs().clamp(min=1e-8)
        mixed = (1 - w_donor) * phase + w_donor * dph
        phase = torch.where(mixed.abs() > 1e-4, mixed / mixed.abs().clamp(min=1e-8), dph)
    gl_region = _mel_to_linear(front, _feather(hard * (1 - donor_hard), fws)).clamp(0, 1) * (mask > 0)
    spec = magnitude * phase
    if gl_iters > 0 and bool(gl_region.any()):
        spec = dsp.griffin_lim(front.framing, spec, magnitude, gl_iters, fixed=1 - gl_region)
    spec = torch.where(mask > 0, spec, src_spec)
    return RenderedPatch(frame0=f0, spectrum=spec, source_spectrum=src_spec, mask=mask, target_logmel=target,
                         changed=changed)


# ---------------------------------------------------------------------- checks
def _as_wave(audio: np.ndarray) -> np.ndarray:
    wave = np.asarray(audio, dtype=np.float32)
    if wave.ndim != 1:
        raise RenderError(f"source audio must be mono [samples] at the model rate, got shape {wave.shape}")
    return wave


def _check_args(detail: float, gl_iters: int, feather: float) -> None:
    if not 0.0 <= float(detail) <= 1.0:
        raise RenderError(f"detail must be in [0, 1], got {detail}")
    if int(gl_iters) < 0:
        raise RenderError(f"gl_iters must be >= 0, got {gl_iters}")
    if not 0.0 <= float(feather) <= 1.0:
        raise RenderError(f"feather must be in [0, 1] code tiles, got {feather}")


def check_grids(codec: Codec, edited: CodeGrid, source: np.ndarray, source_grid: CodeGrid | None) -> CodeGrid:
    """Refuse a grid that was not encoded from this audio with this model; return the source grid
    (encoded from the audio when not given)."""
    codec.check(edited)
    sr = codec.sample_rate
    if edited.num_samples != len(source):
        raise RenderError(f"the edited codes describe {edited.num_samples} samples ({edited.num_samples / sr:.3f} s) "
                          f"but the source clip has {len(source)} ({len(source) / sr:.3f} s): render against "
                          "the clip the codes were encoded from")
    if source_grid is None:
        return codec.encode(source)
    codec.check(source_grid)
    if source_grid.model != edited.model:
        raise RenderError(f"the source grid was made by model {source_grid.model}, the edited grid by "
                          f"{edited.model}")
    if source_grid.codes.shape != edited.codes.shape or source_grid.num_samples != edited.num_samples:
        raise RenderError(f"the source grid {source_grid.codes.shape} ({source_grid.num_samples} samples) does not "
                          f"match the edited grid {edited.codes.shape} ({edited.num_samples} samples)")
    return source_grid


# ---------------------------------------------------------------------- masks
def _cells_to_mel(cells: np.ndarray, f0: int, f1: int, n_mels: int) -> torch.Tensor:
    """bool [bands, columns] -> float [n_mels, f1-f0] on the mel-bin x frame grid of frames f0..f1-1."""
    band_rows = n_mels // cells.shape[0]
    frame_cols = np.arange(f0, f1) // DOWNSAMPLE
    up = np.repeat(cells, band_rows, axis=0)[:, np.minimum(frame_cols, cells.shape[1] - 1)]
    return torch.from_numpy(up.astype(np.float32))


def _feather(hard: torch.Tensor, widths: tuple[int, int]) -> torch.Tensor:
    """Raised-cosine dilation by widths = (mel bins, frames): 1 on the cells, 0 beyond the width."""
    if max(widths) <= 0 or not bool(hard.any()):
        return hard
    out = hard
    for dim, width in enumerate(widths):
        ramp = [0.5 * (1 + math.cos(math.pi * d / (width + 1))) for d in range(width + 1)]
        grown = out.clone()
        n = out.shape[dim]
        for d in range(1, width + 1):
            if d >= n:
                break
            lo, hi = out.narrow(dim, 0, n - d), out.narrow(dim, d, n - d)
            grown.narrow(dim, d, n - d).copy_(torch.maximum(grown.narrow(dim, d, n - d), ramp[d] * lo))
            grown.narrow(dim, 0, n - d).copy_(torch.maximum(grown.narrow(dim, 0, n - d), ramp[d] * hi))
        out = grown
    return out


def _mel_to_linear(front: MelFrontEnd, m_mel: torch.Tensor) -> torch.Tensor:
    """Mel-bin weights [n_mels, F] -> linear-bin weights [n_freqs, F] through the filterbank."""
    fb = front.fbank  # [n_mels, n_freqs]
    col = fb.sum(0)
    lin = fb.T @ m_mel / col.clamp(min=1e-12)[:, None]
    empty = torch.nonzero(col <= 1e-12).reshape(-1)
    if empty.numel():  # DC / Nyquist bins lie under no filter: take the nearest covered bin
        covered = torch.nonzero(col > 1e-12).reshape(-1)
        nearest = covered[(empty[:, None] - covered[None]).abs().argmin(1)]
        lin[empty] = lin[nearest]
    return lin.clamp(0, 1)


# ---------------------------------------------------------------------- model pieces
def decoder_reach(model: torch.nn.Module) -> int:
    """How many output frames either side of a latent column its value can reach (receptive half-width).

    Walks the decoder's convolutions from the output back: a stride-1 conv adds its half kernel
    at the current scale, a stride-s transposed conv multiplies the scale by s and adds one input
    step. Default model: 91 frames (76 measured with random weights).
    """
    reach, scale = 0, 1
    for m in reversed(list(model.decoder.modules())):
        if isinstance(m, torch.nn.ConvTranspose2d):
            s, k = m.stride[-1], m.kernel_size[-1]
            scale *= s
            reach += -(-(k - 1) // (2 * s)) * scale
        elif isinstance(m, torch.nn.Conv2d):
            reach += (m.kernel_size[-1] - 1) // 2 * m.dilation[-1] * scale
    return reach


@torch.no_grad()
def _decode_window(codec: Codec, windows: list[np.ndarray]) -> list[torch.Tensor]:
    """Decode several same-shape code windows in one batch -> log-mel [n_mels, 16 * columns] each."""
    codes = torch.tensor(np.stack(windows), dtype=torch.long, device=codec.device)
    mel = codec.model.decode(codec.model.codes_to_latent(codes), codes.shape[-1] * DOWNSAMPLE)
    return list(mel[:, 0].float().cpu())


def _same_audio(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.shape == b.shape and np.array_equal(a, b))


def _donor_cells(codec: Codec, donor: Donor, shape: tuple[int, int]) -> np.ndarray:
    """bool [bands, columns] of the edited grid that the donor region covers (RenderError if it does not fit)."""
    bands, n_cols = shape
    d_cols = grid_width(codec.mel_cfg.num_frames(len(donor.audio)))
    if donor.dst_c0 + donor.n_cols > n_cols or donor.src_c0 + donor.n_cols > d_cols or donor.r1 >= bands:
        raise RenderError(f"donor region (columns {donor.src_c0}+{donor.n_cols} -> {donor.dst_c0}, bands "
                          f"{donor.r0}-{donor.r1}) does not fit the grids ({d_cols} donor columns, {n_cols} "
                          f"edited columns, {bands} bands)")
    cells = np.zeros(shape, dtype=bool)
    cells[donor.r0:donor.r1 + 1, donor.dst_c0:donor.dst_c0 + donor.n_cols] = True
    return cells


def _donor_window(codec: Codec, donor: Donor, cells: np.ndarray, edited: CodeGrid, source: np.ndarray,
                  source_grid: CodeGrid, f0: int, f1: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Donor cover mask, STFT and 'holds exactly the donor's codes' mask over frames f0..f1."""
    cfg = codec.mel_cfg
    bands, n_cols = cells.shape
    d_frames = cfg.num_frames(len(donor.audio))
    d_cols = grid_width(d_frames)
    shift = (donor.src_c0 - donor.dst_c0) * DOWNSAMPLE
    spec = dsp.stft(codec.front.framing, donor.audio, f0 + shift, f1 + shift)
    dst = slice(donor.dst_c0, donor.dst_c0 + donor.n_cols)
    src = slice(donor.src_c0, donor.src_c0 + donor.n_cols)
    if donor.codes is not None and donor.codes.shape[-1] >= donor.src_c0 + donor.n_cols:
        d_codes = donor.codes[:, :, src]   # known: no re-encode, no guess
    elif _same_audio(donor.audio, source):
        d_codes = source_grid.codes[:, :, src]
    else:  # encode just the donor's columns, with enough context to match a whole-clip encode
        e0 = max(0, donor.src_c0 - ENCODE_CONTEXT_COLUMNS)
        e1 = min(d_cols, donor.src_c0 + donor.n_cols + ENCODE_CONTEXT_COLUMNS)
        d_spec = dsp.stft(codec.front.framing, donor.audio, e0 * DOWNSAMPLE, min(e1 * DOWNSAMPLE, d_frames))
        window = codec.encode_mel(codec.front.power_to_logmel(d_spec.abs().square()))
        d_codes = window[:, :, donor.src_c0 - e0:donor.src_c0 - e0 + donor.n_cols]
    # phase is lent only where the copied levels hold what the recording holds at the source: a copy out of
    # cells an earlier edit replaced carries codes the recording never had there (issue 25), so those get
    # Griffin-Lim like any other new codes
    levels = list(donor.levels) or slice(None)
    held = np.zeros_like(cells)
    held[:, dst] = np.all(edited.codes[levels, :, dst] == d_codes[levels], axis=0)
    cells = cells & held
    same = np.zeros_like(cells)
    same[:, dst] = np.all(edited.codes[:, :, dst] == d_codes, axis=0)
    same &= cells
    return _cells_to_mel(cells, f0, f1, cfg.n_mels), spec, _cells_to_mel(same, f0, f1, cfg.n_mels)
