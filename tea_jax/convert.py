"""Converts PyTorch weights (safetensors or .pth files) into tea_jax model checkpoints.

  python -m tea_jax.convert res2net50 --input model.safetensors --output CKPT_DIR
  python -m tea_jax.convert res2net50 --input res2net50_26w_4s-06e79181.pth --output CKPT_DIR
  python -m tea_jax.convert resnet50 --input resnet50-0676ba61.pth --output CKPT_DIR
  python -m tea_jax.convert tea --input ckpt.best.pth.tar --num-segments 8 --output CKPT_DIR \
      [--model tea50]

`res2net50` and `resnet50` take ImageNet classifiers (Res2Net-50 26w_4s of the official Res2Net
repository; torchvision's ResNet-50) and write `tsn_res2net50` / `tsn_resnet50` checkpoints with
one frame per clip, the initialisation of the video models (`tea_jax.model_files.init_from`).
`tea` takes a checkpoint of the released TEA training code (`torch.save` of a dict whose
`state_dict` has keys `module.base_model.<backbone key>` and `module.new_fc.*`; the bare state
dict and keys without `module.` are accepted too) and writes a `tea50` (or `--model`) checkpoint.

Safetensors files (recognised by their header, whatever their name) are read with the
`safetensors` package's NumPy API and need no PyTorch: the Hugging Face Hub's `model.safetensors`
of timm's `res2net50_26w_4s.in1k` and `resnet50.tv_in1k` (timm names these modules as the
Res2Net and torchvision code do), or any of the state dicts above saved with
`safetensors.torch.save_file`. Leading `module.` (`nn.DataParallel`) and `model.` (wrappers such
as Lightning modules) prefixes are removed.

Every PyTorch array is used exactly once (`num_batches_tracked` counters are dropped) and every
model array must be filled, else the conversion fails naming the offending keys. PyTorch is
needed only for `.pth` files, which are read with `weights_only=True` and NumPy float64 scalars
allowed besides (the learning rates in the optimizer state of the released `main.py`'s
checkpoints); any other object is refused, naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import numpy as np

from tea_jax import cli
from tea_jax.errors import ConfigError, NotFoundError
from tea_jax.model_files import abstract_variables, save_model
from tea_jax.registry import create_model

IMAGENET_MODELS = {"res2net50": "tsn_res2net50", "resnet50": "tsn_resnet50"}
FULL_STAGE_SIZES = (3, 4, 6, 3)
STEM_WIDTH = 64

_BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
# Block submodules: PyTorch name -> Flax path inside `layer{i}_{j}`.
_BLOCK_MODULES = {
    "conv1": "conv1",
    "bn1": "bn1",
    "conv2": "conv2",
    "bn2": "bn2",
    "conv3": "conv3",
    "bn3": "bn3",
    "downsample.0": "downsample_conv",
    "downsample.1": "downsample_bn",
    "me.conv1": "me/conv_reduce",
    "me.bn1": "me/bn_reduce",
    "me.conv2": "me/conv_transform",
    "me.conv3": "me/conv_expand",
    "me.bn3": "me/bn_expand",
}
_BLOCK_INDEXED = (
    (re.compile(r"convs\.(\d+)"), "mta/conv_{}"),
    (re.compile(r"bns\.(\d+)"), "mta/bn_{}"),
    (re.compile(r"shifts\.(\d+)\.conv"), "mta/temporal_{}"),
)
_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(.+)")
_MAX_LISTED = 12
_WRAPPER_PREFIXES = ("module.", "model.")
# A safetensors file starts with the length of its JSON header (little-endian uint64), then `{`.
_SAFETENSORS_HEADER = struct.Struct("<Q")


# The released PyTorch weights of each kind, as downloaded (see the module docstring).
RELEASED_FILES = {
    "res2net50": "res2net50_26w_4s-06e79181.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "tea": "ckpt.best.pth.tar",
}


class ConversionError(ConfigError):
    """A PyTorch file that cannot be converted; the message names the file and the reason."""


def command_line(kind: str, output: str, *, num_segments: int | None = None) -> str:
    """The command that converts the released weights of ``kind`` into ``output``."""
    segments = f" --num-segments {num_segments}" if kind == "tea" else ""
    return (
        f"python -m tea_jax.convert {kind} --input {RELEASED_FILES[kind]}{segments} "
        f"--output {output}"
    )


def _import_torch(path: str):
    try:
        import torch
    except ImportError as e:
        raise ConversionError(
            f"{path}: reading PyTorch .pth files needs PyTorch (`pip install torch`, the CPU build "
            "is enough). Without it, convert a safetensors file instead: timm's weights on the "
            "Hugging Face Hub come as `model.safetensors`, and a .pth file becomes one with "
            "`safetensors.numpy.save_file(tea_jax.convert.read_state_dict(path), "
            "'model.safetensors')` wherever PyTorch is installed. Converted checkpoints load "
            "without it."
        ) from e
    return torch


def is_safetensors(path: str) -> bool:
    """Whether the file starts with a safetensors header (a length, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(_SAFETENSORS_HEADER.size + 1)
    if len(head) < _SAFETENSORS_HEADER.size + 1:
        return False
    (length,) = _SAFETENSORS_HEADER.unpack(head[:-1])
    return head[-1:] == b"{" and length <= os.path.getsize(path) - _SAFETENSORS_HEADER.size


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Reads every tensor of a safetensors file with NumPy (bfloat16 through `ml_dtypes`)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, json.JSONDecodeError, ValueError, TypeError) as e:
        raise ConversionError(
            f"{path} is not a readable safetensors file (truncated or corrupted?): {e}"
        ) from e


