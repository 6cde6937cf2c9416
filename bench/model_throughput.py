"""Steady-state throughput of a model on whatever devices JAX sees,
optionally beside the PyTorch reference.

    python bench/model_throughput.py --model tea50 --num-segments 8 --batch 2 \\
        --mode train [--reference]

Reports the median step time of `--steps` timed steps after `--warmup` untimed ones, clips/s,
compile time, peak memory, achieved FLOP/s (MACs from `tea_jax.flops`, x2, x3 for a training step)
and, on accelerators with a known peak (`tea_jax.flops.PEAK_FLOPS`), model FLOPs utilisation;
`--profile DIR` adds the time per step of each kind of XLA op. The reference runs in float32, or
under `torch.autocast` in bfloat16 with `--dtype bf16`. The last line printed is one JSON object.
"""

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tea_jax import create_model, flops  # noqa: E402
from tea_jax.train.state import create_train_state  # noqa: E402
from tea_jax.train.step import train_step  # noqa: E402

DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}

# Models with a PyTorch reference of the released code (tests/torch_reference.py).
REFERENCE_MODELS = ("tea50", "tsn_res2net50", "tsn_resnet50")


def _median_time(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _profile(step, directory: str, steps: int = 2, top: int = 15) -> dict[str, float]:
    """Traces `steps` steps into `directory` and returns milliseconds per step summed by
    HLO op kind.

    Kinds are XLA's op names without their numeric suffix (`ynn_fusion`,
    `transpose_copy_fusion`, ...). On CPU, run with `XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true`
    so that XLA records its ops.
    """
    with jax.profiler.trace(directory, create_perfetto_trace=True):
        for _ in range(steps):
            step()
    trace_file = sorted(glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True))[-1]
    with gzip.open(trace_file) as f:
        events = json.load(f)["traceEvents"]
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") == "X" and not name.startswith(("Thunk", "$", "Slinky", "Pjit")):
            totals[re.sub(r"\.\d+$", "", name)] += event["dur"] / 1e3 / steps
    return dict(totals.most_common(top))


def bench_jax(
    model_name: str,
    *,
    num_segments: int,
    batch: int,
    mode: str,
    dtype: str = "fp32",
    resolution: int = 224,
    num_classes: int = 400,
    steps: int = 5,
    warmup: int = 2,
    remat: str = "",
    model_options: dict | None = None,
    profile: str | None = None,
) -> dict:
    """Times `mode` (`'train'` or `'infer'`) steps of a registered model on JAX's first device.

    Args:
      model_name: a `tea_jax.create_model` name.
      num_segments: frames per clip.
      batch: clips per step.
      mode: `'train'` (`tea_jax.train.step.train_step` with SGD momentum) or `'infer'`.
      dtype: compute dtype, `'fp32'` or `'bf16'` (parameters stay float32).
      resolution: frame height and width.
      num_classes: classifier outputs.
      steps: timed steps (the median is reported).
      warmup: untimed steps before them.
      remat: rematerialisation of the training forward pass (`tea_jax.train.step`'s `remat`).
      model_options: further `create_model` options (e.g. `stage_sizes`, `width_multiplier`).
      profile: a directory to trace two more steps into (adds `profile_ms_per_step`).

    Returns:
      `clips_per_sec`, `step_time_s`, `compile_time_s`, `peak_memory_bytes` and
      `peak_memory_kind` (`'device'` from `memory_stats()`, else `'process_rss'`),
      `tflops_per_sec`, `mfu` (None where the device's peak is unknown), `device` and
      `profile_ms_per_step`.
    """
    compute_dtype = DTYPES[dtype]
    model = create_model(
        model_name,
        num_classes=num_classes,
        num_segments=num_segments,
        dtype=compute_dtype,
        **(model_options or {}),
    )
    shape = (batch, num_segments, resolution, resolution, 3)
    video = jax.random.normal(jax.random.key(0), shape)
    labels = jnp.zeros((batch,), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(1), video)
    tx = optax.sgd(0.01, momentum=0.9)

    if mode == "infer":
        state, inputs = variables, (video,)
        step_fn = jax.jit(lambda variables, video: (variables, model.apply(variables, video)))
    else:  # The training step of train.py, on uint8 frames as its loader gives them.
        frames = jax.random.randint(jax.random.key(2), shape, 0, 256, jnp.int32).astype(jnp.uint8)
        state = create_train_state(variables, tx)
        inputs = ({"video": frames, "label": labels}, jax.random.key(3))
        schedule = optax.constant_schedule(0.01)
        step = functools.partial(train_step, model=model, tx=tx, schedule=schedule, remat=remat)
        step_fn = jax.jit(step, donate_argnums=0)

    start = time.perf_counter()
    compiled = step_fn.lower(state, *inputs).compile()
    compile_time = time.perf_counter() - start
    holder = [state]

    def step():
        holder[0], out = compiled(holder[0], *inputs)
        jax.block_until_ready(out)

    step_time = _median_time(step, steps, warmup)
    profile_ms = _profile(step, profile) if profile else None
    macs = sum(flops.count_macs(lambda v, x: model.apply(v, x), variables, video).values())
    achieved = flops.step_flops(macs, train=mode == "train") / step_time
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        peak, peak_kind = stats["peak_bytes_in_use"], "device"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_rss"
    return {
        "clips_per_sec": batch / step_time,
        "step_time_s": step_time,
        "compile_time_s": compile_time,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "tflops_per_sec": achieved / 1e12,
        "mfu": flops.mfu(achieved, device.device_kind, compute_dtype),
        "device": f"{device.device_kind} ({jax.default_backend()})",
        "profile_ms_per_step": profile_ms,
    }


