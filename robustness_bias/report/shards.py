"""Audits split into shards (``audit.shard=i audit.num_shards=n``), put back together for the report.

Each shard job audits every n-th sample; the shards of one audit share a settings fingerprint.
Merging concatenates their records (every sample exactly once, in the unsharded order) and
recomputes the per-group summaries, so a merged job reads like one that ran unsharded.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


from ..analysis.summary import sigmas_of, summarize
from ..records import audit_folder, merge_shards, read_records, write_json, write_records, write_summary


def merge_sharded_jobs(jobs: list[Path]) -> list[Path]:
    """The jobs as the report should read them: each complete set of shards replaced by one merged job
    (written next to the shards as ``merged-<settings_hash>/``)."""
    plain, sharded = [], defaultdict(dict)
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        if result.get("merged_from"):
            continue                      # rebuilt below from its shards
        shard = result.get("shard")
        if shard:
            sharded[(result["settings_hash"], shard["count"])][shard["index"]] = job
        else:
            plain.append(job)
    return sorted(plain + [merge_jobs(shards, count) for (_, count), shards in sharded.items()])


def up_to_date(target: Path, shards: dict[int, Path]) -> bool:
    """Whether ``target`` already holds the merge of exactly these shards, written after all of them."""
    done = target / "result.json"
    if not done.is_file():
        return False
    newest_shard = max((job / "result.json").stat().st_mtime for job in shards.values())
    merged_from = json.loads(done.read_text()).get("merged_from")
    return merged_from == [str(shards[i]) for i in sorted(shards)] and done.stat().st_mtime >= newest_shard


def merge_jobs(shards: dict[int, Path], count: int) -> Path:
    """Merge the audits of one sharded job (unless done already); returns the merged job's folder."""
    first = json.loads((shards[min(shards)] / "result.json").read_text())
    target = shards[min(shards)].parent / f"merged-{first['settings_hash']}"
    if up_to_date(target, shards):
        return target
    audits = {}
    for tag in first["audits"]:
        records = merge_shards({i: read_records(audit_folder(job, tag)).drop(columns="shard")
                                for i, job in shards.items()}, count)
        write_records(audit_folder(target, tag), records)
        audits[tag] = summarize(records, first["summary_settings"]).assign(epoch_tag=tag)
        write_summary(audit_folder(target, tag), audits[tag])
    result = {**first, "shard": None, "merged_from": [str(shards[i]) for i in sorted(shards)],
              "output_dir": str(target), "audits": {tag: str(audit_folder(target, tag)) for tag in audits},
              "sigma": sigmas_of(audits["final"], first["partition"])}
    write_json(target / "result.json", result)
    return target
