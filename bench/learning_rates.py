"""Test accuracy of a model family at several learning rates, under the default recipe (SGD with momentum 0.9,
a cosine schedule over the epochs, batch 64): how conf/config.yaml's learning_rates were chosen.

On the bundled digits (8×8, 1,797 images, split and normalized as conf/dataset/digits.yaml says) and on the same
digits upsampled to CIFAR's 3×32×32 (a stand-in with CIFAR's input size; no CIFAR download here). Each rate over three seeds.

    python bench/learning_rates.py logreg --rates 0.1,0.05,0.02,0.01,0.005,0.002
    python bench/learning_rates.py small_cnn --rates 0.1,0.05,0.01
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from robustness_bias.config.store import CONFIG_DIR
from robustness_bias.data import DigitsDataModule
from robustness_bias.data.base import split_indices
from robustness_bias.models import logreg, small_cnn

DIGITS = OmegaConf.load(CONFIG_DIR / "dataset" / "digits.yaml")   # the default dataset's normalization and split


def accuracy(family: str, images: torch.Tensor, labels: torch.Tensor, splits, lr: float, epochs: int,
             seed: int) -> float:
    train, _, test = splits
    torch.manual_seed(seed)
    channels = images.shape[1]
    norm = {key: list(value) * channels for key, value in DIGITS.normalization.items()}
    builder = {"logreg": logreg, "small_cnn": small_cnn}[family]
    model = builder(input_shape=tuple(images.shape[1:]), num_classes=10, normalization=norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.as_tensor(train)[torch.randperm(len(train), generator=generator)]
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    with torch.no_grad():
        return (model(images[test]).argmax(1) == labels[test]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=["logreg", "small_cnn"])
    parser.add_argument("--rates", default="0.1,0.05,0.01,0.005")
    parser.add_argument("--epochs", type=int, default=6)   # the default trainer's
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    digits = DigitsDataModule(normalization=DIGITS.normalization).load()
    small, labels = digits.images, torch.as_tensor(digits.labels)
    large = F.interpolate(small, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    splits = split_indices(len(labels), DIGITS.val_fraction, DIGITS.test_fraction, DIGITS.split_seed)
    for name, images in (("digits 1×8×8", small), ("digits as 3×32×32", large)):
        for rate in (float(value) for value in args.rates.split(",")):
            scores = [accuracy(args.family, images, labels, splits, rate, args.epochs, seed) for seed in range(args.seeds)]
            print(f"{args.family} on {name}, lr {rate:g}: test accuracy {np.mean(scores):.3f} "
                  f"(seeds: {', '.join(f'{s:.3f}' for s in scores)})", flush=True)


if __name__ == "__main__":
    main()
