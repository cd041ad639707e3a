"""Where a trained model's mel error comes from: held-out vs training files, codes vs unquantized latent.

    python benchmarks/diagnose.py MODEL.distill DATA_DIR [--holdout-every 5] [--subdirs a,b]

Uses quality.py's file split (every 5th sorted file held out), so a model kept with
`quality.py --keep DIR` is scored on the files it never saw. For each set it prints the
model-domain log1p-mel L1 of: the decoder fed the encoder's unquantized latent, the codes of the
first level only, the first two, all levels, optionally codes found by `--search N` steps of
encode-by-search, a 3 x 3 box blur of the true mel (what a model that kept everything but the
finest detail would score) and a silent prediction (the scale). A large
training/held-out gap with a small codes-vs-latent gap says the encoder-decoder generalises
poorly, not that the codebooks are short of bits.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import MAX_EVAL_SECONDS, holdout_split, select_files  # noqa: E402

from distill import Codec  # noqa: E402
from distill.audio import load_audio  # noqa: E402
from distill.codec import search_codes  # noqa: E402


@torch.no_grad()
def mel_errors(codec: Codec, files: list[str], search: int = 0) -> dict[str, float]:
    """Length-weighted model-domain L1 for each way of feeding the decoder."""
    model = codec.model.eval()
    labels = ["unquantized latent"] + [f"codes, levels 1-{k}" for k in range(1, len(codec.level_names) + 1)]
    labels += [f"codes by search, {search} steps (encode --search)"] if search else []
    labels += ["true mel, 3 x 3 box blur (no model: a yardstick)", "silence (scale)"]
    sums, count = np.zeros(len(labels)), 0
    for path in files:
        wave, _ = load_audio(path, codec.sample_rate)
        mel = codec.logmel(wave[: int(MAX_EVAL_SECONDS * codec.sample_rate)])[None, None]
        frames = mel.shape[-1]
        latent = model.encode(mel)
        _, codes, _ = model.quantize(latent)
        outs = [model.decode(latent, frames)]
        outs += [model.decode_codes(codes[:, :k], frames) for k in range(1, codes.shape[1] + 1)]
        if search:
            outs.append(model.decode_codes(search_codes(model, mel, search), frames))
        outs.append(torch.nn.functional.avg_pool2d(mel, 3, 1, 1, count_include_pad=False))
        outs.append(torch.zeros_like(mel))
        sums += [float((o - mel).abs().sum()) for o in outs]
        count += mel.numel()
    return dict(zip(labels, sums / max(count, 1), strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data_dir")
    ap.add_argument("--holdout-every", type=int, default=5)
    ap.add_argument("--subdirs", default="")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--search", type=int, default=0, help="also score codes found by N steps of encode search")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    codec = Codec.load(args.model)
    paths = select_files(args.data_dir, [s for s in args.subdirs.split(",") if s], args.files)
    train, test = holdout_split(paths, args.holdout_every)
    rows = {"held-out": mel_errors(codec, test, args.search), "training": mel_errors(codec, train, args.search)}
    print(f"{args.model}: model-domain log1p-mel L1, {len(test)} held-out / {len(train)} training files\n")
    print("| decoder input | held-out | training |\n|---|---|---|")
    for label in rows["held-out"]:
        print(f"| {label} | {rows['held-out'][label]:.4f} | {rows['training'][label]:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
