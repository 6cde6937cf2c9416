"""Channel excitation: TEA's Motion Excitation (ME) and the Squeeze-and-Excitation baseline."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tea_jax.modules.layers import DepthwiseConv3x3, ModuleDef, Variant, conv1x1
from tea_jax.modules.temporal import to_video


class MotionExcitation(nn.Module):
    """Motion Excitation (Sec. 3.1 of the TEA paper) over `(N*T, H, W, C)` frames.

    With `Xr = BN(conv_reduce(X))` (C -> C // reduction channels), the feature-level motion is
    `M(t) = conv_transform(Xr)(t+1) - Xr(t)` for t < T and `M(T) = 0`, with `conv_transform` a 3x3
    depthwise convolution. Its spatial average, expanded back to C channels (`conv_expand`,
    `bn_expand`), gates the channels: `A = sigmoid(y) - 0.5` in the released code
    (`variant='reference'`, the default, which its checkpoints need) or `A = 2 * sigmoid(y) - 1` as
    in Eq. 4 of the paper (`variant='paper'`). The output is `X + X * A`, or `X * A` without the
    residual (the paper's ablation).

    The spatial pool is taken before the subtraction: both are linear, so this equals pooling the
    motion map. The pooled means, their difference and the gate are computed in float32 whatever
    the compute dtype: in bfloat16 the difference of two nearly equal means loses most of its
    digits, and these `(N, T, C/r)` vectors cost nothing next to the feature maps.

    Attributes:
      num_segments: T, the frames per video.
      norm: a BatchNorm constructor (see `layers.batch_norm`).
      reduction: channel reduction ratio r.
      variant: the gate, `reference` or `paper`.
      residual: whether to keep the identity path (`X + X * A`).
      dtype: the compute dtype.
    """

    num_segments: int
    norm: ModuleDef
    reduction: int = 16
    variant: Variant = "reference"
    residual: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `(N*T, H, W, C)` frames to excited `(N*T, H, W, C)` frames."""
        channels = x.shape[-1]
        reduced = max(channels // self.reduction, 1)
        xr = self.norm(name="bn_reduce")(conv1x1(reduced, dtype=self.dtype, name="conv_reduce")(x))
        transformed = DepthwiseConv3x3(dtype=self.dtype, name="conv_transform")(xr)
        current = to_video(_pool_float32(xr), self.num_segments)
        following = to_video(_pool_float32(transformed), self.num_segments)
        motion = following[:, 1:] - current[:, :-1]
        motion = jnp.pad(motion, ((0, 0), (0, 1), (0, 0))).reshape(-1, reduced)
        y = self.norm(name="bn_expand", dtype=jnp.float32)(
            conv1x1(channels, dtype=jnp.float32, name="conv_expand")(motion)
        )
        gate = excitation_gate(y, self.variant)
        self.sow("intermediates", "gate", gate)  # (N*T, C), for `tea_jax.visualize`.
        gate = gate[:, None, None, :].astype(x.dtype)
        return x + x * gate if self.residual else x * gate


def _pool_float32(x: jax.Array) -> jax.Array:
    """Spatial mean of `(B, H, W, C)` in float32: `(B, C)`."""
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def excitation_gate(y: jax.Array, variant: Variant) -> jax.Array:
    """The ME attention: `sigmoid(y) - 0.5` (reference code) or `2 * sigmoid(y) - 1` (Eq. 4)."""
    if variant == "reference":
        return nn.sigmoid(y) - 0.5
    if variant == "paper":
        return 2.0 * nn.sigmoid(y) - 1.0
    raise ValueError(f"unknown variant {variant!r}; expected 'reference' or 'paper'")


class SqueezeExcitation(nn.Module):
    """Squeeze-and-Excitation (Hu et al., 2018), the per-frame baseline ME is compared with.

    `X * sigmoid(W2 relu(W1 avgpool(X)))`, with `W1` reducing C to C // reduction channels.

    Attributes:
      reduction: channel reduction ratio r.
      dtype: the compute dtype.
    """

    reduction: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `(B, H, W, C)` to `(B, H, W, C)`."""
        channels = x.shape[-1]
        y = jnp.mean(x, axis=(1, 2))
        y = nn.relu(
            nn.Dense(max(channels // self.reduction, 1), dtype=self.dtype, name="fc_reduce")(y)
        )
        y = nn.sigmoid(nn.Dense(channels, dtype=self.dtype, name="fc_expand")(y))
        return x * y[:, None, None, :].astype(x.dtype)
