"""The paper's own tables beside its published values: Table 1 (sign agreement of randomized smoothing with
DeepFool and CW), Table 2 (test accuracy) and the agreement statistics of §7.1, §7.2 and §8.1.

These are the tables that compare this reproduction with the paper, so the paper's numbers live here and
nowhere else. Every function takes the σ or accuracy table of :func:`~robustness_bias.report.jobs.collect`.
Sign agreement compares σ of two estimators (or two epochs) on the same trained model and group; cells where
either σ is undefined are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.agreement import agreement, paired


# The paper's values, printed beside ours.
PAPER_TABLE1 = {"adience": (83.33, 79.63), "utkface": (74.24, 72.73), "cifar10": (75.00, 76.67),
                "cifar100": (53.83, 54.00), "cifar100super": (65.83, 66.67)}
PAPER_TABLE2 = {
    "adience": {"adience_classifier": 48.80, "resnet50": 49.75, "alexnet": 46.04, "vgg19_bn": 51.41,
                "densenet121": 50.80, "squeezenet1_0": 49.49},
    "utkface": {"utk_classifier": 66.25, "resnet50": 69.82, "alexnet": 68.09, "vgg19_bn": 69.89,
                "densenet121": 69.15, "squeezenet1_0": 70.73},
    "cifar10": {"deep_cnn": 86.97, "pyramidnet": 86.92, "resnet50": 83.26, "alexnet": 92.08, "vgg19_bn": 89.53,
                "densenet121": 85.17, "squeezenet1_0": 76.97},
    "cifar100": {"deep_cnn_cifar100": 59.60, "pyramidnet_bottleneck": 56.42, "resnet50": 55.81, "alexnet": 71.31,
                 "vgg19_bn": 64.39, "densenet121": 61.05, "squeezenet1_0": 40.36},
    "cifar100super": {"deep_cnn_cifar100": 71.78, "pyramidnet_bottleneck": 67.55, "resnet50": 67.27,
                      "alexnet": 80.70, "vgg19_bn": 76.06, "densenet121": 71.22, "squeezenet1_0": 55.16},
}
PAPER_STATS = {
    "7.1 exact vs deepfool": "125 of 151 (83%); mean 0.17, variance 0.07",
    "7.1 exact vs cw": "125 of 151 (83%); mean 0.19, variance 0.06",
    "7.2 deepfool vs cw": "708 of 755 (94%)",
    "7.2 deepfool first vs final": "637 of 755",
    "7.2 cw first vs final": "621 of 755",
    "7.2 deepfool middle vs final": "671 of 755",
    "7.2 cw middle vs final": "665 of 755",
    "8.1 exact vs rs": "101 of 151 (66.9%)",
}



def table1(sigma: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: the share (%) of cells where sign σ_RS agrees with sign σ_DF, and with σ_CW (final)."""
    rows = []
    for dataset, frame in sigma.groupby("dataset"):
        df = agreement(paired(frame, ("rs", "final"), ("deepfool", "final")))
        cw = agreement(paired(frame, ("rs", "final"), ("cw", "final")))
        paper = PAPER_TABLE1.get(dataset, (np.nan, np.nan))
        rows.append({"dataset": dataset, "rs~deepfool %": 100 * df["share"], "cells (deepfool)": df["cells"],
                     "paper rs~deepfool %": paper[0], "rs~cw %": 100 * cw["share"], "cells (cw)": cw["cells"],
                     "paper rs~cw %": paper[1]})
    return pd.DataFrame(rows)


def table2(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) per dataset × model, beside the paper's."""
    rows = [{"dataset": r.dataset, "model": r.model, "accuracy %": 100 * r.test_accuracy,
             "paper %": PAPER_TABLE2.get(r.dataset, {}).get(r.model, np.nan)}
            for r in accuracy.sort_values(["dataset", "model"]).itertuples()]
    return pd.DataFrame(rows)


def agreement_statistics(sigma: pd.DataFrame) -> pd.DataFrame:
    """§7.1, §7.2 and §8.1: sign agreement between estimators and between epochs."""
    linear = sigma[sigma["model"] == "logreg"]
    comparisons = {
        "7.1 exact vs deepfool": (linear, ("exact", "final"), ("deepfool", "final")),
        "7.1 exact vs cw": (linear, ("exact", "final"), ("cw", "final")),
        "7.2 deepfool vs cw": (sigma, ("deepfool", "final"), ("cw", "final")),
        "7.2 deepfool first vs final": (sigma, ("deepfool", "first"), ("deepfool", "final")),
        "7.2 cw first vs final": (sigma, ("cw", "first"), ("cw", "final")),
        "7.2 deepfool middle vs final": (sigma, ("deepfool", "middle"), ("deepfool", "final")),
        "7.2 cw middle vs final": (sigma, ("cw", "middle"), ("cw", "final")),
        "8.1 exact vs rs": (linear, ("exact", "final"), ("rs", "final")),
    }
    rows = [{"comparison": name, **agreement(paired(frame, left, right)), "paper": PAPER_STATS[name]}
            for name, (frame, left, right) in comparisons.items()]
    return pd.DataFrame(rows)
