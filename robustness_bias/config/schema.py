"""Every schema by the name conf/'s defaults lists give it (``/schema/<group>/<name>``)."""

from __future__ import annotations

from .data import AdienceData, CifarData, DigitsData, ImageFolderData, SyntheticData, UTKFaceData
from .estimators import CarliniWagnerConfig, DeepFoolConfig, ExactConfig, FastMinimumNormConfig, SmoothingConfig
from .job import JobConfig
from .models import ImageNetConfig, ModelConfig, PyramidNet, SmallCNN, TorchvisionModel
from .training import (CallbacksConfig, CosineConfig, ModuleConfig, PathsConfig, RegularizerConfig, SGDConfig,
                       TrainerConfig)

SCHEMAS = {
    "config": JobConfig,
    "dataset/digits": DigitsData, "dataset/synthetic": SyntheticData, "dataset/cifar": CifarData,
    "dataset/utkface": UTKFaceData, "dataset/adience": AdienceData, "dataset/image_folder": ImageFolderData,
    "model/network": ModelConfig, "model/torchvision": TorchvisionModel, "model/small_cnn": SmallCNN,
    "model/pyramidnet": PyramidNet, "imagenet": ImageNetConfig,
    "estimator/deepfool": DeepFoolConfig, "estimator/cw": CarliniWagnerConfig, "estimator/rs": SmoothingConfig,
    "estimator/exact": ExactConfig, "estimator/fmn": FastMinimumNormConfig,
    "trainer": TrainerConfig, "optim/sgd": SGDConfig, "scheduler/cosine": CosineConfig,
    "regularizer": RegularizerConfig, "module": ModuleConfig, "callbacks": CallbacksConfig, "paths": PathsConfig,
}


