"""``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's SLURM launcher, its jobs'
states read from squeue where the cluster keeps no accounting (robustness_bias/launcher.py says why).

Hydra takes launchers from the ``hydra_plugins`` namespace package only, and imports every module in it when it
starts: this one stays small and imports submitit when a sweep is launched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher, its jobs watched by robustness_bias.launcher.QueueWatcher while it
    waits for them. Preemption and time-outs requeue a job as before (its ``checkpoint``): the requeued job runs
    the same Hydra job in the same folder, which resumes from its stored chunks and checkpoint."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from submitit.core.utils import FailedJobError

        from robustness_bias.launcher import refused, watched_by_squeue

        try:
            with watched_by_squeue():
                return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as error:   # sbatch's refusal in one line; a failed job's trace as before
            problem = refused(error)
            if problem is None:
                raise
            from robustness_bias.__main__ import fail

            fail(problem)
