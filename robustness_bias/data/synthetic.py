"""Generated images with a planted robustness bias: the known answer for tests and demos.

Each class k has a prototype p_k (zero-mean across classes, L2 norm ``separation`` in pixel
space). A sample of class y is ``0.5 + m · p_y + noise``, clipped to [0,1], where the margin
``m`` is 1 for the reference group and ``planted_margin`` (< 1) for the planted group. Planted
samples therefore sit closer to every class boundary, so a correct audit reports σ < 0 for them.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import DataError, ImageDataModule, TensorImages


def planted_bias_images(n_samples: int, n_classes: int, shape: tuple[int, int, int], separation: float,
                        noise: float, planted_share: float, planted_margin: float, seed: int,
                        shared_separation: float = 0.0):
    """Images (N, C, H, W), labels and planted-group flags of the synthetic dataset.

    ``shared_separation`` adds a second class signal, orthogonal to the first, that is equally
    strong in both groups: a model may lean on it to treat both groups alike, which is what the
    robustness-bias regularizer has to find.
    """
    rng = np.random.default_rng(seed)
    dim = int(np.prod(shape))
    prototypes = rng.normal(size=(n_classes, dim))
    prototypes -= prototypes.mean(0)
    prototypes *= separation / np.linalg.norm(prototypes, axis=1, keepdims=True)
    labels = rng.integers(n_classes, size=n_samples)
    planted = rng.random(n_samples) < planted_share
    margin = np.where(planted, planted_margin, 1.0)[:, None]
    pixels = 0.5 + margin * prototypes[labels] + rng.normal(scale=noise, size=(n_samples, dim))
    if shared_separation:
        shared = rng.normal(size=(n_classes, dim))
        shared -= shared.mean(0)
        basis, _ = np.linalg.qr(prototypes.T)                 # remove the planted signal's directions
        shared -= (shared @ basis) @ basis.T
        shared *= shared_separation / np.linalg.norm(shared, axis=1, keepdims=True)
        pixels += shared[labels]
    images = torch.as_tensor(np.clip(pixels, 0.0, 1.0), dtype=torch.float32).view(n_samples, *shape)
    return images, labels, planted


class SyntheticDataModule(ImageDataModule):
    """Planted-bias images with the attribute ``group`` ∈ {reference, planted}."""

    def __init__(self, n_samples: int = 2000, n_classes: int = 2, channels: int = 1, image_size: int = 8,
                 separation: float = 2.0, noise: float = 0.1, planted_share: float = 0.3,
                 planted_margin: float = 0.4, shared_separation: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if n_classes < 2 or n_samples < 10:
            raise DataError("dataset.n_classes must be ≥ 2 and dataset.n_samples ≥ 10")
        if not 0 < planted_share < 1:
            raise DataError(f"dataset.planted_share={planted_share}: must lie strictly between 0 and 1")
        if not 0 < planted_margin:
            raise DataError(f"dataset.planted_margin={planted_margin}: must be positive (1 plants no bias)")
        self.options = dict(n_samples=n_samples, n_classes=n_classes, shape=(channels, image_size, image_size),
                            separation=separation, noise=noise, planted_share=planted_share,
                            planted_margin=planted_margin, shared_separation=shared_separation, seed=seed)

    def load(self) -> TensorImages:
        images, labels, planted = planted_bias_images(**self.options)
        return TensorImages(images, labels, [f"class_{k}" for k in range(self.options["n_classes"])],
                            attributes={"group": planted.astype(np.int64)},
                            categories={"group": ["reference", "planted"]})
