"""Continuous batching for the attacks: a pool of working rows that stays full until its queue drains.

An attack's samples need very different numbers of steps (of 512 inputs, DeepFool flipped 273
after one step and one after 32), so a batch stepped until its slowest sample finishes spends
most steps on a handful of rows, and on a GPU such steps wait on kernel launches rather than
arithmetic. The pool keeps ``width`` rows working instead: when a row finishes, the next queued
sample takes its place, so every step runs on a full batch until the queue drains, and each
step has one shape, which one CUDA graph per step function can replay (graphs.py).

The queue is a stream of chunks (an audit's, stored one by one so that a crash loses little),
each pulled only when the pool needs its first sample: the pool carries on from one chunk into
the next and drains once, at the end of the stream, not at the end of every chunk. A chunk is
done when its last sample has left the pool; chunks are handed back as they are done, which
need not be in order.

A row is the state of one sample's run (its iterate, step count, ...), as tensors that share
their first dimension, and ``sample``, the sample's number in the stream. Rows never interact:
an eval-mode model treats them independently, so each sample's result is the one a run on that
sample alone gives, up to how batched kernels round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

Rows = dict[str, torch.Tensor]
# A chunk of the stream: its inputs, labels and dataset indices
Chunk = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Progress = Callable[[int], None]   # told of each n samples measured, as they are


@dataclass
class OpenChunk:
    """A chunk whose samples have not all left the pool: its position in the stream, the number of its
    first sample, its inputs and labels, the results its samples left so far and how many are still out."""

    number: int
    start: int
    x: torch.Tensor
    y: torch.Tensor
    results: Rows
    left: int


class Pool:
    """At most ``width`` rows, admitted in order from the samples of ``chunks`` by ``admit(x, y)``, which
    returns the new rows' state (without ``sample``, which the pool adds). ``blank(x, y)`` gives a
    pulled chunk's results before any of its samples has left the pool: tensors with one row per sample.
    ``progress(n)``, if given, hears of every ``n`` samples whose results are recorded (an audit's bar)."""

    def __init__(self, width: int, chunks: Iterable[Chunk], admit: Callable[[torch.Tensor, torch.Tensor], Rows],
                 blank: Callable[[torch.Tensor, torch.Tensor], Rows], progress: Progress | None = None):
        if width < 1:
            raise ValueError(f"a pool needs at least one row, not {width}")
        self.width, self.chunks, self.admit, self.blank = width, enumerate(chunks), admit, blank
        self.progress = progress
        self.open: list[OpenChunk] = []
        self.queued = self.pulled = 0   # samples admitted and pulled so far: the queue is samples queued .. pulled − 1
        self.drained = False            # every chunk pulled
        self.rows: Rows = {}

    def __len__(self) -> int:
        return len(self.rows["sample"]) if self.rows else 0

    def fill(self) -> Rows:
        """Admit queued samples into the free rows, pulling chunks as they are needed; returns the admitted
        rows alone (empty when none)."""
        free = self.width - len(self)
        while self.pulled < self.queued + free and not self.drained:
            self._pull()
        take = min(free, self.pulled - self.queued)
        if take <= 0:
            return {}
        first, last = self.queued, self.queued + take
        parts = [(chunk.x[max(first - chunk.start, 0):last - chunk.start],
                  chunk.y[max(first - chunk.start, 0):last - chunk.start])
                 for chunk in self.open if chunk.start < last and first < chunk.start + len(chunk.x)]
        x, y = (torch.cat(part) if len(part) > 1 else part[0] for part in zip(*parts))
        self.queued = last
        new = {"sample": torch.arange(first, last, device=x.device), **self.admit(x, y)}
        self.rows = new if not self.rows else {key: torch.cat([self.rows[key], new[key]]) for key in self.rows}
        return new

    def _pull(self) -> None:
        number_and_chunk = next(self.chunks, None)
        if number_and_chunk is None:
            self.drained = True
            return
        number, (x, y, _) = number_and_chunk
        self.open.append(OpenChunk(number, self.pulled, x, y, self.blank(x, y), len(x)))
        self.pulled += len(x)

    def update(self, **state: torch.Tensor) -> None:
        """New values of some of every row's state, as a step returns them."""
        self.rows.update(state)

    def leave(self, done: torch.Tensor) -> Rows:
        """The rows marked ``done`` leave the pool; returns their state (empty when none did). The others
        keep their order. One host synchronisation when none leaves, two when some do."""
        leaving = done.nonzero()[:, 0]
        if len(leaving) == 0:
            return {}
        gone = {key: value[leaving] for key, value in self.rows.items()}
        staying = (~done).nonzero()[:, 0]
        self.rows = {key: value[staying] for key, value in self.rows.items()} if len(staying) else {}
        return gone

    def record(self, sample: torch.Tensor, **results: torch.Tensor) -> None:
        """The results of the samples numbered ``sample``, which have left the pool, into their chunks'."""
        for chunk in self.open:
            inside = (sample >= chunk.start) & (sample < chunk.start + len(chunk.x))
            mine = sample[inside] - chunk.start
            for key, value in results.items():
                chunk.results[key][mine] = value[inside]
            chunk.left -= len(mine)
        if self.progress is not None:
            self.progress(len(sample))

    def done(self) -> Iterator[OpenChunk]:
        """The chunks whose samples have all left the pool, taken out of it; once the stream is drained and
        the pool empty, every chunk pulled (one without samples, too)."""
        finished = [chunk for chunk in self.open if chunk.left == 0]
        self.open = [chunk for chunk in self.open if chunk.left > 0]
        return iter(finished)
