"""W&B's Lightning logger, quiet on the console: the run's metrics and tables go to W&B, not to the terminal;
σ per group charted against the epoch, and each estimator's least robust group in the run's summary."""

from __future__ import annotations

from lightning.pytorch import loggers


class WandbLogger(loggers.WandbLogger):
    """Lightning's WandbLogger with W&B's ``quiet`` setting (no history and summary of every key printed
    when the run finishes: 230 lines for the default job) and without the ``anonymous`` argument Lightning
    always passes, of which W&B warns that it has no effect. ``quiet=False``: W&B's own console output."""

    def __init__(self, *args, quiet: bool = True, **kwargs):
        import wandb

        kwargs.setdefault("settings", wandb.Settings(quiet=quiet))
        super().__init__(*args, **kwargs)
        # Lightning puts anonymous in wandb.init's arguments even when None, and no constructor argument leaves it out
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]
        self._epoch_metrics_defined = False

    def log_by_epoch(self, metrics: dict) -> None:
        """``metrics`` charted against ``audit/epoch`` (in them), not against training's step: W&B's steps only
        grow, while an audit belongs to its epoch."""
        if not self._epoch_metrics_defined:
            self.experiment.define_metric("audit/epoch")
            for prefix in {key.split("/", 1)[0] for key in metrics if key != "audit/epoch"}:
                self.experiment.define_metric(f"{prefix}/*", step_metric="audit/epoch")
            self._epoch_metrics_defined = True
        self.experiment.log(metrics)

    def headline(self, values: dict) -> None:
        """The run's summary: what a dashboard's run table shows."""
        self.experiment.summary.update(values)