def bench_torch(
    model_name: str,
    *,
    num_segments: int,
    batch: int,
    mode: str,
    dtype: str = "fp32",
    resolution: int = 224,
    num_classes: int = 400,
    steps: int = 5,
    warmup: int = 2,
    threads: int = 0,
) -> dict:
    """The same measurement on the PyTorch reference of the released code, on the GPU when
    PyTorch sees one (`threads`: CPU threads, 0 for all cores).

    The reference computes in float32 (parameters too); `dtype='bf16'` runs it under
    `torch.autocast` in bfloat16. `peak_memory_bytes` is PyTorch's peak allocation on the GPU
    (None on CPU).
    """
    import torch
    import torch_reference as ref

    torch.set_num_threads(threads or os.cpu_count())
    cuda = torch.cuda.is_available()
    backbone = {
        "tea50": lambda: ref.tea50_backbone(num_segments),
        "tsn_res2net50": ref.res2net50,
        "tsn_resnet50": ref.resnet50,
    }[model_name]()
    model = ref.TSN(num_classes, num_segments, backbone)
    video = torch.randn(batch, num_segments, 3, resolution, resolution)
    labels = torch.zeros(batch, dtype=torch.long)
    if cuda:
        torch.backends.cudnn.benchmark = True  # as in TSM's main.py, which the release builds on
        model, video, labels = model.cuda(), video.cuda(), labels.cuda()
        torch.cuda.reset_peak_memory_stats()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    autocast = torch.autocast(
        "cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"
    )
    if mode == "infer":
        model.eval()

        def step():
            with torch.no_grad(), autocast:
                model(video)
            sync()
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad()
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(video), labels)
            loss.backward()
            opt.step()
            sync()

    step_time = _median_time(step, steps, warmup)
    return {
        "clips_per_sec": batch / step_time,
        "step_time_s": step_time,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "device": torch.cuda.get_device_name()
        if cuda
        else f"cpu, {torch.get_num_threads()} threads",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tea50")
    parser.add_argument("--num-segments", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=0, help="PyTorch threads (default: all cores)"
    )
    parser.add_argument("--reference", action="store_true", help="also time the PyTorch reference")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="also trace two steps into DIR and report milliseconds per step by XLA op kind",
    )
    args = parser.parse_args()

    measurement = {
        "num_segments": args.num_segments,
        "batch": args.batch,
        "mode": args.mode,
        "dtype": args.dtype,
        "resolution": args.resolution,
        "num_classes": args.num_classes,
        "steps": args.steps,
        "warmup": args.warmup,
    }
    result = {"config": {k: v for k, v in vars(args).items() if k != "reference"}}
    result.update(bench_jax(args.model, **measurement, profile=args.profile))
    print(
        f"jax: {result['step_time_s']:.3f} s/step, {result['clips_per_sec']:.2f} clips/s, "
        f"compile {result['compile_time_s']:.1f} s on {result['device']}",
        flush=True,
    )
    for kind, ms in (result["profile_ms_per_step"] or {}).items():
        print(f"  {ms:9.1f} ms/step  {kind}")
    if args.reference:
        if args.model not in REFERENCE_MODELS:
            parser.error(f"--reference supports {', '.join(REFERENCE_MODELS)}")
        ref = bench_torch(args.model, **measurement, threads=args.threads)
        result["reference"] = ref
        result["speedup_vs_reference"] = ref["step_time_s"] / result["step_time_s"]
        print(
            f"pytorch: {ref['step_time_s']:.3f} s/step on {ref['device']}; "
            f"jax speed-up x{result['speedup_vs_reference']:.2f}",
            flush=True,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
