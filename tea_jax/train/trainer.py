"""The training loop: sharded steps, periodic evaluation, checkpoints, resumption and logging."""

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from tea_jax import data as data_lib
from tea_jax import storage
from tea_jax.data.listfiles import CLASSES_FILE
from tea_jax.errors import ConfigError, UserError
from tea_jax.inference import write_preprocessing
from tea_jax.model_files import init_from, save_model
from tea_jax.train import (
    compilation_cache,
    distributed,
    evaluation,
    model_setup,
    optim,
    reporting,
    sharding,
    state_checkpoints,
)
from tea_jax.train.state import TrainState, create_train_state
from tea_jax.train.step import check_remat, train_step


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""


class WorkdirError(UserError, RuntimeError):
    """The work directory cannot be created or written."""


def check_workdir(workdir: str) -> None:
    """Creates ``workdir`` and checks that a file can be written in it.

    Raises:
      WorkdirError: naming the directory and the system's reason.
    """
    probe = storage.join(workdir, f".write_test_{jax.process_index()}")
    try:
        storage.makedirs(workdir)
        storage.write_text(probe, "ok")
        storage.remove(probe)
    except storage.StorageError as e:
        raise WorkdirError(f"--workdir {workdir} is not writable: {e.reason}") from e
    except OSError as e:
        raise WorkdirError(f"--workdir {workdir} is not writable: {e.strerror or e}") from e


@dataclasses.dataclass
class Schedule:
    """Step counts of a run derived from the config and the dataset size."""

    steps_per_epoch: int
    total_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, num_examples: int) -> "Schedule":
        steps_per_epoch = num_examples // config.batch_size
        if steps_per_epoch < 1:
            raise ConfigError(
                f"The training split has {num_examples} videos, fewer than one global batch "
                f"(config.batch_size={config.batch_size}).",
                hint=f"pass a --config.batch_size of at most {num_examples}",
            )
        total = (
            config.total_steps if config.total_steps > 0 else config.num_epochs * steps_per_epoch
        )
        return cls(
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            log_every=max(config.log_every_steps, 1),
            eval_every=config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch,
            checkpoint_every=(
                config.checkpoint_every_steps
                if config.checkpoint_every_steps > 0
                else steps_per_epoch
            ),
        )


def _init_from(
    variables: dict[str, Any], config: ml_collections.ConfigDict, load_classifier: bool
) -> dict[str, Any]:
    host_variables = jax.tree.map(np.asarray, variables)
    loaded, summary = init_from(
        host_variables, config.init_from, model_name=config.model, load_classifier=load_classifier
    )
    logging.info("Initialised from %s: %s", config.init_from, summary)
    return loaded


def _partial_bn(config: ml_collections.ConfigDict) -> bool:
    return bool(config.model_options.get("partial_bn", False))


def create_optimizer(
    config: ml_collections.ConfigDict, params: Any, schedule: Schedule, new_classifier: bool
) -> tuple[Any, Any]:
    """The optimizer of ``params`` (arrays or their shapes) and its learning-rate schedule.

    Returns:
      ``(tx, lr_schedule)``.
    """
    lr_schedule = optim.create_schedule(
        config.optim,
        global_batch_size=config.batch_size,
        steps_per_epoch=schedule.steps_per_epoch,
        total_steps=schedule.total_steps,
    )
    tx = optim.create_optimizer(
        config.optim,
        params,
        schedule=lr_schedule,
        new_classifier=new_classifier,
        partial_bn=_partial_bn(config),
    )
    return tx, lr_schedule


def create_state(
    config: ml_collections.ConfigDict,
    model: Any,
    mesh: jax.sharding.Mesh,
    schedule: Schedule,
    rng: jax.Array,
) -> tuple[TrainState, Any, Any, bool]:
    """Initialises the model (optionally from ``config.init_from``) and the optimizer.

    Returns:
      ``(state, tx, lr_schedule, new_classifier)`` with the state replicated on the mesh.
    """
    new_classifier = model_setup.new_classifier(config, model.num_classes)
    variables = model_setup.init_variables(
        model,
        num_segments=config.num_segments,
        image_size=config.data.image_size,
        rng=rng,
        mesh=mesh,
    )
    logging.info(
        "Classifier: %s (config.new_classifier=%r).",
        "new" if new_classifier else f"loaded from {config.init_from}",
        config.new_classifier,
    )
    if config.init_from:
        loaded = _init_from(variables, config, load_classifier=not new_classifier)
        variables = sharding.replicate(loaded, mesh)
    tx, lr_schedule = create_optimizer(config, variables["params"], schedule, new_classifier)
    state = jax.jit(
        functools.partial(create_train_state, tx=tx), out_shardings=sharding.replicated(mesh)
    )(variables)
    return state, tx, lr_schedule, new_classifier


