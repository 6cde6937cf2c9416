"""TEA: Temporal Excitation and Aggregation for action recognition, in JAX/Flax."""

from tea_jax.backend import use_cpu_without_accelerator
from tea_jax.modules import MotionExcitation, MultipleTemporalAggregation, TemporalConv
from tea_jax.registry import MODELS, count_params, create_model

use_cpu_without_accelerator()

__all__ = [
    "MODELS",
    "MotionExcitation",
    "MultipleTemporalAggregation",
    "TemporalConv",
    "count_params",
    "create_model",
    "load_model",
]


def __getattr__(name: str):
    if name == "load_model":
        from tea_jax.model_files import load_model

        return load_model
    raise AttributeError(f"module 'tea_jax' has no attribute {name!r}")
