"""Measuring: every estimator of a plan on the test samples, as one record per (sample, estimator).

No Lightning here: an audit is a model, the samples and a plan, so the same engine serves the
training callback, ``mode=audit`` and a notebook. Only correctly classified samples are
attacked: the paper's distances are to the boundary of the true class's region, which a
misclassified point has already crossed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..config.job import EstimatorPlan
from ..estimators import FAILURES, UPPER, DistanceResult, Estimator
from ..estimators.base import nonfinite_rows
from ..estimators.pool import Chunk
from ..console import progress_bar
from ..records import ChunkStore
from ..stopping import stop_if_signalled
from .best import BEST, best_bound

log = logging.getLogger(__name__)

NOT_ATTACKED = "misclassified"   # the failure column of samples the model already gets wrong
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}   # EstimatorPlan.precision: autocast's dtype
# compilations per compiled frame before dynamo runs it eagerly: grad mode, autocast and the pool's width, its
# draining rows (one dynamic graph) and single rows each compile anew
RECOMPILE_LIMIT = 32

# What an audit measures with: each estimator by name, and how it runs (robustness_bias.config.job.EstimatorPlan,
# the schema of audit.plan.<estimator>, whose defaults it keeps): auditing/plan.py builds it.
Planned = dict[str, tuple[Estimator, EstimatorPlan]]


@dataclass
class Samples:
    """What an audit measures: ``indices`` into ``dataset``, whose items are (image, label, attributes),
    and a ``metadata(indices)`` table of labels and attributes (the data modules' ImageTable)."""

    dataset: Dataset
    indices: np.ndarray


def measure(model: torch.nn.Module, samples: Samples, planned: Planned, *,
            chunks: Path | None = None, part: int = 0, parts: int = 1, channels_last: bool = False,
            progress: bool = False, label: str = "", best: bool = False) -> pd.DataFrame:
    """Records of every planned estimator on its samples: each takes every ``every_nth`` of ``samples``
    and, of these, shard ``part`` of ``parts`` every ``parts``-th.

    ``model`` is audited as it is (the caller puts it in eval mode), on the device of its parameters.
    With ``chunks``, finished chunks are stored below it (a :class:`~robustness_bias.records.ChunkStore`
    per estimator) and read back on a rerun instead of recomputed. With ``best``, the records gain the
    per-sample best bound of the attacks that ran, as estimator ``best`` (best.py).
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    meta = predictions(model, samples, device, channels_last)
    compiled = torch.compile(model) if any(compiles(*pair) for pair in planned.values()) else None
    frames = []
    for name, (estimator, plan) in planned.items():
        store = ChunkStore(chunks / name) if chunks is not None else None
        own = meta.iloc[::plan.every_nth].iloc[part::parts]
        runs_on = compiled if compiles(estimator, plan) else model
        frames.append(estimate(name, estimator, plan, runs_on, samples.dataset, own, device, store, channels_last,
                               " ".join(filter(None, ("audit", label, "·", name))), progress))
    derived = best_bound(frames) if best else None
    if best and derived is None:
        log.warning("audit.best: no attack (upper-bound estimator) ran, so there is no best bound")
    if derived is not None:
        frames.append(derived)
    records = pd.concat(frames, ignore_index=True)
    records["estimator"] = pd.Categorical(records["estimator"], categories=[*planned, *([BEST] if derived is not None else [])])
    records["failure"] = pd.Categorical(records["failure"], categories=[*FAILURES, NOT_ATTACKED])
    return records


def compiles(estimator: Estimator, plan: EstimatorPlan) -> bool:
    """Whether an estimator runs on the audit's compiled model: an attack (whose distances are upper bounds, found
    by passes through the model) under a plan that asks. Smoothing compiles its own forward passes, padded to one
    shape (auditing/plan.py hands it the plan's ``compile``); exact runs no passes."""
    return plan.compile and estimator.bound == UPPER


@contextlib.contextmanager
def compiling(model):
    """What a compiled model's passes need: inductor's backward reuses ("donates") the buffers its forward saved,
    which DeepFool's retained graph needs again, so it may not; and room for the few graphs an attack compiles,
    beyond which dynamo would run the model eagerly (the same results, slower). A plain model: nothing."""
    if not isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        yield
        return
    with torch._functorch.config.patch(donated_buffer=False), \
            torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        yield


def batches(dataset: Dataset, indices, batch_size: int, device, channels_last: bool):
    """(images, labels) of ``indices`` on ``device``, in order."""
    for x, y, _ in DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=False):
        x = x.to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y.to(device)


def accuracy(model: torch.nn.Module, samples: Samples, channels_last: bool = False) -> float:
    """The share of ``samples`` the model classifies correctly, whichever of them an audit measures (an
    estimator's ``every_nth`` or a shard audits only some)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return float(predictions(model, samples, device, channels_last)["correct"].mean())


def group_accuracies(model: torch.nn.Module, samples: Samples, partitions: list[str],
                     channels_last: bool = False) -> dict[str, dict[str, float]]:
    """Per partition (the class or an attribute), each group's share of ``samples`` classified correctly: on
    every sample, not only those an estimator's ``every_nth`` audits."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    meta = predictions(model, samples, device, channels_last)
    return {partition: {str(group): float(rows["correct"].mean())
                        for group, rows in meta.groupby(partition, observed=True, sort=True)}
            for partition in partitions if partition in meta}