def make_train_fn(config, model, tx, lr_schedule, mesh, state):
    """Compiles :func:`train_step` with explicit shardings and the state donated."""
    check_remat(config.remat)
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    step_fn = functools.partial(
        train_step,
        model=model,
        tx=tx,
        schedule=lr_schedule,
        label_smoothing=config.label_smoothing,
        remat=config.remat,
        partial_bn=_partial_bn(config),
    )
    return jax.jit(
        step_fn,
        in_shardings=(state_sharding, sharding.data_sharded(mesh), sharding.replicated(mesh)),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def check_finite(history: list[dict[str, jax.Array]], first_step: int, last_good: int | None):
    """Raises :class:`NonFiniteLossError` if a loss of ``history`` is NaN or infinite.

    Args:
      history: metrics of the steps ``first_step + 1, ...`` not checked yet.
      first_step: the step before ``history[0]``.
      last_good: the last checkpointed step (for the message).
    """
    losses = np.asarray(jax.device_get([m["loss"] for m in history]))
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        step = first_step + int(bad[0]) + 1
        kept = f"the last good checkpoint is step {last_good}" if last_good else "no checkpoint"
        raise NonFiniteLossError(
            f"The training loss is {losses[bad[0]]} at step {step}; stopping ({kept}).",
            hint="lower --config.optim.lr, set --config.optim.clip_norm, or check the data",
        )


def _summarise(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    fetched = jax.device_get(history)
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "lr"} | {
        "lr": float(fetched[-1]["lr"])
    }


def _resume(
    checkpointer: state_checkpoints.Checkpointer,
    abstract_state: TrainState,
    train_loader: Any,
    default: TrainState,
) -> tuple[TrainState, Any, state_checkpoints.Restored | None]:
    """Restores the newest intact checkpoint, if any, and the training iterator's position.

    Returns:
      ``(state, training iterator, restored checkpoint or None)``; ``default`` is the state of a
      run without checkpoints.
    """
    train_iter = iter(train_loader)
    resumed = checkpointer.restore_latest(abstract_state, train_iter, train_loader.num_examples)
    if resumed is None:
        return default, train_iter, None
    if resumed.data_restart is not None:
        logging.warning(
            "The data order starts again at step %d: %s.", resumed.step, resumed.data_restart
        )
        train_iter.close()
        train_iter = iter(train_loader)
    return resumed.state, train_iter, resumed


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    create_loader: Callable[..., data_lib.Loader] = data_lib.create_loader,
) -> dict[str, Any]:
    """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if there is one.

    Args:
      config: a config built from ``configs/default.py``.
      workdir: output directory (checkpoints, ``metrics.jsonl``, TensorBoard, config, model).
      create_loader: makes the loader of a split; called as ``tea_jax.data.create_loader`` is,
        and returns an object with its result's ``num_examples``, ``num_classes`` and iterator.

    Returns:
      The last validation metrics (``top1``, ``top5``, ...), or ``{}`` when the run stopped early
      on SIGTERM (or SIGUSR1) or had already finished.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (checkpoints up to the last good one remain).
    """
    # From the start, so that a signal while the run sets up or compiles stops it after its
    # first step, with that step saved.
    with state_checkpoints.PreemptionWatcher() as preemption:
        return _train_and_evaluate(config, workdir, create_loader, preemption)


