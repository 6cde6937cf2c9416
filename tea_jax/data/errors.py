"""Errors raised for bad input data."""


class DataError(Exception):
    """An example that cannot be read: names the file and the reason.

    Attributes:
      path: the file, folder or record the error is about.
      reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.path, self.reason)


class ListFileError(DataError):
    """A malformed line of a list file; `path` is `file:line`."""