def _numpy_float64_globals() -> list[Any]:
    """What unpickling a NumPy float64 scalar needs, under NumPy 1's and NumPy 2's names.

    The released `main.py` stores its optimizer state, whose learning rates
    `adjust_learning_rate` made NumPy float64 scalars, in every checkpoint.
    """
    scalar = np._core.multiarray.scalar  # NumPy 1.26 has `_core` as an alias of `core`.
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        type(np.dtype(np.float64)),
    ]


def _rejected_object(message: str) -> str:
    """The object `torch.load(weights_only=True)` refused, from its message."""
    found = re.search(r"GLOBAL (\S+) was not an allowed global", message) or re.search(
        r"but got <class '([^']+)'>", message
    )
    return found.group(1) if found else message.strip().splitlines()[-1]


def _read_pth(path: str) -> Any:
    """Unpickles a `.pth` file with `weights_only=True` plus NumPy float64 scalars; tensors become
    NumPy arrays."""
    torch = _import_torch(path)
    try:
        with torch.serialization.safe_globals(_numpy_float64_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "weights only load failed" in str(e).lower():
            raise ConversionError(
                f"{path} holds {_rejected_object(str(e))}, which is not unpickled here for "
                "safety (only tensors, plain containers and NumPy float64 scalars are); in a "
                "trusted environment, re-save its weights with `torch.save(torch.load(path, "
                "weights_only=False)['state_dict'], new_path)`."
            ) from e
        raise ConversionError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupted?): {e!r}"
        ) from e
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ConversionError(f"{path} holds no state dict (found {type(obj).__name__}).")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "expected a state dict or a dict with a 'state_dict' entry."
            )
        state[key] = value.float().numpy() if value.is_floating_point() else value.numpy()
    return state


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a safetensors or PyTorch checkpoint as a flat dict of numpy arrays.

    Accepts a bare state dict or (`.pth`) a dict with a `state_dict` entry (the TEA training
    checkpoint). Leading `module.` / `model.` prefixes are removed; floating-point arrays
    become float32.

    Raises:
      FileNotFoundError: no such file.
      ConversionError: unreadable, truncated, needing arbitrary unpickling, no state dict, or a
        `.pth` file without PyTorch installed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NotFoundError(
            f"{path}: no such file", hint="docs/conversion.md says where the weights come from"
        )
    raw = _read_safetensors(path) if is_safetensors(path) else _read_pth(path)
    if not raw:
        raise ConversionError(f"{path} holds no tensors.")
    state = {}
    for key, value in raw.items():
        name = _strip_wrappers(key)
        if name in state:
            raise ConversionError(
                f"{path}: key {name!r} appears with and without a 'module.'/'model.' prefix."
            )
        floating = value.dtype.kind in "fV"  # ml_dtypes' bfloat16 is of kind "V".
        state[name] = value.astype(np.float32) if floating else value
    return state


