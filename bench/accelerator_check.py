"""The GPU rows of BENCHMARKS.md in one command, on the accelerator JAX sees:

    python bench/accelerator_check.py

1. Training and inference steps of TEA (`tea50`) and TSN Res2Net-50 (`tsn_res2net50`) at 8 and 16
   frames of 224x224, in bfloat16 and float32: clips/s, step time, compile time, peak device
   memory and MFU (`bench/model_throughput.py`'s `bench_jax`), each beside the PyTorch reference of
   the released code on the same GPU (`bench_torch`, bfloat16 under `torch.autocast`) when PyTorch
   sees a CUDA device.
2. The largest TEA-16f bfloat16 training batch that fits in device memory without
   rematerialisation and with `remat='dots'` and `'blocks'`: doubling from the batch of (1), then
   bisection down to `--search_step` clips, each try stopped by an out-of-memory error, up to
   `--max_batch` (a try whose process dies counts as not fitting; the JSON records why).

Every measurement runs in a fresh process, so that its peak memory is its own and an
out-of-memory error leaves nothing behind; JAX may use 95% of the device memory
(`XLA_PYTHON_CLIENT_MEM_FRACTION`, unless it is set). No measurement starts after `--time_limit_s`;
those left out are listed. Prints Markdown rows as it goes and, last, one JSON line.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import model_throughput

from tea_jax import flops

DTYPE_NAMES = {"bf16": "bfloat16", "fp32": "float32"}
# `full` left out: compiled for an H100 it saved nothing (BENCHMARKS.md).
REMAT_MODES = ("", "dots", "blocks")
# The batch flag counts clips of this many frames; a row with T frames takes batch * 8 // T clips.
BATCH_FRAMES = 8


def _out_of_memory(error: BaseException) -> bool:
    message = str(error)
    return "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower()


def _jax_measurement(kwargs: dict) -> dict:
    """`bench_jax(**kwargs)`, with an out-of-memory error returned as `{'out_of_memory': True}`."""
    try:
        return model_throughput.bench_jax(**kwargs)
    except Exception as error:
        if _out_of_memory(error):
            return {"out_of_memory": True, "error": str(error).splitlines()[0][:300]}
        raise


def _reference_measurement(kwargs: dict) -> dict:
    """`bench_torch(**kwargs)` on a CUDA device, else `{'skipped': reason}`."""
    try:
        import torch
    except ImportError:
        return {"skipped": "PyTorch is not installed"}
    if not torch.cuda.is_available():
        return {"skipped": "PyTorch sees no CUDA device"}
    try:
        return model_throughput.bench_torch(**kwargs)
    except torch.cuda.OutOfMemoryError as error:
        return {"out_of_memory": True, "error": str(error).splitlines()[0][:300]}


def in_fresh_process(fn: Callable[[dict], dict], kwargs: dict) -> dict:
    """`fn(kwargs)` in a new, spawned Python process (it inherits none of this one's devices);
    `{'error': ...}` if that process dies (as a runtime may abort on device errors)."""
    context = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(fn, kwargs).result()
    except concurrent.futures.process.BrokenProcessPool:
        return {"error": "the measuring process died"}


def largest_batch(
    fits: Callable[[int], bool], start: int, max_batch: int, step: int = 1
) -> tuple[int, int | None]:
    """The largest batch for which `fits` holds, by doubling from `start` then bisection.

    Args:
      fits: whether a batch fits (assumed monotone: a batch fits if a larger one does).
      start: the first batch tried.
      max_batch: no larger batch is tried.
      step: bisection stops when the bracket is at most this many clips wide.

    Returns:
      `(largest batch that fit or 0, smallest batch that did not fit or None)`.
    """
    fitting, failing = 0, None
    batch = min(start, max_batch)
    while True:
        if not fits(batch):
            failing = batch
            break
        fitting = batch
        if batch >= max_batch:
            return fitting, None
        batch = min(2 * batch, max_batch)
    while failing - fitting > step:
        middle = (fitting + failing) // 2
        if fits(middle):
            fitting = middle
        else:
            failing = middle
    return fitting, failing


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _gib(result: dict) -> float | None:
    if result.get("peak_memory_bytes") is None or result.get("peak_memory_kind", "device") != (
        "device"
    ):
        return None
    return result["peak_memory_bytes"] / 2**30


def _row_line(row: dict) -> str:
    """A Markdown row: measurement, implementation, clips/s, step and compile time, peak memory,
    MFU, speed-up over the reference."""
    name = {"tea50": "TEA", "tsn_res2net50": "TSN Res2Net-50"}.get(row["model"], row["model"])
    what = (
        f"{name}-{row['num_segments']}f {'training' if row['mode'] == 'train' else 'inference'}, "
        f"{row['dtype']}, {row['batch']} clips"
    )
    result = row["result"]
    if "clips_per_sec" not in result:
        note = result.get("skipped") or ("out of memory" if "out_of_memory" in result else "")
        note = note or f"failed: {result.get('error')}"
        return f"| {what} | {row['implementation']} | {note} | | | | | |"
    return (
        f"| {what} | {row['implementation']} | {result['clips_per_sec']:.1f} "
        f"| {1e3 * result['step_time_s']:.1f} ms "
        f"| {_fmt(result.get('compile_time_s'), '{:.1f} s')} "
        f"| {_fmt(_gib(result), '{:.2f} GiB')} | {_fmt(result.get('mfu'), '{:.1%}')} "
        f"| {_fmt(row.get('speedup_vs_reference'), '{:.2f}x')} |"
    )


def _add_reference_figures(jax_result: dict, reference: dict, dtype: str) -> None:
    """The reference's model FLOP/s and MFU from the JAX row's FLOPs per step (same model)."""
    step_flops = jax_result["tflops_per_sec"] * 1e12 * jax_result["step_time_s"]
    achieved = step_flops / reference["step_time_s"]
    reference["tflops_per_sec"] = achieved / 1e12
    reference["mfu"] = flops.mfu(achieved, reference["device"], DTYPE_NAMES[dtype])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batch",
        type=int,
        default=32,
        help=f"clips of {BATCH_FRAMES} frames per step; rows with T frames take batch*8//T clips "
        "(32: 256 frames, sized for 80-141 GB GPUs)",
    )
    parser.add_argument("--max_batch", type=int, default=1024, help="largest batch searched")
    parser.add_argument(
        "--search_step", type=int, default=8, help="width of the final batch-search bracket"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--size", type=int, default=224, help="frame height and width")
    parser.add_argument("--models", default="tea50,tsn_res2net50")
    parser.add_argument("--segments", default="8,16", help="frames per clip; the last is searched")
    parser.add_argument("--dtypes", default="bf16,fp32")
    parser.add_argument("--num_classes", type=int, default=400)
    parser.add_argument("--stage_sizes", default="", help="blocks per stage of a reduced network")
    parser.add_argument("--width", type=float, default=0.0, help="width multiplier (0: full)")
    parser.add_argument("--time_limit_s", type=float, default=450.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

    model_options = {}
    if args.stage_sizes:
        model_options["stage_sizes"] = tuple(int(s) for s in args.stage_sizes.split(","))
    if args.width:
        model_options["width_multiplier"] = args.width
    models = args.models.split(",")
    segments = [int(t) for t in args.segments.split(",")]
    dtypes = args.dtypes.split(",")
    started = time.perf_counter()
    not_run: list[str] = []
    notes: list[str] = []

    def in_time(what: str) -> bool:
        if time.perf_counter() - started < args.time_limit_s:
            return True
        not_run.append(what)
        return False

    print(
        "| measurement | implementation | clips/s | step time | compile time | peak device memory "
        "| MFU | speed-up |\n|---|---|---:|---:|---:|---:|---:|---:|",
        flush=True,
    )
    rows = []
    for mode in ("train", "infer"):
        for model in models:
            for num_segments in segments:
                for dtype in dtypes:
                    kwargs = {
                        "model_name": model,
                        "num_segments": num_segments,
                        "batch": max(1, args.batch * BATCH_FRAMES // num_segments),
                        "mode": mode,
                        "dtype": dtype,
                        "resolution": args.size,
                        "num_classes": args.num_classes,
                        "steps": args.steps,
                        "warmup": args.warmup,
                    }
                    what = f"{model} {num_segments}f {mode} {dtype} batch {kwargs['batch']}"
                    if not in_time(what):
                        continue
                    result = in_fresh_process(
                        _jax_measurement, kwargs | {"model_options": model_options}
                    )
                    row = {k: v for k, v in kwargs.items() if k != "model_name"}
                    row |= {"model": model, "implementation": "tea_jax", "result": result}
                    if model_options:
                        reference = {"skipped": "reduced network: the reference has none"}
                    elif model not in model_throughput.REFERENCE_MODELS:
                        reference = {"skipped": "no reference of this model"}
                    elif not in_time(f"reference {what}"):
                        reference = {"skipped": "time limit"}
                    else:
                        reference = in_fresh_process(_reference_measurement, kwargs)
                    if "step_time_s" in reference and "step_time_s" in result:
                        _add_reference_figures(result, reference, dtype)
                        row["speedup_vs_reference"] = (
                            reference["step_time_s"] / result["step_time_s"]
                        )
                    note = f"PyTorch reference not run: {reference.get('skipped')}"
                    if "skipped" in reference and note not in notes:
                        notes.append(note)
                    reference_row = row | {
                        "implementation": "PyTorch reference",
                        "result": reference,
                    }
                    reference_row.pop("speedup_vs_reference", None)
                    rows += [row, reference_row]
                    print(_row_line(row), flush=True)
                    if "skipped" not in reference:
                        print(_row_line(reference_row), flush=True)

    search_model, search_segments = models[0], segments[-1]
    search_batch = max(1, args.batch * BATCH_FRAMES // search_segments)
    print(
        f"\n| {search_model}-{search_segments}f training, {dtypes[0]}, remat | largest batch that "
        "fit | smallest batch that did not fit |\n|---|---:|---:|",
        flush=True,
    )
    searches = []
    start = search_batch
    for remat in REMAT_MODES:
        tries = []

        def fits(batch: int, remat=remat, tries=tries) -> bool:
            if not in_time(f"batch search {remat or 'none'} at {batch}"):
                raise TimeoutError
            result = in_fresh_process(
                _jax_measurement,
                {
                    "model_name": search_model,
                    "num_segments": search_segments,
                    "batch": batch,
                    "mode": "train",
                    "dtype": dtypes[0],
                    "resolution": args.size,
                    "num_classes": args.num_classes,
                    "steps": 1,
                    "warmup": 0,
                    "remat": remat,
                    "model_options": model_options,
                },
            )
            tries.append({"batch": batch, "fits": "step_time_s" in result})
            if "error" in result and "out_of_memory" not in result:
                tries[-1]["error"] = result["error"]
            return tries[-1]["fits"]

        try:
            fitting, failing = largest_batch(fits, start, args.max_batch, args.search_step)
        except TimeoutError:
            fitting = max((t["batch"] for t in tries if t["fits"]), default=0)
            failing = min((t["batch"] for t in tries if not t["fits"]), default=None)
        searches.append(
            {
                "remat": remat,
                "largest_fitting": fitting,
                "smallest_failing": failing,
                "tries": tries,
            }
        )
        limit = f"none up to {args.max_batch}" if failing is None else str(failing)
        print(f"| {remat or 'none'} | {fitting} | {limit} |", flush=True)
        start = max(fitting, 1)

    for what in not_run:
        notes.append(f"not run (time limit {args.time_limit_s:.0f} s): {what}")
    for note in notes:
        print(f"\n{note}")
    devices = {r["result"]["device"] for r in rows if "device" in r["result"]}
    print(
        json.dumps(
            {
                "devices": sorted(devices),
                "rows": rows,
                "batch_search": {
                    "model": search_model,
                    "num_segments": search_segments,
                    "dtype": dtypes[0],
                    "results": searches,
                },
                "notes": notes,
                "wall_time_s": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    main()
