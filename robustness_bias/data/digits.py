"""scikit-learn's bundled 8×8 handwritten digits: real images that need no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from ..config.data import DigitsData
from .base import ImageDataModule, TensorImages


class DigitsDataModule(ImageDataModule):
    """1,797 grey-scale digits scaled to [0,1]; ten classes, partitioned by class."""

    def __init__(self, eval_batch_size: int = DigitsData.eval_batch_size, **kwargs):
        super().__init__(eval_batch_size=eval_batch_size, **kwargs)

    def load(self) -> TensorImages:
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return TensorImages(images, digits.target, [str(c) for c in digits.target_names])
