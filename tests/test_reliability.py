"""Crashes, memory limits and reruns: results are never lost, never stale, and always the same."""

import copy
import errno
import json
import shutil
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import TAGS
from robustness_bias.analysis.summary import summarize
from robustness_bias.auditing import Auditor, Planned, Samples
from robustness_bias.config.job import EstimatorPlan
from robustness_bias.data import DigitsDataModule
from robustness_bias.estimators import DeepFool, Estimator, RandomizedSmoothing
from robustness_bias.pipeline import run
from robustness_bias import records
from robustness_bias.records import ChunkStore, audit_folder, read_chunk_counts
from robustness_bias.report import publish
from robustness_bias.report.publish import Publisher
from robustness_bias.training import resumable

# Two epochs: the kill lands in the first audit, so the rerun must also resume training.
JOB = ["logger=none", "estimator=[deepfool,rs]", "estimator.rs.n=5000", "audit.plan.rs.every_nth=1",
       "audit.plan.rs.chunk_size=16", "audit.plan.deepfool.chunk_size=16", "trainer.max_epochs=2", "audit.progress=false", "trainer.enable_progress_bar=false"]


def command(out) -> list[str]:
    return [sys.executable, "-m", "robustness_bias", f"paths.output_dir={out}", f"hydra.run.dir={out}", *JOB]


def stored_chunks(out) -> list:
    return sorted(out.glob("audits/.partial/*/rs/chunk-*.parquet"))


def record_bytes(out) -> dict[str, bytes]:
    return {tag: (out / "audits" / tag / "records.parquet").read_bytes() for tag in TAGS}


@pytest.mark.slow
def test_a_killed_audit_resumes_from_its_last_chunk_and_ends_identical(tmp_path):
    whole = tmp_path / "uninterrupted"
    subprocess.run(command(whole), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and len(stored_chunks(killed)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before_kill = len(stored_chunks(killed))
    assert process.returncode == -signal.SIGKILL and finished_before_kill >= 3
    assert not (killed / "result.json").exists() and not (killed / "audits" / "first").exists()

    subprocess.run(command(killed), check=True, capture_output=True, timeout=600)
    result = json.loads((killed / "result.json").read_text())
    chunks = result["audit_chunks"]["first+middle"]["rs"]   # summed over both attempts
    total = json.loads((whole / "result.json").read_text())["audit_chunks"]["first+middle"]["rs"]["computed"]
    assert chunks["reused"] >= finished_before_kill and chunks["computed"] == total, "no chunk computed twice"
    assert record_bytes(killed) == record_bytes(whole)
    assert not stored_chunks(killed), "chunks are removed once the records hold them"


def test_chunk_counts_come_from_the_chunk_files_so_a_kill_after_any_write_loses_none(tmp_path, caplog,
                                                                                     monkeypatch):
    def frame(samples):
        return pd.DataFrame({"sample_index": samples, "distance": np.ones(len(samples))})

    store = ChunkStore(tmp_path / "deepfool")
    store.write(0, frame([1, 2]), 16)
    write_table = records.write_table

    def killed_once_written(table, path):
        write_table(table, path)
        raise KeyboardInterrupt("killed right after the chunk's file landed")

    monkeypatch.setattr(records, "write_table", killed_once_written)
    with pytest.raises(KeyboardInterrupt):
        store.write(1, frame([3, 4]), 16)
    monkeypatch.undo()
    resumed = ChunkStore(tmp_path / "deepfool")   # the rerun
    assert resumed.counts == {"reused": 0, "computed": 2}
    assert resumed.read(0, np.array([1, 2]), 16) is not None
    assert resumed.read(1, np.array([3, 5]), 16) is None and "covers other samples" in caplog.text
    resumed.write(1, frame([3, 5]), 16)   # computed again over the one that covered other samples
    resumed.write(2, frame([6]), 8)       # after running out of memory: kept apart under its batch size
    assert ChunkStore(tmp_path / "deepfool").counts == {"reused": 1, "computed": 4}
    assert ChunkStore(tmp_path / "deepfool2").counts == {"reused": 0, "computed": 0}   # another estimator's
    ChunkStore(tmp_path / "deep[f]ool").write(0, frame([1]), 16)   # a name glob would read as a pattern
    assert ChunkStore(tmp_path / "deep[f]ool").counts == {"reused": 0, "computed": 1}
    assert ChunkStore(tmp_path / "deepfool").counts["computed"] == 4


@pytest.fixture(scope="module")
def digits():
    datamodule = DigitsDataModule(normalization={"mean": [0.3], "std": [0.4]})
    datamodule.setup()
    datamodule.test_indices = datamodule.test_indices[:96]
    return datamodule


@pytest.fixture(scope="module")
def model(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y, _ = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(digits.table, digits.train_indices.tolist()),
                                                    batch_size=2000)))
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


