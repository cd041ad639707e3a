"""Regenerate from the user's own material: fill a hole with a patch of real codes copied from the training files.

For 5-500 clips the corpus itself is the best prior (texture synthesis, concatenative style): the places in the
training files whose surroundings best match the hole's (the kept coarser levels inside it and the visible
columns beside it, compared by codeword distance, not by index) lend their codes whole, so a version is a piece
of a real sound rather than cells drawn one by one. Long holes are filled left to right in pieces of up to
PATCH_COLUMNS, each piece matched against what the previous one left (a copied source that goes on matches its
own continuation exactly, so a version follows one source for as long as it fits). benchmarks/README.md,
"Regenerate, decoded", has the figures behind each choice.

The bank is stored in the prior (CodePrior.bank_*: the files' codes, where each file starts, their names), so
it travels in the model file; `Origin` says where a version's material came from ("from kick_03.wav 1.2-1.9 s").
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .config import MAX_BANK_COLUMNS, PriorConfig, PriorError

PATCH_COLUMNS = 16      # the widest piece copied at once (~2.8 s); longer holes take several, left to right
CONTEXT_COLUMNS = 2     # visible columns each side of the hole that a place in the bank must match
SHORTLIST = 16          # the best-matching places a version is drawn from (one per region of a file)
SPREAD = 0.25           # how far down the shortlist temperature 1 draws (in units of its cost spread)
RERANK = 5.0            # weight of the network's log-probability of a patch (nats per cell) in choosing one
SCORE_MARGIN = 8        # columns either side of a piece the network sees when it scores patches


@dataclass(frozen=True)
class CodeBank:
    """The training files' codes, concatenated: codes int [L, B, C] (int16 as stored), starts int64 [F + 1]
    (file f is columns starts[f]..starts[f+1]-1), names (F, one label per file: file_labels)."""

    names: tuple[str, ...]
    codes: np.ndarray
    starts: np.ndarray

    @property
    def columns(self) -> int:
        return int(self.codes.shape[2])

    @cached_property
    def file_ids(self) -> np.ndarray:
        """int64 [C]: each column's file."""
        return np.repeat(np.arange(len(self.names)), np.diff(self.starts))

    def name_bytes(self) -> bytes:
        return "\n".join(self.names).encode("utf-8")


@dataclass(frozen=True)
class Origin:
    """Where a piece of a version came from: `columns` columns of the bank's file `file` (named `name`) from
    its column `column`."""

    name: str
    column: int
    columns: int
    file: int = -1


def make_bank(names: Sequence[str], grids: Sequence[np.ndarray], max_columns: int = MAX_BANK_COLUMNS) -> CodeBank:
    """The bank of a prior's corpus (names, int [L, B, T] grids): every file whole while they fit in
    `max_columns`, else evenly chosen ones. Names lose their folders and line breaks (they are shown to the
    user, and stored one per line)."""
    total = sum(g.shape[2] for g in grids)
    keep = list(range(len(grids)))
    if total > max_columns:
        per = total / len(keep)
        keep = sorted(set(np.linspace(0, len(keep) - 1, max(1, int(max_columns / per))).astype(int).tolist()))
        while sum(grids[i].shape[2] for i in keep) > max_columns and len(keep) > 1:
            keep.pop()
    kept = [grids[i][:, :, :max_columns] for i in keep]
    starts = np.concatenate([[0], np.cumsum([g.shape[2] for g in kept])]).astype(np.int64)
    return CodeBank(file_labels([str(names[i]) for i in keep]), np.concatenate(kept, axis=2).astype(np.int64), starts)


def clean_name(name: str) -> str:
    """A name as shown: no control characters (a crafted file's names reach the terminal), at most 200 characters."""
    text = "".join("?" if unicodedata.category(ch).startswith("C") else ch for ch in name)
    return (text[:197] + "...") if len(text) > 200 else (text or "?")


