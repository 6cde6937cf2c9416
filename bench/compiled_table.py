"""Compiles the paper recipes' training steps for TPU slices and GPUs and writes their table.

    python bench/compiled_table.py [--rows tea16_v5e-16 ...] [--table_only]

Each row is one ``python -m tea_jax.train.aot`` command (printed with the table) whose JSON goes
to ``--root/ROW.json``; rows already there are not compiled again, so an interrupted table
resumes where it stopped. Rows run in the order of ``ROWS`` (the recipes' questions first). The
table of the rows compiled so far replaces the text between the markers in BENCHMARKS.md
(``--doc``); rows not compiled yet are listed with their command. Nothing runs on a device: the
figures are compiled, not run.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tea_jax import accelerators  # noqa: E402

MODELS = {
    "tea16": ("configs/kinetics_tea16.py", ()),
    "tea8": ("configs/kinetics_tea8.py", ()),
    "tsn-r2n16": ("configs/kinetics_tea16.py", ("--config.model=tsn_res2net50",)),
    "tsn-r50-16": ("configs/kinetics_tea16.py", ("--config.model=tsn_resnet50",)),
}
# (row, model, target, extra flags), in the order they are compiled: the recipe's answers first;
# the TPU rows leave out the evaluation step (compiled for the GPUs).
ROWS = [
    ("tea16_h100x8", "tea16", "h100x8", ("--max_batch",)),
    ("tea16_v5e-16", "tea16", "v5e-16", ("--eval_protocol=",)),
    ("tea16_v5e-16_b8", "tea16", "v5e-16", ("--config.batch_size=128", "--eval_protocol=")),
    ("tsn-r2n16_h100x8", "tsn-r2n16", "h100x8", ()),
    ("tea8_h100x8", "tea8", "h100x8", ()),
    ("tsn-r50-16_h100x8", "tsn-r50-16", "h100x8", ()),
    ("tea16_a100-40gbx8", "tea16", "a100-40gbx8", ()),
    ("tea16_h100x8_remat", "tea16", "h100x8", ("--max_batch", "--remat=dots,full")),
    ("tea8_a100-40gbx8", "tea8", "a100-40gbx8", ()),
    ("tsn-r2n16_a100-40gbx8", "tsn-r2n16", "a100-40gbx8", ()),
    ("tsn-r2n16_v5e-16", "tsn-r2n16", "v5e-16", ("--eval_protocol=",)),
    ("tea16_v5e-8", "tea16", "v5e-8", ("--eval_protocol=",)),
    ("tea16_v4-8", "tea16", "v4-8", ("--eval_protocol=",)),
    ("tea16_v5p-8", "tea16", "v5p-8", ("--eval_protocol=",)),
    ("tea16_v6e-8", "tea16", "v6e-8", ("--eval_protocol=",)),
    ("tea16_h100x8_blocks", "tea16", "h100x8", ("--max_batch", "--remat=blocks")),
    (
        "tea16_a100-40gbx8_batch",
        "tea16",
        "a100-40gbx8",
        ("--max_batch", "--remat=none,blocks", "--eval_protocol="),
    ),
    ("tea16_v5e-8_blocks", "tea16", "v5e-8", ("--max_batch", "--remat=blocks", "--eval_protocol=")),
]
# XLA 0.10's GPU compiler, without a device to autotune on, fails on some of TEA's larger
# matrix products in Triton ("Couldn't find output tile sizes", at 16 TEA-16f clips per H100);
# the GPU rows compile them with cuBLAS instead.
GPU_XLA_FLAGS = "--xla_gpu_enable_triton_gemm=false"
BEGIN, END = "<!-- compiled-table:begin -->", "<!-- compiled-table:end -->"


def _env(row: tuple) -> dict[str, str]:
    gpu = accelerators.parse_target(row[2]).platform == "cuda"
    return {"XLA_FLAGS": GPU_XLA_FLAGS} if gpu else {}


def command(row: tuple, root: Path, env: dict[str, str] | None = None) -> list[str]:
    """The row's command line, behind its environment (``env``, else the row's own)."""
    name, model, target, extra = row
    config, overrides = MODELS[model]
    return [
        *(f"{k}={v}" for k, v in (_env(row) if env is None else env).items()),
        sys.executable,
        "-m",
        "tea_jax.train.aot",
        f"--config={config}",
        *overrides,
        f"--target={target}",
        *extra,
        f"--json={root / name}.json",
    ]


def _gb(n) -> str:
    return "-" if n is None else f"{n / 1e9:.1f}"


def table(root: Path) -> str:
    """The markdown table of the rows compiled so far, and the commands of the others."""
    lines = [
        "| row | per device | memory per device (GB): args + temps = total / usable | fits "
        "| largest batch per device (remat) | collectives per step | TFLOP per device: "
        "model / XLA | XLA bytes accessed (GB) | compile (s) | evaluation step (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    missing = []
    for row in ROWS:
        path = root / f"{row[0]}.json"
        if not path.exists():
            missing.append(row)
            continue
        report = json.loads(path.read_text())
        train = report["steps"][0]
        largest = ", ".join(
            f"{'≥' if m.get('lower_bound') else ''}{m['max_batch_per_device']} "
            f"({m['remat'] or 'none'})"
            for m in report.get("max_batch", [])
        )
        collectives = "; ".join(
            f"{k}: {v['count']}, {v['bytes'] / 1e6:.0f} MB"
            for k, v in train.get("collectives", {}).items()
        )
        xla = "-" if train.get("xla_flops") is None else f"{train['xla_flops'] / 1e12:.2f}"
        evaluation = "-"
        if len(report["steps"]) > 1 and "total" in report["steps"][1]:
            step = report["steps"][1]
            evaluation = (
                f"{_gb(step['total'])} ({step['batch_per_device']} videos, {step['protocol']})"
            )
        flags = f", `XLA_FLAGS={report['xla_flags']}`" if report.get("xla_flags") else ""
        memory = (
            f"{_gb(train['arguments'])} + {_gb(train['temporaries'])} = {_gb(train['total'])}"
            f" / {_gb(train['usable_memory'])}"
            if "total" in train
            else f"refused: {train.get('error', '')[:80]}"
        )
        lines.append(
            f"| {row[0]} | {train['batch_per_device']} clips, {train['compute_dtype']}, "
            f"remat {train['remat'] or 'none'}{flags} | {memory} "
            f"| {'yes' if train['fits'] else 'no'} | {largest or '-'} | {collectives or 'none'} | "
            f"{train['model_flops'] / 1e12:.2f} / {xla} | {_gb(train.get('bytes_accessed'))} "
            f"| {train['compile_seconds']:.0f} | {evaluation} |"
        )
    text = "\n".join(lines)

    def listed(rows):
        lines = []
        for row in rows:
            path = root / f"{row[0]}.json"
            env = None
            if path.exists():  # as it was compiled
                flags = json.loads(path.read_text()).get("xla_flags")
                env = {"XLA_FLAGS": flags} if flags else {}
            args = command(row, Path("bench/compiled"), env)
            lines.append("    " + " ".join("python" if a == sys.executable else a for a in args))
        return "\n".join(lines)

    done = [row for row in ROWS if row not in missing]
    text += "\n\nThe command of each row:\n\n" + listed(done)
    if missing:
        text += "\n\nNot compiled yet (each command fills its row):\n\n" + listed(missing)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "bench" / "compiled")
    parser.add_argument("--rows", nargs="*", help="Row names (default: all, in order).")
    parser.add_argument("--table_only", action="store_true")
    parser.add_argument("--doc", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    for row in ROWS:
        if args.table_only or (args.rows and row[0] not in args.rows):
            continue
        if (args.root / f"{row[0]}.json").exists():
            continue
        start = time.time()
        print(" ".join(command(row, args.root)), flush=True)
        env = dict(os.environ, **_env(row))
        status = subprocess.run(command(row, args.root)[len(_env(row)) :], cwd=ROOT, env=env)
        status = status.returncode
        print(f"{row[0]}: exit {status} after {time.time() - start:.0f} s", flush=True)
    text = table(args.root)
    doc = args.doc.read_text()
    if BEGIN in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}"
        args.doc.write_text(doc)
    print(text)


if __name__ == "__main__":
    main()
