"""The Lightning wiring: the module that trains a classifier (with the optional robustness-bias
regularizer), the epoch checkpoints a killed run resumes from, and the callback that decides when
to audit. The audit itself (robustness_bias.auditing) knows nothing of Lightning."""

from .audit_schedule import AuditSchedule, audit_schedule
from .module import Classifier
from .progress import EpochLog
from .regularizer import RobustnessBiasPenalty
from .resume import EpochCheckpoint, StopOnSignal, resumable

__all__ = ["AuditSchedule", "Classifier", "EpochCheckpoint", "EpochLog", "RobustnessBiasPenalty", "StopOnSignal", "audit_schedule", "resumable"]
