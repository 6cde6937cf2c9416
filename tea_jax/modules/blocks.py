"""Bottleneck blocks: Res2Net-50 26w_4s (the TEA block) and torchvision's ResNet-50,
with temporal options."""

import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from tea_jax.modules.aggregation import MultipleTemporalAggregation
from tea_jax.modules.excitation import MotionExcitation, SqueezeExcitation
from tea_jax.modules.layers import ModuleDef, Variant, conv1x1, conv3x3
from tea_jax.modules.temporal import TemporalConv, TemporalInit, temporal_shift

Temporal = Literal["none", "shift", "conv", "mta"]
Excitation = Literal["none", "me", "se"]

EXPANSION = 4


class _Bottleneck(nn.Module):
    """Fields and the pieces common to both bottlenecks; subclasses define the 3x3 stage.

    Attributes:
      planes: the stage's base channel count (output channels are `4 * planes`).
      num_segments: T, the frames per video.
      norm: a BatchNorm constructor.
      strides: spatial stride of the block.
      first_in_stage: the first block of a stage (carries the stride and a projection shortcut).
      temporal: `none`; `shift` (TSM's residual shift at the start of the residual branch);
        `conv` (a channel-wise temporal convolution after the first 1x1 conv, the (2+1)D baseline);
        `mta` (Res2Net only).
      excitation: `none`, `me` (Motion Excitation) or `se` (Squeeze-and-Excitation),
        after the first 1x1 conv.
      me_residual: whether ME keeps its identity path.
      me_reduction: ME's channel reduction ratio.
      variant: `reference` (released code) or `paper` semantics of ME and MTA.
      temporal_init: initialisation of the temporal convolutions (`None`: each module's default).
      dtype: the compute dtype.
    """

    planes: int
    num_segments: int
    norm: ModuleDef
    strides: int = 1
    first_in_stage: bool = False
    temporal: Temporal = "none"
    excitation: Excitation = "none"
    me_residual: bool = True
    me_reduction: int = 16
    variant: Variant = "reference"
    temporal_init: TemporalInit | None = None
    dtype: Any = jnp.float32

    def _excite_and_mix(self, x: jax.Array) -> jax.Array:
        """ME/SE then the (2+1)D temporal conv, both after the first 1x1 conv."""
        if self.excitation == "me":
            x = MotionExcitation(
                self.num_segments,
                self.norm,
                reduction=self.me_reduction,
                variant=self.variant,
                residual=self.me_residual,
                dtype=self.dtype,
                name="me",
            )(x)
        elif self.excitation == "se":
            x = SqueezeExcitation(dtype=self.dtype, name="se")(x)
        if self.temporal == "conv":
            init = self.temporal_init or "shift"
            x = TemporalConv(
                self.num_segments, init, fold_div=8, dtype=self.dtype, name="temporal"
            )(x)
        return x

    def _shortcut(self, x: jax.Array) -> jax.Array:
        if not self.first_in_stage:
            return x
        x = x[:, :: self.strides, :: self.strides]
        x = conv1x1(self.planes * EXPANSION, dtype=self.dtype, name="downsample_conv")(x)
        return self.norm(name="downsample_bn")(x)

    def _spatial_stage(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `(N*T, H, W, C_in)` to `(N*T, H/stride, W/stride, 4*planes)`."""
        out = temporal_shift(x, self.num_segments) if self.temporal == "shift" else x
        out = nn.relu(
            self.norm(name="bn1")(conv1x1(self._inner, dtype=self.dtype, name="conv1")(out))
        )
        out = self._spatial_stage(self._excite_and_mix(out))
        out = conv1x1(self.planes * EXPANSION, dtype=self.dtype, name="conv3")(out)
        out = self.norm(name="bn3")(out)
        return nn.relu(out + self._shortcut(x))

    @property
    def _inner(self) -> int:
        return self.planes


class ResNetBlock(_Bottleneck):
    """torchvision's ResNet-50 bottleneck (stride on the 3x3 conv):
    conv1 -> conv2 (3x3) -> conv3."""

    def _spatial_stage(self, x: jax.Array) -> jax.Array:
        if self.temporal == "mta":
            raise ValueError("MTA needs the Res2Net block; use temporal='conv' with ResNetBlock")
        x = conv3x3(self.planes, strides=self.strides, dtype=self.dtype, name="conv2")(x)
        return nn.relu(self.norm(name="bn2")(x))


class Res2NetBlock(_Bottleneck):
    """The Res2Net-50 (26w_4s) bottleneck; with `temporal='mta'` and `excitation='me'`
    the TEA block.

    conv1 (1x1) -> BN -> ReLU -> [ME] -> MTA (or the plain hierarchical 3x3 convs) ->
    conv3 (1x1) -> BN, plus the shortcut, then ReLU.

    Attributes:
      base_width: Res2Net's base width (26): each fragment has
        `floor(planes * base_width / 64)` channels.
      scale: number of fragments (4).
    """

    base_width: int = 26
    scale: int = 4

    @property
    def _width(self) -> int:
        return math.floor(self.planes * self.base_width / 64.0)

    @property
    def _inner(self) -> int:
        return self._width * self.scale

    def _spatial_stage(self, x: jax.Array) -> jax.Array:
        return MultipleTemporalAggregation(
            self._width,
            self.num_segments,
            self.norm,
            scale=self.scale,
            strides=self.strides,
            first_in_stage=self.first_in_stage,
            temporal=self.temporal == "mta",
            variant=self.variant,
            temporal_init=self.temporal_init,
            dtype=self.dtype,
            name="mta",
        )(x)
