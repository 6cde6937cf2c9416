"""Paths a user gives: local folders and files, or URLs (``gs://bucket/...``) through ``epath``.

Every path of a run, a model or a list file goes through this module, so that a workdir, a model
directory or a ``classes.txt`` may live on a local disk or in a bucket alike. Google Cloud Storage
is read and written with ``gcsfs`` (``pip install ".[gcs]"``); it finds the credentials of the
machine (Application Default Credentials) and talks to a local server when
``STORAGE_EMULATOR_HOST`` is set. Orbax checkpoints take the same URLs (``tensorstore`` writes the
arrays; ``TENSORSTORE_GCS_HTTP_URL`` points it at a local server).

Functions take and return plain strings: local paths come back absolute, URLs unchanged.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

from etils import epath

from tea_jax.errors import UserError

PathLike = str | os.PathLike
_T = TypeVar("_T")


class StorageError(UserError, OSError):
    """A path cannot be read or written; the message is one line naming the path and the reason.

    Attributes:
      reason: the reason alone (without the path).
    """

    def __init__(self, message: str, reason: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.reason = reason or message


def is_url(path: PathLike) -> bool:
    """Whether ``path`` is a URL (``gs://...``) rather than a local path."""
    return "://" in os.fspath(path)


def resolve(path: PathLike) -> str:
    """``path`` as an absolute local path (``~`` expanded), or the URL unchanged."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def join(path: PathLike, *parts: str) -> str:
    """``path/part/...`` for local paths and URLs (not made absolute)."""
    path = os.fspath(path)
    if is_url(path):
        return "/".join([path.rstrip("/"), *parts])
    return os.path.join(path, *parts)


def parent(path: PathLike) -> str:
    """The directory holding ``path`` (absolute for local paths)."""
    return os.fspath(_path(path).parent)


def name(path: PathLike) -> str:
    """The last component of ``path``."""
    return _path(path).name


def _path(path: PathLike) -> epath.Path:
    return epath.Path(resolve(path))


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _is_client_error(error: BaseException) -> bool:
    """Whether ``error`` comes from reaching storage (not from a bug of the caller)."""
    module = type(error).__module__.split(".")[0]
    return isinstance(error, OSError) or module in ("gcsfs", "aiohttp", "google", "fsspec")


def _guarded(path: PathLike, action: str, fn: Callable[[], _T]) -> _T:
    """Runs ``fn``; a failure to reach a URL becomes one :class:`StorageError` line."""
    try:
        return fn()
    except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError):
        raise
    except StorageError:
        raise
    except Exception as e:
        if not is_url(path) or not _is_client_error(e):
            raise
        hint = (
            " (check the bucket name and the machine's credentials: "
            "`gcloud auth application-default login`, or a service account)"
            if os.fspath(path).startswith("gs://")
            else ""
        )
        reason = f"{_reason(e)}{hint}"
        raise StorageError(f"Cannot {action} {os.fspath(path)}: {reason}", reason) from e


def exists(path: PathLike) -> bool:
    return _guarded(path, "read", _path(path).exists)


def isdir(path: PathLike) -> bool:
    return _guarded(path, "read", _path(path).is_dir)


def isfile(path: PathLike) -> bool:
    return _guarded(path, "read", _path(path).is_file)


def listdir(path: PathLike) -> list[str]:
    """The names in directory ``path``, sorted (empty if it does not exist)."""
    p = _path(path)
    return _guarded(path, "list", lambda: sorted(c.name for c in p.iterdir()) if p.exists() else [])


def glob(path: PathLike, pattern: str) -> list[str]:
    """The paths in directory ``path`` whose names match ``pattern``, sorted."""
    return _guarded(path, "list", lambda: sorted(os.fspath(p) for p in _path(path).glob(pattern)))


def makedirs(path: PathLike) -> None:
    _guarded(path, "create", lambda: _path(path).mkdir(parents=True, exist_ok=True))


def remove(path: PathLike) -> None:
    _guarded(path, "remove", _path(path).unlink)


def rmtree(path: PathLike) -> None:
    """Removes directory ``path`` and everything in it (nothing if it does not exist)."""
    p = _path(path)
    _guarded(path, "remove", lambda: p.rmtree() if p.exists() else None)


def rename(source: PathLike, target: PathLike) -> None:
    """Moves a file or directory (on object stores, a copy then a delete)."""
    src, dst = _path(source), _path(target)
    if not is_url(source) and not is_url(target):
        os.rename(src, dst)
        return
    if not src.is_dir():
        _guarded(target, "write", lambda: src.rename(dst))
        return
    _guarded(target, "write", lambda: _copy_tree(src, dst))
    src.rmtree()


def _copy_tree(source: epath.Path, target: epath.Path) -> None:
    for child in source.iterdir():
        if child.is_dir():
            _copy_tree(child, target / child.name)
        else:
            child.copy(target / child.name)


@contextmanager
def open_file(path: PathLike, mode: str = "r") -> Iterator[IO[Any]]:
    """Opens a file for reading (``r``, ``rb``) or writing (``w``, ``wb``)."""
    action = "read" if "r" in mode else "write"
    f = _guarded(path, action, lambda: _path(path).open(mode))
    with f:
        yield f


def read_text(path: PathLike) -> str:
    return _guarded(path, "read", _path(path).read_text)


def read_bytes(path: PathLike) -> bytes:
    return _guarded(path, "read", _path(path).read_bytes)


def write_text(path: PathLike, text: str) -> None:
    """Writes ``text`` whole: readers see the old or the new file, never a part."""
    write_bytes(path, text.encode())


def write_bytes(path: PathLike, data: bytes) -> None:
    """Writes ``data`` whole (a local file through a temporary file and a rename; an object in
    a bucket appears when its upload completes)."""
    if is_url(path):
        _guarded(path, "write", lambda: _path(path).write_bytes(data))
        return
    tmp = resolve(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def append_text(path: PathLike, text: str) -> None:
    """Appends ``text`` to a file (objects in a bucket cannot be appended to: they are rewritten
    with the new text at the end)."""
    if not is_url(path):
        with open(path, "a") as f:
            f.write(text)
        return
    old = read_bytes(path) if exists(path) else b""
    write_bytes(path, old + text.encode())


def copy(source: PathLike, target: PathLike) -> None:
    """Copies file ``source`` to ``target``."""
    if not is_url(source) and not is_url(target):
        shutil.copyfile(source, target)
        return
    write_bytes(target, read_bytes(source))


def staging_dir(target: PathLike) -> str:
    """A local folder for a writer that needs one (e.g. the profiler): ``target`` itself if it is
    local, else a new temporary folder that :func:`publish` copies to ``target``."""
    if not is_url(target):
        makedirs(target)
        return resolve(target)
    return tempfile.mkdtemp(prefix="tea_jax_")


def publish(staging: str, target: PathLike) -> None:
    """Copies the files of a :func:`staging_dir` to ``target`` and deletes it (no-op when the
    staging folder is ``target``)."""
    if staging == resolve(target):
        return
    _guarded(target, "write", lambda: _copy_tree(epath.Path(staging), _path(target)))
    shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def local_file(target: PathLike) -> Iterator[str]:
    """A local path for a writer that needs one (e.g. a video encoder): ``target`` itself if it
    is local, else a temporary file copied to ``target`` when the block ends without error."""
    if not is_url(target):
        yield resolve(target)
        return
    staging = tempfile.mkdtemp(prefix="tea_jax_")
    path = os.path.join(staging, name(target))
    try:
        yield path
        copy(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def require_local(path: PathLike, what: str, remedy: str) -> str:
    """``path`` if it is local.

    Raises:
      StorageError: ``path`` is a URL, which ``what`` cannot read; the message says ``remedy``.
    """
    if is_url(path):
        raise StorageError(f"{what} reads local files only, not {os.fspath(path)}: {remedy}")
    return os.fspath(path)


# --- TensorBoard events through epath -------------------------------------------------------


class _EventFile:
    """A TensorBoard event file in a bucket: the events are kept in memory and the object is
    rewritten on each flush (as tensorboardX's own GCS writer does)."""

    def __init__(self, path: str):
        self.path = path
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        write_bytes(self.path, self.buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _EventFileFactory:
    def open(self, path: str) -> _EventFile:
        return _EventFile(path)

    def directory_check(self, path: str) -> None:
        del path  # Buckets have no directories to create.


def summary_writer(logdir: PathLike) -> Any:
    """A ``tensorboardX.SummaryWriter`` writing into ``logdir`` (local or URL)."""
    from tensorboardX import SummaryWriter, record_writer

    logdir = resolve(logdir)
    if is_url(logdir):
        record_writer.register_writer_factory(logdir.split(":")[0], _EventFileFactory())
    else:
        makedirs(logdir)
    return SummaryWriter(logdir)


# --- Quiet cloud clients ---------------------------------------------------------------------


class _GcsfsNoise(logging.Filter):
    """Hides gcsfs messages a user cannot act on: the bucket-type probe of its experimental
    features (it falls back to the standard client), and its retry tracebacks (the failure
    reaches the user as one :class:`StorageError` line)."""

    _HIDDEN = ("Could not determine bucket type", "lack permissions for storage layout api")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(text in message for text in self._HIDDEN):
            return False
        return "out of retries on exception" not in message


logging.getLogger("gcsfs").addFilter(_GcsfsNoise())
