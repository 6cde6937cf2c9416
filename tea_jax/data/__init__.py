"""Video data: sources, TSN sampling, augmentation and the grain pipeline.

The pipeline (grain, PyAV, OpenCV) is imported on first use of `Loader` or `create_loader`, so
that reading a config does not load it.
"""

from tea_jax.data.config import default_config, synthetic_config
from tea_jax.data.errors import DataError, ListFileError
from tea_jax.data.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize

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


def __getattr__(name: str):
    if name in ("Loader", "create_loader"):
        from tea_jax.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'tea_jax.data' has no attribute {name!r}")
