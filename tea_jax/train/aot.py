"""Compiles what ``train.py`` and ``eval.py`` would run, for a TPU slice or GPUs, on any machine.

  python -m tea_jax.train.aot --config configs/kinetics_tea16.py --target v5e-16
  python -m tea_jax.train.aot --config configs/kinetics_tea16.py --target h100x8 --max_batch

The training and evaluation steps are built by the functions the training loop and ``eval.py``
call (model, optimizer, state, shardings, donation, BatchNorm groups, compute dtype, remat),
lowered on abstract inputs and compiled by XLA for the target's devices, which need not be here:
TPU targets need ``libtpu`` (``pip install ".[tpu-compile]"``), GPU targets JAX's CUDA plugin
(``pip install ".[gpu-compile]"``). The report gives, per device: the memory of the compiled
step against the device's, whether it fits, FLOPs, XLA's bytes accessed and the collectives of
the program, and the compile time; ``--json`` writes it. The exit status is 0 when every
compiled step fits, 1 when one does not, 3 when XLA could not compile one. Nothing runs: the
figures are compiled, not measured.

``--max_batch`` finds the largest batch per device that fits, for each ``--remat`` policy: the
memory of a step is close to linear in the batch, so two compiles give the line and a third
confirms its prediction (more only where it was wrong).
"""

import dataclasses
import json
import math
import os
import re
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags
from ml_collections import config_flags

from tea_jax import accelerators, cli, flops, storage
from tea_jax.data.pipeline import eval_views
from tea_jax.errors import UserError
from tea_jax.train import evaluation, model_setup, sharding, trainer
from tea_jax.train.state import create_train_state
from tea_jax.train.step import check_remat

# The schedule's step counts are constants of the program; they change neither its memory nor
# its cost, so the compiled run takes this many steps per epoch.
_STEPS_PER_EPOCH = 1000
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_COLLECTIVE_OP = re.compile(
    r"^\s*\S+\s*=\s*(.*?)\s(" + "|".join(_COLLECTIVES) + r")(?:-start)?\((.*)$"
)
_SHAPE = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2}
_DTYPE_BYTES |= {"s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}
_OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED|[Oo]ut of memory|[Ee]xceeded .*capacity")


def compile_devices(target: accelerators.Target) -> list:
    """Compile-only devices of ``target`` (from libtpu or the CUDA plugin; none need be here).

    Raises:
      UserError: the compiler of the target's platform is not installed.
    """
    from jax.experimental import topologies

    # No TPU is opened here: skip the cloud metadata query, and let several compiling processes
    # load libtpu at once (its lockfile guards a TPU's devices).
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    extra = "tpu-compile" if target.platform == "tpu" else "gpu-compile"
    try:
        topology = topologies.get_topology_desc(**target.topology_kwargs())
    except Exception as e:  # the plugins raise RuntimeError/ValueError/XlaRuntimeError
        raise UserError(
            f"--target {target.name}: cannot compile for {target.platform.upper()} here: {e}",
            hint=f'Is it installed? pip install ".[{extra}]" (docs/training.md, "Before you rent a '
            'pod").',
        ) from None
    return list(topology.devices)


@dataclasses.dataclass
class Setup:
    """What the run would compile, on abstract inputs."""

    config: ml_collections.ConfigDict
    target: accelerators.Target
    mesh: jax.sharding.Mesh
    hosts: int
    model: Any
    state: Any
    tx: Any
    lr_schedule: Any
    eval_fn: Any


def _abstract(tree: Any, sharding_: jax.sharding.Sharding) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_), tree)


def num_classes(config: ml_collections.ConfigDict) -> int:
    """The class count of the config's dataset (from ``config.data.num_classes``).

    Raises:
      UserError: the config leaves it to the dataset.
    """
    if not config.data.num_classes:
        raise UserError(
            "config.data.num_classes is not set (the dataset would give it).",
            hint="Add --config.data.num_classes=N.",
        )
    return config.data.num_classes


