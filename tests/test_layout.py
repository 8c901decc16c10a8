"""The package's rooms and the one direction of its imports: the entries (the command line's pipeline, the
Python API) compose; training and the audit measure; analysis and report read what the audit wrote and
never reach back (docs: README, Layout)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "robustness_bias"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at any depth of its code (lazy imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c.split(".")[0] == "robustness_bias")
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def room(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


@pytest.mark.parametrize(("reader", "forbidden"), [
    ("analysis", {"auditing", "training", "report", "pipeline", "api", "estimators", "data", "models"}),
    ("report", {"auditing", "training", "pipeline", "api", "estimators"}),
    ("auditing", {"training", "report", "pipeline", "api", "analysis"}),
    ("estimators", {"auditing", "training", "report", "pipeline", "api", "analysis", "records"}),
    ("records", {"auditing", "training", "report", "pipeline", "api", "analysis", "estimators"}),
    ("pipeline", {"api"}),
    ("api", {"training", "pipeline", "data", "assembly"})])   # the Python API: no Lightning, no Hydra
def test_imports_point_one_way(reader, forbidden):
    assert any(room(module) == reader for module in GRAPH), f"no room {reader}: the layout changed"
    wrong = sorted((module, target) for module, targets in GRAPH.items() if room(module) == reader
                   for target in targets if room(target) in forbidden)
    assert not wrong, f"{reader} reaches into {wrong}"


def test_no_module_imports_a_module_that_imports_it():
    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in GRAPH[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    cycles = sorted((a, b) for a in GRAPH for b in GRAPH[a]
                    if not b.startswith(a + ".") and not a.startswith(b + ".") and reaches(b, a, set()))
    assert not cycles, cycles


ENGINE_ALONE = """
import sys
import numpy as np
import pandas as pd
import torch
from torch import nn
from robustness_bias.auditing import Auditor, Samples
from robustness_bias.config.job import EstimatorPlan
from robustness_bias.estimators import DeepFool, ExactLinear

class Points(torch.utils.data.Dataset):
    # any data: items (image, label, attributes) and a table of labels and attributes
    def __init__(self):
        self.x, self.y = torch.rand(24, 1, 4, 4), torch.arange(24) % 3
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return self.x[i], self.y[i], torch.tensor([i % 2])
    def metadata(self, indices):
        return pd.DataFrame({"sample_index": indices, "label": self.y[indices].numpy(),
                             "class": pd.Categorical(self.y[indices].numpy()), "site": pd.Categorical(indices % 2)})

torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
data = Points()
auditor = Auditor({"exact": (ExactLinear(), EstimatorPlan()), "deepfool": (DeepFool(), EstimatorPlan(batch_size=5, every_nth=2))},
                  Samples(data, np.arange(24)), sys.argv[1], progress=False)
records = auditor(model, epoch=1, tags=["final"])
correct = records[records["correct"]]
assert len(records) == 24 + 12 and len(correct) > 0, records
exact, deepfool = (correct[correct["estimator"] == name].set_index("sample_index")["distance"] for name in ("exact", "deepfool"))
assert ((deepfool - exact.loc[deepfool.index]).abs() <= 0.03 * exact.loc[deepfool.index]).all()   # DeepFool is exact on affine models, times 1 + overshoot
assert set(pd.read_parquet(sys.argv[1] + "/audits/final/records.parquet")["bound"]) == {"exact", "upper"}
assert not [m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning", "hydra")], "Lightning or Hydra was imported"
print("ok")
"""


def test_the_audit_engine_runs_with_no_lightning_and_no_hydra_in_sight(tmp_path):
    done = subprocess.run([sys.executable, "-c", ENGINE_ALONE, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_the_python_api_imports_no_lightning_and_no_hydra():
    """The API's claim (api/audit.py): it reads the schema for its defaults and rules, never Hydra's machinery."""
    done = subprocess.run([sys.executable, "-c", "import sys, robustness_bias.api; "
                           "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'hydra'}))"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_no_module_of_the_package_is_over_300_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 300}
    assert not long, long
