"""Heatmap colours by codebook vector: similar codes look alike, and the colours are stable for a model."""

from __future__ import annotations

import numpy as np

from distill_studio import handlers
from distill_studio.heatmap import palette, sound_palette


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def test_codes_with_near_vectors_get_near_colours_and_far_ones_far():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32)) * 3
    vectors = np.concatenate([c + 0.05 * rng.normal(size=(8, 32)) for c in centres])   # 4 families of 8 codes
    colours = np.array([_rgb(c) for c in sound_palette(vectors)])
    within = np.mean([np.linalg.norm(colours[i] - colours[j]) for f in range(4)
                      for i in range(8 * f, 8 * f + 8) for j in range(8 * f, 8 * f + 8) if i < j])
    between = np.mean([np.linalg.norm(colours[i] - colours[j]) for i in range(32) for j in range(32)
                       if i // 8 != j // 8])
    assert within < 0.25 * between
    # the index palette ignores what the codes mean: same families look no more alike than others
    idx = np.array([_rgb(c) for c in palette(32)])
    idx_within = np.mean([np.linalg.norm(idx[i] - idx[j]) for f in range(4)
                          for i in range(8 * f, 8 * f + 8) for j in range(8 * f, 8 * f + 8) if i < j])
    assert idx_within > 0.5 * between


def test_colours_are_stable_and_the_toggle_switches_them(session):
    assert sound_palette(session.codec.codebooks[1]) == sound_palette(session.codec.codebooks[1].copy())
    s, view = handlers.set_colours(session, "sound-alike")
    sound = view.heat_a[1]
    s, view = handlers.set_colours(s, "code index")
    index = view.heat_a[1]
    assert sound != index and 'data-k="' in sound and 'data-k="' in index   # hover still shows the code number
    k = int(s.grid.codes[1, 0, 0])
    assert palette(s.codec.codebook_size)[k] in index
    assert handlers.code_colours(s.codec)[1][k] in sound
