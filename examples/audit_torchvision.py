"""Audit a torchvision ConvNeXt for robustness bias on scikit-learn's bundled digits, from Python.

Nothing is downloaded and nothing is trained: the network is torchvision's ConvNeXt built at a tiny
size with random weights (its stem takes one grey channel), and its last layer is set in one step,
without gradients, to the nearest-class-mean rule on the held-out digits' features, so that it
classifies enough digits to audit. The sensitive feature is made up for the demo: whether a digit is
drawn with more or less ink than the median. Prints the by-group table and saves the survival curves.

    python examples/audit_torchvision.py [--out FOLDER] [--quiet]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from sklearn.datasets import load_digits
from torch import nn
from torchvision.models.convnext import CNBlockConfig

import robustness_bias
from robustness_bias.estimators import RandomizedSmoothing

NORMALIZATION = {"mean": [0.305], "std": [0.376]}   # the digits' pixel statistics


def tiny_convnext(images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """torchvision's ConvNeXt at a tiny size (two stages of one block, 16 and 32 channels) with random
    weights, for 8×8 grey digits; its head is the nearest class mean of the features of ``images``:
    logits w_k·f − ‖w_k‖²/2, with w_k the mean feature of class k (one average, no gradient step)."""
    torch.manual_seed(0)
    net = torchvision.models.ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)
    net.features[0][0] = nn.Conv2d(1, 16, kernel_size=2, stride=2)   # the stem, for one channel at 8×8
    net.eval()
    head = net.classifier[-1]
    net.classifier[-1] = nn.Identity()
    mean, std = (torch.tensor(NORMALIZATION[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
    with torch.no_grad():
        features = net((images - mean) / std)
        centres = torch.stack([features[labels == k].mean(0) for k in range(10)])
        head.weight.copy_(centres)
        head.bias.copy_(-(centres ** 2).sum(1) / 2)
    net.classifier[-1] = head
    return net


def main(argv: list[str] | None = None) -> robustness_bias.AuditResult:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/example", help="where the figure goes")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16   # [0,1] pixels
    labels = torch.as_tensor(digits.target)
    held_out, audited = slice(0, 1437), slice(1437, None)   # the head's digits; the 360 audited
    model = tiny_convnext(images[held_out], labels[held_out])

    ink = images[audited].flatten(1).sum(1).numpy()
    groups = pd.DataFrame({"ink": np.where(ink > np.median(ink), "heavy", "light")})
    result = robustness_bias.audit(
        model, images[audited], labels[audited], sensitive_features=groups, normalization=NORMALIZATION,
        estimators=["deepfool", RandomizedSmoothing(n=2_000)],   # smoothing with fewer noise draws than the paper's
        progress=not args.quiet)

    pd.set_option("display.width", 120)
    print(f"accuracy on the {len(ink)} audited digits: {result.overall['accuracy', 'deepfool']:.3f}\n")
    table = result.by_group[["size", "attacked", "median_distance", "sigma", "p_adjusted"]]
    print(table.round(3).to_string())
    print("\nlargest gap between the groups:")
    print(result.difference()["sigma"].round(3).to_string())
    figure = result.survival_figure(Path(args.out) / "survival_by_ink.png")
    print(f"\nsurvival curves: {figure}")
    return result


if __name__ == "__main__":
    main()
