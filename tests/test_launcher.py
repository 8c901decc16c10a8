"""How hydra/launcher=slurm learns its jobs' states on a cluster without accounting, with sacct and squeue
stood in for by scripts on PATH (the real cluster: tests/test_slurm.py)."""

from __future__ import annotations

import logging

import pytest

from robustness_bias.launcher import GONE, QueueWatcher, refused


@pytest.fixture
def slurm_tools(tmp_path, monkeypatch):
    """``sacct`` answering as a cluster without accounting does; ``squeue`` printing ``tmp_path/queue``
    (one ``id|state|node`` line per job) and logging its arguments to ``tmp_path/calls``."""
    (tmp_path / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    (tmp_path / "squeue").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ncat {tmp_path}/queue\n')
    for tool in ("sacct", "squeue"):
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    return tmp_path


def test_without_accounting_the_states_come_from_squeue_and_a_job_it_no_longer_lists_has_ended(slurm_tools, caplog):
    watcher = QueueWatcher()
    for job in ("7_0", "7_1", "9"):
        watcher.register_job(job)
    (slurm_tools / "queue").write_text("7_0|RUNNING|vm\n7_1|PENDING|\n9|COMPLETED|vm\n")
    with caplog.at_level(logging.DEBUG, logger="submitit"):
        watcher.update()
    assert [watcher.get_state(job, mode="cache") for job in ("7_0", "7_1", "9")] == ["RUNNING", "PENDING", "COMPLETED"]
    assert not watcher.accounting and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert watcher.is_done("9", mode="cache") and not watcher.is_done("7_1", mode="cache")

    # 7_0 ended and left the queue (MinJobAge) before the next look: ended, not waited for forever
    (slurm_tools / "queue").write_text("7_1|RUNNING|vm\n")
    watcher.update()
    assert watcher.get_state("7_0", mode="cache") == GONE and watcher.is_done("7_0", mode="cache")
    assert not watcher.is_done("7_1", mode="cache")
    calls = (slurm_tools / "calls").read_text().splitlines()
    assert len(calls) == 2 and calls[-1].endswith("--jobs 7"), "sacct said once that it cannot: squeue since"


def test_sbatch_refusing_the_jobs_is_one_line_and_other_errors_are_not_ours():
    from submitit.core.utils import FailedJobError

    problem = refused(FailedJobError("sbatch: error: Batch job submission failed: More processors requested than "
                                     "permitted\n"))
    assert problem.startswith("SLURM refused the sweep's jobs (sbatch: Batch job submission failed: More processors")
    assert "\n" not in problem and "hydra.launcher.cpus_per_task" not in problem and "cpus_per_task" in problem
    assert refused(FailedJobError("Job (task=0) failed during processing with trace:\n...")) is None