def audit(tmp_path, digits, plan: Planned, settings_hash="settings-a") -> Auditor:
    """An auditor of the digits' test samples, with no Lightning object and no publisher in sight."""
    return Auditor(plan, Samples(digits.table, digits.test_indices), tmp_path, settings_hash=settings_hash,
                   progress=False)


def chunk_counts(folder, tag="final") -> dict:
    return read_chunk_counts(audit_folder(folder, tag))[1]


class CrashesAfter(DeepFool):
    """DeepFool that dies (as a killed process would) once it has handed back ``chunks`` chunks."""

    def __init__(self, chunks: int, **kwargs):
        super().__init__(**kwargs)
        self.chunks = chunks

    def stream(self, *args, **kwargs):
        for done in super().stream(*args, **kwargs):
            if self.chunks == 0:
                raise KeyboardInterrupt("simulated crash")
            self.chunks -= 1
            yield done


def test_a_rerun_reuses_only_chunks_of_the_same_settings_and_weights(tmp_path, digits, model):
    def deepfool(attack=None, batch_size=16):
        return {"deepfool": (attack or DeepFool(), EstimatorPlan(batch_size=batch_size, chunk_size=16))}

    with pytest.raises(KeyboardInterrupt):
        audit(tmp_path, digits, deepfool(CrashesAfter(3)))(model, 1, ["final"])
    other_weights = copy.deepcopy(model)
    with torch.no_grad():
        other_weights[-1].bias += 1e-4
    for settings, weights in (("settings-b", model), ("settings-a", other_weights)):
        audit(tmp_path, digits, deepfool(), settings)(weights, 1, ["final"])
        assert chunk_counts(tmp_path)["deepfool"] == {"reused": 0, "computed": 6}

    audit(tmp_path, digits, deepfool())(model, 1, ["final"])
    assert chunk_counts(tmp_path)["deepfool"] == {"reused": 3, "computed": 6}   # over both attempts
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    assert (records["settings_hash"] == "settings-a").all()
    assert not list((tmp_path / "audits" / ".partial").iterdir()), "finished audits leave no chunks behind"

    audit(tmp_path / "whole", digits, deepfool())(model, 1, ["final"])
    pd.testing.assert_frame_equal(records, pd.read_parquet(tmp_path / "whole" / "audits" / "final" / "records.parquet"))


@pytest.mark.parametrize("damage", [b"", b"PAR1 cut short"], ids=["empty", "truncated"])
def test_a_damaged_chunk_is_recomputed_with_a_warning_naming_it(tmp_path, digits, model, caplog, damage):
    plan = {"deepfool": (DeepFool(), EstimatorPlan(batch_size=16, chunk_size=16))}
    with pytest.raises(KeyboardInterrupt):
        audit(tmp_path, digits, {"deepfool": (CrashesAfter(3), EstimatorPlan(batch_size=16, chunk_size=16))})(
            model, 1, ["final"])
    damaged = sorted((tmp_path / "audits" / ".partial").glob("*/deepfool-batch16/chunk-*.parquet"))[1]
    damaged.write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="robustness_bias.records"):
        audit(tmp_path, digits, plan)(model, 1, ["final"])
    assert f"{damaged} is damaged" in caplog.text and "recomputing it" in caplog.text
    assert chunk_counts(tmp_path)["deepfool"] == {"reused": 2, "computed": 7}   # 3 before, the damaged one and 3 after
    audit(tmp_path / "whole", digits, plan)(model, 1, ["final"])
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet"),   # up to how
                                  pd.read_parquet(tmp_path / "whole" / "audits" / "final" / "records.parquet"))   # the pool rounds


