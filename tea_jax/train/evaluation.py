"""Multi-view, multi-host evaluation of a model on a split."""

import json
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from tea_jax import data as data_lib
from tea_jax import inference, storage
from tea_jax.data import listfiles
from tea_jax.errors import ConfigError, NotFoundError
from tea_jax.model_files import abstract_variables, load_model
from tea_jax.train import compilation_cache, model_setup, sharding, state_checkpoints
from tea_jax.train import metrics as metrics_lib

EvalFn = Callable[[dict[str, Any], dict[str, jax.Array]], dict[str, jax.Array]]


def make_eval_fn(model: nn.Module, mesh: jax.sharding.Mesh, average: str = "logits") -> EvalFn:
    """Compiles the evaluation step: batch in, video scores and the batch's bookkeeping out.

    The returned function maps ``(variables, batch)`` with ``batch`` holding ``video`` (B, V, T, H,
    W, 3), ``label``, ``index`` and ``mask`` (B,) to ``scores`` (B, C), ``label``, ``index`` and
    ``mask``, all sharded like the batch (so gathering them keeps the rows aligned).
    """

    def fn(variables, batch):
        scores = inference.score_views(variables, batch["video"], model=model, average=average)
        return {"scores": scores, **{k: batch[k] for k in ("label", "index", "mask")}}

    return jax.jit(
        fn,
        in_shardings=(sharding.replicated(mesh), sharding.data_sharded(mesh)),
        out_shardings=sharding.data_sharded(mesh),
    )


