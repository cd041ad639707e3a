"""Decoding without a phase source: Griffin-Lim from random phase vs from `dsp.integrated_phase`, by iterations,
on real recordings; then the wall time of a 10-minute decode at the old and the new default, same run.

    python benchmarks/gl_init.py /usr/share/lmms/samples --model assets/demo.distill --minutes 10

Per file (every file of the folders, first --seconds of each), scored against:
- the codec's decoded mel (what the decode is asked to realise): spectral convergence of the result's STFT
  magnitude to the target magnitude ||S(x)| - M| / |M| (what Griffin-Lim minimises; lower is better);
- the recording itself (the true magnitudes, no codec): the same spectral convergence, the ceiling of the method;
- the decode with the recording's own phase: multi-resolution log-magnitude distance at 256/512/1024
  (resolutions other than the model's 2048, where phase errors show as smearing).
One torch thread. The timing arm decodes a concatenation of the folders' files (`Codec.decode` without
`phase_from`, pieces of ~22 s) at DEFAULT_GL_ITERS and at 32 iterations (the previous default's cost: the
initial phase costs ~1% of one iteration).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode import recording  # noqa: E402

from distill import Codec, dsp  # noqa: E402
from distill.audio import load_audio, scan_folder  # noqa: E402


def spectral_convergence(front, wave: torch.Tensor, magnitude: torch.Tensor) -> float:
    return float(torch.linalg.norm(front.stft(wave).abs() - magnitude) / torch.linalg.norm(magnitude).clamp(min=1e-8))


def multires(a: np.ndarray, b: np.ndarray) -> float:
    total = 0.0
    for n in (256, 512, 1024):
        w = torch.hann_window(n)
        A, B = (torch.stft(torch.as_tensor(x), n, n // 4, window=w, return_complex=True).abs() for x in (a, b))
        total += float((torch.log(A + 1e-4) - torch.log(B + 1e-4)).abs().mean())
    return total / 3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="/usr/share/lmms/samples")
    ap.add_argument("--folders", default="bassloops,instruments,beats")
    ap.add_argument("--files", type=int, default=6, help="files per folder")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--model", default="assets/demo.distill")
    ap.add_argument("--arms", default="random:32,random:8,integrated:4,integrated:8,integrated:16")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the timed decode (0: none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    codec = Codec.load(args.model)
    front, framing = codec.front, codec.front.framing
    arms = [(kind, int(n)) for kind, n in (a.split(":") for a in args.arms.split(","))]
    scores: dict[tuple[str, int], list[tuple[float, float, float]]] = {a: [] for a in arms}
    times = dict.fromkeys(arms, 0.0)
    for folder in args.folders.split(","):
        files = [v.path for v in scan_folder(Path(args.root) / folder).accepted][: args.files]
        for path in files:
            wave, sr = load_audio(path)
            clip = codec.load_wave(wave, sr)[: int(args.seconds * codec.sample_rate)]
            mel = codec.decode_mel(codec.encode(clip))
            target = front.logmel_to_magnitude(mel)
            truth = front.stft(clip).abs()
            own = front.invert(mel, len(clip), phase_from=clip).numpy()
            for kind, n in arms:
                def start(m: torch.Tensor, kind: str = kind) -> torch.Tensor:
                    return dsp.random_phase(tuple(m.shape)) if kind == "random" else dsp.integrated_phase(framing, m)
                t0 = time.perf_counter()
                out = front.griffin_lim(target, len(clip), n_iter=n, init_phase=start(target))
                times[(kind, n)] += time.perf_counter() - t0
                out_true = front.griffin_lim(truth, len(clip), n_iter=n, init_phase=start(truth))
                scores[(kind, n)].append((spectral_convergence(front, out, target),
                                          spectral_convergence(front, out_true, truth), multires(out.numpy(), own)))
    n_files = len(next(iter(scores.values())))
    print(f"{n_files} files ({args.folders}, first {args.seconds:g} s), demo model, one thread")
    print("| start | iterations | SC to the decoded magnitude | SC, the recording's own magnitude | "
          "multi-res log-mag vs own-phase decode | time |")
    print("|---|---|---|---|---|---|")
    for (kind, n), rows in scores.items():
        v = np.mean(rows, axis=0)
        print(f"| {kind} | {n} | {v[0]:.4f} | {v[1]:.4f} | {v[2]:.4f} | {times[(kind, n)]:.2f} s |", flush=True)

    if args.minutes > 0:
        torch.set_num_threads(2)
        long = recording(Path(args.root), ["beats", "bassloops"], args.minutes * 60)
        grid = codec.encode(long, 44100, search_steps=0)
        for n in (dsp.DEFAULT_GL_ITERS, 32):
            t0 = time.perf_counter()
            codec.decode(grid, n_iter=n)
            print(f"decode {args.minutes:g} min without a phase source, {n} iterations, two threads: "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