def test_deepfool_reuses_chunks_only_from_its_own_batch_size(tmp_path, digits, model):
    x, y, _ = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(digits.table, digits.test_indices.tolist()),
                                                    batch_size=96)))
    by_batch = {b: torch.cat([DeepFool()(model, x[i:i + b], y[i:i + b]).distance for i in range(0, 96, b)])
                for b in (7, 96)}
    assert not torch.equal(by_batch[7], by_batch[96])   # rounding differs: why stored chunks are kept apart
    assert torch.allclose(by_batch[7], by_batch[96], rtol=1e-4)

    with pytest.raises(KeyboardInterrupt):
        audit(tmp_path, digits, {"deepfool": (CrashesAfter(3), EstimatorPlan(batch_size=16, chunk_size=16))})(
            model, 1, ["final"])
    at_8 = {"deepfool": (DeepFool(), EstimatorPlan(batch_size=8, chunk_size=16))}
    audit(tmp_path, digits, at_8)(model, 1, ["final"])
    assert chunk_counts(tmp_path)["deepfool"] == {"reused": 0, "computed": 9}   # 3 at 16 and 6 at 8
    audit(tmp_path / "whole", digits, at_8)(model, 1, ["final"])
    assert (tmp_path / "audits" / "final" / "records.parquet").read_bytes() == \
        (tmp_path / "whole" / "audits" / "final" / "records.parquet").read_bytes()


class SimulatedCrash(Exception):
    pass


def test_result_counts_the_chunks_of_every_audit_across_resumes(tmp_path, monkeypatch):
    from conftest import compose_config

    job = compose_config(["logger=none", "dataset=synthetic", "dataset.n_samples=300", "partition=group",
                          "estimator=[deepfool]", "audit.plan.deepfool.chunk_size=16", "trainer.max_epochs=2",
                          "audit.progress=false"],
                         tmp_path)
    chunks, stream = iter(range(6)), DeepFool.stream   # 4 chunks per audit: dies in the final one

    def crashing(self, *args, **kwargs):
        for done in stream(self, *args, **kwargs):
            if next(chunks, None) is None:
                raise SimulatedCrash
            yield done

    monkeypatch.setattr(DeepFool, "stream", crashing)
    with pytest.raises(SimulatedCrash):
        run(job)
    monkeypatch.undo()
    chunks = run(job)["audit_chunks"]
    assert chunks == {"first+middle": {"deepfool": {"reused": 0, "computed": 4}},   # finished before the crash
                      "final": {"deepfool": {"reused": 2, "computed": 4}}}          # 2 before it, 2 after


class MemoryLimited:
    """Wraps an estimator: any call that works on more than ``limit`` images at once (its batch size, the
    attacks' pool width) runs out of (simulated) GPU memory."""

    def __init__(self, estimator, limit: int):
        self.estimator, self.limit, self.refused, self.accepted = estimator, limit, [], []

    def __getattr__(self, name):
        return getattr(self.estimator, name)

    def stream(self, model, chunks, batch_size, progress=None):
        if batch_size > self.limit:
            self.refused.append(batch_size)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        self.accepted.append(batch_size)
        yield from self.estimator.stream(model, chunks, batch_size, progress)


@pytest.mark.parametrize("make", [DeepFool, lambda: RandomizedSmoothing(n=500, forward_batch=250)],
                         ids=["deepfool", "rs"])
def test_out_of_memory_halves_the_batch_and_gives_the_records_of_the_smaller_batch(tmp_path, digits, model, make,
                                                                                   caplog, monkeypatch):
    released = []   # the graphs (and memory pools) kept for the larger batch go before each retry, and all at the end
    monkeypatch.setattr(Estimator, "release_memory", lambda self: released.append(len(limited.refused)))
    limited = MemoryLimited(make(), limit=16)
    with caplog.at_level(logging.WARNING, logger="robustness_bias.auditing"):
        audit(tmp_path / "retried", digits, {"e": (limited, EstimatorPlan(batch_size=64, chunk_size=64))})(
            model, 1, ["final"])
    assert limited.refused == [64, 32] and max(limited.accepted) == 16 and released == [1, 2, 2]
    assert "batch_size=32" in caplog.text and "batch_size=16" in caplog.text
    audit(tmp_path / "small", digits, {"e": (make(), EstimatorPlan(batch_size=16, chunk_size=64))})(model, 1, ["final"])
    retried, small = (tmp_path / name / "audits" / "final" / "records.parquet" for name in ("retried", "small"))
    assert retried.read_bytes() == small.read_bytes()


