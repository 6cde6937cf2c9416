"""The documentation's commands and code, checked against the project so that they stay true.

Every shell command in the ``bash``/``console``/``shell`` blocks of README.md and docs/*.md that
runs this project (``python train.py``, ``python eval.py``, ``python -m tea_jax.X``,
``python bench/X.py``, the ``tea-*`` console scripts) is parsed by that command's own parser
without running it: argparse tools through their ``main`` with ``parse_args`` stopped right after
parsing, absl tools (train.py, eval.py, tea_jax.train.aot) in a subprocess that imports the script
and parses each command with its flags and its ``--config`` file (so every ``--config.KEY`` must
exist there).
Other Python modules (``python -m pytest``) must exist. Every path a command reads must be one
that a documented command writes, or one of the user's own files listed in ``USER_FILES``.
README.md's Python blocks run.
"""

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field

import pytest
from fast_compile import cpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCES = ("bash", "console", "shell", "sh")
ABSL_SCRIPTS = ("train.py", "eval.py", "tea_jax.train.aot")

# Paths the commands read that no documented command writes: the user's own downloads and storage.
USER_FILES = {
    r"^~/": "the user's downloads (datasets as published), in their home directory",
    r"^/": "an absolute path on the user's machine or cluster (NFS, mounted disks)",
    r"^gs://": "the user's Cloud Storage bucket",
    r"\.(pth|pth\.tar|safetensors)$": "PyTorch or safetensors weights downloaded by the user",
    r"^video\.mp4$": "any video of the user's",
}

# For each argparse tool: the arguments (argparse dests) that name paths it reads and writes.
READS = {
    "tea_jax.convert": ("input",),
    "tea_jax.export": ("checkpoint",),
    "tea_jax.predict": ("checkpoint", "labels", "videos", "list"),
    "tea_jax.visualize": ("checkpoint", "labels", "video"),
    "tea_jax.data.prepare": ("list", "root", "manual_dir"),
    "bench/heatmap_hit_rate.py": ("checkpoint", "root"),
}
WRITES = {
    "tea_jax.convert": ("output",),
    "tea_jax.export": ("output",),
    "tea_jax.visualize": ("output", "mp4"),
    "tea_jax.data.prepare": ("output", "data_dir"),
    "tea_jax.data.synthetic": ("output",),
    "tea_jax.data.synthetic_long": ("output",),
    "tea_jax.predict": ("output", "timeline", "mp4"),
}


class _Parsed(Exception):
    """Raised by the patched `parse_args` instead of running the command."""

    def __init__(self, namespace):
        super().__init__()
        self.namespace = namespace


@dataclass
class Command:
    """One documented command: where it is, its program and its arguments."""

    where: str  # FILE:LINE
    text: str
    program: str  # "train.py", "tea_jax.convert", "bench/soak.py", "pytest", ...
    kind: str  # "absl", "argparse" or "module"
    args: list[str]
    optional: list[str] = field(default_factory=list)  # flags shown in [brackets]


