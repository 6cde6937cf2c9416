"""Every test process compiles fast, as its subprocesses do (see `fast_compile`)."""

import os

from fast_compile import FAST_COMPILE

os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FAST_COMPILE]).strip()