def _backbone_keys(state: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """Removes the TSN wrapper: `base_model.` prefixes go, `new_fc` becomes the backbone `fc`."""
    out = {}
    for key, value in state.items():
        name = key.removeprefix("base_model.")
        if name.startswith("new_fc."):
            name = "fc." + name.removeprefix("new_fc.")
        if name in out:
            raise ConversionError(f"{path}: {key!r} and another key both name {name!r}.")
        out[name] = value
    return out


def _flax_path(key: str) -> tuple[str, ...] | None:
    """Maps a backbone key to `(collection, module..., leaf)`; None for an unknown key."""
    module, _, leaf = key.rpartition(".")
    if module in ("conv1", "bn1", "fc"):
        path = module
    elif match := _BLOCK.fullmatch(module):
        stage, index, sub = match.groups()
        inner = _BLOCK_MODULES.get(sub)
        for pattern, template in _BLOCK_INDEXED:
            if indexed := pattern.fullmatch(sub):
                inner = template.format(indexed.group(1))
        if inner is None:
            return None
        path = f"layer{stage}_{index}/{inner}"
    else:
        return None
    if path.rpartition("/")[2].startswith(("bn", "downsample_bn")):
        if leaf not in _BN_LEAVES:
            return None
        collection, name = _BN_LEAVES[leaf]
        return (collection, *path.split("/"), name)
    if leaf not in ("weight", "bias"):
        return None
    return ("params", *path.split("/"), "kernel" if leaf == "weight" else "bias")


def _to_flax_layout(value: np.ndarray, target_shape: Sequence[int]) -> np.ndarray | None:
    """Converts a PyTorch weight to the Flax layout of `target_shape`; None if they do not fit.

    Conv (O, I/groups, kh, kw) -> HWIO, or (I, O) for a 1x1 conv written as a matrix product;
    channel-wise Conv1d (C, 1, 3) -> (3, C); Linear (O, I) -> (I, O); vectors unchanged.
    """
    if value.ndim == 4 and len(target_shape) == 2 and value.shape[2:] == (1, 1):
        value = value[:, :, 0, 0].T
    elif value.ndim == 4 and len(target_shape) == 4:
        value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 3 and value.shape[1] == 1:
        value = value[:, 0, :].T
    elif value.ndim == 2:
        value = value.T
    if tuple(value.shape) != tuple(target_shape):
        return None
    return np.ascontiguousarray(value)


def describe_layout(keys: Sequence[str]) -> str:
    """A short description of what a backbone state dict holds, for error messages."""
    text = " ".join(keys)
    if ".convs." in text:
        base = "a Res2Net backbone"
    elif re.search(r"layer\d+\.\d+\.conv2\.", text):
        base = "a torchvision-layout ResNet backbone"
    else:
        return "an unknown (not ResNet/Res2Net) layout"
    extras = [
        name
        for name, marker in (("Motion Excitation", ".me."), ("temporal convs", ".shifts."))
        if marker in text
    ]
    return base + (f" with {' and '.join(extras)}" if extras else " without temporal modules")


def _listed(lines: Sequence[str]) -> str:
    shown = "\n  ".join(lines[:_MAX_LISTED])
    more = f"\n  ... and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
    return shown + more


def convert_state_dict(
    state: Mapping[str, np.ndarray],
    expected: Mapping[str, Any],
    *,
    source: str,
    model_name: str,
) -> tuple[dict[str, Any], list[str]]:
    """Maps a backbone state dict onto a model's variables, each array exactly once.

    Args:
      state: backbone keys (`conv1.weight`, `layer1.0.convs.0.weight`, `fc.bias`, ...).
      expected: abstract `params` / `batch_stats` of the model (`abstract_variables`).
      source: the file name, for messages.
      model_name: the model's name, for messages.

    Returns:
      `(variables, dropped)`: nested `params` / `batch_stats` numpy arrays and the dropped keys
      (the `num_batches_tracked` counters).

    Raises:
      ConversionError: an unknown or unused key, a shape that does not fit, or a model array
        that the file does not provide.
    """
    targets = flax.traverse_util.flatten_dict(expected)
    flat, dropped, errors = {}, [], []
    for key, value in state.items():
        if key.endswith(".num_batches_tracked"):
            dropped.append(key)
            continue
        path = _flax_path(key)
        if path is None:
            errors.append(f"{key} {value.shape}: not a known key")
        elif path not in targets:
            errors.append(f"{key} {value.shape}: {model_name} has no {'/'.join(path)}")
        elif path in flat:
            errors.append(f"{key}: {'/'.join(path)} already filled by another key")
        elif (converted := _to_flax_layout(value, targets[path].shape)) is None:
            errors.append(
                f"{key} {value.shape} does not fit {'/'.join(path)} {tuple(targets[path].shape)}"
            )
        else:
            flat[path] = converted
    errors += [
        f"{'/'.join(path)} {tuple(target.shape)}: not in the file"
        for path, target in targets.items()
        if path not in flat
    ]
    if errors:
        raise ConversionError(
            f"{source} does not convert to {model_name}: the file holds "
            f"{describe_layout(list(state))}.\n  {_listed(errors)}"
        )
    return flax.traverse_util.unflatten_dict(flat), dropped


def _architecture_options(state: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    """Reads the class count, the blocks per stage and the width from a backbone state dict."""
    for key in ("conv1.weight", "fc.weight"):
        if key not in state:
            raise ConversionError(
                f"{source} has no {key!r}; the file holds {describe_layout(list(state))}."
            )
    blocks: dict[int, int] = {}
    for key in state:
        if match := _BLOCK.fullmatch(key.rpartition(".")[0]):
            stage, index = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), index + 1)
    if sorted(blocks) != [1, 2, 3, 4]:
        raise ConversionError(f"{source}: expected stages layer1..layer4, found {sorted(blocks)}.")
    options: dict[str, Any] = {"num_classes": int(state["fc.weight"].shape[0])}
    stage_sizes = tuple(blocks[s] for s in (1, 2, 3, 4))
    if stage_sizes != FULL_STAGE_SIZES:
        options["stage_sizes"] = stage_sizes
    stem = state["conv1.weight"].shape[0]
    if stem != STEM_WIDTH:
        options["width_multiplier"] = stem / STEM_WIDTH
    return options


