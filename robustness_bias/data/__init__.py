"""One LightningDataModule per dataset; a sample is (image, label, attributes)."""

from .base import ImageDataModule, ImageTable, TensorImages
from .errors import DataError
from .sampling import split_indices, split_official
from .adience import AdienceDataModule
from .cifar import CIFAR10DataModule, CIFAR100DataModule, CIFAR100SuperDataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .synthetic import SyntheticDataModule
from .utkface import UTKFaceDataModule

__all__ = ["AdienceDataModule", "CIFAR100DataModule", "CIFAR100SuperDataModule", "CIFAR10DataModule", "DataError", "DigitsDataModule", "ImageDataModule", "ImageFolderDataModule", "ImageTable",
           "SyntheticDataModule", "TensorImages", "UTKFaceDataModule", "split_indices", "split_official"]
