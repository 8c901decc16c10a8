"""W&B's Lightning logger, quiet on the console: the run's metrics and tables go to W&B, not to the terminal."""

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
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]
