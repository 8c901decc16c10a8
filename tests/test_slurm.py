"""hydra/launcher=slurm and trainer=ddp on a real SLURM cluster: the single-node one of scripts/slurm-cluster
(the ``slurm_cluster`` fixture, tests/conftest.py), which keeps no accounting (no slurmdbd).

Tiny jobs (logistic regression on the bundled digits, one epoch, cheap estimators): the whole module takes a few
minutes on two cores. docs/cluster.md shows the same commands by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import compose_config
from robustness_bias.pipeline import run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

QUIET = ["logger=none", "audit.progress=false", "trainer.enable_progress_bar=false"]
TINY = ["dataset=digits", "model=logreg", "trainer.max_epochs=1", "estimator=[exact,deepfool]", *QUIET]
ON_SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
SRUN_HINT = "The `srun` command is available on your system but is not used"


def sweep(cluster, folder: Path, *overrides: str, wait: bool = True):
    """``robustness-bias -m OVERRIDES hydra.sweep.dir=FOLDER`` against the cluster: the finished process, or
    the running one (``wait=False``)."""
    command = [sys.executable, "-m", "robustness_bias", "-m", *overrides, f"hydra.sweep.dir={folder}"]
    if not wait:
        return subprocess.Popen(command, env=cluster.env, cwd=folder.parent, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=cluster.env, cwd=folder.parent, capture_output=True, text=True, timeout=600)


def job_folders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.name.startswith("digits-"))


def records_file(job: Path) -> Path:
    return job / "audits" / "final" / "records.parquet"


def test_a_two_job_sweep_on_slurm_writes_the_records_of_the_same_jobs_run_here_and_warns_of_nothing(
        slurm_cluster, tmp_path):
    """Both jobs of ``-m seed=0,1`` run as SLURM array tasks and write, byte for byte, the records of the same
    jobs run in this process. The cluster keeps no accounting (sacct fails, as it does without slurmdbd), yet
    nothing on the console or in the jobs' logs speaks of sacct (submitit warned on every poll) or of srun
    (Lightning's hint, meant for jobs started without srun on a machine that has it)."""
    accounting = slurm_cluster.run("sacct", check=False)
    assert accounting.returncode != 0 and "accounting storage is disabled" in accounting.stderr

    folder = tmp_path / "sweep"
    done = sweep(slurm_cluster, folder, "seed=0,1", *TINY, *ON_SLURM)
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    assert "Submitit 'slurm' sweep output dir" in console
    assert "sacct" not in console and "Bypassing" not in console and SRUN_HINT not in console
    job_logs = "".join(path.read_text() for path in folder.glob(".submitit/*/*_log.*"))
    assert "Starting with JobEnvironment(job_id=" in job_logs   # they ran as SLURM jobs (submitit's first line)
    assert job_logs.count("global_rank=0(1)") == 2
    assert SRUN_HINT not in job_logs and "Traceback" not in job_logs

    jobs = job_folders(folder)
    assert [job.name.rsplit("-", 1)[0] for job in jobs] == ["digits-logreg-s0", "digits-logreg-s1"]
    for seed, job in enumerate(jobs):
        here = tmp_path / "here" / job.name
        run(compose_config([*TINY, f"seed={seed}"], here))
        assert records_file(job).read_bytes() == records_file(here).read_bytes(), job.name


def job_state(cluster, job_id: str) -> str:
    return cluster.run("squeue", "--noheader", "--states=all", "--format=%T", "--jobs", job_id, check=False).stdout.strip()


# an audit of about 10 s in 29 chunks of 4 images (every third test image), to be preempted in the middle
SLOW = ["dataset=digits", "model=logreg", "trainer.max_epochs=1", "estimator=[cw]", "estimator.cw.steps=40",
        "estimator.cw.binary_search_steps=3", "audit.plan.cw.every_nth=3", "audit.plan.cw.chunk_size=4",
        "audit.plan.cw.batch_size=4",
        "audit.significance.resamples=20", "audit.significance.permutations=20", *QUIET]


def test_a_job_requeued_mid_audit_resumes_from_its_chunks_and_writes_the_records_of_an_uninterrupted_run(
        slurm_cluster, tmp_path):
    """``scontrol requeue`` (what preemption does: SIGTERM, then the job back in the queue under the same id)
    while the audit stores chunks: the job stops at a stored chunk (exit 143), SLURM runs the same submitit job
    again, which runs the same Hydra job in the same folder; it reuses the stored chunks, computes the rest, and
    its records.parquet is byte-identical to that of the same job run here without interruption."""
    folder = tmp_path / "sweep"
    process = sweep(slurm_cluster, folder, "seed=0", *SLOW, *ON_SLURM, wait=False)
    try:
        deadline = time.monotonic() + 180
        while not list(folder.glob("digits-*/audits/.partial/*/cw*/chunk-*.parquet")):
            assert process.poll() is None and time.monotonic() < deadline, \
                f"no chunk stored (exit {process.poll()}): {process.stderr.read()[-2000:] if process.poll() else ''}"
            time.sleep(0.1)
        # submitit's folder of the job (one job: not an array), named by its SLURM id
        job_id = next(folder.glob(".submitit/*/*_submitted.pkl")).parent.name
        slurm_cluster.run("scontrol", "requeue", job_id)
        # Slurm holds a requeued job for two minutes (BeginTime); release it once it is pending again
        released, deadline = False, time.monotonic() + 120
        while not released and time.monotonic() < deadline and process.poll() is None:
            if job_state(slurm_cluster, job_id) == "PENDING":
                released = slurm_cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now",
                                             check=False).returncode == 0
            time.sleep(0.2)
        assert released, f"the requeued job {job_id} never was pending: {job_state(slurm_cluster, job_id)}"
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-3000:]
    assert "sacct" not in out + err and "Bypassing" not in out + err

    logs = "".join(path.read_text() for path in folder.glob(f".submitit/{job_id}/*_log.*"))
    assert logs.count(f"Starting with JobEnvironment(job_id={job_id},") == 2, "SLURM ran the same job twice"
    assert "robustness_bias: stopped by SIGTERM: the finished chunks and audits are kept" in logs
    # submitit's own line of the requeue's SIGCONT (on its stdout and stderr handlers), not again through ours
    assert "submitit WARNING" in logs and " WARNING Bypassing signal SIGCONT" not in logs
    [job] = job_folders(folder)
    result = json.loads((job / "result.json").read_text())
    counts = result["audit_chunks"]["first+middle+final"]["cw"]
    assert counts["reused"] > 0 and counts["computed"] > 0, counts

    whole = tmp_path / "whole"
    run(compose_config([*SLOW, "seed=0"], whole))
    assert records_file(job).read_bytes() == records_file(whole).read_bytes()