def convert(
    kind: str,
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    num_segments: int | None = None,
    model_name: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Converts a PyTorch or safetensors file into a model checkpoint directory.

    Args:
      kind: `res2net50`, `resnet50` (ImageNet classifiers) or `tea` (TEA training checkpoint).
      input_path: the `.safetensors`, `.pth` or `.pth.tar` file.
      output_dir: the checkpoint directory to write (must not hold a checkpoint).
      num_segments: frames per clip of the TEA model (required for `tea`, not stored in files).
      model_name: registry model of a `tea` checkpoint (default `tea50`).

    Returns:
      `(name, options)` of the written model, as `tea_jax.load_model` will build it.
    """
    source = os.fspath(input_path)
    if kind in IMAGENET_MODELS:
        if num_segments not in (None, 1) or model_name is not None:
            raise ConversionError(
                f"{kind} is an image classifier converted to {IMAGENET_MODELS[kind]} with one "
                "frame; --num-segments and --model apply to `tea` only."
            )
        name, fixed = IMAGENET_MODELS[kind], {"num_segments": 1}
    elif kind == "tea":
        if num_segments is None or num_segments < 2:
            raise ConversionError(
                "TEA checkpoints do not store the number of frames per clip: pass "
                "--num-segments T (T >= 2; 8 or 16 for the published models)."
            )
        name, fixed = model_name or "tea50", {"num_segments": num_segments, "variant": "reference"}
    else:
        raise ConversionError(f"unknown kind {kind!r}; expected res2net50, resnet50 or tea.")

    state = _backbone_keys(read_state_dict(source), source)
    options = {**_architecture_options(state, source), **fixed}
    try:
        model = create_model(name, **options)
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from e
    expected = abstract_variables(model, options["num_segments"])
    variables, dropped = convert_state_dict(state, expected, source=source, model_name=name)
    save_model(output_dir, name, options, variables)
    print(
        f"Converted {source} ({len(state) - len(dropped)} arrays, {len(dropped)} "
        f"num_batches_tracked dropped) into {name} {options} at {os.fspath(output_dir)}"
    )
    return name, options


@cli.command
def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m tea_jax.convert",
        description=(
            "Convert PyTorch weights (safetensors or .pth) into a tea_jax model checkpoint."
        ),
    )
    parser.add_argument(
        "kind",
        choices=("res2net50", "resnet50", "tea"),
        help="res2net50 / resnet50: ImageNet classifier; tea: TEA training checkpoint",
    )
    parser.add_argument("--input", required=True, help=".safetensors, .pth or .pth.tar file")
    parser.add_argument("--output", required=True, help="checkpoint directory to write")
    parser.add_argument("--num-segments", type=int, help="frames per clip (tea only)")
    parser.add_argument("--model", help="registry model of a tea checkpoint (default tea50)")
    args = parser.parse_args(argv)
    convert(
        args.kind,
        args.input,
        args.output,
        num_segments=args.num_segments,
        model_name=args.model,
    )


if __name__ == "__main__":
    main()
