"""Model checkpoints: save, load, and initialise one model from another's weights.

A model checkpoint is a directory that can be read without PyTorch::

  model.json   {"name": <registry name>, "options": {"num_classes": ..., "num_segments": ..., ...}}
  variables/   Orbax checkpoint of {"params": ..., "batch_stats": ...}

`model.json` is written last, so a directory that has it holds a complete checkpoint.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn

from tea_jax import storage
from tea_jax.errors import ConfigError, ExistsError, NotFoundError
from tea_jax.registry import create_model

MODEL_FILE = "model.json"
VARIABLES_DIR = "variables"
COLLECTIONS = ("params", "batch_stats")
REQUIRED_OPTIONS = ("num_classes", "num_segments")

# Modules that exist in some registry models and not in others (temporal modelling, SE) and the
# classifier, whose shape depends on the class count. `init_from` leaves them at their
# initialisation when the checkpoint lacks them and drops them when the target model lacks them.
_OPTIONAL_MODULE = re.compile(r"^(fc|me|se|temporal(_\d+)?)$")
_BLOCK = re.compile(r"^layer\d+_\d+$")


def _json_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Returns `options` as JSON values (dtypes as names, tuples as lists)."""
    out = {}
    for key, value in options.items():
        if key == "dtype" and value is not None:
            value = jnp.dtype(value).name
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    try:
        json.dumps(out)
    except TypeError as e:
        raise TypeError(f"Model options must be JSON serialisable: {options!r} ({e}).") from e
    return out


def _model_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `_json_options`: lists become tuples, the dtype name a dtype."""
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    if out.get("dtype") is not None:
        out["dtype"] = jnp.dtype(out["dtype"])
    return out


def save_model(
    directory: str | os.PathLike,
    name: str,
    options: Mapping[str, Any],
    variables: Mapping[str, Any],
) -> None:
    """Writes a model checkpoint that `load_model` restores.

    Args:
      directory: output directory; it must not already hold a checkpoint.
      name: registry name of the model (`tea_jax.create_model`).
      options: keyword arguments of `create_model`, at least `num_classes` and `num_segments`.
      variables: the model's variables with collections `params` and (if any) `batch_stats`.

    Raises:
      FileExistsError: `directory` already holds a checkpoint.
      ValueError: options incomplete or the variables lack `params`.
    """
    directory = storage.resolve(directory)
    missing = [k for k in REQUIRED_OPTIONS if k not in options]
    if missing:
        raise ValueError(f"Model options lack {missing}: {dict(options)!r}.")
    if "params" not in variables:
        raise ValueError(f"Variables have no 'params' collection: {list(variables)}.")
    for existing in (MODEL_FILE, VARIABLES_DIR):
        if storage.exists(storage.join(directory, existing)):
            raise ExistsError(
                f"{storage.join(directory, existing)} exists; refusing to overwrite a checkpoint.",
                hint="remove it or choose another directory",
            )
    json_options = _json_options(options)
    create_model(name, **_model_options(json_options))  # Fails early on unknown names/options.

    tree = {c: jax.device_get(variables[c]) for c in COLLECTIONS if c in variables}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(storage.join(directory, VARIABLES_DIR), tree)
    if jax.process_index() == 0:
        description = json.dumps({"name": name, "options": json_options}, indent=2)
        storage.write_text(storage.join(directory, MODEL_FILE), description + "\n")


def read_model_info(directory: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """Returns the registry name and `create_model` options recorded in a checkpoint."""
    path = storage.join(directory, MODEL_FILE)
    if not storage.isfile(path):
        raise NotFoundError(
            f"{os.fspath(directory)}: not a tea_jax model checkpoint ({path} not found)",
            hint="a training run exports its model to WORKDIR/model; PyTorch weights are "
            "converted with `python -m tea_jax.convert` (docs/conversion.md)",
        )
    try:
        info = json.loads(storage.read_text(path))
        name, options = info["name"], info["options"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is not a valid model description: {e!r}.") from e
    return name, _model_options(options)


def read_variables(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads the variables of a checkpoint as nested dicts of numpy arrays."""
    path = storage.join(storage.resolve(directory), VARIABLES_DIR)
    if not storage.isdir(path):
        raise NotFoundError(f"{path} not found: the checkpoint has no variables.")
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path).item_metadata
        if metadata is None:
            raise ConfigError(f"{path} is not a readable Orbax checkpoint.")
        # Into host memory: the devices that wrote the checkpoint need not exist here.
        target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), dict(metadata.tree))
        tree = checkpointer.restore(path, target)
    return jax.tree.map(np.asarray, tree)