class RunsOutMidStream(DeepFool):
    """DeepFool whose pool runs out of (simulated) GPU memory after handing back one chunk, at widths above 8;
    records each stream's width and the chunks it was handed."""

    def __init__(self):
        super().__init__()
        self.streams = []

    def stream(self, model, chunks, batch_size, progress=None):
        chunks = list(chunks)
        self.streams.append((batch_size, [index.tolist() for *_, index in chunks]))
        for handed, (number, result) in enumerate(super().stream(model, iter(chunks), batch_size, progress)):
            if handed == 1 and batch_size > 8:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
            if batch_size > 8:
                self.kept = chunks[number][2].tolist()   # the chunk handed back before memory ran out
            yield number, result


def test_out_of_memory_mid_stream_keeps_the_chunks_handed_back_and_streams_the_rest_at_half_the_batch(
        tmp_path, digits, model, caplog):
    attack = RunsOutMidStream()
    with caplog.at_level(logging.WARNING, logger="robustness_bias.auditing"):
        records = audit(tmp_path, digits, {"deepfool": (attack, EstimatorPlan(batch_size=16, chunk_size=16))})(
            model, 1, ["final"])
    (wide, first), (narrow, rest) = attack.streams
    assert (wide, narrow) == (16, 8) and len(first) > 2 and rest == [chunk for chunk in first if chunk != attack.kept]
    assert "retrying its unfinished chunks with batch_size=8" in caplog.text
    assert chunk_counts(tmp_path)["deepfool"] == {"reused": 0, "computed": len(first)}   # none computed twice
    attacked = records[records["correct"]]
    assert attacked["sample_index"].tolist() == sum(first, []) and attacked["success"].all()
    # each chunk's results as a run at its pool width gives them, up to how batched kernels round
    alone = DeepFool()(model, *next(iter(torch.utils.data.DataLoader(
        torch.utils.data.Subset(digits.table, sum(first, [])), batch_size=len(attacked))))[:2], batch_size=8)
    assert attacked["queries"].tolist() == alone.queries.tolist()
    np.testing.assert_allclose(attacked["distance"], alone.distance.double().numpy(), rtol=1e-4)


def test_out_of_memory_at_batch_size_one_is_not_hidden(tmp_path, digits, model):
    with pytest.raises(torch.cuda.OutOfMemoryError):
        audit(tmp_path, digits, {"e": (MemoryLimited(DeepFool(), limit=0), EstimatorPlan(batch_size=2))})(
            model, 1, ["final"])


def test_same_seed_gives_byte_identical_records_and_smoothing_ignores_batch_size(tmp_path, monkeypatch):
    from conftest import compose_config

    job = ["estimator=[exact,deepfool,cw,rs]", "estimator.rs.n=2000", "logger=none", "trainer.max_epochs=2",
           "estimator.cw.steps=20", "estimator.cw.binary_search_steps=2", "audit.progress=false"]
    certify, batch_sizes = RandomizedSmoothing.batch, []
    monkeypatch.setattr(RandomizedSmoothing, "batch",
                        lambda self, model, x, *a, **k: batch_sizes.append(len(x)) or certify(self, model, x, *a, **k))
    outputs, largest = [], []
    for folder, rs_batch in (("a", 16), ("b", 16), ("c", 5)):
        batch_sizes.clear()
        run(compose_config([*job, f"audit.plan.rs.batch_size={rs_batch}"], tmp_path / folder))
        outputs.append(record_bytes(tmp_path / folder))
        largest.append(max(batch_sizes))
    assert largest == [16, 16, 5]   # the setting reached smoothing
    final = pd.read_parquet(tmp_path / "c" / "audits" / "final" / "records.parquet")
    assert (final["success"] & (final["estimator"] == "rs")).any()   # certified radii to compare, not only zeros
    assert outputs[0] == outputs[1] == outputs[2]


def test_training_resumes_only_from_a_checkpoint_of_the_same_settings(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"settings_hash": "abc", "state_dict": {}}, path)
    assert resumable(path, "abc") == path
    assert resumable(path, "other") is None
    path.write_bytes(b"truncated by a crash")
    assert resumable(path, "abc") is None
    assert resumable(tmp_path / "none.ckpt", "abc") is None


