"""A masked-token prior over code grids: train it on a corpus's codes, then redraw cells so they fit their surroundings.

The prior scores each hidden cell from the corpus's code tables (frequencies, copying the nearest visible code)
and, through the codec's codewords, its latent path: the neighbours' latents, recalled cells of the same band,
the Structure gain and a small context network over the coarser codewords around the cell, mixed by fitted
weights (CodePrior's doc). It is fitted to the corpus and tuned on masks shaped like edits (time spans,
band x time rectangles, coarser levels kept, random tokens), and sampled by
iterative parallel decoding (MaskGIT: confidence-ranked re-masking on a cosine schedule), coarse to
fine over levels. Cells outside the selection are never written, so they come back bit-identical.

It lives in the model's `.distill` file next to the codec (tensors under `prior.`, settings in the
metadata) and never changes the codec's fingerprint: codes made before a prior was added stay valid.

One job per module, each importing only those listed after it:

- `trainer`:  PriorTrainer (from a code corpus or from audio, within a wall-clock budget)
- `encoding`: the code corpus from audio (encode_corpus, shifted copies for the context part)
- `fit`:      the fitted start, the context part, the mixing tables' calibration, the Structure gain
- `sampler`:  drawing versions: copied from the bank (retrieval) or drawn by the network (Sampler, sample_cells);
              the edit it makes is distill.edits.regenerate's
- `evaluate`: masked NLL, held-out bits/code and the stages they are scored in
- `corpus`:   CodeCorpus, training crops, the fixed held-out crops
- `network`:  CodePrior, ContextNet and the features they read; build_prior / prior_tensors
- `masks`:    training and edit masks, the decoding schedule
- `retrieval`: the code bank (the training files' own codes, kept in the prior) and copying patches of it into a hole
- `config`:   PriorConfig, PriorError, PRIOR_PREFIX (torch-free: what the model file reads)

The names below are this package's public face (`from distill.prior import ...`). They are bindings of the
modules' own: to replace a function for what calls it (as benchmarks/prior_ablation.py does), replace it in
the calling module (e.g. `distill.prior.trainer.calibrate_latent`), not here.
"""

from .config import DEFAULT_PRIOR_SHARE, NO_PRIOR_HELP, PRIOR_PREFIX, PriorConfig, PriorError
from .corpus import CodeCorpus, crop_batch, fixed_eval_set
from .encoding import (
    DEFAULT_SEARCH_SECONDS_PER_SECOND,
    MAX_CORPUS_SECONDS_PER_FILE,
    CorpusCodec,
    corpus_search_steps,
    encode_corpus,
    shifted_items,
    silence_frame,
)
from .evaluate import drawing_stages, evaluate_bits, level_stages, masked_nll, stage_of
from .fit import (
    CALIBRATION_STEPS,
    CONTEXT_CELLS,
    CONTEXT_SHARE,
    CONTEXT_WIDTH,
    STRUCTURE_SMOOTHING,
    ContextCells,
    calibrate_latent,
    calibration_mask,
    context_examples,
    copy_gains,
    fit_context,
    fit_context_level,
    initial_prior,
    log_frequencies,
    part_drawn_stages,
    partly_drawn,
    structure_gain,
)
from .masks import MASK_KINDS, cosine_ratio, edit_mask, hidden_after, level_steps, training_mask
from .network import (
    CONTEXT_TAPS,
    MAX_GAP,
    RETIRED_WEIGHTS,
    SAME_TAPS,
    CodePrior,
    ContextNet,
    LatentParts,
    PriorFeatures,
    build_prior,
    coarser_latent,
    codeword_scores,
    context_inputs,
    nearest_positions,
    nearest_visible,
    neighbours,
    prior_tensors,
    same_level_codes,
)
from .retrieval import (
    CONTEXT_COLUMNS,
    PATCH_COLUMNS,
    SHORTLIST,
    CodeBank,
    Origin,
    bank_config,
    describe_origins,
    make_bank,
    match_costs,
    retrieve,
)
from .sampler import (
    EDGE_COLUMNS,
    NO_BANK_NOTE,
    DrawSettings,
    Sampler,
    Version,
    draw_top_p,
    draw_versions,
    sample_cells,
)
from .trainer import (
    CONTEXT_SHIFTS,
    MIN_VAL_GAIN,
    SHIFT_SHARE,
    PriorResult,
    PriorTrainer,
    context_shifts,
    improves,
    split_names,
)

__all__ = [
    "CONTEXT_COLUMNS", "NO_BANK_NOTE", "PATCH_COLUMNS", "SHORTLIST", "CodeBank", "Origin", "Version", "bank_config",
    "describe_origins", "draw_versions", "make_bank", "match_costs", "retrieve",
    "CALIBRATION_STEPS", "CONTEXT_CELLS", "CONTEXT_SHARE", "CONTEXT_SHIFTS", "CONTEXT_TAPS", "CONTEXT_WIDTH",
    "DEFAULT_PRIOR_SHARE", "DEFAULT_SEARCH_SECONDS_PER_SECOND", "EDGE_COLUMNS", "MASK_KINDS",
    "MAX_CORPUS_SECONDS_PER_FILE", "MAX_GAP", "MIN_VAL_GAIN", "NO_PRIOR_HELP", "PRIOR_PREFIX", "RETIRED_WEIGHTS", "SAME_TAPS",
    "SHIFT_SHARE", "STRUCTURE_SMOOTHING", "CodeCorpus", "CodePrior", "ContextCells", "ContextNet", "CorpusCodec",
    "DrawSettings", "LatentParts", "PriorConfig", "PriorError", "PriorFeatures", "PriorResult", "PriorTrainer",
    "Sampler", "build_prior", "calibrate_latent", "calibration_mask", "coarser_latent", "codeword_scores",
    "context_examples", "context_inputs", "context_shifts", "copy_gains", "corpus_search_steps", "cosine_ratio",
    "crop_batch", "draw_top_p", "drawing_stages", "edit_mask", "encode_corpus", "evaluate_bits", "fit_context",
    "fit_context_level", "fixed_eval_set", "hidden_after", "improves", "initial_prior", "level_stages",
    "level_steps", "log_frequencies", "masked_nll", "nearest_positions", "nearest_visible", "neighbours",
    "part_drawn_stages", "partly_drawn", "prior_tensors", "same_level_codes", "sample_cells", "shifted_items",
    "silence_frame", "split_names", "stage_of", "structure_gain", "training_mask",
]