def abstract_variables(model: nn.Module, num_segments: int) -> dict[str, Any]:
    """Shapes and dtypes of the `params` and `batch_stats` of `model`, computed without FLOPs."""
    key = jax.random.key(0)
    video = jax.ShapeDtypeStruct((1, num_segments, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(
        lambda v: model.init({"params": key, "dropout": key}, v, train=False), video
    )
    return {c: flax.core.unfreeze(shapes[c]) for c in COLLECTIONS if c in shapes}


def _flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def _describe_differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    lines = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in found]
    lines += [f"unexpected {k} {tuple(v.shape)}" for k, v in found.items() if k not in expected]
    lines += [
        f"shape of {k}: {tuple(v.shape)}, model expects {tuple(expected[k].shape)}"
        for k, v in found.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    return lines


def load_model(
    directory: str | os.PathLike,
    *,
    num_classes: int | None = None,
    num_segments: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Restores a model and its variables from a checkpoint written by `save_model`.

    Args:
      directory: checkpoint directory.
      num_classes: if given, the class count the caller expects; a different recorded count is
        an error.
      num_segments: if given, the number of frames the caller expects; a different recorded
        number is an error.

    Returns:
      `(model, variables)`: the `create_model` module with the recorded options and a dict with
      `params` and `batch_stats` of jax arrays, ready for `model.apply(variables, video)`.

    Raises:
      FileNotFoundError: not a checkpoint directory.
      ValueError: the recorded options differ from the expected ones, or the stored variables
        do not fit the recorded model.
    """
    directory = os.fspath(directory)
    name, options = read_model_info(directory)
    for option, wanted in (("num_classes", num_classes), ("num_segments", num_segments)):
        if wanted is not None and options.get(option) != wanted:
            raise ConfigError(
                f"{directory} holds {name} with {option}={options.get(option)}, "
                f"but {option}={wanted} was requested."
            )
    model = create_model(name, **options)
    expected = _flatten(abstract_variables(model, options["num_segments"]))
    found = _flatten(read_variables(directory))
    differences = _describe_differences(found, expected)
    if differences:
        raise ConfigError(
            f"The variables in {directory} do not fit {name} with options {options}:\n  "
            + "\n  ".join(differences)
        )
    variables = flax.traverse_util.unflatten_dict(
        {k: jnp.asarray(v, dtype=expected[k].dtype) for k, v in found.items()}, sep="/"
    )
    return model, variables


def _is_optional(path: str) -> bool:
    return any(_OPTIONAL_MODULE.match(part) for part in path.split("/")[1:-1])


def _is_classifier(path: str) -> bool:
    return path.split("/")[1] == "fc"


def _group(paths: Iterable[str]) -> list[str]:
    """Compresses paths into `pattern  xN` lines, one per module kind, block indices as `*`."""
    groups: dict[str, set[str]] = collections.defaultdict(set)
    for path in paths:
        parts = path.split("/")[1:]  # Drop the collection.
        block = next((p for p in parts if _BLOCK.match(p)), "")
        pattern = "/".join("layer*" if _BLOCK.match(p) else p for p in parts[:-1])
        groups[pattern].add(block)
    return [
        f"{pattern}  x{len(blocks)}" if len(blocks) > 1 else pattern
        for pattern, blocks in sorted(groups.items())
    ]


@dataclasses.dataclass(frozen=True)
class InitSummary:
    """What `init_from` copied. Entries are `collection/module/.../leaf` paths."""

    source: str
    model_name: str
    loaded: tuple[str, ...]
    new: tuple[str, ...]
    dropped: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"Initialising {self.model_name} from {self.source}:"]
        for title, paths in (
            ("loaded", self.loaded),
            ("new (left at initialisation)", self.new),
            ("dropped (not in the model)", self.dropped),
        ):
            lines.append(f"  {title}: {len(paths)} arrays")
            lines += [f"    {line}" for line in _group(paths)]
        return "\n".join(lines)


def init_from(
    variables: Mapping[str, Any],
    directory: str | os.PathLike,
    *,
    model_name: str,
    load_classifier: bool = True,
) -> tuple[dict[str, Any], InitSummary]:
    """Copies the corresponding weights of a checkpoint into freshly initialised variables.

    Arrays are matched by path and shape. The classifier `fc` and the modules only some models
    have (`me`, `se`, `temporal*`) may be absent on either side: a model module the checkpoint
    lacks stays at its initialisation ("new"), a checkpoint array the model lacks is "dropped",
    and a classifier of another class count is both. Any other difference is an error.

    Args:
      variables: `params` and `batch_stats` of the target model, e.g. from `model.init`.
      directory: checkpoint written by `save_model` (for instance by `tea_jax.convert`).
      model_name: registry name of the target model (for messages).
      load_classifier: False leaves the classifier at its initialisation (and drops the
        checkpoint's) even where its shape matches.

    Returns:
      `(variables, summary)`: the updated variables (a new dict; the input is not modified)
      and an `InitSummary`, which is also printed.

    Raises:
      ValueError: the checkpoint holds backbone arrays that the model lacks or shapes
        differently, or lacks backbone arrays that the model has.
    """
    directory = os.fspath(directory)
    source_name, _ = read_model_info(directory)
    source = _flatten(read_variables(directory))
    target = _flatten({c: variables[c] for c in COLLECTIONS if c in variables})

    loaded, new, dropped, errors = [], [], [], []
    if not load_classifier:
        dropped = [path for path in source if _is_classifier(path)]
        source = {k: v for k, v in source.items() if k not in dropped}
    for path, value in target.items():
        if path in source and tuple(source[path].shape) == tuple(value.shape):
            loaded.append(path)
        elif _is_optional(path):
            new.append(path)
        elif path in source:
            errors.append(
                f"shape of {path}: {tuple(source[path].shape)} in the checkpoint, "
                f"{tuple(value.shape)} in the model"
            )
        else:
            errors.append(f"{path} {tuple(value.shape)} is not in the checkpoint")
    for path, value in source.items():
        if path in target and tuple(target[path].shape) == tuple(value.shape):
            continue
        if _is_optional(path):
            dropped.append(path)
        elif path not in target:
            errors.append(f"{path} {tuple(value.shape)} matches no parameter of the model")
    if errors:
        raise ValueError(
            f"Cannot initialise {model_name} from {directory} ({source_name}):\n  "
            + "\n  ".join(errors)
        )

    flat = dict(target)
    for path in loaded:
        flat[path] = jnp.asarray(source[path], dtype=target[path].dtype)
    out = flax.traverse_util.unflatten_dict(flat, sep="/")
    out.update({c: v for c, v in variables.items() if c not in COLLECTIONS})
    summary = InitSummary(
        source=f"{directory} ({source_name})",
        model_name=model_name,
        loaded=tuple(loaded),
        new=tuple(new),
        dropped=tuple(dropped),
    )
    if jax.process_index() == 0:
        print(summary)
    return out, summary
