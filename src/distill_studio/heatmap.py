"""The editable code-grid heatmap (a gr.HTML with js_on_load + trigger) and the mel / usage pictures above and beside it.

Everything visual is rendered here as an HTML string from numpy data, so it can be tested
without a browser; the JS only paints the drag rectangle and reports the selection back.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

GRID_PX = 112  # height of one level's heatmap: 8 bands of 14 px, 16 of 7 px (at least MIN_ROW_PX a row)
MIN_ROW_PX = 5

HEATMAP_CSS = """
.hm { font: 12px/1.3 var(--font, sans-serif); margin: 2px 0 6px 0; user-select: none; }
.hm-head { display: flex; gap: 10px; align-items: baseline; height: 18px; }
.hm-head b { min-width: 70px; }
.hm-info { color: var(--body-text-color-subdued, #888); font-variant-numeric: tabular-nums; }
.hm-body { position: relative; display: grid; width: 100%; cursor: crosshair; touch-action: none;
           outline: 1px solid rgba(128,128,128,.35); }
.hm-c { height: var(--row-h, 14px); min-width: 0; }
.hm-c:hover { outline: 1px solid #fff; outline-offset: -1px; }
.hm-sel { position: absolute; pointer-events: none; border: 2px solid #fff; box-shadow: 0 0 0 2px #000, inset 0 0 0 1px #000;
          background: rgba(255,255,255,.18); display: none; }
.hm-sel.on { display: block; }
.hm-empty { color: var(--body-text-color-subdued, #888); padding: 6px 0; }
.mel img { width: 100%; height: 110px; image-rendering: pixelated; display: block; }
.mel .cap { font: 12px var(--font, sans-serif); color: var(--body-text-color-subdued, #888); margin: 2px 0; }
.ruler { position: relative; height: 14px; font: 10px var(--font, sans-serif); color: var(--body-text-color-subdued, #888); }
.ruler span { position: absolute; top: 0; border-left: 1px solid currentColor; padding-left: 2px; line-height: 14px; }
.usage img { width: 100%; height: 28px; image-rendering: pixelated; display: block; }
.usage .cap { font: 12px var(--font, sans-serif); margin: 4px 0 1px 0; }
"""

# Runs once per heatmap; listeners are delegated on `element` so in-place re-renders keep them.
HEATMAP_JS = r"""
let drag = null;
const info = (root, cell) => {
  const spc = +root.dataset.spc, c = +cell.dataset.c, r = +cell.dataset.r;
  const out = root.querySelector('.hm-info');
  const hz = (root.dataset.hz || '').split('|')[r];
  if (out) out.textContent = `t ${(c * spc).toFixed(2)}–${((c + 1) * spc).toFixed(2)} s · band ${r}${hz ? ' (' + hz + ')' : ''} · code ${cell.dataset.k}`;
};
const box = (a, b) => [Math.min(a.r, b.r), Math.max(a.r, b.r), Math.min(a.c, b.c), Math.max(a.c, b.c)];
const paint = (root, bx) => {
  const body = root.querySelector('.hm-body');
  let sel = body.querySelector('.hm-sel');
  if (!sel) { sel = document.createElement('div'); sel.className = 'hm-sel'; body.appendChild(sel); }
  const rows = +root.dataset.rows, cols = +root.dataset.cols, c0 = +(root.dataset.c0 || 0);
  sel.style.left = (100 * (bx[2] - c0) / cols) + '%';
  sel.style.width = (100 * (bx[3] - bx[2] + 1) / cols) + '%';
  sel.style.top = (100 * (rows - 1 - bx[1]) / rows) + '%';
  sel.style.height = (100 * (bx[1] - bx[0] + 1) / rows) + '%';
  sel.classList.add('on');
};
const cellOf = (ev) => {
  const el = document.elementFromPoint(ev.clientX, ev.clientY);
  return el && el.closest ? el.closest('.hm-c') : null;
};
element.addEventListener('pointerdown', (ev) => {
  const cell = ev.target.closest && ev.target.closest('.hm-c');
  if (!cell || ev.button !== 0) return;
  ev.preventDefault();
  const p = {r: +cell.dataset.r, c: +cell.dataset.c};
  drag = {root: cell.closest('.hm'), start: p, end: p, shift: ev.shiftKey};
  paint(drag.root, box(p, p));
});
element.addEventListener('pointermove', (ev) => {
  const cell = cellOf(ev);
  if (cell && element.contains(cell)) info(cell.closest('.hm'), cell);
  if (!drag || !cell || !drag.root.contains(cell)) return;
  drag.end = {r: +cell.dataset.r, c: +cell.dataset.c};
  paint(drag.root, box(drag.start, drag.end));
});
document.addEventListener('pointerup', () => {
  if (!drag) return;
  const bx = box(drag.start, drag.end), root = drag.root, shift = drag.shift;
  drag = null;
  const level = +root.dataset.level;
  trigger('select', {index: [[bx[0], bx[2]], [bx[1], bx[3]]], value: level, shift: shift, grid: root.dataset.grid});
  if (bx[0] === bx[1] && bx[2] === bx[3] && !shift) {
    const cell = root.querySelector(`.hm-c[data-r="${bx[0]}"][data-c="${bx[2]}"]`);
    trigger('cell_click', {r: bx[0], c: bx[2], level: level, grid: root.dataset.grid, code: cell ? +cell.dataset.k : -1});
  }
});
"""


@lru_cache(maxsize=8)
def palette(codebook_size: int) -> tuple[str, ...]:
    """One colour per code index; neighbours in index get distant hues (golden-ratio steps) so edits stand out."""
    out = []
    for k in range(codebook_size):
        hue = (k * 0.6180339887) % 1.0
        light = (0.42, 0.56, 0.70)[k % 3]
        sat = (0.75, 0.55)[(k // 3) % 2]
        r, g, b = colorsys.hls_to_rgb(hue, light, sat)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return tuple(out)


def sound_palette(vectors: np.ndarray) -> tuple[str, ...]:
    """One colour per code from its codebook vector [K, D]: codes that sound alike look alike.

    The vectors' three principal directions become CIELAB lightness and the two colour axes (each
    scaled by its 2nd-98th percentile range), so nearby vectors get nearby colours and a repeated beat
    or a held note shows as a repeated or steady colour. Signs are fixed (largest loading positive), so
    a model's colours never change between renders."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v - v.mean(0)
    _, _, vt = np.linalg.svd(v, full_matrices=False)
    comps = vt[:3] * np.sign(vt[:3][np.arange(min(3, len(vt))), np.abs(vt[:3]).argmax(1)])[:, None]
    x = v @ comps.T                                                            # [K, <=3]
    x = np.pad(x, ((0, 0), (0, 3 - x.shape[1])))
    lo, hi = np.percentile(x, 2, axis=0), np.percentile(x, 98, axis=0)
    u = np.clip((x - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)          # [K, 3] in 0..1
    lab = np.stack([38 + 47 * u[:, 0], 110 * (u[:, 1] - 0.5), 110 * (u[:, 2] - 0.5)], 1)
    return tuple(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in lab_to_srgb8(lab))


def lab_to_srgb8(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) [N, 3] -> 8-bit sRGB [N, 3] (out-of-gamut colours clipped)."""
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    fy = (L + 16) / 116
    f = np.stack([fy + a / 500, fy, fy - b / 200], 1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * np.array([0.95047, 1.0, 1.08883])
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    rgb = np.clip(xyz @ m.T, 0, 1)
    rgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * rgb ** (1 / 2.4) - 0.055)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(int)


def heatmap_html(codes: np.ndarray, *, level: int, name: str, grid_id: str, seconds_per_column: float,
                 codebook_size: int, selection: tuple[int, int, int, int] | None = None, note: str = "",
                 band_hz: Sequence[tuple[float, float]] | None = None,
                 colours: Sequence[str] | None = None, col0: int = 0) -> str:
    """One level's codes [bands, columns] as a grid of cells, top row = highest band.

    Args:
        selection: (r0, r1, c0, c1) inclusive, in the clip's columns, drawn as a rectangle (cut to what is
            shown); None for no selection.
        band_hz: (low, high) Hz of each band, shown on hover (a row number alone means little).
        colours: one per code (sound_palette); default: index colours (palette).
        col0: the clip column of codes[:, 0] (a viewport of a long clip): cells, hover times and the
            selection the page reports are in the clip's own columns.
    """
    bands, cols = codes.shape
    colours = colours or palette(codebook_size)
    cells = []
    for r in range(bands - 1, -1, -1):
        row = codes[r]
        cells.extend(f'<div class="hm-c" data-r="{r}" data-c="{col0 + c}" data-k="{int(k)}" style="background:{colours[int(k) % codebook_size]}"></div>'
                     for c, k in enumerate(row))
    sel = ""
    if selection is not None:
        r0, r1, c0, c1 = selection
        c0, c1 = max(c0, col0) - col0, min(c1, col0 + cols - 1) - col0
        if c1 >= c0:
            sel = (f'<div class="hm-sel on" style="left:{100 * c0 / cols}%;width:{100 * (c1 - c0 + 1) / cols}%;'
                   f'top:{100 * (bands - 1 - r1) / bands}%;height:{100 * (r1 - r0 + 1) / bands}%"></div>')
    hz = f' data-hz="{html.escape("|".join(hz_label(lo, hi) for lo, hi in band_hz))}"' if band_hz else ""
    return (f'<div class="hm" data-grid="{grid_id}" data-level="{level}" data-rows="{bands}" data-cols="{cols}" '
            f'data-c0="{col0}" data-spc="{seconds_per_column:.6f}"{hz}><div class="hm-head"><b>{html.escape(name)}</b>'
            f'<span class="hm-info">{html.escape(note) or "hover a cell; drag to select, shift-drag adds this level"}</span></div>'
            f'<div class="hm-body" style="grid-template-columns:repeat({cols},1fr);--row-h:{row_px(bands)}px">'
            f'{"".join(cells)}{sel}</div></div>')


def hz_label(lo: float, hi: float) -> str:
    """'185–404 Hz', '1.0–1.4 kHz', '404 Hz–1.0 kHz': how a musician reads a band."""
    def one(f: float) -> str:
        return f"{f / 1000:.1f} kHz" if f >= 1000 else f"{f:.0f} Hz"
    a, b = one(lo), one(hi)
    return f"{a.rsplit(' ', 1)[0]}–{b}" if a.split(" ")[1] == b.split(" ")[1] else f"{a}–{b}"


def row_px(bands: int) -> int:
    """Row height that keeps a level's heatmap about GRID_PX tall whatever the model's band count."""
    return max(MIN_ROW_PX, GRID_PX // max(1, bands))


def empty_html(message: str) -> str:
    return f'<div class="hm-empty">{html.escape(message)}</div>'


_STOPS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                   [250, 193, 39], [252, 255, 164]], dtype=np.float64)  # inferno-like


@lru_cache(maxsize=1)
def _colour_table() -> np.ndarray:
    """The colormap sampled at 1024 levels: uint8 [1024, 3] (a lookup is ~10x faster than interpolating per pixel)."""
    pos = np.linspace(0.0, 1.0, 1024) * (len(_STOPS) - 1)
    i = np.minimum(pos.astype(int), len(_STOPS) - 2)
    f = (pos - i)[:, None]
    return (_STOPS[i] * (1 - f) + _STOPS[i + 1] * f).astype(np.uint8)


def colormap(x: np.ndarray) -> np.ndarray:
    """[...] values in 0..1 -> uint8 RGB [..., 3]."""
    table = _colour_table()
    idx = (np.clip(np.nan_to_num(np.asarray(x, dtype=np.float32)), 0, 1) * (len(table) - 1) + 0.5).astype(np.intp)
    return table[idx]


MAX_IMAGE_WIDTH = 1600  # a minute of audio is ~5600 frames: more pixels than any screen shows, and slow to send


def png_data_uri(rgb: np.ndarray, max_width: int = MAX_IMAGE_WIDTH) -> str:
    image = Image.fromarray(rgb)
    if image.width > max_width:
        image = image.resize((max_width, image.height), Image.Resampling.BOX)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=1)  # ~5x faster to encode than the default 6
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def mel_rgb(logmel: np.ndarray, frames: int, vmax: float | None = None) -> np.ndarray:
    """log-mel [n_mels, F] -> RGB image [n_mels, frames] (low mels at the bottom), padded/cut to `frames`."""
    m = np.asarray(logmel, dtype=np.float32)
    out = np.zeros((m.shape[0], frames), np.float32)
    n = min(frames, m.shape[1])
    out[:, :n] = m[:, :n]
    top = vmax if vmax is not None else max(1e-6, float(out.max()))
    if frames > 2 * MAX_IMAGE_WIDTH:   # average groups of frames first: the picture is shrunk to this width anyway
        k = frames // MAX_IMAGE_WIDTH
        out = out[:, :frames // k * k].reshape(out.shape[0], -1, k).mean(axis=2)
    return colormap(out[::-1] / top)


def ruler_html(frames: int, seconds_per_frame: float, t0: float = 0.0) -> str:
    """Time marks along the shared time axis, which starts at `t0` seconds (a viewport of a long clip):
    every 0.5 s for short spans, more sparsely for long ones, as m:ss past a minute."""
    total = frames * seconds_per_frame
    if total <= 0:
        return ""
    step = next((s for s in (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600) if total / s <= 8), 1200)
    first = np.ceil(t0 / step - 1e-9) * step
    marks = "".join(f'<span style="left:{100 * (t - t0) / total:.3f}%">{_mark(t)}</span>'
                    for t in np.arange(first, t0 + total, step))
    return f'<div class="ruler">{marks}</div>'


def _mark(t: float) -> str:
    if t < 60:
        return f"{t:g}s"
    m, sec = divmod(int(round(t)), 60)
    return f"{m}:{sec:02d}"


def mel_html(panels: list[tuple[str, np.ndarray]], frames: int, seconds_per_frame: float = 0.0,
             t0: float = 0.0) -> str:
    """Stacked mel pictures (caption, log-mel) sharing one colour scale and the heatmaps' time axis.

    `frames` is columns x 16, so the picture's right edge is the heatmaps' right edge; `t0` is the
    time of its left edge (the viewport's start).
    """
    if not panels:
        return empty_html("Open a clip to see its spectrogram and codes.")
    vmax = max(1e-6, max(float(np.max(m)) for _, m in panels))
    parts = [f'<div class="cap">{html.escape(cap)}</div><img alt="{html.escape(cap)}" src="{png_data_uri(mel_rgb(m, frames, vmax))}">'
             for cap, m in panels]
    return '<div class="mel">' + "".join(parts) + ruler_html(frames, seconds_per_frame, t0) + "</div>"


def usage_html(usage: list, level_names: tuple[str, ...]) -> str:
    """Training-set code counts per level as one strip each (code index left to right, brightness = log count)."""
    if not usage:
        return empty_html("This model file carries no usage statistics.")
    parts = []
    for name, counts in zip(level_names, usage, strict=False):
        c = np.asarray(counts, dtype=np.float64)
        used = int((c > 0).sum())
        strip = np.log1p(c) / max(1e-9, float(np.log1p(c).max()))
        rgb = np.repeat(colormap(strip)[None], 4, axis=0)
        parts.append(f'<div class="cap"><b>{html.escape(name)}</b>: {used} of {len(c)} codes used on the training set</div>'
                     f'<img alt="{html.escape(name)} usage" src="{png_data_uri(rgb)}">')
    return '<div class="usage">' + "".join(parts) + "</div>"
