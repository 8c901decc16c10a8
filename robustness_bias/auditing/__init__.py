"""Auditing a model: the engine measures (engine.py) and the auditor writes one job's audits (auditor.py).
No Lightning here (robustness_bias.training decides when to audit during training), and nothing of the
report, which reads what the audit writes."""

from .auditor import Auditor
from .engine import NOT_ATTACKED, Planned, Samples, accuracy, group_accuracies, measure
from .plan import fitting_plan

__all__ = ["NOT_ATTACKED", "Auditor", "Planned", "Samples", "accuracy", "group_accuracies", "fitting_plan", "measure"]