def _console_scripts() -> dict[str, str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


def doc_files() -> list[str]:
    docs = os.path.join(ROOT, "docs")
    names = sorted(n for n in os.listdir(docs) if n.endswith(".md")) if os.path.isdir(docs) else []
    return ["README.md", *(os.path.join("docs", n) for n in names)]


def code_blocks(path: str, languages) -> list[tuple[int, str]]:
    """(first line number, text) of the fenced blocks of `path` in `languages`."""
    blocks, current, start = [], None, 0
    with open(os.path.join(ROOT, path)) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if current is None and stripped.startswith("```"):
            language = stripped[3:].strip()
            current, start = ([] if language in languages else False), number + 1
        elif current is not None and stripped.startswith("```"):
            if current is not False:
                blocks.append((start, "\n".join(current)))
            current = None
        elif current not in (None, False):
            current.append(line)
    return blocks


def _shell_lines(text: str, first: int) -> list[tuple[int, str]]:
    """Logical lines (continuations joined, comments dropped) with their first line numbers."""
    lines, buffer, start = [], "", first
    for number, line in enumerate(text.splitlines(), first):
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            lines.append((start, buffer.strip()))
        buffer = ""
    return lines


def _segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line, as token lists (split at &&, ||, ;, |)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments, current = [], []
    for token in lexer:
        if token and set(token) <= set("&|;"):
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    return [s for s in segments if s]


def parse_command(tokens: list[str], where: str, text: str, scripts=None) -> list[Command]:
    """The project commands in one simple command (also inside `gcloud ... --command "..."`)."""
    scripts = _console_scripts() if scripts is None else scripts
    found = []
    for i, token in enumerate(tokens):  # a quoted command line run elsewhere (gcloud, ssh)
        if token == "--command" and i + 1 < len(tokens):
            for inner in _segments(tokens[i + 1]):
                found += parse_command(inner, where, text, scripts)
            return found
    # Skip launchers and environment assignments: srun ..., /usr/bin/time -v, VAR=value.
    for i, token in enumerate(tokens):
        name = os.path.basename(token)
        if name in scripts:
            program, kind, args = scripts[name], "argparse", tokens[i + 1 :]
            break
        if re.fullmatch(r"python(3(\.\d+)?)?", name):
            rest = tokens[i + 1 :]
            if rest[:1] == ["-m"]:
                program, args = rest[1], rest[2:]
                kind = "argparse" if program.startswith("tea_jax") else "module"
                kind = "absl" if program in ABSL_SCRIPTS else kind
            elif rest and rest[0].endswith(".py"):
                program, args = rest[0], rest[1:]
                kind = "absl" if program in ABSL_SCRIPTS else "argparse"
            else:
                return found
            break
    else:
        return found
    optional, plain, depth = [], [], 0
    for token in args:
        depth += token.startswith("[")
        if not depth:
            plain.append(token)
        elif token.strip("[]").startswith("-"):
            optional.append(token.strip("[]").split("=")[0])
        depth -= bool(depth) and token.endswith("]")
    found.append(Command(where, text, program, kind, plain, optional))
    return found


def documented_commands(files=None) -> list[Command]:
    commands = []
    for path in files or doc_files():
        for first, block in code_blocks(path, FENCES):
            for number, line in _shell_lines(block, first):
                for tokens in _segments(line):
                    commands += parse_command(tokens, f"{path}:{number}", line)
    return commands


# --- argparse tools ------------------------------------------------------------------------


def _argparse_main(program: str):
    if program.endswith(".py"):
        path = os.path.join(ROOT, program)
        if not os.path.isfile(path):
            raise ModuleNotFoundError(f"no script {program}")
        name = program[:-3].replace("/", ".")
        return importlib.import_module(name).main
    return importlib.import_module(program).main


@contextlib.contextmanager
def _stopped_after_parsing():
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def _option_strings(main) -> set[str]:
    """Every option string of the parser `main` builds (sub-commands' included)."""
    seen = set()
    original = argparse.ArgumentParser.add_argument

    def add_argument(self, *names, **kwargs):
        seen.update(n for n in names if n.startswith("-"))
        return original(self, *names, **kwargs)

    argparse.ArgumentParser.add_argument = add_argument
    try:
        with (
            _stopped_after_parsing(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            _call(main, ["--help"])
    except (SystemExit, _Parsed):
        pass
    finally:
        argparse.ArgumentParser.add_argument = original
    return seen


def _call(main, args):
    argv = sys.argv
    sys.argv = ["prog", *args]
    try:
        main()
    finally:
        sys.argv = argv


def check_argparse(command: Command):
    """(error or None, parsed namespace) of an argparse command."""
    try:
        main = _argparse_main(command.program)
    except ModuleNotFoundError as e:
        return f"{command.program}: no such module or script ({e})", None
    stderr = io.StringIO()
    try:
        with _stopped_after_parsing(), contextlib.redirect_stderr(stderr):
            _call(main, command.args)
    except _Parsed as parsed:
        namespace = parsed.namespace
    except SystemExit:
        return f"rejected by its parser: {stderr.getvalue().strip().splitlines()[-1]}", None
    else:
        return "ran without parsing its arguments", None
    unknown = [o for o in command.optional if o not in _option_strings(main)]
    if unknown:
        return f"unknown option {unknown[0]}", namespace
    return None, namespace


# --- absl tools: train.py, eval.py ---------------------------------------------------------

_ABSL_CHECK = r"""
import importlib, json, sys
from absl import flags
sys.path.insert(0, ".")
script = sys.argv[1]
importlib.import_module(script[:-3] if script.endswith(".py") else script)
FLAGS = flags.FLAGS
results = []
for args in json.loads(sys.stdin.read()):
    FLAGS.unparse_flags()
    for name in [n for n in FLAGS if n.startswith("config.")]:
        delattr(FLAGS, name)  # the overrides of the previous command's config
    try:
        sys.argv = [script, *args]  # config_flags reads the overrides from sys.argv
        rest = FLAGS(sys.argv)
        if rest[1:]:
            raise ValueError(f"stray arguments {rest[1:]}")
        config = FLAGS.config
        data = config.get("data", {})
        results.append({"error": None, "init_from": config.get("init_from") or None,
                        "data_root": data.get("root") if data.get("source") != "tfds" else None,
                        "source": data.get("source")})
    except Exception as e:
        results.append({"error": f"{type(e).__name__}: {e}".splitlines()[0]})
print(json.dumps(results))
"""


def check_absl(script: str, commands: list[Command]) -> list[dict]:
    """Parses every command of an absl `script` (train.py, eval.py, a module) in one
    subprocess."""
    proc = subprocess.run(
        [sys.executable, "-c", _ABSL_CHECK, script],
        input=json.dumps([c.args for c in commands]),
        cwd=ROOT,
        env=cpu_env(PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the checker ----------------------------------------------------------------------------


def _is_user_file(path: str) -> bool:
    return any(re.search(pattern, path) for pattern in USER_FILES)


def _within(path: str, written: set[str]) -> bool:
    path = os.path.normpath(path)
    return any(path == w or path.startswith(w + os.sep) for w in written)


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def check(commands: list[Command]) -> list[str]:
    """Every problem of `commands`, as 'FILE:LINE: command: reason'."""
    problems, reads, written = [], [], set()

    def problem(command, reason):
        problems.append((command.where, f"{command.where}: {command.text}\n    {reason}"))

    for command in commands:
        if command.kind == "module":
            if importlib.util.find_spec(command.program) is None:
                problem(command, f"no module {command.program}")
        elif command.kind == "argparse":
            error, namespace = check_argparse(command)
            if error:
                problem(command, error)
            if namespace is None:
                continue
            values = vars(namespace)
            for dest in READS.get(command.program, ()):
                for path in _as_list(values.get(dest)):
                    reads.append((command, path))
            for dest in WRITES.get(command.program, ()):
                for path in _as_list(values.get(dest)):
                    written.add(os.path.normpath(os.path.expanduser(path)))
                    if command.program == "tea_jax.export":
                        written.add(os.path.normpath(path + ".json"))
    for script in ABSL_SCRIPTS:
        mine = [c for c in commands if c.kind == "absl" and c.program == script]
        if not mine:
            continue
        for command, result in zip(mine, check_absl(script, mine), strict=True):
            if result["error"]:
                problem(command, f"rejected by its flags: {result['error']}")
                continue
            workdir = _flag(command.args, "--workdir")
            checkpoint = _flag(command.args, "--checkpoint")
            if script == "train.py":
                written.add(os.path.normpath(workdir))
                if result["source"] == "synthetic":
                    written.add(os.path.normpath(result["data_root"]))
                elif result["data_root"]:
                    reads.append((command, result["data_root"]))
                if result["init_from"]:
                    reads.append((command, result["init_from"]))
            elif script == "eval.py":
                reads.append((command, checkpoint or workdir))
                labels = _flag(command.args, "--labels")
                if labels:
                    reads.append((command, labels))
    for command, path in reads:
        if not _is_user_file(path) and not _within(path, written):
            problem(command, f"reads {path}, which no documented command writes")
    order = {c.where: i for i, c in enumerate(commands)}
    return [text for where, text in sorted(problems, key=lambda p: order[p[0]])]


def _as_list(value):
    if value in (None, ""):
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


@pytest.fixture(scope="module")
def commands():
    return documented_commands()


def test_the_docs_commands_are_accepted_by_the_project(commands):
    assert len(commands) > 20
    problems = check(commands)
    assert not problems, "\n".join(problems)


def test_the_checker_fails_on_a_wrong_flag_config_key_module_or_path(tmp_path):
    """Each wrong command below is caught, and the right ones next to them pass."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\n"
        "python -m tea_jax.convert res2net50 --input w.pth --output pretrained/r2\n"
        "python train.py --config configs/synthetic_tea8.py --workdir runs/a"
        " --config.init_from=pretrained/r2\n"
        "python -m tea_jax.predict --checkpoint runs/a/model video.mp4\n"
        # wrong: a flag, a config key, a config file, a module, a script, a path, a flag value
        "python -m tea_jax.predict --checkpoint runs/a/model --topk 3 video.mp4\n"
        "python train.py --config configs/synthetic_tea8.py --workdir runs/b --config.batchsize=8\n"
        "python eval.py --config configs/nothing.py --workdir runs/a\n"
        "python -m tea_jax.nothing --input x\n"
        "python bench/nothing.py\n"
        "tea-export --checkpoint runs/elsewhere/model --output x.jax\n"
        "python -m tea_jax.flops --model tea51\n"
        "python -m tea_jax.export --checkpoint runs/a/model --output x.jax [--frames T]\n"
        "```\n"
    )
    problems = check(documented_commands([str(doc)]))
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == list(range(5, 13)), "\n".join(problems)
    assert "--topk" in problems[0] and "batchsize" in problems[1] and "nothing" in problems[2]
    assert "runs/elsewhere/model" in problems[5] and "--frames" in problems[7]


def _anchors(path: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    with open(path) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    headings = re.findall(r"^#+ (.*)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_docs_links_lead_somewhere():
    """Every relative link of README.md and docs/*.md names an existing file and heading."""
    broken = []
    for doc in doc_files():
        with open(os.path.join(ROOT, doc)) as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            full = (
                os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), path))
                if path
                else (os.path.join(ROOT, doc))
            )
            if not os.path.exists(full):
                broken.append(f"{doc}: {target}: no such file")
            elif anchor and full.endswith(".md") and anchor not in _anchors(full):
                broken.append(f"{doc}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_ci_runs_the_readme_test_command():
    """`.ci/run` runs the README's command 2 exactly (both test tiers and the linters) and nothing
    else but the README's install of the cluster launchers and the variable that makes their tests
    required."""
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        lines = [line for line in f.read().splitlines() if line and not line.startswith("#")]
    ci = lines[-1]
    quickstart = code_blocks("README.md", FENCES)[0][1]
    assert ci in quickstart.splitlines(), ci
    assert "python -m pytest -q && python -m pytest -q -m slow" in ci
    install = "apt-get update && apt-get install -y slurm-wlm munge openmpi-bin"
    blocks = code_blocks("README.md", FENCES)
    documented = [line for _, block in blocks for line in block.splitlines()]
    assert install in documented, "README.md does not show the launchers' install"
    setup = ["set -euo pipefail", 'cd "$(dirname "$0")/.."']
    assert lines == [*setup, install, "export TEA_JAX_REQUIRE_LAUNCHERS=1", ci], lines


# --- README.md's Python blocks ------------------------------------------------------------

# What the README says makes its model example a reduced network (the text below the block).
REDUCED = {
    "num_segments=8)": "num_segments=8, stage_sizes=(1, 1, 1, 1), width_multiplier=0.25)",
    "224, 224": "64, 64",
}


def _run_python_blocks(reduced: bool) -> None:
    blocks = code_blocks("README.md", ("python",))
    assert blocks, "README.md has no Python block"
    for line, code in blocks:
        if reduced:
            for old, new in REDUCED.items():
                code = code.replace(old, new)
        namespace = {}
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
        if "logits" in namespace and "video" in namespace:
            assert namespace["logits"].shape[0] == namespace["video"].shape[0]


def test_readme_python_blocks_run_on_a_reduced_network():
    source = "\n".join(code for _, code in code_blocks("README.md", ("python",)))
    assert all(old in source for old in REDUCED), "the README's example changed: update REDUCED"
    _run_python_blocks(reduced=True)


@pytest.mark.slow
def test_readme_python_blocks_run_as_written():
    """The full-size TEA-50 at 224x224 on 2 clips: about a minute on a 2-core CPU."""
    _run_python_blocks(reduced=False)
