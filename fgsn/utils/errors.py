"""The project's user-facing error types: a mistake in the input (data, configuration, output folder) rather
than in the code. ``fgsn-loc`` prints their message on one line and exits with status 2 (``--debug`` or
``FGSN_LOC_DEBUG=1`` shows the traceback); every other exception is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(Exception):
    """Base of the errors whose message (naming the file, key or folder and the fix) is all a user needs."""


class ConfigError(UserError, ValueError):
    """A configuration file, key or value is wrong (names the key, the value and the source)."""


class OutputExistsError(UserError, FileExistsError):
    """The output folder already holds results and neither resuming nor overwriting was asked for."""
