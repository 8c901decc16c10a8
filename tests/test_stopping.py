"""SIGTERM (SLURM's preemption, ``timeout``) and SIGINT (Ctrl-C) stop a job where a rerun resumes: the
finished chunks are kept, one line says how to resume, and the exit status says it did not finish."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

# a tiny job whose one audit (logreg on the digits: first, middle and final coincide) takes some seconds
JOB = ["logger=none", "estimator=[cw]", "trainer.max_epochs=1", "estimator.cw.steps=40",
       "estimator.cw.binary_search_steps=3", "audit.plan.cw.chunk_size=4", "audit.plan.cw.batch_size=4",
       "audit.significance.resamples=20", "audit.significance.permutations=20", "audit.progress=false",
       "trainer.enable_progress_bar=false"]


def job(folder, *extra) -> list[str]:
    return [sys.executable, "-m", "robustness_bias", *JOB, *extra, f"hydra.run.dir={folder}"]


def chunk_files(folder) -> list:
    return sorted((folder / "audits" / ".partial").glob("*/cw*/chunk-*.parquet"))


def wait_for_chunks(folder, process, seconds=300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if chunk_files(folder):
            return
        time.sleep(0.05)
    raise AssertionError(f"the audit stored no chunk (exit {process.poll()}): {process.stderr.read()[-2000:]}")


def records(folder) -> pd.DataFrame:
    return pd.read_parquet(folder / "audits" / "final" / "records.parquet")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["term", "int"])
def test_a_signal_during_an_audit_keeps_its_chunks_says_how_to_resume_and_the_rerun_matches(tmp_path, signum,
                                                                                           status):
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(job(stopped), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_chunks(stopped, process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"robustness_bias: stopped by {signum.name}: the finished chunks and audits are kept in {stopped}. "
        "Fix: rerun the same command to resume (finished chunks are reused)")
    assert "Traceback" not in err + out
    assert not (stopped / "result.json").exists() and not (stopped / "audits" / "final").exists()
    kept = chunk_files(stopped)
    assert kept

    resumed = subprocess.run(job(stopped), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counts = pd.read_json(stopped / "result.json", typ="series")["audit_chunks"]["first+middle+final"]["cw"]
    assert counts["reused"] == len(kept) and counts["computed"] > counts["reused"]

    whole = tmp_path / "whole"
    assert subprocess.run(job(whole), capture_output=True, text=True, timeout=600).returncode == 0
    pd.testing.assert_frame_equal(records(stopped), records(whole))


TINY = ["logger=none", "dataset=synthetic", "dataset.n_samples=300", "partition=group", "estimator=[exact]",
        "trainer.max_epochs=2"]


def test_sigterm_during_training_stops_after_that_batch_and_the_rerun_finishes(make_config, tmp_path, monkeypatch):
    import os

    from robustness_bias.pipeline import run
    from robustness_bias.stopping import Stopped
    from robustness_bias.training import Classifier

    step, batches = Classifier.training_step, []

    def training_step(self, batch, batch_idx):
        batches.append((self.current_epoch, batch_idx))
        if (self.current_epoch, batch_idx) == (1, 2):   # the second epoch, after the first audit
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", training_step)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:
        run(make_config(*TINY))
    assert stopped.value.folder == tmp_path and stopped.value.exit_code == 143
    assert batches[-1] == (1, 2), "the batch the signal arrived in was the last"
    assert (tmp_path / "audits" / "first" / "records.parquet").is_file()
    assert not (tmp_path / "audits" / "final").exists() and not (tmp_path / "result.json").exists()
    assert signal.getsignal(signal.SIGTERM) == handler, "the handlers found are restored"
    monkeypatch.undo()
    assert run(make_config(*TINY))["audits"]["final"]
