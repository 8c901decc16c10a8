"""Auditing a model: the engine measures (engine.py) and the auditor writes one job's audits (auditor.py).
No Lightning here (robustness_bias.training decides when to audit during training), and nothing of the
report, which reads what the audit writes."""

from .auditor import Auditor
from .engine import AUDIT_TAGS, NOT_ATTACKED, EstimatorPlan, Samples, accuracy, measure

__all__ = ["AUDIT_TAGS", "NOT_ATTACKED", "Auditor", "EstimatorPlan", "Samples", "accuracy", "measure"]
