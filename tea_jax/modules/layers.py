"""Building blocks shared by the backbones: convolutions written for speed and
PyTorch-exact BatchNorm."""

import functools
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# Which TEA to build: `reference` (the released code and its checkpoints) or `paper` (the ME gate
# of Eq. 4 and the MTA fragment order of Sec. 3.2).
Variant = Literal["reference", "paper"]

# Name scope of the convolutions written as shifted products (depthwise, temporal): the FLOPs
# counter counts their multiplications as multiply-accumulates.
SHIFTED_CONV_SCOPE = "shifted_conv"

# Kaiming-normal (fan-out, ReLU gain) as in the reference ResNet and Res2Net code.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(*, use_running_average: bool, dtype: Any) -> ModuleDef:
    """BatchNorm with PyTorch's semantics: epsilon 1e-5, running average
    momentum 0.9 (0.1 in PyTorch).

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


class Conv1x1(nn.Module):
    """A 1x1 convolution without bias as one matrix product over the flattened pixels.

    XLA runs it several times faster than the equivalent `lax.conv` on CPU, and flattening the
    pixels to one axis keeps the weight gradient a plain `(C_in, P) x (P, C_out)` product, without
    the transposed copy of the output gradient that a contraction over several pixel axes costs on
    CPU. Its kernel has `nn.Dense`'s name and shape, `(C_in, C_out)`; apply a strided slice
    `x[:, ::s, ::s]` first for a stride-`s` 1x1 convolution.

    Attributes:
      features: output channels.
      dtype: the compute dtype.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `(..., C_in)` to `(..., features)`."""
        kernel = self.param("kernel", conv_init, (x.shape[-1], self.features), jnp.float32)
        y = x.reshape(-1, x.shape[-1]).astype(self.dtype) @ kernel.astype(self.dtype)
        return y.reshape(*x.shape[:-1], self.features)


def conv1x1(features: int, *, dtype: Any, name: str) -> Conv1x1:
    """A bias-free 1x1 convolution named `name` (see `Conv1x1`)."""
    return Conv1x1(features, dtype=dtype, name=name)


def conv3x3(features: int, *, strides: int = 1, dtype: Any, name: str) -> nn.Conv:
    """A 3x3 convolution without bias, padding 1. Kernel `(3, 3, C_in, C_out)`."""
    return nn.Conv(
        features,
        (3, 3),
        strides=strides,
        padding=1,
        use_bias=False,
        dtype=dtype,
        kernel_init=conv_init,
        name=name,
    )


def _windows3x3(x: jax.Array, strides: int, pad_value: float = 0.0) -> list[jax.Array]:
    """The nine strided views of `(B, H, W, C)` under a 3x3 window with padding 1, each
    `(B, ceil(H/strides), ceil(W/strides), C)`."""
    h, w = x.shape[1:3]
    rows, cols = strides * ((h - 1) // strides) + 1, strides * ((w - 1) // strides) + 1
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
    return [
        padded[:, i : i + rows : strides, j : j + cols : strides]
        for i in range(3)
        for j in range(3)
    ]


def max_pool3x3(x: jax.Array, strides: int = 2) -> jax.Array:
    """3x3 max pooling with padding 1, as element-wise maxima of shifted views.

    Equal to `nn.max_pool(x, (3, 3), strides, padding=1)`; on CPU its gradient avoids XLA's slow
    select-and-scatter.
    """
    return functools.reduce(jnp.maximum, _windows3x3(x, strides, -jnp.inf))


def avg_pool3x3(x: jax.Array, strides: int = 1) -> jax.Array:
    """3x3 average pooling with padding 1, the padding counted (PyTorch's default),
    as a sum of views."""
    return sum(_windows3x3(x, strides)) / 9.0


class DepthwiseConv3x3(nn.Module):
    """3x3 depthwise convolution without bias, padding 1, as nine shifted products.

    The kernel has `nn.Conv`'s shape `(3, 3, 1, C)`; the shifted form fuses into one loop and its
    gradient is several times faster than a grouped convolution's on CPU.

    Attributes:
      dtype: the compute dtype.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `(B, H, W, C)` to `(B, H, W, C)`."""
        kernel = self.param("kernel", conv_init, (3, 3, 1, x.shape[-1]), jnp.float32)
        kernel = kernel.astype(self.dtype).reshape(9, -1)
        with jax.named_scope(SHIFTED_CONV_SCOPE):
            views = _windows3x3(x.astype(self.dtype), 1)
            return sum(v * k for v, k in zip(views, kernel, strict=True))
