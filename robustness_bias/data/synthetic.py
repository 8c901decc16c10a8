"""Generated images with a planted robustness bias: the known answer for tests and demos.

Each class k has a prototype p_k (zero-mean across classes, L2 norm ``separation`` in pixel
space). A sample of class y is ``0.5 + m · p_y + noise``, clipped to [0,1], where the margin
``m`` is 1 for the reference group and ``planted_margin`` (< 1) for the planted group. Planted
samples therefore sit closer to every class boundary, so a correct audit reports σ < 0 for them.

With strata (``stratum_margins``), a confounder sets the distance instead: a sample of stratum s has
margin ``stratum_margins[s]`` and is planted with probability ``stratum_planted_shares[s]`` (in place of
``planted_share``), so ``group`` is correlated with ``stratum``; ``planted_margin`` then multiplies the
planted samples' margin within their stratum, group's direct effect (1: none). Without a direct effect the
planted group still gets σ < 0, through its strata, but its σ adjusted for stratum is 0: the known answer
of conf/experiment/synthetic_confounded.yaml.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config.data import SyntheticData
from ..config.rules import check_values
from .base import ImageDataModule, TensorImages


def planted_bias_images(n_samples: int, n_classes: int, shape: tuple[int, int, int], separation: float,
                        noise: float, planted_share: float, planted_margin: float, seed: int,
                        shared_separation: float = 0.0, stratum_margins=(), stratum_planted_shares=()):
    """Images (N, C, H, W), labels, planted-group flags and strata (all 0 without strata) of the synthetic dataset.

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
    # no strata: one stratum of margin 1 (and no draw for it, so the data stay as they were)
    stratum_margin = np.asarray(stratum_margins or [1.0], dtype=float)
    share = np.asarray(stratum_planted_shares or [planted_share], dtype=float)
    stratum = rng.integers(len(stratum_margin), size=n_samples) if stratum_margins else np.zeros(n_samples, np.int64)
    planted = rng.random(n_samples) < share[stratum]
    margin = (stratum_margin[stratum] * np.where(planted, planted_margin, 1.0))[:, None]
    pixels = 0.5 + margin * prototypes[labels] + rng.normal(scale=noise, size=(n_samples, dim))
    if shared_separation:
        shared = rng.normal(size=(n_classes, dim))
        shared -= shared.mean(0)
        basis, _ = np.linalg.qr(prototypes.T)                 # remove the planted signal's directions
        shared -= (shared @ basis) @ basis.T
        shared *= shared_separation / np.linalg.norm(shared, axis=1, keepdims=True)
        pixels += shared[labels]
    images = torch.as_tensor(np.clip(pixels, 0.0, 1.0), dtype=torch.float32).view(n_samples, *shape)
    return images, labels, planted, stratum


class SyntheticDataModule(ImageDataModule):
    """Planted-bias images with the attribute ``group`` ∈ {reference, planted}, and ``stratum`` (stratum_0, …)
    when ``stratum_margins`` is set."""

    def __init__(self, n_samples: int = SyntheticData.n_samples, n_classes: int = SyntheticData.n_classes,
                 channels: int = SyntheticData.channels, image_size: int = SyntheticData.image_size,
                 separation: float = SyntheticData.separation, noise: float = SyntheticData.noise,
                 planted_share: float = SyntheticData.planted_share, planted_margin: float = SyntheticData.planted_margin,
                 shared_separation: float = SyntheticData.shared_separation, stratum_margins=(),
                 stratum_planted_shares=(), seed: int = SyntheticData.seed,
                 eval_batch_size: int = SyntheticData.eval_batch_size, **kwargs):
        super().__init__(eval_batch_size=eval_batch_size, **kwargs)
        stratum_margins, stratum_planted_shares = list(stratum_margins or []), list(stratum_planted_shares or [])
        check_values(SyntheticData, "dataset", n_samples=n_samples, n_classes=n_classes, channels=channels,
                     image_size=image_size, separation=separation, noise=noise, planted_share=planted_share,
                     planted_margin=planted_margin, shared_separation=shared_separation, stratum_margins=stratum_margins,
                     stratum_planted_shares=stratum_planted_shares, seed=seed)
        self.options = dict(n_samples=n_samples, n_classes=n_classes, shape=(channels, image_size, image_size),
                            separation=separation, noise=noise, planted_share=planted_share,
                            planted_margin=planted_margin, shared_separation=shared_separation,
                            stratum_margins=stratum_margins, stratum_planted_shares=stratum_planted_shares, seed=seed)

    def load(self) -> TensorImages:
        images, labels, planted, stratum = planted_bias_images(**self.options)
        attributes, categories = {"group": planted.astype(np.int64)}, {"group": ["reference", "planted"]}
        if self.options["stratum_margins"]:
            attributes["stratum"] = stratum
            categories["stratum"] = [f"stratum_{s}" for s in range(len(self.options["stratum_margins"]))]
        return TensorImages(images, labels, [f"class_{k}" for k in range(self.options["n_classes"])],
                            attributes=attributes, categories=categories)
