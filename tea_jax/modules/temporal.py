"""Temporal layers of 2-D video networks.

Inside a backbone the frames of a video lie consecutively along the batch axis: a feature map has
shape `(N*T, H, W, C)`. The layers here view it as `(N, T, H, W, C)` to mix information across time.
"""

from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from tea_jax.modules.layers import SHIFTED_CONV_SCOPE

TemporalInit = Literal["shift", "identity", "normal"]


def to_video(x: jax.Array, num_segments: int) -> jax.Array:
    """Reshapes `(N*T, ...)` frames into `(N, T, ...)` videos."""
    if x.shape[0] % num_segments:
        raise ValueError(
            f"batch axis of size {x.shape[0]} is not a multiple of num_segments={num_segments}"
        )
    return x.reshape((x.shape[0] // num_segments, num_segments, *x.shape[1:]))


def to_frames(x: jax.Array) -> jax.Array:
    """Reshapes `(N, T, ...)` videos into `(N*T, ...)` frames."""
    return x.reshape((-1, *x.shape[2:]))


def _neighbours(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns `(x[t-1], x[t+1])` of `v` of shape `(N, T, ...)`, zero outside the clip."""
    zeros = jnp.zeros_like(v[:, :1])
    past = jnp.concatenate([zeros, v[:, :-1]], axis=1)
    future = jnp.concatenate([v[:, 1:], zeros], axis=1)
    return past, future


def temporal_shift(x: jax.Array, num_segments: int, fold_div: int = 8) -> jax.Array:
    """The temporal shift of TSM (Lin et al., 2019): no parameters, zero padding.

    The first `C // fold_div` channels take the next frame's values, the next `C // fold_div` the
    previous frame's, the rest stay in place.

    Args:
      x: `(N*T, H, W, C)` frames.
      num_segments: T.
      fold_div: the inverse of the fraction of channels shifted each way.

    Returns:
      `(N*T, H, W, C)` shifted frames.
    """
    fold = x.shape[-1] // fold_div
    v = to_video(x, num_segments)
    past, future = _neighbours(v)
    shifted = jnp.concatenate(
        [future[..., :fold], past[..., fold : 2 * fold], v[..., 2 * fold :]], axis=-1
    )
    return to_frames(shifted)


def temporal_kernel_init(init: TemporalInit, fold_div: int = 2) -> Callable[..., jax.Array]:
    """Initialiser of a `(3, C)` channel-wise temporal kernel (taps for t-1, t, t+1).

    `shift`: the first `C // fold_div` channels (0, 0, 1) (the future moves into the present), the
    next `C // fold_div` (1, 0, 0) (the past), the rest (0, 1, 0). `identity`: (0, 1, 0) for every
    channel. `normal`: Gaussian with variance 1/3 (fan-in of three taps).
    """
    if init == "normal":
        return nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0, out_axis=1)
    if init not in ("shift", "identity"):
        raise ValueError(f"unknown temporal init {init!r}; expected shift, identity or normal")

    def initializer(key: Any, shape: tuple[int, int], dtype: Any = jnp.float32) -> jax.Array:
        del key
        _taps, channels = shape
        fold = channels // fold_div if init == "shift" else 0
        kernel = jnp.zeros(shape, dtype).at[1].set(1.0)
        kernel = kernel.at[:, :fold].set(jnp.array([0.0, 0.0, 1.0], dtype)[:, None])
        return kernel.at[:, fold : 2 * fold].set(jnp.array([1.0, 0.0, 0.0], dtype)[:, None])

    return initializer


class TemporalConv(nn.Module):
    """Channel-wise temporal convolution: kernel 3 along time, zero padding, no bias.

    `out[t] = k[0] * x[t-1] + k[1] * x[t] + k[2] * x[t+1]`, one kernel per channel, written as
    shifted slices so that XLA fuses it with its neighbours.

    Attributes:
      num_segments: T, the frames per video.
      init_mode: `shift`, `identity` or `normal` (see `temporal_kernel_init`).
      fold_div: the inverse of the fraction of channels shifted each way by the `shift` init.
      dtype: the compute dtype.
    """

    num_segments: int
    init_mode: TemporalInit = "shift"
    fold_div: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `(N*T, H, W, C)` frames to `(N*T, H, W, C)` frames."""
        kernel = self.param(
            "kernel",
            temporal_kernel_init(self.init_mode, self.fold_div),
            (3, x.shape[-1]),
            jnp.float32,
        )
        kernel = kernel.astype(self.dtype)
        with jax.named_scope(SHIFTED_CONV_SCOPE):
            v = to_video(x.astype(self.dtype), self.num_segments)
            past, future = _neighbours(v)
            return to_frames(kernel[0] * past + kernel[1] * v + kernel[2] * future)