def setup(config: ml_collections.ConfigDict, target: accelerators.Target, devices: list) -> Setup:
    """Builds the training and evaluation steps of ``config`` for ``devices``, as the training
    loop and ``eval.py`` do, without initialising anything."""
    mesh = sharding.create_mesh(devices)
    hosts = len({d.process_index for d in devices})
    host_batch = sharding.per_host_batch_size(config.batch_size, devices=len(devices), hosts=hosts)
    sharding.per_host_batch_size(
        config.eval_batch_size, what="eval_batch_size", devices=len(devices), hosts=hosts
    )
    model_setup.check_bn_groups(config.bn_group_clips, host_batch, hosts)
    model = model_setup.build_model(config, num_classes(config), platform=target.platform)
    init = model_setup.initializer(
        model, num_segments=config.num_segments, image_size=config.data.image_size
    )
    variables = jax.eval_shape(lambda: init(jax.random.key(config.seed)))
    schedule = trainer.Schedule.from_config(config, config.batch_size * _STEPS_PER_EPOCH)
    # The weights' values do not change the program: the classifier counts as new, as it is
    # when starting from an ImageNet model.
    tx, lr_schedule = trainer.create_optimizer(config, variables["params"], schedule, True)
    state = jax.eval_shape(lambda v: create_train_state(v, tx), variables)
    state = _abstract(state, sharding.replicated(mesh))
    eval_fn = evaluation.make_eval_fn(model, mesh, config.score_average)
    return Setup(config, target, mesh, hosts, model, state, tx, lr_schedule, eval_fn)


def collectives(hlo: str) -> dict[str, dict[str, int]]:
    """The collectives of a compiled program by kind and group size: ``{'all-reduce (all 8
    devices)': {'count': 3, 'bytes': ...}}``, bytes of their results per device."""
    found: dict[str, dict[str, int]] = {}
    for line in hlo.splitlines():
        m = _COLLECTIVE_OP.match(line)
        if not m:
            continue
        shapes, kind, rest = m.groups()
        size = sum(
            _DTYPE_BYTES.get(dtype, 1) * math.prod(int(d) for d in dims.split(",") if d)
            for dtype, dims in _SHAPE.findall(shapes)
        )
        key = f"{kind} ({_group(rest)})"
        entry = found.setdefault(key, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += size
    return found


def _group(attributes: str) -> str:
    if m := re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attributes):
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", m[1]))
        reduced = math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", m[2]))
        total = math.prod(int(v) for v in sizes.values())
        return "all devices" if reduced == total else f"groups of {reduced}"
    if m := re.search(r"replica_groups=\[(\d+),(\d+)\]<=\[(\d+)\]", attributes):
        groups, size = int(m[1]), int(m[2])
        return "all devices" if groups == 1 else f"groups of {size}"
    if m := re.search(r"replica_groups=\{\{([\d,]*)\}", attributes):
        return f"groups of {len(m[1].split(','))}"
    if "source_target_pairs" in attributes:
        return "pairs"
    return "all devices"


def _cost(compiled: Any) -> dict[str, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    return dict(cost or {})


def compile_step(
    setup_: Setup, step: str, *, batch_per_device: int, remat: str = "", protocol: str = ""
) -> dict[str, Any]:
    """Compiles the training (``step='train'``) or evaluation step at ``batch_per_device``
    clips (videos for evaluation) and reports it per device.

    Returns:
      The report: memory (``arguments``, ``outputs``, ``aliased``, ``temporaries``, ``code``,
      ``total`` bytes), ``fits``, ``model_flops``, ``xla_flops``, ``bytes_accessed``,
      ``collectives`` and ``compile_seconds``; a step that XLA refuses for lack of memory has
      ``fits`` False and ``error``.
    """
    config, mesh = setup_.config, setup_.mesh
    devices = mesh.size
    batch = batch_per_device * devices
    data = sharding.data_sharded(mesh)
    frames = config.num_segments
    if step == "train":
        size = config.data.image_size
        video = (batch, frames, size, size, 3)
        inputs = {
            "video": jax.ShapeDtypeStruct(video, jnp.uint8, sharding=data),
            "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data),
        }
        rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding.replicated(mesh))
        run_config = config.copy_and_resolve_references()
        run_config.remat = remat
        train_fn = trainer.make_train_fn(
            run_config, setup_.model, setup_.tx, setup_.lr_schedule, mesh, setup_.state
        )
        lower = lambda: train_fn.lower(setup_.state, inputs, rng)  # noqa: E731
        views = 1
    else:
        clips, crops, size = eval_views(config.data, protocol)
        views = clips * crops
        inputs = {
            "video": jax.ShapeDtypeStruct(
                (batch, views, frames, size, size, 3), jnp.uint8, sharding=data
            ),
            **{
                k: jax.ShapeDtypeStruct((batch,), dtype, sharding=data)
                for k, dtype in (("label", jnp.int32), ("index", jnp.int32), ("mask", jnp.bool_))
            },
        }
        variables = {"params": setup_.state.params, "batch_stats": setup_.state.batch_stats}
        lower = lambda: setup_.eval_fn.lower(variables, inputs)  # noqa: E731
    macs = flops.clip_macs(setup_.model, frames, size)
    report: dict[str, Any] = {
        "step": step,
        "target": setup_.target.name,
        "devices": devices,
        "hosts": setup_.hosts,
        "device_kind": mesh.devices.flat[0].device_kind,
        "batch_per_device": batch_per_device,
        "remat": remat if step == "train" else "",
        "protocol": protocol,
        "compute_dtype": jnp.dtype(setup_.model.dtype).name,
        "bn_group_clips": config.bn_group_clips,
        "model_flops": flops.step_flops(macs, train=step == "train") * views * batch_per_device,
        "device_memory": setup_.target.chip.memory_bytes,
        "usable_memory": setup_.target.chip.usable_bytes,
    }
    start = time.perf_counter()
    try:
        compiled = lower().compile()
    except jax.errors.JaxRuntimeError as e:
        # The TPU compiler refuses what does not fit; any other refusal is XLA's own failure.
        report["compile_seconds"] = round(time.perf_counter() - start, 1)
        message = str(e).strip().splitlines()[0][:500]
        if _OUT_OF_MEMORY.search(str(e)):
            report.update(fits=False, error=message)
        else:
            report.update(fits=None, compile_error=message)
        return report
    report["compile_seconds"] = round(time.perf_counter() - start, 1)
    memory = compiled.memory_analysis()
    sizes = {
        "arguments": memory.argument_size_in_bytes,
        "outputs": memory.output_size_in_bytes,
        "aliased": memory.alias_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "code": memory.generated_code_size_in_bytes,
    }
    total = sizes["arguments"] + sizes["outputs"] - sizes["aliased"]
    total += sizes["temporaries"] + sizes["code"]
    cost = _cost(compiled)
    report.update(
        sizes,
        total=total,
        fits=total <= setup_.target.chip.usable_bytes,
        state_bytes=_nbytes(setup_.state),
        xla_flops=cost.get("flops"),
        bytes_accessed=cost.get("bytes accessed"),
        collectives=collectives(compiled.as_text()),
    )
    return report


