"""The video network: a 2-D ResNet-style backbone over the frames of a clip
with TSN average consensus."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tea_jax.modules.blocks import Excitation, Temporal
from tea_jax.modules.layers import ModuleDef, Variant, batch_norm, conv_init, max_pool3x3
from tea_jax.modules.remat import remat_call
from tea_jax.modules.temporal import TemporalInit

STAGE_PLANES = (64, 128, 256, 512)


class VideoResNet(nn.Module):
    """A ResNet/Res2Net backbone applied to every frame, with temporal modules in its blocks.

    Stem: 7x7/2 conv (64) -> BN -> ReLU -> 3x3/2 max pool; four stages of bottlenecks with
    64, 128, 256 and 512 planes (stride 2 from the second stage); global average pool, dropout
    and a linear classifier per frame; the clip's logits are the mean over its T frames
    (TSN's average consensus).

    Attributes:
      block: the bottleneck class (`Res2NetBlock` or `ResNetBlock`).
      num_classes: classifier outputs.
      num_segments: T, the frames per clip.
      stage_sizes: blocks per stage ((3, 4, 6, 3) for the 50-layer networks).
      temporal: the blocks' temporal module (see `blocks._Bottleneck`).
      excitation: the blocks' excitation module.
      temporal_stages: 1-based stages whose blocks get the temporal and excitation modules (the
        others are plain 2-D blocks), as in the paper's appendix Table 7.
      me_residual: whether ME keeps its identity path.
      me_reduction: ME's channel reduction ratio.
      variant: `reference` (released code, default) or `paper` semantics of ME and MTA.
      temporal_init: initialisation of every temporal convolution (`None`: each module's default).
      width_multiplier: scales every channel count (1.0 for the published networks).
      dropout_rate: dropout before the classifier.
      partial_bn: freeze the statistics of every BatchNorm but the stem's in training
        (fine-tuning recipe).
      bn_group_clips: in training, every BatchNorm normalises each group of this many
        consecutive clips (all their frames) with the group's own statistics, as each GPU of the
        released `DataParallel` training did with its 8 clips; 0: the whole batch. The batch must
        be a multiple of it. See `layers.BatchNorm`.
      remat_blocks: in training, every bottleneck keeps only its input for the backward pass and
        computes its activations again there, once the backward pass reaches it
        (`remat.remat_call`): the activation memory of one block instead of all of them, for a
        second forward pass. The same parameters and results.
      dtype: the compute dtype; parameters and BatchNorm statistics stay float32.
    """

    block: ModuleDef
    num_classes: int
    num_segments: int
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    temporal: Temporal = "none"
    excitation: Excitation = "none"
    temporal_stages: Sequence[int] = (1, 2, 3, 4)
    me_residual: bool = True
    me_reduction: int = 16
    variant: Variant = "reference"
    temporal_init: TemporalInit | None = None
    width_multiplier: float = 1.0
    dropout_rate: float = 0.5
    partial_bn: bool = False
    bn_group_clips: int = 0
    remat_blocks: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array, train: bool = False) -> jax.Array:
        """Classifies clips.

        Args:
          video: `(N, T, H, W, 3)` normalised frames.
          train: use batch statistics (for the BatchNorm layers that are not frozen) and dropout.

        Returns:
          `(N, num_classes)` float32 logits.
        """
        n, t = video.shape[:2]
        if t != self.num_segments:
            raise ValueError(
                f"video has {t} frames but the model expects num_segments={self.num_segments}"
            )
        if train and self.bn_group_clips and n % self.bn_group_clips:
            raise ValueError(
                f"a training batch of {n} clips is not a multiple of "
                f"bn_group_clips={self.bn_group_clips}, the clips that share BatchNorm statistics"
            )
        x = video.reshape((n * t, *video.shape[2:])).astype(self.dtype)

        group = self.bn_group_clips * t
        stem_norm = batch_norm(use_running_average=not train, dtype=self.dtype, group_size=group)
        norm = batch_norm(
            use_running_average=not train or self.partial_bn, dtype=self.dtype, group_size=group
        )
        stem_width = round(64 * self.width_multiplier)
        x = nn.Conv(
            stem_width,
            (7, 7),
            2,
            padding=3,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=conv_init,
            name="conv1",
        )(x)
        x = nn.relu(stem_norm(name="bn1")(x))
        x = max_pool3x3(x, strides=2)

        for stage, (planes, size) in enumerate(zip(STAGE_PLANES, self.stage_sizes, strict=True), 1):
            temporal = stage in self.temporal_stages
            for j in range(size):
                block = self.block(
                    planes=round(planes * self.width_multiplier),
                    num_segments=self.num_segments,
                    norm=norm,
                    strides=2 if stage > 1 and j == 0 else 1,
                    first_in_stage=j == 0,
                    temporal=self.temporal if temporal else "none",
                    excitation=self.excitation if temporal else "none",
                    me_residual=self.me_residual,
                    me_reduction=self.me_reduction,
                    variant=self.variant,
                    temporal_init=self.temporal_init,
                    dtype=self.dtype,
                    name=f"layer{stage}_{j}",
                )
                x = remat_call(block, x) if self.remat_blocks and train else block(x)

        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(0.001),
            name="fc",
        )(x)
        return jnp.mean(x.reshape((n, t, self.num_classes)).astype(jnp.float32), axis=1)
