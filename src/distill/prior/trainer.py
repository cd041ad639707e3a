"""PriorTrainer: train a CodePrior on a code corpus (or audio, from_audio) within a wall-clock budget, streaming
TrainEvents: the fitted start, the context part, the calibration, then a masked-token loop over the tables
with held-out validation."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..events import TrainEvent
from .config import PriorConfig, PriorError
from .corpus import CodeCorpus, crop_batch, fixed_eval_set
from .encoding import CorpusCodec, corpus_search_steps, encode_corpus, shifted_items, silence_frame
from .evaluate import evaluate_bits, masked_nll
from .fit import CONTEXT_CELLS, CONTEXT_SHARE, CONTEXT_WIDTH, calibrate_latent, fit_context, initial_prior
from .masks import training_mask
from .network import CodePrior
from .retrieval import bank_config, make_bank


@dataclass
class PriorResult:
    """A trained prior plus what `distill info` shows about it."""

    model: CodePrior
    meta: dict = field(default_factory=dict)   # config, codec fingerprint, files, steps, best validation bits


MIN_VAL_GAIN = 0.01   # bits/code a checkpoint must gain on the held-out files to replace the kept one


def improves(bits: float, best: float) -> bool:
    """Whether a validation score replaces the best so far. A gain within the held-out set's noise (~0.01
    bits/code on ~15 files) is not taken: on drums a 0.006-bit better checkpoint scored 0.07 worse on the
    test files than the fitted start it would have replaced (benchmarks/README.md)."""
    return math.isfinite(bits) and (not math.isfinite(best) or bits < best - MIN_VAL_GAIN)


def split_names(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Held-out files for the prior: every file is in one side; at least one training file."""
    if n < 3 or val_fraction <= 0:
        return list(range(n)), []
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    k = max(1, int(round(n * val_fraction)))
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


CONTEXT_SHIFTS = 2          # more encodings of each training clip for the context part (benchmarks/README.md)
SHIFT_SHARE = 0.25          # of the prior's budget (after the corpus's own encoding) they may take