def test_records_say_why_samples_have_no_distance(tmp_path, digits, model):
    rs = RandomizedSmoothing(n=200, forward_batch=200, sigma=1.0)   # a large σ makes it abstain often
    audit(tmp_path, digits, {"deepfool": (DeepFool(steps=1), EstimatorPlan()), "rs": (rs, EstimatorPlan(batch_size=16))})(
        model, 1, ["final"])
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    assert (records.loc[~records["correct"], "failure"] == "misclassified").all()
    attacked = records[records["correct"]]
    assert (attacked.loc[attacked["success"], "failure"] == "none").all()
    assert set(attacked.loc[~attacked["success"], "failure"]) <= {"budget_exhausted", "abstained", "wrong_class"}
    assert not attacked.loc[~attacked["success"]].empty
    assert np.isinf(attacked.loc[~attacked["success"] & (attacked["estimator"] == "deepfool"), "distance"]).all()
    bounds = records.groupby("estimator", observed=True)["bound"].unique()
    assert list(bounds["deepfool"]) == ["upper"] and list(bounds["rs"]) == ["lower"]
    assert (attacked.loc[~attacked["success"] & (attacked["estimator"] == "rs"), "distance"] == 0).all()


def test_an_audit_under_coinciding_tags_is_summarized_once_and_published_under_each(tmp_path, digits, model,
                                                                                   monkeypatch):
    calls = []
    monkeypatch.setattr(publish, "summarize", lambda records, settings: calls.append(1) or summarize(records, settings))
    plan = {"deepfool": (DeepFool(), EstimatorPlan(batch_size=32, chunk_size=64, every_nth=4))}
    Auditor(plan, Samples(digits.table, digits.test_indices), tmp_path, progress=False,
            publish=Publisher(tmp_path / "figures", "class", {"partitions": ["class"]}))(model, 1, ["first", "middle"])
    assert len(calls) == 1
    summaries = {tag: pd.read_parquet(tmp_path / "audits" / tag / "summary.parquet") for tag in ("first", "middle")}
    assert set(summaries["first"]["epoch_tag"]) == {"first"} and set(summaries["middle"]["epoch_tag"]) == {"middle"}
    pd.testing.assert_frame_equal(summaries["first"].drop(columns="epoch_tag"),
                                  summaries["middle"].drop(columns="epoch_tag"))
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        f"{tag}_{kind}.png" for tag in ("first", "middle") for kind in ("survival_class", "sigma")}


TINY = ["logger=none", "dataset=synthetic", "dataset.n_samples=300", "partition=group", "estimator=[exact,deepfool]",
        "trainer.max_epochs=1", "audit.progress=false", "trainer.enable_progress_bar=false"]


def figure_names(job) -> set[str]:
    return {path.name for path in (job / "figures").glob("*.png")}


def test_a_rerun_after_a_kill_between_records_and_summary_publishes_these_records(tmp_path):
    """The records are this job's, the summary beside them an earlier job's (seed=1, in the same folder):
    the rerun writes the summary of these records instead of taking the audit as finished."""
    from conftest import compose_config

    job, earlier = tmp_path / "job", tmp_path / "earlier"
    run(compose_config(TINY, job))
    run(compose_config([*TINY, "seed=1"], earlier))
    ours = pd.read_parquet(audit_folder(job, "final") / "summary.parquet")
    for tag in TAGS:
        for name in ("summary.parquet", "summary.csv", "published.json"):
            if (audit_folder(earlier, tag) / name).is_file():
                shutil.copy(audit_folder(earlier, tag) / name, audit_folder(job, tag) / name)
    (job / "result.json").unlink()
    assert run(compose_config(TINY, job))["test_accuracy"] > 0
    pd.testing.assert_frame_equal(pd.read_parquet(audit_folder(job, "final") / "summary.parquet"), ours)
    assert json.loads((job / "result.json").read_text())["audit_chunks"] == \
        {"first+middle+final": {"deepfool": {"reused": 0, "computed": 1}, "exact": {"reused": 0, "computed": 1}}}


def test_a_rerun_after_a_kill_between_summary_and_figures_draws_the_figures(tmp_path):
    from conftest import compose_config

    run(compose_config(TINY, tmp_path))
    drawn = figure_names(tmp_path)
    assert len(drawn) == 2 * len(TAGS)
    for path in (tmp_path / "figures").glob("*.png"):
        path.unlink()
    for tag in TAGS:
        (audit_folder(tmp_path, tag) / "published.json").unlink(missing_ok=True)   # written after the figures
    (tmp_path / "result.json").unlink()
    run(compose_config(TINY, tmp_path))
    assert figure_names(tmp_path) == drawn


# ---------------------------------------------------------------- a full disk

