"""Building blocks shared by the backbones: convolutions written for speed and PyTorch-exact BatchNorm."""

import functools
from typing import Any

import flax.linen as nn
import jax

ModuleDef = Any

# Kaiming-normal (fan-out, ReLU gain) as in the reference ResNet and Res2Net code.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(*, use_running_average: bool, dtype: Any) -> ModuleDef:
    """BatchNorm with PyTorch's semantics: epsilon 1e-5, running average momentum 0.9 (0.1 in PyTorch).

    Statistics and parameters stay in float32 whatever the compute dtype.
    """
    return functools.partial(
        nn.BatchNorm,
        use_running_average=use_running_average,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jax.numpy.float32,
    )


def conv1x1(features: int, *, dtype: Any, name: str) -> nn.Dense:
    """A 1x1 convolution without bias as a matrix product over the channel axis.

    XLA runs it several times faster than the equivalent `lax.conv` on CPU. Its kernel has shape
    `(C_in, C_out)`; apply a strided slice `x[:, ::s, ::s]` first for a stride-`s` 1x1 convolution.
    """
    return nn.Dense(features, use_bias=False, dtype=dtype, kernel_init=conv_init, name=name)


def conv3x3(features: int, *, strides: int = 1, dtype: Any, name: str, groups: int = 1) -> nn.Conv:
    """A 3x3 convolution without bias, padding 1. Kernel `(3, 3, C_in // groups, C_out)`."""
    return nn.Conv(
        features,
        (3, 3),
        strides=strides,
        padding=1,
        feature_group_count=groups,
        use_bias=False,
        dtype=dtype,
        kernel_init=conv_init,
        name=name,
    )