def file_labels(paths: Sequence[str]) -> tuple[str, ...]:
    """Each file's name without its folders, or with its last folder where two share a name ("drums/kick.wav"),
    numbered past that ("kick.wav (2)"): one label per file, so an origin leads back to one file."""
    parts = [p.replace("\\", "/").split("/") for p in paths]
    base = [q[-1] for q in parts]
    labels = [b if base.count(b) == 1 else "/".join(q[-2:]) for b, q in zip(base, parts, strict=True)]
    out, seen = [], {}
    for label in (clean_name(x) for x in labels):
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return tuple(out)


def bank_config(bank: CodeBank) -> dict[str, int]:
    """The PriorConfig fields that give a prior room for `bank` (dataclasses.replace(cfg, **this))."""
    return {"bank_columns": bank.columns, "bank_files": len(bank.names), "bank_name_bytes": len(bank.name_bytes())}


def bank_tensors(bank: CodeBank) -> dict[str, torch.Tensor]:
    """The bank as the prior's buffers (CodePrior.bank_codes / bank_starts / bank_names)."""
    return {"bank_codes": torch.from_numpy(bank.codes.astype(np.int16)),
            "bank_starts": torch.from_numpy(bank.starts.copy()),
            "bank_names": torch.frombuffer(bytearray(bank.name_bytes()), dtype=torch.uint8).clone()}


