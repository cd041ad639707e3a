"""Which part of a long clip the Edit tab shows: the viewport (columns), its zoom and scroll, and the overview strip.

A 30-minute recording has ~9700 code columns; the page never holds them all. The heatmaps, the
spectrogram and the players show the viewport only (at most MAX_VIEW_SECONDS), while the overview
strip (a waveform thumbnail of the whole clip, with edited places marked) carries a draggable box
that moves it. Clips no longer than the viewport show whole, exactly as before.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from distill import CodeGrid

from .heatmap import png_data_uri

VIEW_SECONDS = 30.0      # default viewport: a clip up to this long shows whole
MIN_VIEW_SECONDS = 5.0   # zoomed in furthest (~27 columns)
MAX_VIEW_SECONDS = 60.0  # zoomed out furthest: ~320 columns x bands x levels cells in the page, as before long clips
OVERVIEW_BINS = 1000     # pixels across the overview strip
OVERVIEW_PX = 40         # its height
SCROLL_SHARE = 0.8       # "Later" / "Earlier" move by this share of the viewport, so a little stays in view


@dataclass(frozen=True)
class Viewport:
    """Columns c0..c1-1 of a clip's grid are shown (c1 > c0)."""

    c0: int
    c1: int

    @property
    def width(self) -> int:
        return self.c1 - self.c0

    def covers(self, num_columns: int) -> bool:
        """The whole clip is in view (no overview strip needed)."""
        return self.c0 == 0 and self.c1 >= num_columns

    def samples(self, grid: CodeGrid) -> tuple[int, int]:
        """(start, stop) samples at the model rate that the players play for this viewport."""
        return grid.column_samples(self.c0, self.c1)

    def seconds(self, grid: CodeGrid) -> tuple[float, float]:
        a, b = self.samples(grid)
        return a / grid.sample_rate, b / grid.sample_rate


def columns_for(seconds: float, seconds_per_column: float) -> int:
    """Whole columns in `seconds` of view (at least one)."""
    return max(1, int(round(seconds / seconds_per_column)))


def clamp_seconds(seconds: float) -> float:
    return float(min(MAX_VIEW_SECONDS, max(MIN_VIEW_SECONDS, seconds)))


def initial(grid: CodeGrid, seconds: float = VIEW_SECONDS) -> Viewport:
    """The viewport a newly opened clip starts with: its beginning, `seconds` wide (the whole clip if shorter)."""
    return Viewport(0, min(grid.num_columns, columns_for(clamp_seconds(seconds), grid.seconds_per_column)))


def moved(view: Viewport, c0: int, num_columns: int) -> Viewport:
    """The same width starting at column c0, kept inside the clip."""
    width = min(view.width, num_columns)
    c0 = int(min(max(0, c0), num_columns - width))
    return Viewport(c0, c0 + width)


def centred(view: Viewport, column: float, num_columns: int) -> Viewport:
    """The same width centred on `column` (where the overview was clicked or its box dropped)."""
    return moved(view, int(round(column - view.width / 2)), num_columns)


def scrolled(view: Viewport, direction: int, num_columns: int) -> Viewport:
    """One step later (+1) or earlier (-1): SCROLL_SHARE of the viewport's width."""
    step = max(1, int(round(view.width * SCROLL_SHARE)))
    return moved(view, view.c0 + int(np.sign(direction)) * step, num_columns)


def resized(view: Viewport, seconds: float, grid: CodeGrid) -> Viewport:
    """The viewport `seconds` wide (clamped to MIN..MAX_VIEW_SECONDS), around the same centre."""
    width = min(grid.num_columns, columns_for(clamp_seconds(seconds), grid.seconds_per_column))
    centre = (view.c0 + view.c1) / 2
    return moved(Viewport(view.c0, view.c0 + width), int(round(centre - width / 2)), grid.num_columns)


