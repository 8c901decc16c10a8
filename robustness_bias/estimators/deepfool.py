"""DeepFool L2 (Moosavi-Dezfooli et al. 2016), batched, as parameterised in the paper's code.

Each step linearises the model around the current iterate and jumps to the nearest linearised
boundary among the candidate classes (the top-k of the clean logits). It is exact on affine
models: one step lands on the boundary, times (1 + overshoot).

Unlike foolbox, the gradients of all candidates come from one forward pass (foolbox runs one
forward and one backward pass per candidate), and samples leave the working batch as soon as
they flip (foolbox runs the whole batch until its slowest sample flips). A sample whose logits
turn NaN or infinite leaves it too, as a ``nonfinite_logits`` failure: the others' steps do not
depend on it. With ``cuda_graphs`` on a GPU, every step replays from a CUDA graph (graphs.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import DistanceResult, Estimator, failed, failure_codes, frozen, l2_norm, nonfinite_rows
from .graphs import GraphedSteps, StepCache

STABILITY = 1e-4  # added to each step's length, as in foolbox, so that steps never stall on the boundary


GRADIENT_MODES = ("loop", "batched", "replicated")


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


class DeepFool(Estimator):
    """DeepFool L2 with fixed top-k candidates, overshoot, [0,1] box and early exit per sample."""

    name = "deepfool"

    def __init__(self, steps: int = 100, candidates: int = 10, overshoot: float = 0.02, gradients: str = "loop",
                 cuda_graphs: bool = False):
        if steps < 1 or candidates < 2 or overshoot < 0:
            raise ValueError("deepfool needs steps ≥ 1, candidates ≥ 2 and overshoot ≥ 0")
        if gradients not in GRADIENT_MODES:
            raise ValueError(f"deepfool gradients={gradients!r}: use one of {GRADIENT_MODES}")
        self.steps, self.candidates, self.overshoot, self.gradients = steps, candidates, overshoot, gradients
        self.cuda_graphs = cuda_graphs
        self.step_cache = StepCache(self._build_steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index=None) -> DistanceResult:
        with frozen(model):
            return self._attack(model, x, y)

    def _build_steps(self, model: nn.Module) -> Steps:
        return Steps(self, model)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DistanceResult:
        distance, success, queries = failed(len(x), x.device)
        nonfinite = torch.zeros_like(success)
        steps = self.step_cache(model)

        def check(logits: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """Record the working samples (at ``points``) that flipped or met non-finite logits; returns both
            masks. Written through ``active`` without boolean indexing, so it needs no host sync.

            A row with a NaN or an infinite logit has no meaningful argmax: it never counts as flipped.
            """
            bad = nonfinite_rows(logits)
            flipped = (logits.argmax(1) != classes[:, 0]) & ~bad
            success[active] |= flipped
            distance[active] = torch.where(flipped, l2_norm(points - origin), distance[active])
            nonfinite[active] |= bad
            return flipped, bad

        # the working rows: their samples, clean inputs, candidates (column 0: the label), iterates and perturbations
        origin = points = x.detach()
        logits, grads, classes = steps.graphs(steps.step, (origin,))
        active, p_total = torch.arange(len(x), device=x.device), torch.zeros_like(origin)
        for iteration in range(self.steps):
            if iteration:
                logits, grads = steps.graphs(steps.step, (points, classes))
            queries[active] += 1
            flipped, bad = check(logits, points)
            keep = (~(flipped | bad)).nonzero()[:, 0]   # the rows that stay, as indices: one sync, not one per mask
            if len(keep) == 0:
                active = active[:0]
                break
            losses = (logits.gather(1, classes[:, 1:]) - logits.gather(1, classes[:, :1]))[keep]   # f_c − f_label
            norms = grads.flatten(2).norm(dim=2)[keep] + 1e-8                                     # (n, k − 1)
            best = (losses.abs() / norms).argmin(1)
            chosen = torch.arange(len(keep), device=x.device)
            scale = (losses[chosen, best].abs() / norms[chosen, best] + STABILITY) / norms[chosen, best]
            move = scale.view(-1, *[1] * (x.dim() - 1)) * grads[keep, best]   # only the chosen candidate's gradient
            active, origin, classes, p_total = active[keep], origin[keep], classes[keep], p_total[keep] + move
            # one backward pass per candidate; replicated adds a forward pass per copy
            queries[active] += (classes.shape[1] - 1) * (2 if steps.mode == "replicated" else 1)
            points = (origin + (1 + self.overshoot) * p_total).clamp(0, 1)
        if len(active):  # the last step's iterates have not been checked yet
            with torch.no_grad():
                check(model(points), points)
            queries[active] += 1
        return DistanceResult(distance=distance, success=success, queries=queries,
                              failure=failure_codes(success, nonfinite), bound=self.bound)


class Steps:
    """DeepFool's step over one model, the gradient mode it settled on and the graphs that replay it.

    The first step (``classes`` None, at the clean inputs) fixes the candidates from the logits and
    returns them too; ``batched`` may fall back to ``loop`` there (eagerly, or in the warm-up before a
    capture), and every later step keeps ``loop``.
    """

    def __init__(self, attack: DeepFool, model: nn.Module):
        self.model, self.candidates, self.mode = model, attack.candidates, attack.gradients
        self.graphs = GraphedSteps(attack.cuda_graphs, attack.name)

    def step(self, points: torch.Tensor, classes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The logits at ``points`` and the gradients of f_c − f_label for each candidate c, rows first."""
        points = points.detach().requires_grad_(self.mode != "replicated")   # replicated builds its own graph
        with torch.enable_grad():
            logits = self.model(points)
            fixed = classes is not None
            if not fixed:   # column 0: the predicted class
                classes = logits.detach().topk(min(self.candidates, logits.shape[1]), dim=1).indices
            grads, self.mode = candidate_gradients(logits, points, candidate_directions(classes, logits), self.mode,
                                                   self.model)
        grads = grads.detach().transpose(0, 1)
        return (logits.detach(), grads) if fixed else (logits.detach(), grads, classes)
