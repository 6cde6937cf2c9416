"""Steady-state throughput of a model on whatever devices JAX sees,
optionally beside the PyTorch reference.

    python bench/model_throughput.py --model tea50 --num-segments 8 --batch 2 \\
        --mode train [--reference]

Reports the median step time of `--steps` timed steps after `--warmup` untimed ones, clips/s,
compile time, peak memory, achieved FLOP/s (MACs from `tea_jax.flops`, x2, x3 for a training step)
and, on accelerators with a known peak, model FLOPs utilisation; `--profile DIR` adds the time per
step of each kind of XLA op. The last line printed is one JSON object.
"""

import argparse
import collections
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

from tea_jax import create_model  # noqa: E402
from tea_jax.flops import count_macs  # noqa: E402

# Dense peak FLOP/s per chip, for model FLOPs utilisation: {device kind substring: {dtype: FLOP/s}}.
PEAK_FLOPS = {
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "TPU v4": {"bfloat16": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12},
    "TPU v5p": {"bfloat16": 459e12},
}
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


def bench_jax(args) -> dict:
    dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[args.dtype]
    model = create_model(
        args.model, num_classes=args.num_classes, num_segments=args.num_segments, dtype=dtype
    )
    shape = (args.batch, args.num_segments, args.resolution, args.resolution, 3)
    video = jax.random.normal(jax.random.key(0), shape)
    labels = jnp.zeros((args.batch,), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(1), video)
    tx = optax.sgd(0.01, momentum=0.9)

    if args.mode == "infer":
        state, inputs = variables, (video,)
        step_fn = jax.jit(lambda variables, video: (variables, model.apply(variables, video)))
    else:

        def train_step(state, video, labels):
            params, batch_stats, opt_state = state

            def loss_fn(params):
                logits, updates = model.apply(
                    {"params": params, "batch_stats": batch_stats},
                    video,
                    train=True,
                    mutable=["batch_stats"],
                    rngs={"dropout": jax.random.key(0)},
                )
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                return loss, updates["batch_stats"]

            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

        state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
        inputs = (video, labels)
        step_fn = jax.jit(train_step, donate_argnums=0)

    start = time.perf_counter()
    compiled = step_fn.lower(state, *inputs).compile()
    compile_time = time.perf_counter() - start
    holder = [state]

    def step():
        holder[0], out = compiled(holder[0], *inputs)
        jax.block_until_ready(out)

    step_time = _median_time(step, args.steps, args.warmup)
    profile = _profile(step, args.profile) if args.profile else None
    macs = sum(count_macs(lambda v, x: model.apply(v, x), variables, video).values())
    flops = 2 * macs * (3 if args.mode == "train" else 1)
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        peak, peak_kind = stats["peak_bytes_in_use"], "device"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_rss"
    achieved = flops / step_time
    peak_flops = next(
        (p.get(jnp.dtype(dtype).name) for k, p in PEAK_FLOPS.items() if k in device.device_kind),
        None,
    )
    return {
        "clips_per_sec": args.batch / step_time,
        "step_time_s": step_time,
        "compile_time_s": compile_time,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "tflops_per_sec": achieved / 1e12,
        "mfu": achieved / (peak_flops * jax.device_count()) if peak_flops else None,
        "device": f"{jax.device_count()}x {device.device_kind} ({jax.default_backend()})",
        "profile_ms_per_step": profile,
    }


def bench_torch(args) -> dict:
    """The same measurement on the PyTorch reference of the released code (float32)."""
    import torch
    import torch_reference as ref

    torch.set_num_threads(args.threads or os.cpu_count())
    cuda = torch.cuda.is_available()
    t = args.num_segments
    backbone = {
        "tea50": lambda: ref.tea50_backbone(t),
        "tsn_res2net50": ref.res2net50,
        "tsn_resnet50": ref.resnet50,
    }[args.model]()
    model = ref.TSN(args.num_classes, t, backbone)
    video = torch.randn(args.batch, t, 3, args.resolution, args.resolution)
    labels = torch.zeros(args.batch, dtype=torch.long)
    if cuda:
        model, video, labels = model.cuda(), video.cuda(), labels.cuda()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if args.mode == "infer":
        model.eval()

        def step():
            with torch.no_grad():
                model(video)
            sync()
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(video), labels).backward()
            opt.step()
            sync()

    step_time = _median_time(step, args.steps, args.warmup)
    return {
        "clips_per_sec": args.batch / step_time,
        "step_time_s": step_time,
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

    result = {"config": {k: v for k, v in vars(args).items() if k != "reference"}}
    result.update(bench_jax(args))
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
        ref = bench_torch(args)
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
