"""How every command line ends on an error the user can fix.

A :class:`~tea_jax.errors.UserError` (bad data, list files, configuration, checkpoints, storage)
is printed as ``error: <message>`` and its ``hint`` line, and the command exits with status 2;
on several hosts each prints it, prefixed with its process index. Any other exception is a bug
and keeps its traceback; ``TEA_JAX_TRACEBACK=1`` shows the traceback of the expected ones too.

  @cli.command                      # argparse command lines: python -m tea_jax.convert ...
  def main(argv=None): ...

  cli.run_absl(main)                # absl command lines (train.py, eval.py), flag errors included
"""

import atexit
import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from absl import app, flags

from tea_jax.errors import ConfigError, LostProcessError, NotFoundError, UserError

TRACEBACK_ENV = "TEA_JAX_TRACEBACK"
EXIT_STATUS = 2
_F = TypeVar("_F", bound=Callable[..., Any])


def _process_prefix() -> str:
    """``[process i] `` on a multi-host run that has joined its peers, else nothing."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized() or jax.process_count() == 1:
        return ""
    return f"[process {jax.process_index()}] "


def exit_with(error: UserError) -> NoReturn:
    """Prints ``error`` and its hint on stderr and exits with status 2."""
    prefix = _process_prefix()
    lines = [f"error: {error}"] + ([f"hint: {error.hint}"] if error.hint else [])
    sys.stdout.flush()
    print("\n".join(prefix + line for line in lines), file=sys.stderr, flush=True)
    if isinstance(error, LostProcessError):
        # JAX's own exit handler waits for the lost process at a shutdown barrier, then aborts
        # the process with a stack trace; the other exit handlers (loader workers' semaphores,
        # logging) still run.
        atexit.unregister(sys.modules["jax._src.api"].clean_up)
        atexit._run_exitfuncs()
        os._exit(EXIT_STATUS)
    raise SystemExit(EXIT_STATUS)


def command(main: _F) -> _F:
    """Decorates a command line's ``main``: a :class:`UserError` ends it with :func:`exit_with`."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            if os.environ.get(TRACEBACK_ENV):
                raise
            exit_with(e)

    return run


def _flag_error(error: flags.Error, program: str) -> UserError:
    message = str(error)
    if "Traceback (most recent call last)" in message:  # an exception inside get_config()
        lines = [line for line in message.splitlines() if line.strip()]
        return ConfigError(f"{lines[0].rstrip(':')} {lines[-1].strip()}")
    return UserError(message, hint=f"`python {program} --helpshort` lists the flags")


def _unknown_key(error: LookupError | AttributeError, argv: list[str]) -> UserError | None:
    """The ``--config.KEY`` override of ``argv`` that ml_collections could not find, if any."""
    cause = error.args[0] if error.args else ""
    text = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(cause)
    key = text.splitlines()[0].strip("'\"") if text else ""
    for arg in argv[1:]:
        match = re.match(r"--?(?:no)?(\w+)\.([\w.]+)", arg)
        if match and key in match.group(2).split("."):
            name = f"--{match.group(1)}.{match.group(2)}"
            suggestion = re.search(r'Did you mean "([^"]+)"', text)
            hint = (
                f"did you mean {name.rsplit(key, 1)[0]}{suggestion.group(1)}?"
                if suggestion
                else "configs/default.py documents every key"
            )
            return ConfigError(f"{name}: the config has no key {key!r}", hint=hint)
    return None


def _check_config_files() -> None:
    """Raises for a ``config_flags`` config file that did not load (ml_collections defers the
    error to the config's first use)."""
    for name in flags.FLAGS:
        flag = flags.FLAGS[name]
        if not hasattr(flag, "config_filename") or not flag.present:
            continue
        try:
            getattr(flag.value, "lock", None)
        except OSError as e:
            path = flag.config_filename
            if not os.path.isfile(path):
                raise NotFoundError(
                    f"--{name} {path}: no such config file",
                    hint="the recipes are the files of configs/ (docs/training.md)",
                ) from e
            raise ConfigError(f"--{name} {path}: {str(e).splitlines()[0]}") from e


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with its errors (a missing or unknown flag, an unknown
    ``--config.KEY``, a config file that does not exist) raised as :class:`UserError`."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        raise _flag_error(e, os.path.basename(argv[0])) from e
    except (AttributeError, KeyError) as e:
        unknown = _unknown_key(e, argv)
        if unknown is None:
            raise
        raise unknown from e
    _check_config_files()
    return rest


def run_absl(main: Callable[[list[str]], Any]) -> None:
    """``absl.app.run(main)`` where flag errors and :class:`UserError` end as :func:`command`
    ends them."""
    app.run(command(main), flags_parser=command(parse_flags))
