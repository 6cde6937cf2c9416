"""Building blocks shared by the backbones: convolutions written for speed and
PyTorch-exact BatchNorm."""

import functools
import math
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


class BatchNorm(nn.Module):
    """BatchNorm over the channels (last axis) of `(B, ..., C)` with PyTorch's semantics.

    In training each group of `group_size` consecutive rows of the leading axis is normalised with
    its own (biased) mean and variance, as `torch.nn.BatchNorm2d` normalises the share of the batch
    of one GPU under `DataParallel` ("ghost batches"); `group_size=0` takes the whole axis as one
    group. The running statistics move by `1 - momentum` towards the mean over the groups of their
    means and of their *unbiased* variances, `n / (n - 1)` times the biased one with `n` the
    elements per channel of a group, as PyTorch keeps `running_var`. (Under `DataParallel` only
    device 0's replica's statistics are kept; the mean over the groups is the better estimate of
    the same quantity and does not depend on which device comes first.) In evaluation, or with
    `use_running_average`, the running statistics normalise.

    Statistics, scale and bias are float32 whatever the compute dtype. The variables are those of
    `flax.linen.BatchNorm`: params `scale`, `bias`; batch_stats `mean`, `var`.

    Attributes:
      use_running_average: normalise with the running statistics and leave them unchanged.
      group_size: rows of the leading axis normalised together in training (0: all rows). In a
        video network the frames of a clip are consecutive rows, so `clips * T` groups by clips.
      momentum: weight of the old running statistics (0.9; PyTorch's momentum 0.1).
      epsilon: added to the variance.
      dtype: the output dtype.
    """

    use_running_average: bool
    group_size: int = 0
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `(B, ..., C)` to `(B, ..., C)` in `dtype`."""
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)

        if self.use_running_average:
            return _affine(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, self.dtype)
        groups = _split_groups(x, self.group_size)  # (G, rows, ..., C)
        axes = tuple(range(1, groups.ndim - 1))
        n = math.prod(groups.shape[1:-1])
        if n < 2:
            raise ValueError(
                f"BatchNorm in training needs more than one value per channel; a group of input "
                f"{x.shape} has {n} (group_size={self.group_size})"
            )
        # One pass over the activations, E[x^2] - E[x]^2, as flax.linen.BatchNorm computes it.
        xf = groups.astype(jnp.float32)
        mean = jnp.mean(xf, axes, keepdims=True)
        var = jnp.maximum(0.0, jnp.mean(jnp.square(xf), axes, keepdims=True) - jnp.square(mean))
        y = _affine(groups, mean, var, scale, bias, self.epsilon, self.dtype).reshape(x.shape)
        if not self.is_initializing():
            batch_mean = jnp.mean(mean.reshape(-1, features), axis=0)
            unbiased_var = jnp.mean(var.reshape(-1, features), axis=0) * (n / (n - 1))
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * batch_mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased_var
        return y


def _split_groups(x: jax.Array, group_size: int) -> jax.Array:
    """Views `(B, ...)` as `(B // group_size, group_size, ...)` (one group if `group_size` is 0)."""
    rows = x.shape[0]
    size = group_size or rows
    if rows % size:
        raise ValueError(
            f"BatchNorm groups of {size} rows do not divide the batch axis of input {x.shape}; "
            "the batch must be a multiple of the BatchNorm group"
        )
    return x.reshape(rows // size, size, *x.shape[1:])


def _affine(
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    epsilon: float,
    dtype: Any,
) -> jax.Array:
    """`(x - mean) * scale / sqrt(var + epsilon) + bias` in float32, cast to `dtype`."""
    y = (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias
    return y.astype(dtype)


def batch_norm(*, use_running_average: bool, dtype: Any, group_size: int = 0) -> ModuleDef:
    """A `BatchNorm` constructor with PyTorch's semantics: epsilon 1e-5, running average
    momentum 0.9 (0.1 in PyTorch), unbiased running variance, statistics over groups of
    `group_size` rows in training (0: the whole batch).

    Statistics and parameters stay in float32 whatever the compute dtype.
    """
    return functools.partial(
        BatchNorm, use_running_average=use_running_average, group_size=group_size, dtype=dtype
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
