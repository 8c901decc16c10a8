"""The peers our estimators are measured against, wrapped to one shape: (model, x, y) -> distances.

Every wrapper re-checks success itself (prediction on the returned point ≠ label) and reports
+inf for failures, since foolbox returns zeros or the clean input and torchattacks the clean
input when they fail; foolbox CW's zeros are failures even where the model misclassifies them.
foolbox and torchattacks are development-only dependencies; adv-lib (Rony et al.) is optional: the
bench installs it without its dependencies (``make bench``), since it needs visdom only for its
attacks' live plots, which a stub stands in for here. Without adv-lib its rows are skipped.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types

import numpy as np
import torch
from scipy.stats import norm

from robustness_bias.estimators.base import l2_norm
from robustness_bias.estimators.smoothing import lower_confidence_bound


class Counted(torch.nn.Module):
    """The model, counting the rows of its forward passes, with and without a graph, and of the backward
    passes through its output: the passes a peer runs, for its arithmetic floor (ours count theirs in
    ``queries``). ``graphed_widths`` holds the rows of each forward pass that keeps a graph: one per step
    of our attacks (a DeepFool move, a CW Adam step)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)
        self.reset()

    def reset(self) -> None:
        self.forward_rows = self.graphed_rows = self.backward_rows = 0
        self.graphed_widths: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if out.requires_grad:
            self.graphed_rows += len(x)
            self.graphed_widths.append(len(x))
            out.register_hook(self._count_backward)
        else:
            self.forward_rows += len(x)
        return out

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backward_rows += len(grad)


class Timed(Counted):
    """Counted, and timing its passes: the seconds spent in its forward passes, and in its backward passes
    from the gradient at its output to the gradient at its input; ``passes`` holds each pass's kind
    (``forward``, ``graphed`` or ``backward``), rows and seconds. Meaningful on a CPU, where a pass has
    ended when its call returns (a GPU runs them asynchronously)."""

    def reset(self) -> None:
        super().reset()
        self.passes: list[tuple[str, int, float]] = []
        self._backward_from, self._backward_rows = 0.0, 0

    @property
    def forward_seconds(self) -> float:
        return sum(seconds for kind, _, seconds in self.passes if kind != "backward")

    @property
    def backward_seconds(self) -> float:
        return sum(seconds for kind, _, seconds in self.passes if kind == "backward")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = super().forward(_BackwardEnd.apply(x, self) if x.requires_grad else x)
        if out.requires_grad:
            out.register_hook(self._backward_starts)
        self.passes.append(("graphed" if out.requires_grad else "forward", len(x), time.perf_counter() - start))
        return out

    def _backward_starts(self, grad: torch.Tensor) -> None:
        self._backward_from, self._backward_rows = time.perf_counter(), len(grad)

    def backward_ended(self) -> None:
        self.passes.append(("backward", self._backward_rows, time.perf_counter() - self._backward_from))


