"""DeepFool L2 (Moosavi-Dezfooli et al. 2016), batched, as parameterised in the paper's code.

Each step linearises the model around the current iterate and jumps to the nearest linearised
boundary among the candidate classes (the top-k of the clean logits). It is exact on affine
models: one step lands on the boundary, times (1 + overshoot).

Unlike foolbox, the gradients of all candidates come from one forward pass (foolbox runs one
forward and one backward pass per candidate), and samples run in a pool of working rows
(pool.py): a sample leaves it as soon as it flips and the next queued one takes its row, where
foolbox runs the whole batch until its slowest sample flips. A sample whose logits turn NaN or
infinite leaves too, as a ``nonfinite_logits`` failure: the others' steps do not depend on it.

Each iterate is first checked by a forward pass without gradients, and only the rows that go on
take the gradient pass: a row that flips is not charged the backward passes of its candidates,
at the price of repeating the forward pass of the rows that go on (the check's pass keeps no
graph). Most samples flip within a few steps, so this costs far less than the candidates'
backward passes would. With ``cuda_graphs`` on a GPU, the check and the step replay from one
CUDA graph each (graphs.py).
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import torch
from torch import nn

from ..config.estimators import DeepFoolConfig
from ..config.rules import check_values
from .base import DistanceResult, Passes, Pooled, failed, failure_codes, l2_norm, nonfinite_rows
from .graphs import GraphedSteps, StepCache
from .pool import Chunk, Pool, Progress, Rows
from .verdicts import full_precision

STABILITY = 1e-4  # added to each step's length, as in foolbox, so that steps never stall on the boundary




def candidate_directions(classes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """e_c − e_label for each candidate c of each row, (k − 1, B, C): the logits' directions whose
    gradients DeepFool needs. Scatters, not one_hot, which would check its indices on the host."""
    n, k = classes.shape
    directions = torch.zeros(n, k - 1, logits.shape[1], device=logits.device, dtype=logits.dtype)
    directions.scatter_(2, classes[:, 1:, None], 1.0)
    directions.scatter_(2, classes[:, :1, None].expand(n, k - 1, 1), -1.0)
    return directions.transpose(0, 1)


def candidate_gradients(logits: torch.Tensor, inputs: torch.Tensor, directions: torch.Tensor, mode: str,
                        model: nn.Module) -> tuple[torch.Tensor, str]:
    """Gradients ∇ₓ(directions[j] · logits) for every j, (J, B, *input), and the mode that gave them.

    ``loop`` runs one backward pass per direction over the graph of ``logits``; ``batched`` one
    vmapped backward pass over it; the loop measured the faster on a CPU and on a GPU alike
    (docs/benchmarks.md). ``replicated`` needs no graph: one forward and one backward pass over J copies of the inputs,
    J times the arithmetic of a forward pass for a tenth of the kernel launches, meant for steps
    whose few remaining samples leave a GPU waiting on launches (not yet measured on one). Where
    the model does not support vmap, ``batched`` falls back to ``loop`` on a fresh graph from
    ``model(inputs)`` (the failed pass may have freed the first) and returns ``loop``, for the
    caller to keep. Out of memory is no such failure: it is raised.
    """
    if mode == "replicated":
        copies = inputs.detach().repeat(len(directions), *[1] * (inputs.dim() - 1)).requires_grad_(True)
        grads, = torch.autograd.grad(model(copies), copies, directions.flatten(0, 1))
        return grads.view(len(directions), *inputs.shape), mode
    if mode == "batched":
        try:
            return torch.autograd.grad(logits, inputs, directions, is_grads_batched=True)[0], mode
        except torch.OutOfMemoryError:
            raise   # the audit halves the batch on it
        except (RuntimeError, NotImplementedError):
            mode, logits = "loop", model(inputs)
    rows = [torch.autograd.grad(logits, inputs, d, retain_graph=j < len(directions) - 1)[0]
            for j, d in enumerate(directions)]
    return torch.stack(rows), mode


class DeepFool(Pooled):
    """DeepFool L2 with fixed top-k candidates, overshoot, [0,1] box and early exit per sample.

    ``batch_size`` is the pool's width: how many samples step together.
    """

    name = "deepfool"
    schema = DeepFoolConfig   # the parameters' defaults and ranges

    def __init__(self, steps: int = DeepFoolConfig.steps, candidates: int = DeepFoolConfig.candidates,
                 overshoot: float = DeepFoolConfig.overshoot, gradients: str = DeepFoolConfig.gradients,
                 cuda_graphs: bool = DeepFoolConfig.cuda_graphs):
        check_values(DeepFoolConfig, self.name, steps=steps, candidates=candidates, overshoot=overshoot,
                     gradients=gradients, cuda_graphs=cuda_graphs)
        self.steps, self.candidates, self.overshoot, self.gradients = steps, candidates, overshoot, gradients
        self.cuda_graphs = cuda_graphs
        self.step_cache = StepCache(self._build_steps)

    def _build_steps(self, model: nn.Module) -> DeepFoolSteps:
        return DeepFoolSteps(self, model)

    def passes(self, result: DistanceResult, classes: int) -> Passes:
        """A sample that made s moves made s + 1 checks (forward passes without a graph) and per move a
        forward pass that keeps its graph, then one backward pass through it per candidate other than the
        label (``replicated``: through a graph of its own, from a forward pass over its copy). The moves'
        graph-keeping passes repeat the checks' at the same points: no query counts them."""
        others = min(self.candidates, classes) - 1
        replicated = self.gradients == "replicated"
        moves = (result.queries - 1) // (1 + others * (2 if replicated else 1))
        return Passes(forward=1 + moves, graphed=others * moves if replicated else moves, backward=others * moves)

    def _attack(self, model: nn.Module, chunks: Iterable[Chunk], width: int,
                progress: Progress | None) -> Iterator[tuple[int, DistanceResult]]:
        model_steps = self.step_cache(model)   # DeepFoolSteps: the check and the move over this model

        def look(points: torch.Tensor) -> torch.Tensor:
            """The logits at ``points``: each row's check, counted as one query."""
            return model_steps.graphs(model_steps.look, (points,), width=width)[0]

        def admit(origin: torch.Tensor, _: torch.Tensor) -> Rows:
            """Rows at the samples' clean inputs, whose logits fix the candidates (column 0: the predicted class)."""
            origin = origin.detach()
            logits = look(origin)
            classes = logits.topk(min(self.candidates, logits.shape[1]), dim=1).indices
            return {"origin": origin, "points": origin, "perturbation": torch.zeros_like(origin), "classes": classes,
                    "logits": logits, "moves": torch.zeros(len(origin), dtype=torch.long, device=origin.device)}

        def blank(x: torch.Tensor, _: torch.Tensor) -> Rows:
            distance, success, queries = failed(len(x), x.device)
            return {"distance": distance, "success": success, "queries": queries,
                    "nonfinite": torch.zeros_like(success)}

        def finished(rows: Rows) -> torch.Tensor:
            """Rows whose iterate flipped or met non-finite logits, or that used up their steps."""
            flipped, bad = verdict(rows["logits"], rows["classes"])
            return flipped | bad | (rows["moves"] >= self.steps)

        def retire(rows: Rows) -> None:
            """Record the results of the rows leaving the pool. A row that made s moves made s + 1 checks
            and, per move, one backward pass per candidate (replicated: and a forward pass per copy)."""
            if not rows:
                return
            flipped, bad = verdict(rows["logits"], rows["classes"])
            moves = rows["moves"]
            per_move = (rows["classes"].shape[1] - 1) * (2 if model_steps.mode == "replicated" else 1)
            pool.record(rows["sample"], success=flipped, nonfinite=bad, queries=1 + moves + per_move * moves,
                        distance=torch.where(flipped, l2_norm(rows["points"] - rows["origin"]), math.inf))

        def results() -> Iterator[tuple[int, DistanceResult]]:
            for chunk in pool.done():
                measured = chunk.results
                success = measured["success"]
                yield chunk.number, DistanceResult(distance=measured["distance"], success=success,
                                                   queries=measured["queries"],
                                                   failure=failure_codes(success, measured["nonfinite"]),
                                                   bound=self.bound)

        pool = Pool(width, chunks, admit, blank, progress)
        while True:
            while pool.fill():   # admitted rows come checked at their clean inputs
                retire(pool.leave(finished(pool.rows)))
            yield from results()
            if not len(pool):
                return
            rows = pool.rows
            points, perturbation = model_steps.graphs(model_steps.move, tuple(rows[key] for key in MOVE_INPUTS),
                                                       width=width)
            pool.update(points=points, perturbation=perturbation, moves=rows["moves"] + 1, logits=look(points))
            retire(pool.leave(finished(pool.rows)))
            yield from results()


