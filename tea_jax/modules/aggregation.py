"""Multiple Temporal Aggregation (MTA): the hierarchical convolution of Res2Net
made spatio-temporal."""

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from tea_jax.modules.layers import ModuleDef, Variant, avg_pool3x3, conv3x3
from tea_jax.modules.temporal import TemporalConv, TemporalInit


class MultipleTemporalAggregation(nn.Module):
    """The 3x3 stage of a Res2Net bottleneck with cascaded temporal and spatial sub-convolutions
    (Sec. 3.2).

    The input's channels split into `scale` fragments of `width` channels. `variant='reference'`
    (the released code, default) processes fragment i < scale-1 as
    `sp = relu(bn_i(conv_i(temporal_i(sp + X_i))))` with `sp` the previous fragment's output (no
    residual for the first fragment or in the first block of a stage), and passes the last fragment
    through `temporal_{scale-1}` only (average-pooled with the block's stride in the first block of
    a stage). `variant='paper'` keeps the first fragment as it is and computes fragment i >= 1 as
    `relu(bn(conv(temporal(X_i + out_{i-1}))))`, the residual starting from the third fragment.

    Each temporal convolution widens the receptive field by one frame each way, so the outputs of
    the later fragments see further in time. With `temporal=False` this is the plain Res2Net
    hierarchical convolution.

    Attributes:
      width: channels per fragment.
      num_segments: T, the frames per video.
      norm: a BatchNorm constructor.
      scale: number of fragments.
      strides: spatial stride (the first block of stages 2-4).
      first_in_stage: the first block of a stage (Res2Net's `stype='stage'`):
        no residual between fragments.
      temporal: whether to insert the channel-wise temporal convolutions.
      variant: `reference` or `paper`.
      temporal_init: overrides the variant's initialisation of every temporal convolution
        (`None`: the reference code's identity for the cascaded fragments and shift for the last;
        shift for `paper`).
      dtype: the compute dtype.
    """

    width: int
    num_segments: int
    norm: ModuleDef
    scale: int = 4
    strides: int = 1
    first_in_stage: bool = False
    temporal: bool = True
    variant: Variant = "reference"
    temporal_init: TemporalInit | None = None
    dtype: Any = jnp.float32

    def _temporal(self, x: jax.Array, index: int, default_init: TemporalInit) -> jax.Array:
        if not self.temporal:
            return x
        init = self.temporal_init or default_init
        return TemporalConv(self.num_segments, init, dtype=self.dtype, name=f"temporal_{index}")(x)

    def _spatial(self, x: jax.Array, index: int) -> jax.Array:
        x = conv3x3(self.width, strides=self.strides, dtype=self.dtype, name=f"conv_{index}")(x)
        return nn.relu(self.norm(name=f"bn_{index}")(x))

    def _pool(self, x: jax.Array) -> jax.Array:
        return avg_pool3x3(x, self.strides) if self.first_in_stage else x

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `(N*T, H, W, scale*width)` to `(N*T, H/stride, W/stride, scale*width)`."""
        fragments = jnp.split(x, self.scale, axis=-1)
        cascade: Literal["identity", "shift"] = (
            "identity" if self.variant == "reference" else "shift"
        )
        if self.variant == "reference":
            outputs, last = [], fragments[-1]
            inputs = fragments[:-1]
        elif self.variant == "paper":
            outputs, last = [self._pool(fragments[0])], None
            inputs = fragments[1:]
        else:
            raise ValueError(f"unknown variant {self.variant!r}; expected 'reference' or 'paper'")
        sp = None
        for i, fragment in enumerate(inputs):
            if sp is not None and not self.first_in_stage:
                fragment = sp + fragment
            sp = self._spatial(self._temporal(fragment, i, cascade), i)
            outputs.append(sp)
        if last is not None:
            outputs.append(self._pool(self._temporal(last, self.scale - 1, "shift")))
        return jnp.concatenate(outputs, axis=-1)
