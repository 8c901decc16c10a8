"""One LightningDataModule per dataset; a sample is (image, label, attributes)."""

from .base import DataError, ImageDataModule, ImageTable, TensorImages, split_indices, split_official
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .synthetic import SyntheticDataModule

__all__ = ["DataError", "DigitsDataModule", "ImageDataModule", "ImageFolderDataModule", "ImageTable",
           "SyntheticDataModule", "TensorImages", "split_indices", "split_official"]
