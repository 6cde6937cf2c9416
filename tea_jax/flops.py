"""Multiply-accumulate count of a model: `python -m tea_jax.flops --model tea50 --num-segments 8`.

Also the model FLOPs of an inference or training step, and the dense peak FLOP/s of the known
accelerators, for model FLOPs utilisation (MFU).

The count walks the model's jaxpr and adds the MACs of its convolutions and matrix products, and of
the depthwise and channel-wise temporal convolutions written here as shifted products (counted as
the Conv2d and Conv1d layers they replace), as the usual PyTorch counters do for Conv and Linear
layers. Other element-wise work (BatchNorm, activations, pooling, excitation gates) is not counted.
"""

import argparse
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core

from tea_jax import accelerators, cli
from tea_jax.modules.layers import SHIFTED_CONV_SCOPE
from tea_jax.registry import MODELS, count_params, create_model


def _conv_macs(eqn: Any) -> int:
    out = eqn.outvars[0].aval.shape
    kernel = eqn.invars[1].aval.shape
    out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
    return math.prod(out) * math.prod(kernel) // out_features


def _dot_macs(eqn: Any) -> int:
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return math.prod(lhs) * math.prod(rhs_free)


def _count(jaxpr: core.Jaxpr, totals: dict[str, int]) -> None:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            totals["conv"] += _conv_macs(eqn)
        elif eqn.primitive.name == "dot_general":
            totals["dot"] += _dot_macs(eqn)
        elif eqn.primitive.name == "mul" and SHIFTED_CONV_SCOPE in str(eqn.source_info.name_stack):
            totals["shifted"] += math.prod(eqn.outvars[0].aval.shape)
        for sub in core.jaxprs_in_params(eqn.params):
            _count(sub, totals)


def count_macs(fn, *args) -> dict[str, int]:
    """MACs of the convolutions (`conv`), matrix products (`dot`) and convolutions written as
    shifted products (`shifted`: depthwise and temporal) of `fn(*args)`, from its jaxpr
    (no compilation)."""
    totals = {"conv": 0, "dot": 0, "shifted": 0}
    _count(jax.make_jaxpr(fn)(*args).jaxpr, totals)
    return totals


def clip_macs(model: Any, num_segments: int, resolution: int) -> int:
    """MACs of one clip's inference forward pass through a Flax video model (see `count_macs`).

    Traced abstractly: nothing is compiled or allocated.
    """
    video = jax.ShapeDtypeStruct((1, num_segments, resolution, resolution, 3), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v), video)
    return sum(count_macs(lambda v, x: model.apply(v, x), variables, video).values())


def step_flops(macs: int, *, train: bool) -> int:
    """Model FLOPs of a step whose forward pass takes `macs` multiply-accumulates.

    One MAC is two FLOPs. A training step counts three forward passes: the forward pass, and a
    backward pass of twice its cost (for each product, one product of the same size for the
    gradient of its input and one for the gradient of its weights). These are model FLOPs, the
    usual convention of MFU: forward recomputation under rematerialisation, the optimizer update
    and the element-wise work that `count_macs` leaves out are not counted.
    """
    return 2 * macs * (3 if train else 1)


# Dense (no sparsity) peak FLOP/s per chip for the compute dtype: `(device_kind pattern, peaks)`
# (full match, first match wins), from `tea_jax.accelerators` (sources there).
PEAK_FLOPS = tuple((chip.device_kind, chip.peak_flops) for chip in accelerators.CHIPS)


def peak_flops(device_kind: str, dtype: Any) -> float | None:
    """Dense peak FLOP/s of one device of `device_kind` (`jax.Device.device_kind`) computing in
    `dtype`, or None where it is not known (CPUs, other accelerators)."""
    name = jnp.dtype(dtype).name
    for pattern, peaks in PEAK_FLOPS:
        if re.fullmatch(pattern, device_kind):
            return peaks.get(name)
    return None


def mfu(flops_per_sec_per_device: float, device_kind: str, dtype: Any) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s of one device over its peak (None where the
    peak is unknown)."""
    peak = peak_flops(device_kind, dtype)
    return flops_per_sec_per_device / peak if peak else None


def model_report(name: str, num_segments: int, resolution: int, num_classes: int = 1000) -> dict:
    """GMACs per clip and parameter count of a registered model in inference mode."""
    model = create_model(name, num_classes=num_classes, num_segments=num_segments)
    video = jax.ShapeDtypeStruct((1, num_segments, resolution, resolution, 3), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v), video)
    macs = count_macs(lambda v, x: model.apply(v, x), variables, video)
    return {
        "model": name,
        "num_segments": num_segments,
        "resolution": resolution,
        "gmacs": sum(macs.values()) / 1e9,
        "conv_gmacs": macs["conv"] / 1e9,
        "matmul_gmacs": macs["dot"] / 1e9,
        "shifted_gmacs": macs["shifted"] / 1e9,
        "params": count_params(variables),
    }


@cli.command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tea50", choices=sorted(MODELS))
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)
    r = model_report(args.model, args.num_segments, args.resolution, args.num_classes)
    print(
        f"{r['model']}: {r['gmacs']:.2f} GMACs per {r['num_segments']}-frame "
        f"{r['resolution']}x{r['resolution']} clip (spatial convolutions {r['conv_gmacs']:.2f}, "
        f"1x1 convolutions and classifier {r['matmul_gmacs']:.2f}, depthwise and temporal "
        f"convolutions {r['shifted_gmacs']:.2f}), {r['params']:,} parameters"
    )


if __name__ == "__main__":
    main()
