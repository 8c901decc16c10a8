"""An attack's step replayed from a CUDA graph: one launch instead of hundreds of operators.

Eager PyTorch spends several microseconds of host time on each operator, and an attack's step is a
forward and one or more backward passes of hundreds of operators each: on a fast GPU a step of a
small model's batch takes far longer to launch than to compute, and the GPU mostly waits for the
host (docs/benchmarks.md has the measurement). A graph captured once replays the whole step with
one launch.

A graph has fixed shapes, and the attacks keep a pool of working rows full (pool.py), so every
step but those of the pool's last rows, once its queue has drained, has the pool's width. Those
are padded to it: one graph per step function serves them all. Padding rows hold whatever earlier
rows left there and their results are dropped; an eval-mode model treats rows independently, so
they change nothing else.
"""

from __future__ import annotations

import logging
from typing import Callable, Generic, TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)
Tensors = tuple[torch.Tensor, ...]
StepFunctions = TypeVar("StepFunctions")   # what an attack builds per model: its step functions and graphs


class StepCache(Generic[StepFunctions]):
    """An attack's steps over one model (its step functions and their :class:`GraphedSteps`), built by
    ``build(model)`` on the first call with that model and kept for later calls with it."""

    def __init__(self, build: Callable[[nn.Module], StepFunctions]):
        self.build = build
        self.model: nn.Module | None = None
        self.current: StepFunctions | None = None

    def __call__(self, model: nn.Module) -> StepFunctions:
        if self.current is None or self.model is not model:
            self.model, self.current = model, self.build(model)
        return self.current

    def clear(self) -> None:
        """Drop the steps and their graphs, whose memory pools training (or a smaller batch) needs."""
        self.model = self.current = None


class GraphedSteps:
    """Step functions ``step(*batch, *shared)`` run eagerly, or on CUDA tensors with ``enabled`` from CUDA graphs.

    A ``step`` must be pure (it reads its arguments and returns new tensors, batch first), must not
    synchronise with the host, and may run autograd inside. ``batch`` tensors share their first
    dimension, the rows, at most ``width`` of them (the pool's width; by default their number), to
    which they are padded; ``shared`` tensors (a table of constants, say) are copied whole.
    There is one graph per step function, device, width and layout, so an audit's later calls
    replay those its first call captured; the audit releases them when it ends, for training to have
    the memory. Graphs capture the model's parameters by address: they follow in-place updates (an
    audit between training epochs), and another model needs other step functions.
    """

    def __init__(self, enabled: bool, name: str = "the attack"):
        self.enabled, self.name = enabled, name
        self.warned = False   # that graphs were asked for where none can be captured, once
        self.captured: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensors, Tensors]] = {}
        # One memory pool for all graphs: a graph's outputs are copied out right after its replay, so one
        # graph may reuse another's scratch memory, and the graphs share memory instead of each holding its own.
        self.pool = self.stream = None   # created with the first capture

    def __call__(self, step: Callable[..., Tensors], batch: Tensors, shared: Tensors = (),
                 width: int | None = None) -> Tensors:
        if not (self.enabled and capturable(batch[0])):
            if self.enabled and not self.warned:
                log.warning("%s: cuda_graphs=true has no effect on %s tensors; its steps run eagerly", self.name,
                            batch[0].device.type)
                self.warned = True
            return step(*batch, *shared)
        rows, device = len(batch[0]), batch[0].device
        size = max(rows, width or 0)
        key = (step, device, size, *((t.dtype, t.shape[1:], t.stride()[1:]) for t in batch),
               *((t.dtype, t.shape) for t in shared))
        with torch.cuda.device(device):   # the tensors' GPU, whichever is current
            if key not in self.captured:
                inputs = tuple(pad(t, size) for t in batch) + tuple(t.clone() for t in shared)
                self.captured[key] = self._capture(step, inputs)
            graph, inputs, outputs = self.captured[key]
            for buffer, tensor in zip(inputs, batch):
                buffer[:rows].copy_(tensor)
            for buffer, tensor in zip(inputs[len(batch):], shared):
                buffer.copy_(tensor)
            graph.replay()
            return tuple(out[:rows].clone() for out in outputs)   # the next replay may overwrite the graph's outputs

    def _capture(self, step: Callable[..., Tensors], inputs: Tensors) -> tuple[torch.cuda.CUDAGraph, Tensors, Tensors]:
        """Warm up on a side stream, then capture on that same stream: cuBLAS and cuDNN set up their
        per-stream workspaces in the warm-up, where allocating is allowed, and not mid-capture."""
        if self.pool is None:
            self.pool, self.stream = torch.cuda.graph_pool_handle(), torch.cuda.Stream()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            step(*inputs)
        torch.cuda.current_stream().wait_stream(self.stream)
        graph, current = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                outputs = step(*inputs)
        except torch.OutOfMemoryError:
            raise   # the audit halves the batch on it
        except RuntimeError as error:
            if "captur" not in str(error).lower():
                raise
            raise RuntimeError(f"capturing a CUDA graph of {self.name}'s step failed ({error}); a model that "
                               "waits for the host inside its forward pass (a .item(), a data-dependent branch) "
                               f"cannot be captured. Fix: estimator.{self.name}.cuda_graphs=false (in Python: "
                               "build the attack with cuda_graphs=False)") from error
        finally:
            torch.cuda.set_stream(current)   # a failed capture leaves its stream current otherwise
        return graph, inputs, outputs


def capturable(tensor: torch.Tensor) -> bool:
    """Whether a step over ``tensor`` can be captured: CUDA graphs need CUDA tensors."""
    return tensor.is_cuda


def pad(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """A copy of ``tensor`` with ``size`` ≥ 1 rows: its own, then repeats of its last (a row the step
    accepts). Indexing keeps the memory format, channels-last included."""
    return tensor[torch.arange(size, device=tensor.device).clamp_max(len(tensor) - 1)]