def _train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    create_loader: Callable[..., data_lib.Loader],
    preemption: state_checkpoints.PreemptionWatcher,
) -> dict[str, Any]:
    check_workdir(workdir)
    compilation_cache.enable(config.compilation_cache_dir)
    reporting.save_config(config, workdir)
    profiler = reporting.StepProfiler(workdir, config.profile_steps)
    mesh = sharding.create_mesh()
    host_batch = sharding.per_host_batch_size(config.batch_size)
    host_eval_batch = sharding.per_host_batch_size(config.eval_batch_size, what="eval_batch_size")
    model_setup.check_bn_groups(config.bn_group_clips, host_batch)
    train_loader = create_loader(
        config.data,
        "train",
        batch_size=host_batch,
        num_segments=config.num_segments,
        seed=config.seed,
    )
    val_loader = create_loader(
        config.data,
        "val",
        batch_size=host_eval_batch,
        num_segments=config.num_segments,
        seed=config.seed,
        protocol=config.eval_protocol,
        num_epochs=1,
    )
    num_train = train_loader.num_examples
    steps = Schedule.from_config(config, num_train)
    model = model_setup.build_model(config, train_loader.num_classes)
    efficiency = reporting.Efficiency.of_model(model, config.num_segments, config.data.image_size)
    rng = jax.random.key(config.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    state, tx, lr_schedule, _ = create_state(config, model, mesh, steps, init_rng)
    train_fn = make_train_fn(config, model, tx, lr_schedule, mesh, state)
    eval_fn = evaluation.make_eval_fn(model, mesh, config.score_average)

    checkpointer = state_checkpoints.Checkpointer(
        storage.join(storage.resolve(workdir), "checkpoints"),
        keep=config.keep_checkpoints,
        keep_best=config.keep_best_checkpoints,
    )
    state, train_iter, resumed = _resume(
        checkpointer, sharding.abstract(state, mesh), train_loader, default=state
    )
    start = resumed.step if resumed else 0
    last_good = start or None

    writer = reporting.MetricWriter(workdir)
    progress = reporting.Progress(steps.total_steps, start, steps.steps_per_epoch)
    if resumed:
        data = "continues" if resumed.data_restart is None else "restarts"
        progress.write(f"Resuming from step {start} ({resumed.path}); the data order {data}.")
    val_metrics: dict[str, Any] = {}
    history: list[dict[str, jax.Array]] = []
    train_summary: dict[str, float] = {"lr": float(lr_schedule(start)), "clips_per_sec": 0.0}
    window_start, window_step = time.perf_counter(), start
    step = start
    try:
        while step < steps.total_steps:
            batch = sharding.shard_batch(next(train_iter), mesh)
            profiler.before_step(step + 1)
            with compilation_cache.report("Training step", progress.write, enabled=step == start):
                state, metrics = train_fn(state, batch, dropout_rng)
            del batch  # the host arrays live in the loader's shared memory until released
            history.append(metrics)
            step += 1
            profiler.after_step(step, metrics)
            stopping = preemption.should_stop()
            is_last = step == steps.total_steps
            if step % steps.log_every == 0 or is_last or stopping:
                check_finite(history, step - len(history), last_good)
                train_summary = _summarise(history)
                elapsed = time.perf_counter() - window_start
                train_summary["clips_per_sec"] = (step - window_step) * config.batch_size / elapsed
                train_summary.update(efficiency(train_summary["clips_per_sec"]))
                train_summary["epoch"] = step / steps.steps_per_epoch
                writer.write(step, "train", train_summary)
                progress.update(step, train_summary)
                history = []
                window_start, window_step = time.perf_counter(), step
            if stopping:
                checkpointer.save(step, state, train_iter, num_examples=num_train)
                by = preemption.received.name if preemption.received else "Signal on another host"
                progress.write(f"{by}: saved step {step}; exiting.")
                return {}
            best_metric = None
            if step % steps.eval_every == 0 or is_last:
                val_metrics = evaluation.evaluate(eval_fn, state.variables, val_loader, mesh)
                record = {
                    k: val_metrics[k] for k in ("loss", "top1", "top5", "mean_class_accuracy")
                }
                record.update(
                    lr=train_summary["lr"],
                    clips_per_sec=train_summary["clips_per_sec"],
                    epoch=step / steps.steps_per_epoch,
                )
                writer.write(step, "val", record)
                progress.write(
                    f"step {step} (epoch {record['epoch']:.2f}): val top-1 "
                    f"{100 * record['top1']:.2f}%, top-5 {100 * record['top5']:.2f}%"
                )
                best_metric = {"top1": record["top1"]}
                window_start = time.perf_counter()
            if step % steps.checkpoint_every == 0 or is_last or best_metric:
                check_finite(history, step - len(history), last_good)
                checkpointer.save(step, state, train_iter, best_metric, num_examples=num_train)
                last_good = step
        checkpointer.wait()
        export_model(config, workdir, train_loader.num_classes, checkpointer, state, mesh)
    except jax.errors.JaxRuntimeError as e:
        resume = f"resumes from step {last_good}" if last_good else "starts again (no checkpoint)"
        distributed.check_lost_process(e, f"the same command on every host {resume}.")
        raise
    finally:
        profiler.close()
        train_iter.close()
        progress.close()
        checkpointer.close()
        writer.close()
    reporting.plot_curves(workdir)
    return {k: v for k, v in val_metrics.items() if k not in ("scores", "labels", "index")}


def export_model(
    config: ml_collections.ConfigDict,
    workdir: str,
    num_classes: int,
    checkpointer: state_checkpoints.Checkpointer,
    state: TrainState,
    mesh: jax.sharding.Mesh,
) -> str:
    """Saves the best (else the last) weights as a model checkpoint in ``WORKDIR/model``.

    The model is recorded with float32 compute; ``tea_jax.load_model`` and ``eval.py
    --checkpoint`` read it.
    """
    variables = state.variables
    best = checkpointer.best_step()
    if best is not None and best != int(state.step):
        variables = checkpointer.restore_variables(best, sharding.abstract(variables, mesh))
    path = storage.join(workdir, "model")
    if jax.process_index() == 0:
        storage.rmtree(path)
    multihost_utils.sync_global_devices("export_model")
    options = model_setup.model_options(config, num_classes) | {"dtype": "float32"}
    save_model(path, config.model, options, jax.device_get(variables))
    if jax.process_index() == 0:
        _save_preprocessing(config, path)
    return path


def _save_preprocessing(config: ml_collections.ConfigDict, path: str) -> None:
    """Stores the input size and the class names beside the model, for ``tea_jax.predict``."""
    classes = storage.join(config.data.get("root", ""), CLASSES_FILE)
    write_preprocessing(path, config.data.image_size, config.data.get("short_side"), classes)
