"""One LightningDataModule per dataset; a sample is (image, label, attributes)."""

from .base import DataError, ImageDataModule, ImageTable, TensorImages, split_indices, split_official
from .adience import AdienceDataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .synthetic import SyntheticDataModule
from .utkface import UTKFaceDataModule

__all__ = ["AdienceDataModule", "DataError", "DigitsDataModule", "ImageDataModule", "ImageFolderDataModule", "ImageTable",
           "SyntheticDataModule", "TensorImages", "UTKFaceDataModule", "split_indices", "split_official"]
