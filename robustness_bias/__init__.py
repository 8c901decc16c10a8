"""Audit image classifiers for robustness bias.

``robustness_bias.audit(model, X, y, sensitive_features=...)`` audits any PyTorch model from Python
(api/); ``python -m robustness_bias`` is the command line. The API is imported on first use, so
importing the package alone stays cheap and loads neither the estimators nor the figures.
"""

__all__ = ["AuditResult", "audit"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