def predict_split(
    eval_fn: EvalFn,
    variables: dict[str, Any],
    loader: Any,
    mesh: jax.sharding.Mesh,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores every video of an evaluation loader once, on all hosts together.

    Args:
      eval_fn: from :func:`make_eval_fn`.
      variables: replicated model variables.
      loader: a ``tea_jax.data`` evaluation loader (one pass, padded batches with ``mask``).
      mesh: the data mesh.

    Returns:
      ``(scores (N, C), labels (N,), index (N,))`` of the whole split sorted by index, identical
      on every host.

    Raises:
      ValueError: a video was scored twice or missed.
    """
    collector = metrics_lib.ScoreCollector(loader.num_examples, loader.num_classes)
    for batch in loader:
        host_batch = {k: batch[k] for k in ("video", "label", "index", "mask")}
        out = eval_fn(variables, sharding.shard_batch(host_batch, mesh))
        out = multihost_utils.process_allgather(out, tiled=True)
        collector.add(out["scores"], out["label"], out["index"], out["mask"])
    return collector.result()


def evaluate(
    eval_fn: EvalFn,
    variables: dict[str, Any],
    loader: Any,
    mesh: jax.sharding.Mesh,
) -> dict[str, Any]:
    """:func:`predict_split` followed by :func:`tea_jax.train.metrics.classification_metrics`.

    Returns:
      The metrics plus ``scores``, ``labels`` and ``index`` arrays.
    """
    scores, labels, index = predict_split(eval_fn, variables, loader, mesh)
    results = metrics_lib.classification_metrics(scores, labels)
    results.update(scores=scores, labels=labels, index=index)
    return results


def write_report(
    results: dict[str, Any],
    workdir: str,
    protocol: str,
    *,
    class_names: Sequence[str] | None = None,
    video_ids: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes ``eval_<protocol>.json``, ``confusion_<protocol>.png`` and
    ``predictions_<protocol>.jsonl`` (process 0) and returns the JSON summary."""
    summary = {
        k: results[k]
        for k in ("top1", "top5", "mean_class_accuracy", "loss", "num_videos", "per_class_accuracy")
    }
    summary.update(protocol=protocol, **(extra or {}))
    if jax.process_index() != 0:
        return summary
    storage.makedirs(workdir)
    report = json.dumps(summary, indent=2)
    storage.write_text(storage.join(workdir, f"eval_{protocol}.json"), report)
    metrics_lib.save_confusion_png(
        results["confusion"], storage.join(workdir, f"confusion_{protocol}.png"), class_names
    )
    if video_ids is None:
        ids = [str(i) for i in results["index"]]
    else:
        ids = [video_ids[i] for i in results["index"]]
    metrics_lib.write_predictions(
        storage.join(workdir, f"predictions_{protocol}.jsonl"),
        results["scores"],
        results["labels"],
        ids,
        class_names,
    )
    return summary


def format_table(summaries: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of top-1, top-5 and mean class accuracy per protocol."""
    lines = [f"{'protocol':<14}{'videos':>8}{'top-1':>9}{'top-5':>9}{'mean class':>12}"]
    for s in summaries:
        lines.append(
            f"{s['protocol']:<14}{s['num_videos']:>8}{100 * s['top1']:>8.2f}%"
            f"{100 * s['top5']:>8.2f}%{100 * s['mean_class_accuracy']:>11.2f}%"
        )
    return "\n".join(lines)


def read_class_names(path: str | None) -> list[str] | None:
    """Class names of a ``classes.txt``-style file (None without a file)."""
    return listfiles.read_class_names(path) if path else None


def load_variables(
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpoint: str | None,
    num_classes: int,
    mesh: jax.sharding.Mesh,
) -> tuple[nn.Module, dict[str, Any], str]:
    """The model and its variables to evaluate, replicated on ``mesh``.

    A training checkpoint is read whatever the devices and hosts that wrote it: only its
    ``params`` and ``batch_stats`` are restored, onto this run's mesh (not its optimizer state).

    Args:
      config: the run's config (model name and options).
      workdir: a training workdir; its best checkpoint (else its latest) is used when
        ``checkpoint`` is not given.
      checkpoint: a model checkpoint directory (``tea_jax.model_files.save_model``, the exported
        ``WORKDIR/model`` or the output of ``python -m tea_jax.convert``).
      num_classes: the dataset's class count, checked against the model.
      mesh: the data mesh of this run.

    Returns:
      ``(model, variables, description)``.
    """
    if checkpoint:
        model, variables = load_model(checkpoint, num_classes=num_classes)
        return model, sharding.replicate(variables, mesh), checkpoint
    model = model_setup.build_model(config, num_classes)
    directory = storage.join(storage.resolve(workdir), "checkpoints")
    checkpointer = state_checkpoints.Checkpointer(directory, async_save=False)
    try:
        step = checkpointer.best_step() or checkpointer.latest_step()
        if step is None:
            raise NotFoundError(
                f"No training checkpoint in {directory}",
                hint="train into this --workdir first, or pass --checkpoint MODEL_DIR",
            )
        target = sharding.abstract(abstract_variables(model, config.num_segments), mesh)
        variables = checkpointer.restore_variables(step, target)
    finally:
        checkpointer.close()
    return model, variables, f"{directory}/{step}"


def _print_on_first_host(message: str) -> None:
    if jax.process_index() == 0:
        print(message)


def run_evaluation(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    protocols: Sequence[str],
    split: str = "val",
    checkpoint: str | None = None,
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Evaluates a checkpoint with each protocol and writes the reports into ``workdir``.

    Args:
      config: the run's config (data, model, ``eval_batch_size``, ``score_average``).
      workdir: output directory, and the training workdir when ``checkpoint`` is None.
      protocols: 'efficient', 'accuracy' or 'config' (``data.test_clips`` x ``data.test_crops``).
      split: 'val' or 'test'.
      checkpoint: a model checkpoint directory instead of the workdir's training checkpoints.
      class_names: names for the report, predictions and confusion matrix.

    Returns:
      One summary dict per protocol (as written to ``eval_<protocol>.json``).
    """
    compilation_cache.enable(config.compilation_cache_dir)
    mesh = sharding.create_mesh()
    host_batch = sharding.per_host_batch_size(config.eval_batch_size, what="eval_batch_size")
    summaries = []
    model = variables = None
    for protocol in protocols:
        loader = data_lib.create_loader(
            config.data,
            split,
            batch_size=host_batch,
            num_segments=config.num_segments,
            seed=config.seed,
            protocol=None if protocol == "config" else protocol,
            num_epochs=1,
        )
        if class_names is not None and len(class_names) != loader.num_classes:
            raise ConfigError(
                f"--labels: {len(class_names)} class names for a dataset of "
                f"{loader.num_classes} classes"
            )
        if model is None:
            model, variables, source = load_variables(
                config, workdir, checkpoint, loader.num_classes, mesh
            )
            eval_fn = make_eval_fn(model, mesh, config.score_average)
        with compilation_cache.report(
            "Evaluation step", _print_on_first_host, enabled=not summaries, timed=False
        ):
            results = evaluate(eval_fn, variables, loader, mesh)
        summaries.append(
            write_report(
                results,
                workdir,
                protocol,
                class_names=class_names,
                extra={"checkpoint": source, "split": split, "average": config.score_average},
            )
        )
    return summaries