@torch.no_grad()
def predictions(model, samples: Samples, device, channels_last: bool, batch_size: int = 256) -> pd.DataFrame:
    """The samples' metadata with the model's ``prediction`` and whether it is ``correct``; a sample whose
    logits are not finite gets prediction -1 (never counted correct)."""
    predicted = []
    for x, _ in batches(samples.dataset, samples.indices.tolist(), batch_size, device, channels_last):
        logits = model(x)
        predicted.append(torch.where(nonfinite_rows(logits), -1, logits.argmax(1)).cpu())
    meta = samples.dataset.metadata(samples.indices)
    meta["prediction"] = torch.cat(predicted).numpy()
    meta["correct"] = meta["prediction"] == meta["label"]
    return meta


def chunk_frame(chunk: np.ndarray, result: DistanceResult) -> pd.DataFrame:
    """One chunk's results as a table, keyed by sample index."""
    return pd.DataFrame({"sample_index": chunk, "distance": result.distance.double().numpy(),
                         "success": result.success.numpy(), "queries": result.queries.numpy(),
                         "failure": np.asarray(FAILURES, dtype=object)[result.failure.numpy()]})


def estimate(name: str, estimator: Estimator, plan: EstimatorPlan, model, dataset: Dataset, meta: pd.DataFrame, device,
             store: ChunkStore | None, channels_last: bool, description: str, progress: bool) -> pd.DataFrame:
    """One estimator's records on the samples in ``meta``, chunk by chunk, with a progress bar that moves as
    samples are measured (per batch, or per sample leaving an attack's pool).

    The chunks not stored yet are streamed to the estimator, which hands each back as it is done, to
    be stored at once. On running out of GPU memory the batch size halves for the rest of the audit
    and the stream restarts from the chunks still missing; chunks are stored per batch size unless
    the estimator's results ignore batching. A signal (robustness_bias.stopping) ends the audit after the
    chunk it arrived in is stored. ``model`` may be the audit's compiled model (:func:`compiles`).
    """
    attacked = meta.loc[meta["correct"], "sample_index"].to_numpy(copy=True)
    chunks = [attacked[start:start + plan.chunk_size] for start in range(0, len(attacked), plan.chunk_size)]
    batch_size, parts = plan.batch_size, [None] * len(chunks)
    with progress_bar(total=len(attacked), desc=description, unit="img", disable=not progress, leave=False) as bar:
        while True:
            key = None if estimator.batch_invariant else batch_size
            for number, chunk in enumerate(chunks):
                if parts[number] is None and store is not None:
                    parts[number] = store.read(number, chunk, key)
                    bar.update(len(chunk) if parts[number] is not None else 0)
            missing = [number for number, part in enumerate(parts) if part is None]
            if not missing:
                break
            try:
                with torch.autocast(device.type, dtype=PRECISIONS[plan.precision], enabled=plan.precision != "fp32"), \
                        compiling(model):
                    inputs = (chunk_inputs(dataset, chunks[number], device, channels_last or plan.channels_last)
                              for number in missing)
                    for position, result in estimator.stream(model, inputs, batch_size, progress=bar.update):
                        number = missing[position]   # the bar moved as its samples were measured
                        parts[number] = chunk_frame(chunks[number], DistanceResult.cat([result]))
                        if store is not None:   # under the batch size it ran at
                            store.write(number, parts[number], key)
                        stop_if_signalled()   # a signal stops the job here, with this chunk stored
                break
            except torch.cuda.OutOfMemoryError:
                if batch_size == 1:
                    raise
            # outside the handler, whose traceback holds the failed stream's tensors: now they can go
            estimator.release_memory()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch_size //= 2
            bar.reset(total=len(attacked))   # the failed stream's samples are measured again
            bar.update(sum(len(chunks[number]) for number, part in enumerate(parts) if part is not None))
            log.warning("%s ran out of GPU memory: retrying its unfinished chunks with batch_size=%d", name, batch_size)
    distance = np.full(len(meta), np.nan)
    success = np.zeros(len(meta), dtype=bool)
    queries = np.zeros(len(meta), dtype=np.int64)
    failure = np.full(len(meta), NOT_ATTACKED, dtype=object)
    if parts:
        result = pd.concat(parts, ignore_index=True)
        correct = meta["correct"].to_numpy()
        distance[correct] = result["distance"].to_numpy()
        success[correct] = result["success"].to_numpy()
        queries[correct] = result["queries"].to_numpy()
        failure[correct] = result["failure"].to_numpy()
    return meta.assign(estimator=name, precision=plan.precision, distance=distance, bound=estimator.bound,
                       cap=estimator.cap, success=success, queries=queries, failure=failure)


def chunk_inputs(dataset: Dataset, chunk: np.ndarray, device, channels_last: bool) -> Chunk:
    """One chunk's images, labels and dataset indices, loaded when the estimator asks for them."""
    x, y = (torch.cat(parts) for parts in zip(*batches(dataset, chunk.tolist(), 256, device, channels_last)))
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y, torch.as_tensor(chunk)