def containing(view: Viewport, c0: int, c1: int, num_columns: int) -> Viewport:
    """`view` if columns c0..c1-1 start inside it, else the same width moved so they do (an edit landed elsewhere)."""
    if view.c0 <= c0 < view.c1:
        return view
    return moved(view, c0 - view.width // 8, num_columns)


# ---------------------------------------------------------------------- overview strip
def envelope(wave: np.ndarray, bins: int = OVERVIEW_BINS) -> np.ndarray:
    """Peak level of each of `bins` equal stretches of the clip -> float32 [bins] (0 where past its end)."""
    x = np.abs(np.asarray(wave, dtype=np.float32))
    if x.size == 0:
        return np.zeros(bins, np.float32)
    per = -(-x.size // bins)
    x = np.pad(x, (0, per * bins - x.size))
    return x.reshape(bins, per).max(axis=1)


def overview_rgb(peaks: np.ndarray, edited: np.ndarray | None = None) -> np.ndarray:
    """Waveform thumbnail: uint8 RGB [OVERVIEW_PX, bins]; bars of peak height (sqrt-scaled so quiet parts
    show), edited stretches in orange along the bottom."""
    bins = peaks.shape[0]
    top = float(peaks.max()) if peaks.size and peaks.max() > 0 else 1.0
    h = np.sqrt(np.clip(peaks / top, 0, 1)) * (OVERVIEW_PX / 2 - 2)
    y = np.abs(np.arange(OVERVIEW_PX) - (OVERVIEW_PX - 1) / 2)[:, None]        # distance from the middle row
    rgb = np.zeros((OVERVIEW_PX, bins, 3), np.uint8)
    rgb[...] = (32, 36, 44)
    rgb[y <= np.maximum(h, 0.5)[None, :]] = (120, 170, 230)
    if edited is not None and edited.any():
        rgb[-4:, edited] = (255, 150, 40)
    return rgb


def edited_bins(changed_columns: np.ndarray, bins: int = OVERVIEW_BINS) -> np.ndarray:
    """bool [columns] (a column holds an edit) -> bool [bins]: the overview pixels showing an edited column."""
    n = changed_columns.shape[0]
    cols = np.flatnonzero(changed_columns)
    marks = np.zeros(bins + 1, dtype=np.int64)
    if cols.size:
        np.add.at(marks, cols * bins // n, 1)                        # first pixel of each edited column
        np.add.at(marks, ((cols + 1) * bins - 1) // n + 1, -1)       # one past its last pixel
    return np.cumsum(marks)[:bins] > 0


OVERVIEW_CSS = """
.ov { font: 12px/1.3 var(--font, sans-serif); user-select: none; margin: 2px 0 4px 0; }
.ov-strip { position: relative; height: 40px; cursor: pointer; touch-action: none; }
.ov-strip img { width: 100%; height: 40px; display: block; image-rendering: pixelated; }
.ov-box { position: absolute; top: 0; height: 100%; border: 2px solid #fff; box-shadow: 0 0 0 1px #000;
          background: rgba(255,255,255,.15); cursor: grab; box-sizing: border-box; }
.ov-head { color: var(--body-text-color-subdued, #888); font-variant-numeric: tabular-nums; }
"""

# Click anywhere on the strip to centre the viewport there, or drag its box; the page asks the
# server for the new viewport only when the pointer is released.
OVERVIEW_JS = r"""
let drag = null;
const place = (root, ev) => {
  const strip = root.querySelector('.ov-strip'), box = root.querySelector('.ov-box');
  const rect = strip.getBoundingClientRect(), w = +root.dataset.width;
  let centre = (ev.clientX - rect.left) / rect.width;
  centre = Math.min(1 - w / 2, Math.max(w / 2, centre));
  box.style.left = (100 * (centre - w / 2)) + '%';
  return centre;
};
element.addEventListener('pointerdown', (ev) => {
  const root = ev.target.closest && ev.target.closest('.ov');
  if (!root || !ev.target.closest('.ov-strip') || ev.button !== 0) return;
  ev.preventDefault();
  drag = {root: root, centre: place(root, ev)};
});
element.addEventListener('pointermove', (ev) => { if (drag) drag.centre = place(drag.root, ev); });
document.addEventListener('pointerup', () => {
  if (!drag) return;
  const d = drag;
  drag = null;
  trigger('select', {value: d.centre, grid: d.root.dataset.grid});
});
"""


def overview_html(grid_id: str, peaks: np.ndarray, view: Viewport, grid: CodeGrid,
                  edited: np.ndarray | None = None) -> str:
    """The overview strip of a clip with its viewport box; hidden (None) when the whole clip is in view."""
    n = grid.num_columns
    if view.covers(n):
        return ""
    a, b = view.seconds(grid)
    left, width = view.c0 / n, view.width / n
    head = (f"{html.escape(grid_id)}: showing {clock(a)}–{clock(b)} of {clock(grid.duration_s)} "
            "· drag the box or click the strip to move")
    return (f'<div class="ov" data-grid="{grid_id}" data-width="{width:.6f}"><div class="ov-head">{head}</div>'
            f'<div class="ov-strip"><img alt="{html.escape(grid_id)} overview" src="{png_data_uri(overview_rgb(peaks, edited))}">'
            f'<div class="ov-box" style="left:{100 * left:.4f}%;width:{100 * width:.4f}%"></div></div></div>')


def clock(seconds: float) -> str:
    """1:05.2 / 12:00.0 / 4.25 s: how a time in a long recording reads."""
    if seconds < 60:
        return f"{seconds:.2f} s"
    m, sec = divmod(seconds, 60.0)
    return f"{int(m)}:{sec:04.1f}"
