"""Errors raised for bad input data."""

from tea_jax.errors import UserError


class DataError(UserError):
    """An example that cannot be read: names the file and the reason.

    Attributes:
      path: the file, folder or record the error is about.
      reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str, hint: str | None = None):
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.hint)


class ListFileError(DataError):
    """A malformed line of a list file; `path` is `file:line`."""