TWO_EPOCHS = [*(o for o in TINY if not o.startswith("trainer.max_epochs")), "trainer.max_epochs=2"]
# The write of the second epoch's (the final) audit, or the second checkpoint, that meets a full disk; the first
# epoch's audit (first+middle) and checkpoint are written before it.
MEETS_FULL_DISK = {"chunk": lambda path: path.name.startswith(".chunk-") and path.parent.parent.name.endswith("-e2"),
                   "records": lambda path: path.name.startswith(".records.parquet") and path.parent.name == "final",
                   "summary": lambda path: path.name.startswith(".summary.parquet") and path.parent.name == "final"}


def full_disk_at(monkeypatch, kind: str, job) -> dict:
    """Writes go on as usual until the one of ``kind``, which writes a few bytes of its temporary file and then
    runs out of space (OSError ENOSPC, as a full disk or quota raises it). Returns the job's files, with their
    bytes, as they were at that moment."""
    import lightning as L

    before = {}

    def fill(tmp):
        before.update({path: path.read_bytes() for path in job.rglob("*") if path.is_file() and path.name != ".lock"})
        Path(tmp).write_bytes(b"PAR1 cut short")
        raise OSError(errno.ENOSPC, "No space left on device")

    if kind == "checkpoint":
        save, saved = L.Trainer.save_checkpoint, []

        def saving(self, path, *args, **kwargs):
            saved.append(path)
            return fill(path) if len(saved) == 2 else save(self, path, *args, **kwargs)

        monkeypatch.setattr(L.Trainer, "save_checkpoint", saving)
    else:
        to_parquet = pd.DataFrame.to_parquet

        def writing(frame, path, *args, **kwargs):
            return fill(path) if MEETS_FULL_DISK[kind](Path(path)) else to_parquet(frame, path, *args, **kwargs)

        monkeypatch.setattr(pd.DataFrame, "to_parquet", writing)
    return before


@pytest.mark.parametrize("kind", ["chunk", "records", "summary", "checkpoint"])
def test_a_full_disk_stops_the_job_in_one_line_and_loses_nothing_written(tmp_path, monkeypatch, kind):
    from conftest import compose_config

    from robustness_bias.lock import CannotWrite

    before = full_disk_at(monkeypatch, kind, tmp_path)
    with pytest.raises(CannotWrite) as stopped:
        run(compose_config(TWO_EPOCHS, tmp_path))
    written = {"chunk": rf"{tmp_path}/audits/\.partial/\S+-e2/\w+-batch256/chunk-00000\.parquet",
               "records": rf"{tmp_path}/audits/final/records\.parquet",
               "summary": rf"{tmp_path}/audits/final/summary\.parquet", "checkpoint": str(tmp_path)}[kind]
    assert re.fullmatch(rf"no space left to write {written} \(No space left on device\); what the job finished is "
                        rf"kept in {tmp_path}\. Fix: free space on that disk and rerun the same command \(finished "
                        r"chunks and audits are reused\), or give the job a folder on another disk \(hydra\.run\.dir=…\)",
                        str(stopped.value)), str(stopped.value)
    assert audit_folder(tmp_path, "first") / "records.parquet" in before and tmp_path / "checkpoints" / "last.ckpt" \
        in before
    assert all(path.read_bytes() == data for path, data in before.items()), "a file written before was lost or changed"
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "result.json").exists()
    monkeypatch.undo()   # space freed: the rerun finishes, the first audit taken up as it was, not measured again
    first = audit_folder(tmp_path, "first") / "records.parquet"
    written = first.stat().st_mtime_ns
    assert run(compose_config(TWO_EPOCHS, tmp_path))["audits"]["final"]
    assert first.stat().st_mtime_ns == written


FULL_DISK = """
import errno, sys
import pandas as pd

to_parquet = pd.DataFrame.to_parquet


def full(frame, path, *args, **kwargs):
    if ".records.parquet" in str(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    return to_parquet(frame, path, *args, **kwargs)


pd.DataFrame.to_parquet = full
sys.argv[0] = "robustness_bias"
from robustness_bias.__main__ import cli
cli()
"""


def test_a_full_disk_is_one_line_on_the_command_line_and_a_failing_exit_status(tmp_path):
    done = subprocess.run([sys.executable, "-c", FULL_DISK, *TINY, f"hydra.run.dir={tmp_path}"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"robustness_bias: error: no space left to write {tmp_path}/audits/first/records.parquet (No space left on "
        f"device); what the job finished is kept in {tmp_path}. Fix: free space")
    assert "Traceback" not in done.stderr + done.stdout
