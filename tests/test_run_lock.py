"""One job per run folder: a second job stops at once naming the holder; a killed job's lock is taken over."""

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from conftest import compose_config

from robustness_bias.lock import FolderBusy, folder_lock
from robustness_bias.config.fingerprint import job_fingerprint
from robustness_bias.pipeline import run
from robustness_bias.records import write_atomic

TINY = ["logger=none", "dataset=synthetic", "dataset.n_samples=300", "partition=group", "estimator=[exact,deepfool]"]
QUIET = ["audit.progress=false", "trainer.enable_progress_bar=false"]   # make_config adds these itself


def wait_for_holder(lock, process, seconds=120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if lock.is_file() and lock.read_text():
            return json.loads(lock.read_text())
        time.sleep(0.05)
    raise AssertionError("the first job never took the lock")


def test_a_second_job_on_a_busy_folder_stops_and_the_first_finishes_intact(make_config, tmp_path):
    first = subprocess.Popen([sys.executable, "-m", "robustness_bias", *TINY, *QUIET, "seed=0",
                              "trainer.max_epochs=3", f"hydra.run.dir={tmp_path}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    holder = wait_for_holder(tmp_path / ".lock", first)
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    with pytest.raises(FolderBusy, match=rf"^{tmp_path} is in use by another job \(pid {first.pid} on "
                                         rf"{socket.gethostname()}, started {holder['started']}\)\. Fix: "):
        run(make_config(*TINY, "seed=1", "trainer.max_epochs=3"))
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    ours = job_fingerprint(compose_config([*TINY, *QUIET, "seed=0", "trainer.max_epochs=3"], tmp_path))
    assert json.loads((tmp_path / "result.json").read_text())["settings_hash"] == ours
    assert (pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")["settings_hash"] == ours).all()
    assert not (tmp_path / ".lock").exists()


def test_the_command_line_names_the_holder_in_one_line(tmp_path):
    with folder_lock(tmp_path):
        started = json.loads((tmp_path / ".lock").read_text())["started"]
        done = subprocess.run([sys.executable, "-m", "robustness_bias", *TINY, *QUIET, f"hydra.run.dir={tmp_path}"],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"robustness_bias: error: {tmp_path} is in use by another job (pid {os.getpid()} "
                                   f"on {socket.gethostname()}, started {started}). Fix: wait for it to finish, or "
                                   "give this job its own folder (hydra.run.dir=… or paths.output_dir=…)")
    assert not (tmp_path / "dataset.json").exists()


def test_the_lock_of_a_killed_job_is_taken_over_with_a_warning(make_config, tmp_path, caplog):
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": killed.pid, "host": socket.gethostname(),
                                                "started": "2024-01-01 00:00:00"}))
    with caplog.at_level(logging.WARNING, logger="robustness_bias.lock"):
        run(make_config(*TINY, "trainer.max_epochs=1"))
    assert f"the job that held it (pid {killed.pid} on {socket.gethostname()}, started 2024-01-01 00:00:00) is no " \
           "longer running" in caplog.text
    assert (tmp_path / "result.json").is_file() and not (tmp_path / ".lock").exists()


def test_concurrent_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    path = tmp_path / "result.json"

    def write(number):
        return write_atomic(path, lambda tmp: tmp.write_text(f"{number:02d}" * 50_000))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(64)))
    text = path.read_text()
    assert text == text[:2] * 50_000 and list(tmp_path.iterdir()) == [path]   # one writer's whole text


def files_of(folder) -> dict[str, bytes]:
    """Every file of a job's folder and its bytes, but the lock (which a holder writes)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != ".lock"}


def command_line(folder, *overrides) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustness_bias", *TINY, *QUIET, "trainer.max_epochs=1", *overrides,
                           f"hydra.run.dir={folder}"], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A folder where the command line finished a job (seed=0)."""
    folder = tmp_path_factory.mktemp("finished")
    done = command_line(folder, "seed=0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / ".hydra" / "overrides.yaml").is_file() and (folder / "result.json").is_file()
    return folder


def test_a_finished_folder_is_refused_to_other_settings_in_one_line_and_left_as_it_was(finished):
    before = files_of(finished)
    done = command_line(finished, "seed=1")
    fingerprints = [job_fingerprint(compose_config([*TINY, *QUIET, "trainer.max_epochs=1", seed], finished))
                    for seed in ("seed=0", "seed=1")]
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"robustness_bias: error: {finished} holds a finished job of other settings ({fingerprints[0]}; this job's: "
        f"{fingerprints[1]}), which is never overwritten. Fix: give this job its own folder (hydra.run.dir=…), "
        f"or delete {finished}")
    assert files_of(finished) == before


def test_a_job_refused_a_busy_folder_writes_nothing_there(finished):
    before = files_of(finished)
    with folder_lock(finished):
        done = command_line(finished, "seed=0")
    assert done.returncode == 2 and "is in use by another job" in done.stderr
    assert files_of(finished) == before


# ---------------------------------------------------------------- a folder the job cannot write

READ_ONLY = """
import errno, pathlib, sys

mkdir, read_only = pathlib.Path.mkdir, sys.argv.pop(1)


def refused(self, *args, **kwargs):   # a read-only folder, as a user who is not root meets it
    if str(self).startswith(read_only + "/"):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))
    return mkdir(self, *args, **kwargs)


pathlib.Path.mkdir = refused
sys.argv[0] = "robustness_bias"
from robustness_bias.__main__ import cli
cli()
"""
FIX = "Fix: give the job a folder it can write to (hydra.run.dir=…, hydra.sweep.dir=… for a sweep, or paths.output_dir=…)"


@pytest.mark.parametrize("blocked", ["file", "read-only"])
def test_a_run_folder_that_cannot_be_made_is_one_line_before_anything_runs(tmp_path, blocked):
    """Hydra makes the run folder before any of the job's code runs: its OSError was a traceback."""
    (tmp_path / "file").write_text("not a folder")
    if blocked == "file":
        folder, start = tmp_path / "file" / "run", [sys.executable, "-m", "robustness_bias"]
        reason = f"{tmp_path / 'file'} is a file, not a folder"
    else:
        folder, start = tmp_path / "locked" / "run", [sys.executable, "-c", READ_ONLY, str(tmp_path / "locked")]
        reason = f"{folder}: Permission denied"
    done = subprocess.run([*start, *TINY, *QUIET, f"hydra.run.dir={folder}"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"robustness_bias: error: cannot write the job's folder {folder} ({reason}). {FIX}"


def test_a_job_given_a_folder_it_cannot_write_stops_before_reading_data(tmp_path, monkeypatch):
    from robustness_bias import lock
    from robustness_bias.data import SyntheticDataModule
    from robustness_bias.lock import CannotWrite

    monkeypatch.setattr(SyntheticDataModule, "load", lambda self: pytest.fail("the data was read"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CannotWrite, match=rf"^cannot write the job's folder {tmp_path}/file/run \({tmp_path}/file is "
                                          rf"a file, not a folder\)\. Fix: give the job a folder"):
        run(compose_config([*TINY, *QUIET], tmp_path / "file" / "run"))

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(lock, "_acquire", read_only)
    with pytest.raises(CannotWrite, match=rf"^cannot write the job's folder {tmp_path}/job \({tmp_path}/job/\.lock: "
                                          r"Read-only file system\)\. Fix: "):
        run(compose_config([*TINY, *QUIET], tmp_path / "job"))