def _nbytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def max_batch(
    setup_: Setup, remat: str, log=print, first: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The largest training batch per device that fits with ``remat``, by few compiles.

    Batches per device are multiples of the BatchNorm group (or divisors of it below one group),
    as ``model_setup.check_bn_groups`` requires of a run.
    Two compiles give the memory's line in the batch; the line's largest fitting batch is
    compiled to confirm it, and smaller ones while it does not fit.

    Returns:
      ``{'remat', 'max_batch_per_device' (0: not even the smallest), 'lower_bound' (XLA could
      not compile a batch of the search, so a larger one may fit), 'compiles': [reports]}``;
      ``first``, the report of the config's batch with ``remat`` if already compiled, is reused.
    """
    config = setup_.config
    devices = setup_.mesh.size
    group = config.bn_group_clips or 1
    start = max(config.batch_size // devices, 1)
    compiles = []

    def run(b):
        log(f"  remat={remat or 'none'}: compiling batch {b} per device ...")
        report = compile_step(setup_, "train", batch_per_device=b, remat=remat)
        log(f"    {_memory_line(report)}")
        compiles.append(report)
        return report

    def valid(b):  # the largest batch <= b made of whole groups, or dividing one group
        return (
            b // group * group if b >= group else max(d for d in range(1, b + 1) if group % d == 0)
        )

    if first is None:
        first = run(start)
    else:
        compiles.append(first)
    second = run(start * 2 if first["fits"] else valid(max(start // 2, 1)))
    known = [r for r in compiles if "total" in r]
    fitting = [r["batch_per_device"] for r in compiles if r["fits"]]
    if len(known) == 2 and known[0]["batch_per_device"] != known[1]["batch_per_device"]:
        (b0, m0), (b1, m1) = ((r["batch_per_device"], r["total"]) for r in known)
        slope = (m1 - m0) / (b1 - b0)
        guess = int((setup_.target.chip.usable_bytes - m0) / slope) + b0 if slope > 0 else b1
        guess = valid(max(guess, 1))
    else:
        guess = max(fitting) if fitting else max(second["batch_per_device"] // 2, 1)
    tried = {r["batch_per_device"] for r in compiles}
    while guess >= 1 and guess not in tried:
        report = run(guess)
        tried.add(guess)
        if report["fits"]:
            fitting.append(guess)
            break
        guess = valid(guess - 1) if guess > 1 else 0
    best = max(fitting, default=0)
    failed = any("compile_error" in r for r in compiles)
    return {
        "remat": remat,
        "max_batch_per_device": best,
        "lower_bound": failed,
        "compiles": compiles,
    }


def _gb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f} GB"


def _memory_line(r: dict[str, Any]) -> str:
    if "compile_error" in r:
        return f"XLA could not compile it: {r['compile_error']}"
    if "total" not in r:
        return f"does not fit: {r.get('error', '')}"
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    return (
        f"{_gb(r['total'])} of {_gb(r['usable_memory'])} usable per device: {verdict} "
        f"(arguments {_gb(r['arguments'])}, outputs {_gb(r['outputs'])}, donated "
        f"{_gb(r['aliased'])}, temporaries {_gb(r['temporaries'])}, code {_gb(r['code'])})"
    )


def format_report(r: dict[str, Any]) -> str:
    """The human-readable lines of one compiled step."""
    what = (
        f"training step, remat={r['remat'] or 'none'}"
        if r["step"] == "train"
        else f"evaluation step ({r['protocol']} protocol)"
    )
    lines = [
        f"{what}: {r['batch_per_device']} per device x {r['devices']} {r['device_kind']} "
        f"({r['hosts']} host(s)), {r['compute_dtype']}, compiled in {r['compile_seconds']} s",
        f"  memory: {_memory_line(r)}",
    ]
    if "total" in r:
        xla = "-" if r["xla_flops"] is None else f"{r['xla_flops'] / 1e12:.3f} TFLOP"
        lines.append(
            f"  FLOPs per device per step: model {r['model_flops'] / 1e12:.3f} TFLOP, XLA {xla}; "
            f"XLA's bytes accessed {_gb(r['bytes_accessed'])} (a comparison, not a time)"
        )
        parts = [f"{k}: {v['count']} op(s), {_gb(v['bytes'])}" for k, v in r["collectives"].items()]
        lines.append("  collectives: " + ("; ".join(parts) or "none"))
    return "\n".join(lines)


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("target", None, f"Devices to compile for: {accelerators.known_targets()}.")
flags.DEFINE_string(
    "eval_protocol",
    "accuracy",
    "Evaluation protocol whose step is compiled (efficient, accuracy, config); '' for none.",
)
flags.DEFINE_bool("max_batch", False, "Find the largest training batch per device that fits.")
flags.DEFINE_list(
    "remat",
    None,
    "Remat settings for --max_batch (none, dots, full, blocks); default: the config's.",
)
flags.DEFINE_string("json", None, "Also write the report as JSON to this file.")
flags.mark_flags_as_required(["config", "target"])


def run(
    config: ml_collections.ConfigDict,
    target_name: str,
    *,
    eval_protocol: str = "accuracy",
    find_max_batch: bool = False,
    remats: list[str] | None = None,
    log=print,
) -> dict[str, Any]:
    """Compiles ``config``'s steps for ``target_name`` and returns the whole report."""
    target = accelerators.parse_target(target_name)
    for remat in [config.remat, *(remats or [])]:
        check_remat(remat)
    setup_ = setup(config, target, compile_devices(target))
    devices = setup_.mesh.size
    steps = [
        compile_step(
            setup_, "train", batch_per_device=config.batch_size // devices, remat=config.remat
        )
    ]
    log(format_report(steps[-1]))
    if eval_protocol:
        steps.append(
            compile_step(
                setup_,
                "eval",
                batch_per_device=config.eval_batch_size // devices,
                protocol=None if eval_protocol == "config" else eval_protocol,
            )
        )
        steps[-1]["protocol"] = eval_protocol
        log(format_report(steps[-1]))
    report = {
        "config": config.to_dict(),
        "target": target.name,
        "platform": target.platform,
        "devices": devices,
        "fits": all(s["fits"] for s in steps)
        if all(s["fits"] is not None for s in steps)
        else None,
        "steps": steps,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "note": "compiled, not run",
    }
    if find_max_batch:
        report["max_batch"] = []
        for remat in remats if remats is not None else [config.remat]:
            reuse = steps[0] if remat == config.remat else None
            found = max_batch(setup_, remat, log, first=reuse)
            report["max_batch"].append(found)
            log(
                f"largest training batch per device with remat={remat or 'none'}: "
                f"{'at least ' if found['lower_bound'] else ''}{found['max_batch_per_device']}"
            )
    return report


def main(argv):
    del argv
    jax.config.update("jax_platforms", "cpu")
    report = run(
        FLAGS.config,
        FLAGS.target,
        eval_protocol=FLAGS.eval_protocol,
        find_max_batch=FLAGS.max_batch,
        remats=FLAGS.remat and ["" if r == "none" else r for r in FLAGS.remat],
    )
    if FLAGS.json:
        storage.write_text(FLAGS.json, json.dumps(report, indent=2, default=str))
    if report["fits"] is None:
        print("XLA could not compile a step for the target (see above).")
        sys.exit(3)
    print("Fits." if report["fits"] else "Does not fit.")
    sys.exit(0 if report["fits"] else 1)


if __name__ == "__main__":
    cli.run_absl(main)