def bank_from_tensors(cfg: PriorConfig, codes: torch.Tensor, starts: torch.Tensor, names: torch.Tensor) -> CodeBank:
    """The bank stored in a prior, checked (a crafted file gets a PriorError, never an index error later)."""
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cfg.codebook_size):
        raise PriorError("the prior's code bank holds codes outside the codebook")
    c = codes.numpy()                    # int16, the buffer itself: a 1M-column bank is not copied at 4x its size
    s = starts.numpy().astype(np.int64)
    if s[0] != 0 or s[-1] != c.shape[2] or (np.diff(s) < 1).any():
        raise PriorError("the prior's code bank has broken file bounds")
    try:
        text = bytes(names.numpy().tobytes()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PriorError("the prior's code bank has unreadable file names") from exc
    listed = tuple(clean_name(n) for n in text.split("\n"))
    if len(listed) != cfg.bank_files:
        raise PriorError(f"the prior's code bank names {len(listed)} files, its settings {cfg.bank_files}")
    return CodeBank(listed, c, s)


@dataclass(frozen=True)
class Codewords:
    """A prior's codewords (float32 [L, K, D]) for distances between codes: rows, never a [K, K] table (a codebook
    of 4096 would make that 64 MB per level)."""

    books: np.ndarray

    @cached_property
    def squares(self) -> np.ndarray:
        return (self.books.astype(np.float64) ** 2).sum(-1)                  # [L, K]

    def rows(self, q: int, codes: np.ndarray) -> np.ndarray:
        """float64 [n, K]: squared distance from each of level q's `codes` [n] to every codeword of the level."""
        b = self.books[q].astype(np.float64)
        return np.maximum(self.squares[q][codes][:, None] + self.squares[q][None, :] - 2.0 * b[codes] @ b.T, 0.0)


@dataclass(frozen=True)
class Hole:
    """The cells one piece fills: levels q, bands b0..b1, columns c0..c0+width-1 of a grid of T columns."""

    levels: tuple[int, ...]
    b0: int
    b1: int
    c0: int
    width: int


def match_costs(bank: CodeBank, words: Codewords, codes: np.ndarray, visible: np.ndarray, hole: Hole,
                context: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """How well each place in the bank fits the hole: (cost float64 [C], valid bool [C]) per bank column p,
    where p is the first column the patch would copy. The cost is the mean codeword distance, over the grid's
    visible cells (bool [L, B, T]) of the hole's bands in its columns (whatever the hole keeps) and in `context`
    columns either side (default CONTEXT_COLUMNS), to the bank's cells at the same offsets. A place is valid
    when the patch and every compared column lie in one file."""
    context = CONTEXT_COLUMNS if context is None else context
    L, _, T = codes.shape
    C = bank.columns
    lo, hi = max(0, hole.c0 - context), min(T, hole.c0 + hole.width + context)
    cost = np.zeros(C)
    seen = np.flatnonzero(visible[:, hole.b0:hole.b1 + 1, lo:hi].any(axis=(0, 1))) + lo - hole.c0   # offsets used
    first = min(0, int(seen.min())) if seen.size else 0
    last = max(hole.width - 1, int(seen.max())) if seen.size else hole.width - 1
    n = 0
    for q in range(L):
        for b in range(hole.b0, hole.b1 + 1):
            cols = np.flatnonzero(visible[q, b, lo:hi]) + lo
            if cols.size == 0:
                continue
            rows = words.rows(q, codes[q, b, cols])                           # [n_cols, K]
            line = bank.codes[q, b]
            for r, col in zip(rows, cols, strict=True):
                off = int(col) - hole.c0
                a, z = max(0, -off), min(C, C - off)                          # patch starts p with p+off in the bank
                if z > a:                                                     # (a bank shorter than the offset: none)
                    cost[a:z] += r[line[a + off:z + off]]
            n += cols.size
    fid = bank.file_ids
    p = np.arange(C)
    ok = (p + first >= 0) & (p + last < C)
    ok[ok] = fid[(p + first)[ok]] == fid[(p + last)[ok]]
    return cost / max(n, 1), ok


def shortlist(cost: np.ndarray, valid: np.ndarray, bank: CodeBank, width: int, rng: np.random.Generator,
              size: int | None = None) -> np.ndarray:
    """The best places (ascending cost, at most `size`, default SHORTLIST), at most one per `width` columns of a
    file (near-equal copies of one place would make near-equal versions). Equal costs are ordered at random
    (seeded): with nothing around the hole to compare, every place is equal, and the bank's first files must not
    always win."""
    size = SHORTLIST if size is None else size
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return idx
    order = idx[np.lexsort((rng.random(idx.size), cost[idx]))]
    taken: list[int] = []
    blocked = np.zeros(bank.columns, dtype=bool)
    for p in order:
        if not blocked[p]:
            taken.append(int(p))
            blocked[max(0, p - width + 1):p + width] = True
            if len(taken) == size:
                break
    return np.array(taken, dtype=np.int64)


def choose(cost: np.ndarray, places: np.ndarray, temperature: float, rng: np.random.Generator,
           bonus: np.ndarray | None = None) -> np.ndarray:
    """The shortlisted places ranked for drawing (Gumbel top-k). A place's log-weight is its cost below the
    shortlist's mean, in units of the shortlist's spread (best 0, mean -1), plus RERANK x `bonus` [S] (the
    network's log-probability per cell of each patch, relative to the best), over temperature x SPREAD: at low
    temperature the best places in order, higher draws further down the list."""
    c = cost[places]
    score = -(c - c.min()) / max(float(c.mean() - c.min()), 1e-9)
    if bonus is not None:
        score = score + RERANK * (bonus - bonus.max())
    g = score / max(float(temperature) * SPREAD, 1e-6) - np.log(-np.log(rng.uniform(1e-12, 1.0, c.size)))
    return places[np.argsort(-g, kind="stable")]


# (candidates int64 [S, L, B, T], cells to score bool [L, B, T], cells hidden bool [L, B, T]) -> float [S]
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def hole_pieces(todo: np.ndarray, width: int | None = None) -> list[Hole]:
    """The todo cells' bounding box (levels, bands, columns) cut into pieces of up to `width` columns
    (default PATCH_COLUMNS)."""
    width = PATCH_COLUMNS if width is None else width
    levels = tuple(int(q) for q in np.flatnonzero(todo.any(axis=(1, 2))))
    bands = np.flatnonzero(todo.any(axis=(0, 2)))
    cols = np.flatnonzero(todo.any(axis=(0, 1)))
    if not levels:
        return []
    out, c = [], int(cols[0])
    while c <= cols[-1]:
        w = min(width, int(cols[-1]) - c + 1)
        out.append(Hole(levels, int(bands[0]), int(bands[-1]), c, w))
        c += w
    return out


def keeps_cells(todo: np.ndarray) -> bool:
    """Whether the hole keeps cells inside its box of bands and columns (a coarser level, or what strength < 1
    leaves): draw_versions then lets the network draw (copying onto kept Structure measured worse)."""
    bands = np.flatnonzero(todo.any(axis=(0, 2)))
    cols = np.flatnonzero(todo.any(axis=(0, 1)))
    if cols.size == 0:
        return False
    return not bool(todo[:, bands[0]:bands[-1] + 1, cols[0]:cols[-1] + 1].all())


def retrieve(bank: CodeBank, words: Codewords, codes: np.ndarray, todo: np.ndarray, count: int, temperature: float,
             seed: int, score: Scorer | None = None) -> list[tuple[np.ndarray, list[Origin]]]:
    """Fill the cells `todo` (bool [L, B, T]) of codes [L, B, T] from the bank: `count` versions, each
    (int64 [L, B, T], where its pieces came from). Only `todo` cells change. Version i starts from the i-th
    place drawn for the first piece (so versions differ), then goes on with the best draw for each next piece.
    Places whose patch would give the hole's cells back unchanged are not drawn while others fit; a piece whose
    width no file of the bank holds is cut in two. `score` (the network, when given) weighs in on the shortlist."""
    rng = np.random.default_rng(int(seed))
    out = []
    first: dict[Hole, np.ndarray] = {}   # the first piece's drawn ranking, shared: version i takes its i-th place
    for i in range(count):
        x = codes.astype(np.int64).copy()
        left = todo.copy()
        origins: list[Origin] = []
        pieces = hole_pieces(todo)
        starting = True
        while pieces:
            hole = pieces.pop(0)
            got = _fill(bank, words, x, left, hole, temperature, rng, i if starting else 0, score,
                        first if starting else None)
            if got is None:                      # no file is that long: two narrower pieces
                half = max(1, hole.width // 2)
                pieces[:0] = [Hole(hole.levels, hole.b0, hole.b1, hole.c0, half),
                              Hole(hole.levels, hole.b0, hole.b1, hole.c0 + half, hole.width - half)]
                continue
            origins.append(got)
            starting = False
        out.append((x, _merge(origins)))
    return out


def _fill(bank: CodeBank, words: Codewords, x: np.ndarray, left: np.ndarray, hole: Hole, temperature: float,
          rng: np.random.Generator, rank: int, score: Scorer | None, drawn: dict[Hole, np.ndarray] | None = None
          ) -> Origin | None:
    """Copy one piece into x where `left` (cells still to fill) says, in place: the `rank`-th drawn place (modulo
    the shortlist); its origin, or None when no place in the bank is wide enough (1 column always is). `drawn`
    keeps each piece's ranking to reuse (the versions' first pieces see the same grid)."""
    if drawn is not None and hole in drawn:
        return _paste(bank, x, left, hole, int(drawn[hole][rank % drawn[hole].size]))
    cols = slice(hole.c0, hole.c0 + hole.width)
    bands = slice(hole.b0, hole.b1 + 1)
    cost, valid = match_costs(bank, words, x, ~left, hole)
    if not valid.any():
        if hole.width > 1:
            return None
        cost, valid = match_costs(bank, words, x, np.zeros_like(left), hole)  # only the patch itself must fit
    cells = left[:, bands, cols]                                              # [L, nb, w]
    here = x[:, bands, cols][cells]
    places = shortlist(cost, valid, bank, hole.width, rng, size=4 * SHORTLIST)
    distinct, seen = [], {here.astype(np.int64).tobytes()}   # a patch giving the hole back, or one already listed, is no new version
    for p in places:
        key = bank.codes[:, bands, p:p + hole.width][cells].astype(np.int64).tobytes()
        if key not in seen:
            seen.add(key)
            distinct.append(p)
    places = np.array(distinct[:SHORTLIST] or places[:1], dtype=np.int64)
    bonus = None   # the network weighs in on the first piece, which picks each version's source (benchmarks/README.md)
    if score is not None and RERANK and places.size > 1 and drawn is not None:
        bonus = _scored(bank, x, left, hole, places, score)
    ranked = choose(cost, places, temperature, rng, bonus)
    if drawn is not None:
        drawn[hole] = ranked
    return _paste(bank, x, left, hole, int(ranked[rank % ranked.size]))


def _paste(bank: CodeBank, x: np.ndarray, left: np.ndarray, hole: Hole, p: int) -> Origin:
    """Copy the bank's place p into the piece's cells still to fill (in place); where it came from."""
    cols = slice(hole.c0, hole.c0 + hole.width)
    bands = slice(hole.b0, hole.b1 + 1)
    cells = left[:, bands, cols]
    patch = bank.codes[:, bands, p:p + hole.width]
    region = x[:, bands, cols]
    region[cells] = patch[cells]
    left[:, bands, cols] = False
    f = int(np.searchsorted(bank.starts, p, side="right") - 1)
    return Origin(bank.names[f], p - int(bank.starts[f]), hole.width, f)


def _piece_cells(left: np.ndarray, hole: Hole) -> np.ndarray:
    """bool [L, B, T]: the cells this piece fills."""
    out = np.zeros_like(left)
    sl = (slice(None), slice(hole.b0, hole.b1 + 1), slice(hole.c0, hole.c0 + hole.width))
    out[sl] = left[sl]
    return out


def _scored(bank: CodeBank, x: np.ndarray, left: np.ndarray, hole: Hole, places: np.ndarray, score: Scorer
            ) -> np.ndarray:
    """The network's say on each shortlisted patch: `score` of x with it pasted into the piece's cells, in a window
    of SCORE_MARGIN columns either side; the cells still to fill after this piece are hidden from it too."""
    a, b = max(0, hole.c0 - SCORE_MARGIN), min(x.shape[2], hole.c0 + hole.width + SCORE_MARGIN)
    cells = _piece_cells(left, hole)
    piece = cells[:, hole.b0:hole.b1 + 1, hole.c0:hole.c0 + hole.width]
    out = np.repeat(x[None, :, :, a:b], places.size, axis=0)
    for n, p in enumerate(places):
        view = out[n, :, hole.b0:hole.b1 + 1, hole.c0 - a:hole.c0 - a + hole.width]
        view[piece] = bank.codes[:, hole.b0:hole.b1 + 1, p:p + hole.width][piece]
    return score(out, cells[:, :, a:b], left[:, :, a:b])


def _merge(origins: list[Origin]) -> list[Origin]:
    """Consecutive pieces copied from one run of one file, as one origin."""
    out: list[Origin] = []
    for o in origins:
        if out and out[-1].file == o.file and out[-1].column + out[-1].columns == o.column:
            out[-1] = Origin(o.name, out[-1].column, out[-1].columns + o.columns, o.file)
        else:
            out.append(o)
    return out


def describe_origins(origins: list[Origin], seconds_per_column: float, most: int = 2) -> str:
    """"from kick_03.wav 1.2-1.9 s" (and the next ones; "and N more" past `most`)."""
    if not origins:
        return ""
    parts = [f"{o.name} {o.column * seconds_per_column:.1f}–{(o.column + o.columns) * seconds_per_column:.1f} s"
             for o in origins[:most]]
    more = f" and {len(origins) - most} more" if len(origins) > most else ""
    return "from " + ", ".join(parts) + more

