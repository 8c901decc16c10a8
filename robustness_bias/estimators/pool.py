"""Continuous batching for the attacks: a pool of working rows that stays full until its queue drains.

An attack's samples need very different numbers of steps (of 512 inputs, DeepFool flipped 273
after one step and one after 32), so a batch stepped until its slowest sample finishes spends
most steps on a handful of rows, and on a GPU such steps wait on kernel launches rather than
arithmetic. The pool keeps ``width`` rows working instead: when a row finishes, the next queued
sample takes its place, so every step runs on a full batch until the queue drains, and each
step has one shape, which one CUDA graph per step function can replay (graphs.py).

A row is the state of one sample's run (its iterate, step count, ...), as tensors that share
their first dimension, and ``sample``, the sample's position in the attack's inputs. Rows never
interact: an eval-mode model treats them independently, so each sample's result is the one a
run on that sample alone gives, up to how batched kernels round.
"""

from __future__ import annotations

from typing import Callable

import torch

Rows = dict[str, torch.Tensor]


class Pool:
    """At most ``width`` rows, admitted in order from the ``count`` queued samples by ``admit(samples)``,
    which returns the new rows' state (without ``sample``, which the pool adds)."""

    def __init__(self, width: int, count: int, admit: Callable[[torch.Tensor], Rows], device: torch.device):
        if width < 1:
            raise ValueError(f"a pool needs at least one row, not {width}")
        self.width, self.count, self.admit, self.device = width, count, admit, device
        self.queued = 0   # samples admitted so far: the queue is samples queued .. count − 1
        self.rows: Rows = {}

    def __len__(self) -> int:
        return len(self.rows["sample"]) if self.rows else 0

    def fill(self) -> Rows:
        """Admit queued samples into the free rows; returns the admitted rows alone (empty when none)."""
        take = min(self.width - len(self), self.count - self.queued)
        if take <= 0:
            return {}
        samples = torch.arange(self.queued, self.queued + take, device=self.device)
        self.queued += take
        new = {"sample": samples, **self.admit(samples)}
        self.rows = new if not self.rows else {key: torch.cat([self.rows[key], new[key]]) for key in self.rows}
        return new

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