class _BackwardEnd(torch.autograd.Function):
    """The identity, telling a Timed model when a backward pass has reached its input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, timed: Timed) -> torch.Tensor:
        ctx.timed = timed
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.timed.backward_ended()
        return grad, None


def checked_distances(model, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """‖adv − x‖₂ where adv is really misclassified and inside the box, else +inf."""
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    inside = (adv >= 0).flatten(1).all(1) & (adv <= 1).flatten(1).all(1)
    distance = l2_norm(adv - x)
    return torch.where(fooled & inside, distance, torch.full_like(distance, float("inf"))).cpu()


def foolbox_deepfool(model, x, y, steps=50, candidates=10, overshoot=0.02):
    import foolbox as fb

    attack = fb.attacks.L2DeepFoolAttack(steps=steps, candidates=candidates, overshoot=overshoot, loss="logits")
    _, adv, _ = attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)
    return checked_distances(model, x, y, adv)


def foolbox_cw(model, x, y, binary_search_steps=5, steps=100, initial_const=0.01, learning_rate=5e-3):
    import foolbox as fb

    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=binary_search_steps, steps=steps,
                                              stepsize=learning_rate, initial_const=initial_const,
                                              confidence=0, abort_early=True)
    _, adv, _ = attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)
    # Where no run found an adversarial point, foolbox's CW returns its initial all-black image,
    # which the model may well misclassify: that is a failure, not a perturbation of norm ‖x‖.
    # (Its own iterates, (tanh(w) + 1) / 2, are never exactly 0 anywhere.)
    never_found = (adv == 0).flatten(1).all(1)
    return torch.where(never_found.cpu(), torch.tensor(float("inf")), checked_distances(model, x, y, adv))


def torchattacks_deepfool(model, x, y, steps=50, overshoot=0.02):
    import torchattacks

    return checked_distances(model, x, y, torchattacks.DeepFool(model, steps=steps, overshoot=overshoot)(x, y))


def torchattacks_cw(model, x, y, c=1.0, steps=100, learning_rate=5e-3):
    import torchattacks

    return checked_distances(model, x, y, torchattacks.CW(model, c=c, kappa=0, steps=steps, lr=learning_rate)(x, y))


def adv_lib_attacks():
    """adv-lib's ``adv_lib.attacks``, or None when it is not installed. Its modules import visdom at the top
    for an optional live-plot callback that the bench never passes: a stub module stands in for it."""
    if importlib.util.find_spec("adv_lib") is None:
        return None
    if "visdom" not in sys.modules and importlib.util.find_spec("visdom") is None:
        sys.modules["visdom"] = types.ModuleType("visdom")
    import adv_lib.attacks

    return adv_lib.attacks


def adv_lib_deepfool(model, x, y, steps=50, overshoot=0.02):
    """adv-lib's DeepFool L2 over all classes (it has no top-k candidates)."""
    return checked_distances(model, x, y, adv_lib_attacks().df(model, x, y, steps=steps, overshoot=overshoot))


def adv_lib_cw(model, x, y, binary_search_steps=5, steps=100, initial_const=0.01, learning_rate=5e-3):
    """adv-lib's CW L2 at our CW's budget (it returns the clean input where it fails: re-checked)."""
    adv = adv_lib_attacks().carlini_wagner_l2(model, x, y, binary_search_steps=binary_search_steps,
                                              max_iterations=steps, initial_const=initial_const,
                                              learning_rate=learning_rate)
    return checked_distances(model, x, y, adv)


def adv_lib_fmn(model, x, y, steps=100):
    """adv-lib's FMN L2 (Pintor et al. 2021) at its defaults otherwise."""
    return checked_distances(model, x, y, adv_lib_attacks().fmn(model, x, y, norm=2, steps=steps))


def adv_lib_ddn(model, x, y, steps=100):
    """adv-lib's DDN (Rony et al. 2019), without its 256-level quantisation of the output: ours are not
    quantised either."""
    return checked_distances(model, x, y, adv_lib_attacks().ddn(model, x, y, steps=steps, levels=None))


def adv_lib_alma(model, x, y, steps=1000):
    """adv-lib's ALMA L2 (Rony et al. 2021) at its defaults (lr 0.1 decaying to 0.001, penalty P2)."""
    return checked_distances(model, x, y, adv_lib_attacks().alma(model, x, y, num_steps=steps, distance="l2"))


@torch.no_grad()
def cohen_certify(model, x, y, sigma=0.125, n0=100, n=100_000, alpha=0.001, batch=1000):
    """The reference procedure: one image at a time, its noise in batches, as in Cohen et al.'s code."""
    radii = []
    for image, label in zip(x, y):
        counts = []
        for num in (n0, n):
            tally = torch.zeros(model(image[None]).shape[1], dtype=torch.long, device=x.device)
            remaining = num
            while remaining > 0:
                size = min(batch, remaining)
                remaining -= size
                noisy = image[None].repeat(size, 1, 1, 1)
                predictions = model(noisy + torch.randn_like(noisy) * sigma).argmax(1)
                tally += torch.bincount(predictions, minlength=len(tally))
            counts.append(tally)
        guess = int(counts[0].argmax())
        p_lower = float(lower_confidence_bound(np.array([int(counts[1][guess])]), n, alpha)[0])
        radii.append(sigma * norm.ppf(p_lower) if p_lower >= 0.5 and guess == int(label) else 0.0)
    return torch.tensor(radii)
