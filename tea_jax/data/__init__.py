"""Video data: sources, TSN sampling, augmentation and the grain pipeline."""

from tea_jax.data.config import default_config, synthetic_config
from tea_jax.data.errors import DataError, ListFileError
from tea_jax.data.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from tea_jax.data.pipeline import Loader, create_loader

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataError",
    "ListFileError",
    "Loader",
    "create_loader",
    "default_config",
    "normalize",
    "synthetic_config",
]
