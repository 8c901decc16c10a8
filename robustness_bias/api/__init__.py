"""The Python API: ``robustness_bias.audit(model, X, y, sensitive_features=...)`` and what it returns.

- ``entry``: :func:`audit`, on the command line's engine, plan builder and fingerprint;
- ``inputs``: images, ids and sensitive features as the engine reads them;
- ``model``: the model as audited (normalization, device, eval mode, cheap checks);
- ``result``: :class:`AuditResult`, fairlearn-style views of the records and summaries.
"""

from ..config.job import EstimatorPlan
from .entry import audit
from .result import AuditResult

__all__ = ["AuditResult", "EstimatorPlan", "audit"]