def context_shifts(encode_seconds: float, budget_s: float, cells: int) -> int:
    """How many shifted encodings of the training clips the context part gets (shifted_items): CONTEXT_SHIFTS, fewer
    when encoding them (`encode_seconds` each, what the training clips took once) would take over SHIFT_SHARE of
    the budget left, none when the clips already give the part all the cells it takes (CONTEXT_CELLS)."""
    if cells >= CONTEXT_CELLS:
        return 0
    affordable = int(SHIFT_SHARE * budget_s // max(encode_seconds, 1e-3))
    return max(0, min(CONTEXT_SHIFTS, affordable))


class PriorTrainer:
    """Train a CodePrior on a corpus within a wall-clock budget, streaming TrainEvents (stage "prior").

    Held-out files are scored every few seconds on edit-shaped masks (bits/code); the best of those
    is kept. cancel() (or the stop file) ends the run with the best so far.
    """

    def __init__(self, corpus: CodeCorpus, codebook_size: int, minutes: float, codec_fingerprint: str = "",
                 config: PriorConfig | None = None, val_names: Sequence[str] | None = None,
                 stop: Callable[[], bool] | None = None, log_every_s: float = 1.0, validate_every_s: float = 5.0,
                 codebooks: torch.Tensor | np.ndarray | None = None):
        """codebooks float [levels, codebook_size, D]: the codec's codewords (Codec.codebooks), which the
        latent path needs; without them the prior has none (config latent_dim 0)."""
        if not (math.isfinite(minutes) and minutes > 0):
            raise PriorError(f"prior minutes must be > 0, got {minutes}")
        L, B = corpus.grids[0].shape[:2]
        codebooks = None if codebooks is None else torch.as_tensor(codebooks).detach().float().cpu()
        D = 0 if codebooks is None else int(codebooks.shape[-1])
        self.config = config or PriorConfig(levels=L, bands=B, codebook_size=codebook_size, latent_dim=D,
                                            context_width=CONTEXT_WIDTH if D else 0, context_same=int(D > 0))
        if (self.config.levels, self.config.bands, self.config.codebook_size) != (L, B, codebook_size):
            raise PriorError(f"prior settings {self.config.levels}x{self.config.bands}x{self.config.codebook_size} "
                             f"do not match the codes {L}x{B}x{codebook_size}")
        if self.config.latent_dim and (codebooks is None or tuple(codebooks.shape) != (L, codebook_size, self.config.latent_dim)):
            raise PriorError(f"a prior with a latent path needs the codec's codewords [{L}, {codebook_size}, "
                             f"{self.config.latent_dim}], got {None if codebooks is None else tuple(codebooks.shape)}")
        self.codebooks = None if codebooks is None else codebooks.clone()
        # the bank regenerate copies from: every file given (the prior's held-out ones are the user's files too)
        self.bank = make_bank(corpus.names, corpus.grids) if self.config.latent_dim else None
        if self.bank is not None:
            self.config = replace(self.config, **bank_config(self.bank))
        self.corpus = corpus
        self.minutes = float(minutes)
        self.codec_fingerprint = codec_fingerprint
        self.val_names = None if val_names is None else set(val_names)
        self.stop = stop or (lambda: False)
        self.log_every_s = log_every_s
        self.validate_every_s = validate_every_s
        self.encode_note = ""
        self.shifted: CodeCorpus | None = None   # more encodings of the training files, for the context part
        self._cancelled = False
        self.result: PriorResult | None = None

    @classmethod
    def from_audio(cls, codec: CorpusCodec, items: Sequence[tuple[str, torch.Tensor]], minutes: float,
                   stop: Callable[[], bool] | None = None, search_steps: int | None = None) -> PriorTrainer:
        """Encode (name, log-mel) pairs with `codec` and make a trainer for them. The encoding counts against
        `minutes`; by default it uses the codec's default search unless that costs over half the budget
        (`search_steps` as in Codec.encode_mel: an explicit N searches N Adam steps, 0 not at all). Where the
        budget allows (context_shifts), the training clips are encoded again, shifted by parts of a column
        (shifted_items), for the context part alone; the held-out clips never are."""
        if not items:
            raise PriorError("no clips to train the prior on")
        t0 = time.perf_counter()
        if search_steps is None:
            seconds = sum(int(mel.shape[-1]) for _, mel in items) * codec.mel_cfg.hop_length / codec.sample_rate
            search_steps = corpus_search_steps(seconds, minutes * 60.0)
        corpus = encode_corpus(codec, items, search_steps)
        spent = time.perf_counter() - t0
        trainer = cls(corpus, codec.codebook_size, minutes, codec.fingerprint, stop=stop,
                      val_names=(codec.info.dataset or {}).get("val_files"), codebooks=codec.codebooks)
        how = "the default search" if search_steps is None else f"search {search_steps}"
        note = f"encoded {len(items)} clips ({corpus.columns} columns, {how}) in {spent:.1f} s"
        train_idx = trainer._split_indices()[0]
        train_cells = sum(corpus.grids[i].shape[1] * corpus.grids[i].shape[2] for i in train_idx)
        shifts = context_shifts(spent * len(train_idx) / max(1, len(items)), minutes * 60.0 - spent, train_cells)
        if shifts and trainer.config.context_width:
            t1 = time.perf_counter()
            trainer.shifted = encode_corpus(codec, shifted_items([items[i] for i in train_idx], shifts,
                                                                 codec.frames_per_column, silence_frame(codec)),
                                            search_steps)
            note += f", and the training clips {shifts}x more, shifted by parts of a column, in {time.perf_counter() - t1:.1f} s"
        spent = time.perf_counter() - t0
        trainer.minutes = max(minutes * 0.25, minutes - spent / 60.0)
        trainer.encode_note = note + "; "
        return trainer

    def cancel(self) -> None:
        self._cancelled = True

    def _split_indices(self) -> tuple[list[int], list[int]]:
        """The corpus's training and held-out files: the codec's own held-out files where their names line up,
        else the prior's own split."""
        n = len(self.corpus.names)
        if self.val_names is not None:
            val = [i for i, name in enumerate(self.corpus.names) if name in self.val_names]
            held = set(val)
            train = [i for i in range(n) if i not in held]
            if train and val:
                return train, val
        return split_names(n, self.config.val_fraction, self.config.seed)

    def _split(self) -> tuple[CodeCorpus, CodeCorpus | None]:
        train, val = self._split_indices()
        return self.corpus.subset(train), (self.corpus.subset(val) if val else None)

    def run(self) -> Iterator[TrainEvent]:
        t0 = time.perf_counter()   # the budget includes the start and the latent path's fitting
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        train, val = self._split()
        model = initial_prior(cfg, train, self.codebooks)
        if self.bank is not None:
            model.set_bank(self.bank)
        K = cfg.codebook_size
        held = val or train
        more = train if self.shifted is None else CodeCorpus(train.names + self.shifted.names,
                                                             train.grids + self.shifted.grids)
        context_bits = fit_context(model, more, val, seed=cfg.seed, seconds=CONTEXT_SHARE * self.minutes * 60.0)
        fitted = list(model.context.parameters()) if cfg.context_width else []
        for p in fitted:   # fitted above, like the mixing tables; training them with the rest only overfits
            p.requires_grad_(False)
        weights = np.array([min(g.shape[2], 10 * cfg.window) for g in train.grids], dtype=np.float64)
        weights /= weights.sum()
        val_set = fixed_eval_set(held, cfg.window, K)
        # what the loop trains: the tables, a few scalars per code, without decay. Without the latent path they move
        # 10x faster (600 steps moved them too little to matter); with it the start is already near its best for
        # edit-shaped masks and faster tables drifted toward the training masks' mix (held-out bits rose from step
        # 0; benchmarks/README.md). The best held-out checkpoint is kept, often the fitted start.
        tables = [p for p in model.parameters() if p.requires_grad]
        scale = 1.0 if cfg.latent_dim else 10.0
        opt = torch.optim.AdamW(tables, lr=cfg.learning_rate * scale, weight_decay=0.0)
        budget = self.minutes * 60.0
        yield TrainEvent("start", 0, 0.0, 0.0, eta_s=budget, stage="prior",
                         message=f"prior: {self.encode_note}{len(train.grids)} training / {len(val.grids) if val else 0} validation "
                                 f"files, {train.columns} columns"
                                 f"{'' if val else ' (too few files to hold any out: validating on training files)'}")
        note = ""
        if cfg.latent_dim:
            # 96 crops: 8 s on one core for 256 codes; 48 (half that, ~0.02 bits/code worse) in a budget under a minute
            fit = calibrate_latent(model, held, seed=cfg.seed, crops=96 if self.minutes >= 1.0 else 48)
            context = f", its context part alone {context_bits:.3f}" if math.isfinite(context_bits) else ""
            note = f"; latent path fitted to {len(held.grids)} files' edit-shaped masks: {fit:.3f} bits/code{context}"
        best, best_state, step, history = math.inf, None, 0, []
        last_log = last_val = 0.0
        acc, n_acc, step_times = 0.0, 0, []

        def elapsed() -> float:
            return time.perf_counter() - t0

        def validate(now: float, note: str = "") -> TrainEvent:
            nonlocal best, best_state
            bits = evaluate_bits(model, *val_set)
            if improves(bits, best):
                best, best_state = bits, copy.deepcopy(model.state_dict())
            history.append({"step": step, "val": round(bits, 4)})
            return TrainEvent("validation", step, 0.0, now, max(0.0, budget - now), val_loss=bits,
                              best_val_loss=best, stage="prior",
                              message=f"prior held-out {bits:.3f} bits/code (best {best:.3f}){note}")

        yield validate(elapsed(), note)
        # With the latent path the fitted start is the prior: the loop below never moved the kept state on either
        # corpus (held-out bits identical to 4 decimals with the loop's gradients zeroed, benchmarks/README.md,
        # "Prior ablation"), so it runs only for the tables of a prior without the path.
        loop = not cfg.latent_dim
        while loop and not (self._cancelled or self.stop()) and elapsed() < budget:
            model.train()
            progress = elapsed() / budget
            lr = cfg.learning_rate * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * progress))
            for g in opt.param_groups:
                g["lr"] = lr * scale
            ts = time.perf_counter()
            codes, pad = crop_batch(train, cfg.window, cfg.batch_size, rng, weights, K)
            hide = torch.from_numpy(np.stack([training_mask(cfg.levels, cfg.bands, cfg.window, rng)
                                              for _ in range(cfg.batch_size)]))
            hide &= ~pad[:, None, None, :]
            if not hide.any():
                continue
            loss = masked_nll(model, codes, pad, hide, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                acc += float(loss.detach())
                n_acc += 1
            step += 1
            step_times = (step_times + [time.perf_counter() - ts])[-20:]
            now = elapsed()
            if now - last_log >= self.log_every_s and n_acc:
                last_log = now
                mean = acc / n_acc / math.log(2)
                acc, n_acc = 0.0, 0
                history.append({"step": step, "train": round(mean, 4)})
                yield TrainEvent("step", step, 0.0, now, max(0.0, budget - now), None,
                                 len(step_times) / max(sum(step_times), 1e-9), lr, loss=mean, best_val_loss=best,
                                 stage="prior")
            if now - last_val >= self.validate_every_s:
                yield validate(now)
                last_val = elapsed()
        now = elapsed()
        if step:
            yield validate(now)
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        stopped = self._cancelled or self.stop()
        meta = {"config": cfg.to_dict(), "codec": self.codec_fingerprint, "steps": step,
                "train_seconds": round(now, 1), "best_val_bits": round(best, 4) if math.isfinite(best) else None,
                "train_files": list(train.names)[:500], "val_files": list(val.names)[:500] if val else [],
                "columns": train.columns, "history": history[-300:], "cancelled": bool(stopped),
                "bank_files": len(self.bank.names) if self.bank is not None else 0}
        self.result = PriorResult(model, meta)
        yield TrainEvent("done", step, 0.0, now, 0.0, best_val_loss=best, stage="prior",
                         message="prior: cancelled, kept the best so far" if stopped else "prior: finished")
