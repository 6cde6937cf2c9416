"""The errors a user can fix: bad input, configuration, missing files.

Each command line prints a :class:`UserError` as one line, ``error: <message>``, followed by its
``hint`` (what to do next) when there is one, and exits with status 2; any other exception is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A fault the user can fix, raised where it is found, in the fault's own words.

    Attributes:
      hint: one line of what to do next (a command, a flag, a docs section), or None.
    """

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(UserError, ValueError):
    """A config value, a flag or a recorded model option that cannot be used as given."""


class NotFoundError(UserError, FileNotFoundError):
    """A file or folder that the command needs does not exist."""


class ExistsError(UserError, FileExistsError):
    """A file or folder that the command would overwrite exists already."""


class LostProcessError(UserError, RuntimeError):
    """Another process of a multi-host run stopped (killed, crashed, preempted alone), so this one
    cannot go on. Its command exits at once: JAX's orderly shutdown would wait for the lost
    process until the heartbeat timeout and then abort."""