def test_ddp_over_srun_with_two_tasks_gathers_the_records_of_a_one_process_audit_of_its_weights(
        slurm_cluster, tmp_path):
    """``trainer=ddp`` with two SLURM tasks on one node (srun starts both; Lightning reads their ranks from
    SLURM; gloo on the CPU). DDP training steps on other batches than one process does, so its weights differ
    from a one-process training's: what DDP must get right is the audit, which each rank runs on its share of
    the test set and rank 0 gathers. The equality tested: the DDP job's final records equal those of one process
    auditing the same weights (``mode=audit model.checkpoint=`` the job's last.ckpt, the final epoch's
    weights the final audit measured), but for the settings hash (mode=audit is other settings)."""
    odd = [*TINY, "seed=0", "dataset.test_fraction=0.2005"]   # 361 test images: the ranks' shares differ by one
    folder = tmp_path / "sweep"
    done = sweep(slurm_cluster, folder, *odd, *ON_SLURM, "hydra.launcher.tasks_per_node=2",
                 "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    assert "sacct" not in console and SRUN_HINT not in console
    ranks = {path.name: path.read_text() for path in folder.glob(".submitit/*/*_log.out")}
    assert sorted(rank for text in ranks.values() for rank in ("0(2)", "1(2)") if f"global_rank={rank}" in text) \
        == ["0(2)", "1(2)"], "srun started two tasks, ranks 0 and 1 of 2"

    [job] = job_folders(folder)
    alone = tmp_path / "alone"
    run(compose_config([*odd, "mode=audit", f"model.checkpoint={job / 'checkpoints' / 'last.ckpt'}"], alone))
    ours, theirs = (pd.read_parquet(records_file(path)) for path in (job, alone))
    assert not ours.duplicated(["estimator", "sample_index"]).any()
    assert ours.groupby("estimator", observed=True).size().to_dict() == {"exact": 361, "deepfool": 361}
    pd.testing.assert_frame_equal(ours.drop(columns="settings_hash"), theirs.drop(columns="settings_hash"))


def test_no_srun_hint_from_a_job_of_the_local_launcher_on_a_machine_with_srun(slurm_cluster, tmp_path):
    """Lightning tells every job started without srun on a machine that has srun to prepend srun (for SLURM
    jobs; a job of this machine has nothing to fix). srun is here (the cluster's packages), Lightning gives the
    hint in this process, and a job of ``hydra/launcher=local`` (submitit's processes on this machine) shows none."""
    import lightning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lightning.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    assert any(SRUN_HINT in str(warning.message) for warning in caught), "Lightning gives the hint on this machine"

    folder = tmp_path / "sweep"
    done = sweep(slurm_cluster, folder, "seed=0", *TINY, "hydra/launcher=local")
    assert done.returncode == 0, done.stderr[-3000:]
    logs = "".join(path.read_text() for path in folder.glob(".submitit/*/*_log.*"))
    assert "test accuracy" in logs   # the job's console, which submitit keeps
    assert SRUN_HINT not in done.stdout + done.stderr + logs
