"""Every test process compiles fast, as its subprocesses do (see `fast_compile`), and keeps JAX's
persistent compilation cache in a temporary folder (not the user's); `gcs` is a Cloud Storage
API on localhost (see `gcs_server`); `user_error` expects a command line to stop on a user's
mistake; `trained` is the briefly trained reduced TEA of `synthetic_model`, trained once per test
process."""

import atexit
import contextlib
import os
import re
import shutil
import tempfile

import pytest
from fast_compile import FAST_COMPILE

os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FAST_COMPILE]).strip()
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _cache = tempfile.mkdtemp(prefix="tea_jax_test_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server on a free localhost port, stopped (and its data deleted) at the end."""
    import gcs_server

    with gcs_server.serve() as server:
        yield server


@pytest.fixture
def gcs(gcs_server, monkeypatch):
    """The server with this process (and its subprocesses) pointed at it."""
    for name, value in gcs_server.env.items():
        monkeypatch.setenv(name, value)
    yield gcs_server
    import gcs_server as module

    module.clear_clients()


@pytest.fixture(scope="session")
def trained():
    """(model, variables, val clips, val labels) of `synthetic_model.trained` (slow tier only:
    its 200 training steps take minutes)."""
    import synthetic_model

    return synthetic_model.trained()


@pytest.fixture
def user_error(capsys):
    """``with user_error(pattern):`` around a command line's ``main``: it must exit with status 2
    after printing ``error: ...`` on stderr, ``pattern`` matching from there on (the message and
    its hint; see ``tea_jax.cli``)."""

    @contextlib.contextmanager
    def expect(pattern: str):
        with pytest.raises(SystemExit) as exit_info:
            yield
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        assert re.search(f"^error: .*{pattern}", err, re.MULTILINE | re.DOTALL), err

    return expect
