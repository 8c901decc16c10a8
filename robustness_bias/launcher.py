"""How ``hydra/launcher=slurm`` (hydra_plugins/robustness_bias_launcher: hydra-submitit-launcher's SLURM launcher)
learns its jobs' states: from squeue where the cluster keeps no accounting.

submitit learns the state of its jobs from ``sacct``. A cluster without an accounting database (slurmdbd), such as
a single machine's (scripts/slurm-cluster) or a small lab's, answers "Slurm accounting storage is disabled": submitit
printed a warning on every poll ("Bypassing sacct error ..., status may be inaccurate"), and a job that died
without a result (killed, out of memory, cancelled) left the sweep waiting forever for a state it never learned.
Here, once sacct has said so, the states come from ``squeue``, which knows a job until ``MinJobAge`` (5 minutes by
default) after it ended; a job squeue no longer lists has ended, and submitit then reads its result or reports
that it left none. Any other sacct error is the cluster's to fix and still warns.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from submitit.slurm import slurm

log = logging.getLogger(__name__)

NO_ACCOUNTING = "accounting storage is disabled"
GONE = "ENDED"   # a job squeue no longer lists: not running, not pending (submitit then reads its result file)


class QueueWatcher(slurm.SlurmInfoWatcher):
    """submitit's watcher of SLURM jobs (one call for all jobs, at growing intervals), reading squeue once sacct
    says the cluster keeps no accounting.

    submitit has no public way to say where job states come from, so this subclass uses its watcher's own fields
    (``_make_command``, ``_registered``, ``_finished``, ``_info_dict``); tests/test_launcher.py runs it against
    stand-in sacct and squeue, so a submitit that renames them fails there, not on a user's cluster."""

    def __init__(self, delay_s: int = 600) -> None:
        super().__init__(delay_s=delay_s)
        self.accounting = True   # until sacct says otherwise

    def update(self) -> None:
        command = self._make_command()   # sacct's, for the jobs not known to be finished
        if command is None:
            return
        self._num_calls += 1
        info = self._from_sacct(command) if self.accounting else None
        if info is None:
            info = self._from_squeue(sorted({job.split("_")[0] for job in self._registered - self._finished}))
        if info is not None:
            self._info_dict.update(info)
        self._last_status_check = time.time()
        for job in self._registered - self._finished:
            if self.is_done(job, mode="cache"):
                self._finished.add(job)

    def _from_sacct(self, command: list[str]) -> dict | None:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            return self.read_info(done.stdout)
        if NO_ACCOUNTING in done.stderr:
            self.accounting = False
            log.debug("this SLURM cluster keeps no accounting (sacct: %s): job states come from squeue",
                      done.stderr.strip())
        else:
            log.warning("sacct failed (%s): job states come from squeue this time", done.stderr.strip() or done.returncode)
        return None

    def _from_squeue(self, ids: Sequence[str]) -> dict | None:
        """The states of these jobs (and of their array tasks, one per line) as submitit's ``read_info`` gives
        them; the registered jobs squeue no longer lists are :data:`GONE`. None when squeue could not answer."""
        done = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N",
                               "--jobs", ",".join(ids)], capture_output=True, text=True)
        if done.returncode != 0 and "Invalid job id" not in done.stderr:   # that one: none of them is known any more
            log.warning("squeue failed (%s): job states may be out of date", done.stderr.strip() or done.returncode)
            return None
        lines = done.stdout if done.returncode == 0 else ""
        info = self.read_info("JobID|State|NodeList\n" + lines)
        for job in self._registered - self._finished:
            if job.split("_")[0] in ids and job not in info:
                info[job] = {"JobID": job, "State": GONE, "NodeList": ""}
        return info


def refused(error: Exception) -> str | None:
    """sbatch's refusal of the sweep's jobs (more GPUs, cores or memory than a node has, an unknown partition) in
    one line with the fix; None for any other error (a job that failed: submitit's message holds its trace)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line.removeprefix("sbatch: error:").strip() for line in lines if line.startswith("sbatch: error:")]
    if not said:
        return None
    return (f"SLURM refused the sweep's jobs (sbatch: {'; '.join(said)}). Fix: ask for what the cluster's nodes have "
            "(hydra.launcher.gpus_per_node, cpus_per_task, mem_gb, partition; `sinfo -N -l` lists them), see "
            "docs/cluster.md")


@contextmanager
def watched_by_squeue() -> Iterator[None]:
    """submitit's SLURM jobs watched by a :class:`QueueWatcher` for the duration of the block (the watcher is
    shared by all of submitit's SLURM jobs: a class attribute)."""
    shared = slurm.SlurmJob.watcher
    slurm.SlurmJob.watcher = QueueWatcher(delay_s=shared._delay_s)
    try:
        yield
    finally:
        slurm.SlurmJob.watcher = shared
