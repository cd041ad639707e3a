"""Surgical edits on real recordings: is the audio outside an edit untouched, and what happens inside?

    python benchmarks/surgical.py DATA_DIR --model M.distill [--clips 6]

Distances are log-mel L1 (log1p power mel, the model's own front end), averaged over frames.
- unedited: render(grid of the clip, --source clip) vs the clip, whole clip; for contrast the plain
  codec decode with the clip's own phase (the ~0.06 mel-inversion floor plus the model error).
- set/copy on one level in one second: outside the edited columns +-1 (render vs clip; plain decode
  vs clip for contrast) and inside (render vs the plain codec decode of the edited grid).
- cross-clip swap (all levels, 1 s, every band, from clip B): inside vs the oracle that swaps the same
  STFT tiles of the two recordings; with and without the donor's phase.
- known-target edits (the edited grid is the encoding of a transformed clip A' inside 1 s: +6 dB, a
  2 kHz low-pass, A mixed with B, A replaced by B with no donor given, where A's detail is a ghost):
  inside vs A', per detail amount. Their mean picks DEFAULT_DETAIL.
- render time for a 10 s clip after one edit, default-size model (`ConvVQVAE(VQVAEConfig())`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
import torch
import torchaudio.functional as AF

from distill import Codec, ConvVQVAE, MelConfig, VQVAEConfig, load_audio, scan_folder
from distill.render import DEFAULT_DETAIL, Donor, render_edit

TILE = 16
DETAILS = (0.0, 0.25, 0.5, 0.75, 1.0)


def l1(codec: Codec, a: np.ndarray, b: np.ndarray, frames: np.ndarray | slice = slice(None)) -> float:
    """Mean |log-mel(a) - log-mel(b)| over the chosen frames."""
    return float((codec.logmel(a)[:, frames] - codec.logmel(b)[:, frames]).abs().mean())


def outside_frames(n_frames: int, c0: int, c1: int) -> np.ndarray:
    keep = np.ones(n_frames, dtype=bool)
    keep[max(0, (c0 - 1) * TILE):(c1 + 1) * TILE] = False
    return keep


def swap_oracle(codec: Codec, a: np.ndarray, b: np.ndarray, c0: int, c1: int) -> np.ndarray:
    """A's STFT with the frames of columns c0..c1-1 taken from B's STFT, back to audio."""
    sa, sb = codec.front.stft(a), codec.front.stft(b)
    sa[:, c0 * TILE:c1 * TILE] = sb[:, c0 * TILE:c1 * TILE]
    return codec.front.istft(sa, len(a)).numpy()


def pick_clips(data_dir: str, n: int, min_s: float, max_s: float, sr: int) -> list[tuple[str, np.ndarray]]:
    report = scan_folder(data_dir)
    ok = sorted((v for v in report.accepted if v.duration_s >= min_s), key=lambda v: v.path)
    step = max(1, len(ok) // max(1, n))
    out = []
    for v in ok[::step][:n]:
        wave, _ = load_audio(v.path, sr)
        out.append((v.name, wave[: int(max_s * sr)]))
    return out


def bench_clip(codec: Codec, name: str, a: np.ndarray, b: np.ndarray, rows: dict[str, list[float]]) -> None:
    ga, gb = codec.encode(a), codec.encode(b)
    n_frames = codec.mel_cfg.num_frames(len(a))
    cols = ga.num_columns
    width = int(round(1.0 / codec.seconds_per_column))  # one second of columns
    c0 = max(1, cols // 2 - width // 2)
    c1 = min(cols - 1, c0 + width)
    inside = slice(c0 * TILE, c1 * TILE)
    out_keep = outside_frames(n_frames, c0, c1)

    # 1. unedited
    rows["unedited render vs clip (whole)"].append(l1(codec, render_edit(codec, ga, a, ga), a))
    plain = codec.decode(ga, phase_from=a)
    rows["unedited plain decode+own phase vs clip"].append(l1(codec, plain, a))

    # 2. set one level (Timbre) to another column's codes, and copy Structure from elsewhere in the clip
    src_col = (c0 + cols // 3) % cols
    set_codes = ga.codes.copy()
    set_codes[1, :, c0:c1] = ga.codes[1, :, src_col:src_col + 1]
    copy_codes = ga.codes.copy()
    s0 = 0 if c0 >= width else c1
    copy_codes[0, :, c0:c1] = ga.codes[0, :, s0:s0 + (c1 - c0)]
    for label, grid, donors in (("set Timbre", ga.with_codes(set_codes), ()),
                                ("copy Structure", ga.with_codes(copy_codes),
                                 (Donor(a, s0, c0, c1 - c0, 0, ga.num_bands - 1),))):
        plain_edit = codec.decode(grid, phase_from=a)
        rendered = render_edit(codec, grid, a, ga, donors=donors)
        rows[f"{label}: outside +-1 col, render vs clip"].append(l1(codec, rendered, a, out_keep))
        rows[f"{label}: outside +-1 col, plain decode vs clip"].append(l1(codec, plain_edit, a, out_keep))
        rows[f"{label}: inside, render vs plain decode"].append(l1(codec, rendered, plain_edit, inside))

    # 3. cross-clip swap of one second, every level and band, from B
    swap = ga.codes.copy()
    swap[:, :, c0:c1] = gb.codes[:, :, c0:c1]
    swapped = ga.with_codes(swap)
    oracle = swap_oracle(codec, a, b, c0, c1)
    donor = (Donor(b, c0, c0, c1 - c0, 0, ga.num_bands - 1),)
    for d in DETAILS:
        rows[f"swap: inside vs oracle, donor phase, detail {d:g}"].append(
            l1(codec, render_edit(codec, swapped, a, ga, detail=d, donors=donor), oracle, inside))
    rows["swap: inside vs oracle, GL phase (no donor), detail 0.5"].append(
        l1(codec, render_edit(codec, swapped, a, ga, detail=0.5), oracle, inside))
    rows["swap: inside vs oracle, plain decode (A's phase)"].append(
        l1(codec, codec.decode(swapped, phase_from=a), oracle, inside))

    # 4. known-target edits: the region's codes come from a transformed A'
    sl = slice(c0 * TILE * codec.mel_cfg.hop_length, c1 * TILE * codec.mel_cfg.hop_length)
    lowpassed = AF.lowpass_biquad(torch.from_numpy(a.copy()), codec.sample_rate, 2000.0).numpy()
    for label, changed in (("+6 dB", a[sl] * 2.0), ("low-pass 2 kHz", lowpassed[sl]), ("mix with B", 0.7 * (a[sl] + b[sl])),
                            ("replaced by B", b[sl])):
        target = a.copy()
        target[sl] = changed
        codes = ga.codes.copy()
        codes[:, :, c0:c1] = codec.encode(target).codes[:, :, c0:c1]
        grid = ga.with_codes(codes)
        for d in DETAILS:
            rows[f"target {label}: inside vs A', detail {d:g}"].append(
                l1(codec, render_edit(codec, grid, a, ga, detail=d), target, inside))
        for d in (0.5, 1.0):
            rows[f"target {label}: inside vs A', detail {d:g}, no GL (A's phase)"].append(
                l1(codec, render_edit(codec, grid, a, ga, detail=d, gl_iters=0), target, inside))
        rows[f"target {label}: inside vs A', plain decode (A phase)"].append(
            l1(codec, codec.decode(grid, phase_from=a), target, inside))
    print(f"  {name}: {len(a) / codec.sample_rate:.1f} s, edit columns {c0}-{c1 - 1}", flush=True)


def time_render(wave: np.ndarray, repeats: int = 7) -> tuple[float, float, float]:
    """(median wall s, median CPU s, plain full decode wall s) for a 10 s clip after a 1 s edit, default-size model."""
    torch.manual_seed(0)
    model = ConvVQVAE(VQVAEConfig())
    codec = Codec(model, MelConfig())
    with torch.no_grad():  # k-means-initialise the codebooks from this clip so the codes are not all zero
        model.train()
        model(codec.logmel(wave)[None, None])
        model.eval()
    codec = Codec(model, MelConfig())
    grid = codec.encode(wave)
    codes = grid.codes.copy()
    c0 = grid.num_columns // 2
    codes[1, :, c0:c0 + 6] = (codes[1, :, c0:c0 + 6] + 1) % codec.codebook_size
    edited = grid.with_codes(codes)
    render_edit(codec, edited, wave, grid)  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        render_edit(codec, edited, wave, grid)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    t = time.perf_counter()
    codec.decode(edited, phase_from=wave)
    return statistics.median(walls), statistics.median(cpus), time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--model", required=True)
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--timing-only", action="store_true")
    p.add_argument("--skip-timing", action="store_true")
    args = p.parse_args()
    sr = MelConfig().sample_rate
    clips = pick_clips(args.data_dir, args.clips + 1, min_s=3.0, max_s=10.0, sr=sr)
    if len(clips) < 2:
        raise SystemExit(f"need at least 2 clips of >= 3 s in {args.data_dir}")
    long_clip = np.concatenate([c for _, c in clips])[: 10 * sr]
    long_clip = np.pad(long_clip, (0, max(0, 10 * sr - len(long_clip))))
    default_threads = torch.get_num_threads()
    for threads in [] if args.skip_timing else sorted({1, default_threads}):
        torch.set_num_threads(threads)
        wall, cpu, plain = time_render(long_clip)
        print(f"render time, 10 s clip, one 1 s edit, default-size model, {threads} thread(s): {wall:.3f} s wall "
              f"(median of 7), {cpu:.3f} s CPU; plain full decode {plain:.3f} s", flush=True)
    torch.set_num_threads(default_threads)
    if args.timing_only:
        return
    codec = Codec.load(args.model)
    rows: dict[str, list[float]] = defaultdict(list)
    print(f"model {args.model}, {len(clips) - 1} clips (B = the next clip), DEFAULT_DETAIL {DEFAULT_DETAIL}")
    for (name, a), (_, b) in zip(clips[:-1], clips[1:], strict=True):
        n = min(len(a), len(b))
        bench_clip(codec, name, a[:n], b[:n], rows)
    print(f"\n{'measure (log-mel L1, mean over clips)':<66} {'mean':>7} {'min':>7} {'max':>7}")
    for k, v in rows.items():
        print(f"{k:<66} {np.mean(v):7.4f} {np.min(v):7.4f} {np.max(v):7.4f}")
    targets = [k for k in rows if k.startswith("target") and "detail" in k and "GL" not in k]
    by_detail = {d: np.mean([np.mean(rows[k]) for k in targets if k.endswith(f"detail {d:g}")]) for d in DETAILS}
    best = min(by_detail, key=by_detail.get)
    print("\nknown-target edits, mean over transforms: " + ", ".join(f"detail {d:g}: {v:.4f}" for d, v in by_detail.items())
          + f"  -> best {best:g}")


if __name__ == "__main__":
    main()
