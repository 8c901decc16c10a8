"""The paper's mitigation (its Appendix B): penalise a differentiable robustness bias RB̃(P, τ).

d(x) is approximated DeepFool-style by the first-order distance to the runner-up class,
(f_y − f_k) / ‖∇ₓ(f_y − f_k)‖, kept differentiable (double backpropagation); 1{d > τ} becomes a
sigmoid with a temperature; the shares of correctly classified points beyond τ are compared
between the target group and the rest (or, for a whole attribute, between its two extreme
groups). The training loss is cross-entropy + α · RB̃.

RB̃ is a gap between population shares. A batch's absolute gap is biased by its sampling noise (with
ten correct points a side at shares near 0.4, about 0.17 where the shares are equal), and that noise
vanishes only where every share saturates: every correctly classified point beyond τ, or every one
within it, so descending the batch's absolute gap pushes training there whatever the groups' true gap.
So which side leads is read from running shares over past batches, and the batch contributes its signed
gap, lead − trail: an unbiased estimate of the population gap's gradient wherever the lead is known
(docs/design.md, "Mitigation").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config.rules import ConfigError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..data.base import ImageDataModule


def proxy_distance(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the differentiable first-order distance of each point to its runner-up class."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    own = logits.gather(1, y[:, None])[:, 0]
    runner_up = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    margin = own - runner_up
    gradient, = torch.autograd.grad(margin.sum(), x, create_graph=True)
    return logits, margin / (gradient.flatten(1).norm(dim=1) + 1e-12)


@dataclass
class RobustnessBiasPenalty:
    """α · RB̃(P, τ) for one attribute: ``group`` vs the rest, or all its groups when ``group`` is None.

    ``attribute_column`` indexes the batch's attribute codes (None: the partition is the class
    label); ``group_code`` is the group's code. ``running`` holds each side's running share beyond τ
    (NaN until the side is first seen), each batch weighing ``1 − running_weight``; a checkpoint keeps it.
    """

    alpha: float
    tau: float
    temperature: float
    attribute_column: int | None
    group_code: int | None
    group_names: list[str]
    running_weight: float
    running: torch.Tensor = field(default=None, repr=False)

    def __post_init__(self):
        if self.running is None:
            self.running = torch.full((len(self._side_names()),), float("nan"))

    @classmethod
    def on_dataset(cls, datamodule: ImageDataModule, alpha: float, tau: float, temperature: float, attribute: str,
                   group: str | None, running_weight: float) -> RobustnessBiasPenalty:
        """The penalty for ``attribute`` (or ``class``) and ``group`` of this dataset, as ``regularizer``
        configures it (the config leaves the dataset to the pipeline: ``_partial_``)."""
        table = datamodule.table
        if attribute == "class":
            column, names = None, table.class_names
        elif attribute in table.attributes:
            column, names = list(table.attributes).index(attribute), table.categories[attribute]
        else:
            raise ConfigError(f"regularizer.attribute={attribute}: this dataset has no such attribute. "
                              f"Fix: choose among {datamodule.partitions}")
        if group is not None and str(group) not in names:
            raise ConfigError(f"regularizer.group={group}: {attribute} has no such group. Fix: choose among {names}, "
                              "or null for all groups")
        return cls(alpha=alpha, tau=tau, temperature=temperature, attribute_column=column,
                   group_code=None if group is None else names.index(str(group)), group_names=list(names),
                   running_weight=running_weight)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, attributes: torch.Tensor):
        """(logits, penalty or None when the batch lacks a side or no lead is known yet, the running RB̃
        (None until two sides were seen), mean proxy distance per group)."""
        logits, distance = proxy_distance(model, x, y)
        correct = logits.detach().argmax(1) == y
        beyond = torch.sigmoid((distance - self.tau) / self.temperature)
        codes = y if self.attribute_column is None else attributes[:, self.attribute_column]
        if self.group_code is None:   # one side per group, compared at once: (groups, batch)
            sides = codes == torch.arange(len(self.group_names), device=codes.device)[:, None]
        else:
            target = codes == self.group_code
            sides = torch.stack([target, ~target])
        sides = sides & correct                                                # (sides, batch)
        counts = sides.sum(1)

        def side_means(values: torch.Tensor) -> torch.Tensor:
            return torch.where(sides, values, 0).sum(1) / counts.clamp_min(1)   # where, not ×: 0 · inf is NaN

        shares = side_means(beyond)
        seen_counts, seen_shares = torch.stack([counts, shares.detach()]).cpu()   # the one wait for the device
        present = seen_counts.nonzero()[:, 0].tolist()
        known = [i for i in present if not self.running[i].isnan()]   # who leads: from past batches only
        penalty = None
        if len(known) >= 2:
            lead, trail = max(known, key=self.running.__getitem__), min(known, key=self.running.__getitem__)
            penalty = self.alpha * (shares[lead] - shares[trail])
        # a side's first share stands alone; later ones join the running share with weight 1 − running_weight
        weight = torch.where(self.running[present].isnan(), 0.0, float(self.running_weight))
        self.running[present] = weight * self.running[present].nan_to_num() + (1 - weight) * seen_shares[present]
        mean_distance, names = side_means(distance.detach()), self._side_names()
        return logits, penalty, self.running_gap(), {names[i]: mean_distance[i] for i in present}

    def restore(self, shares) -> None:
        """The running shares a checkpoint kept; anything but one number per side is ignored with a warning
        (the lead is learnt again within a few batches), as an unreadable checkpoint starts training over."""
        if not (isinstance(shares, list) and len(shares) == len(self.running)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in shares)):
            log.warning("the checkpoint's running shares of the regularizer are not %d numbers: the lead is learnt "
                        "again", len(self.running))
            return
        self.running = torch.tensor(shares, dtype=torch.float32)

    def running_gap(self) -> float | None:
        """RB̃ by the running shares: the largest minus the smallest (None until two sides were seen)."""
        seen = self.running[~self.running.isnan()]
        return float(seen.max() - seen.min()) if len(seen) >= 2 else None

    def _side_names(self) -> list[str]:
        if self.group_code is None:
            return list(self.group_names)
        return [self.group_names[self.group_code], "rest"]
