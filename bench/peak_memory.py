"""What holds a training step's device memory at its peak, by part of the network, from XLA's
own accounting of the compiled program (GPU targets; compiled, not run).

    python bench/peak_memory.py --json bench/compiled/peak_tea16_h100x8.json -- \\
        --config=configs/kinetics_tea16.py --target=h100x8

The arguments after ``--`` are ``python -m tea_jax.train.aot``'s; the command compiles the
training step with XLA's dumps on (``--xla_dump_to``), reads the "stack trace breakdown for peak
usage" of the step's live-range dump (each buffer live at the peak, under the JAX operation
that made it, ``jit(train_step)/jvp(VideoResNet)/layer2_0/.../me/conv_reduce/dot_general``) and
sums it by part: Motion Excitation, Multiple Temporal Aggregation, the rest of the bottlenecks,
the stem and head, the state (parameters and optimizer), the batch.
"""

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from compiled_table import GPU_XLA_FLAGS, ROOT  # the flags the GPU rows compile with

_LINE = re.compile(
    r"^(?P<indent>[\s│├└─]*)(?P<name>\S.*?) \([\d.]+%, total: (?P<total>[\d ]+) bytes, "
    r"current: (?P<current>[\d ]+) bytes"
)
ME, MTA = "Motion Excitation (ME)", "Multiple Temporal Aggregation (MTA)"
PARTS = (  # the first that matches
    ("state: parameters, optimizer", re.compile(r"^state/")),
    ("batch", re.compile(r"^batch")),
    (ME, re.compile(r"/me/")),
    (MTA, re.compile(r"/mta/")),
    # A block recomputed under remat='blocks' is named by its class, not its layer.
    ("bottlenecks' 1x1 convs, BN, ReLU, shortcut", re.compile(r"/layer\d_\d+/|Net\w*Block\)")),
)
OTHER = "stem, head, loss, other"


def breakdown(text: str) -> dict[int | str, int]:
    """``{path: bytes}`` of the buffers live at the peak, from a ``*-live-range.txt`` dump."""
    lines = text.split("Stack trace breakdown for peak usage:", 1)[1].splitlines()[1:]
    stack: list[tuple[int, str]] = []
    found: dict[str, int] = collections.Counter()
    for line in lines:
        match = _LINE.match(line)
        if not match:
            break
        depth = len(match.group("indent"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        stack.append((depth, match.group("name")))
        current = int(match.group("current").replace(" ", ""))
        if current:
            found["/".join(name for _, name in stack[1:])] += current  # [0] is the entry
    return found


def part_of(path: str) -> str:
    return next((name for name, pattern in PARTS if pattern.search(path)), OTHER)


def op_of(path: str) -> str:
    """The operation of ``path`` within its block (``me/conv_reduce/dot_general``), after its
    pass: forward (a residual kept for the backward pass), backward, or recomputed."""
    direction = "forward"
    if "transpose(" in path:  # the backward pass; a block it runs again is a jvp inside it
        direction = (
            "recomputed" if re.search(r"transpose\(jvp\(\w+\)\)/jvp\(", path) else "backward"
        )
    inner = re.split(r"(?:/layer\d_\d+|Net\w*Block\)+)/(?:\w+\.\w+/)?", path)[-1]
    inner = re.sub(r"\{\d+\}$", "", inner)  # the tuple element of a fusion's output
    return f"{direction}: {inner}"


def summarize(found: dict[str, int], top: int = 20) -> dict:
    parts: dict[str, int] = collections.Counter()
    ops: dict[str, dict[str, int]] = collections.defaultdict(collections.Counter)
    for path, size in found.items():
        part = part_of(path)
        parts[part] += size
        ops[part][op_of(path)] += size
    return {
        "peak_bytes": sum(found.values()),
        "parts": dict(parts.most_common()),
        "ops": {part: dict(collections.Counter(c).most_common(top)) for part, c in ops.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="Also write the breakdown here.")
    parser.add_argument("aot_args", nargs="+", help="python -m tea_jax.train.aot's arguments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as dump:
        flags = f"{GPU_XLA_FLAGS} --xla_dump_to={dump} --xla_dump_hlo_module_re=train_step"
        env = dict(os.environ, XLA_FLAGS=flags)
        command = [sys.executable, "-m", "tea_jax.train.aot", "--eval_protocol=", *args.aot_args]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        print(done.stdout, end="")
        files = glob.glob(os.path.join(dump, "*train_step*live-range.txt"))
        if not files:
            sys.exit(f"no live-range dump of the training step (a GPU target?):\n{done.stderr}")
        summary = summarize(breakdown(Path(files[0]).read_text()))
    summary["command"] = ["python", "-m", "tea_jax.train.aot", *args.aot_args]
    summary["xla_flags"] = GPU_XLA_FLAGS
    print(f"at the peak: {summary['peak_bytes'] / 1e9:.2f} GB")
    for part, size in summary["parts"].items():
        print(f"  {part}: {size / 1e9:.2f} GB")
        for op, op_size in summary["ops"].get(part, {}).items():
            if op_size >= 0.01 * summary["peak_bytes"]:
                print(f"    {op}: {op_size / 1e9:.3f} GB")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