MOVE_INPUTS = ("origin", "points", "perturbation", "classes", "logits")


def verdict(logits: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows flipped (their argmax left the predicted class) and which met non-finite logits. A row
    with a NaN or an infinite logit has no meaningful argmax: it never counts as flipped."""
    bad = nonfinite_rows(logits)
    return (logits.argmax(1) != classes[:, 0]) & ~bad, bad


class DeepFoolSteps:
    """DeepFool's check and step over one model, the gradient mode it settled on and the graphs that replay
    them: ``batched`` may fall back to ``loop`` in the first step (eagerly, or in the warm-up before a
    capture), and every later step keeps ``loop``."""

    def __init__(self, attack: DeepFool, model: nn.Module):
        self.model, self.overshoot, self.mode = model, attack.overshoot, attack.gradients
        self.graphs = GraphedSteps(attack.cuda_graphs, attack.name)

    @torch.no_grad()
    def look(self, points: torch.Tensor) -> tuple[torch.Tensor]:
        """The logits at ``points``, without a graph, at full precision: under autocast the moves run in bf16,
        and the checks that decide when a sample has flipped do not (verdicts.full_precision)."""
        with full_precision(points.device):
            return (self.model(points),)

    def move(self, origin: torch.Tensor, points: torch.Tensor, perturbation: torch.Tensor, classes: torch.Tensor,
             logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One DeepFool step from the checked iterates ``points`` (whose ``logits`` the check gave): to the
        nearest linearised boundary f_c − f_label = 0 among the candidates c; returns the new iterates and
        accumulated perturbations r. The iterate is origin + (1 + overshoot)·r, inside the box."""
        inputs = points.detach().requires_grad_(self.mode != "replicated")   # replicated builds its own graph
        with torch.enable_grad():
            graph = self.model(inputs) if self.mode != "replicated" else logits
            grads, self.mode = candidate_gradients(graph, inputs, candidate_directions(classes, graph), self.mode,
                                                   self.model)
        grads = grads.detach()                                                            # (k − 1, n, *input)
        losses = logits.gather(1, classes[:, 1:]) - logits.gather(1, classes[:, :1])      # f_c − f_label
        norms = grads.flatten(2).norm(dim=2).T + 1e-8                                     # ‖∇f_c − ∇f_label‖
        best = (losses.abs() / norms).argmin(1)
        rows = torch.arange(len(points), device=points.device)
        scale = (losses[rows, best].abs() / norms[rows, best] + STABILITY) / norms[rows, best]
        perturbation = perturbation + scale.view(-1, *[1] * (points.dim() - 1)) * grads[best, rows]
        return (origin + (1 + self.overshoot) * perturbation).clamp(0, 1), perturbation
