"""What an audit's records mean: survival curves, σ(P) and RB(P, τ) (metrics), their uncertainty
(significance), the per-group table (summary) and sign agreement between estimators (agreement).
Plain numpy and pandas: no torch, no Lightning, nothing of the audit that wrote the records."""
