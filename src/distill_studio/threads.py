"""Torch thread counts for the studio's work, chosen by measurement (benchmarks/studio_long.py, figures in
benchmarks/README.md).

Edit-time work (an edit's render of the viewport, pictures, a viewport move) is small: on a two-core machine
that is busy (another tab training, another user's edit) two threads made it 5-8x slower than one, because
the threads wait for a core each step; on an idle machine one thread lost little. Training and encoding a
clip that is being opened are long and dense, so they keep every core. Torch's setting belongs to the calling thread (and is inherited by threads
started after it), so each piece of work sets its own and edit handlers restore the previous value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")


def _env_threads(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


EDIT_THREADS = _env_threads("DISTILL_EDIT_THREADS", 1)
# training and encoding whole clips; the process's default: all cores
TRAIN_THREADS = _env_threads("DISTILL_TRAIN_THREADS", torch.get_num_threads())


@contextmanager
def using(n: int) -> Iterator[None]:
    """Run the block with `n` torch threads in this thread, then put the previous count back."""
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def each_step(items: Iterator[T], n: int) -> Iterator[T]:
    """Drive a generator with `n` torch threads on every step (the server may run each step in another worker
    thread, whose own setting an edit may have lowered)."""
    done = object()
    while True:
        with using(n):
            item = next(items, done)
        if item is done:
            return
        yield item
