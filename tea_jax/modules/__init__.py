"""Flax modules of TEA and its baselines, for use in other models."""

from tea_jax.modules.aggregation import MultipleTemporalAggregation
from tea_jax.modules.blocks import Res2NetBlock, ResNetBlock
from tea_jax.modules.excitation import MotionExcitation, SqueezeExcitation, excitation_gate
from tea_jax.modules.layers import batch_norm
from tea_jax.modules.network import VideoResNet
from tea_jax.modules.temporal import (
    TemporalConv,
    temporal_kernel_init,
    temporal_shift,
    to_frames,
    to_video,
)

__all__ = [
    "MotionExcitation",
    "MultipleTemporalAggregation",
    "Res2NetBlock",
    "ResNetBlock",
    "SqueezeExcitation",
    "TemporalConv",
    "VideoResNet",
    "batch_norm",
    "excitation_gate",
    "temporal_kernel_init",
    "temporal_shift",
    "to_frames",
    "to_video",
]
