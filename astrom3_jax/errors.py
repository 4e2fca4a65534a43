"""Errors a user can fix. Command lines print them as one line, no traceback.

Each also derives from the built-in exception a caller would expect
(ValueError, FileNotFoundError, ...), so library callers can catch either.
Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, config, data or environment."""


class ConfigError(UserError, ValueError):
    """An invalid or inconsistent config (or one that differs from the workdir's)."""


class DataLeakError(ConfigError):
    """init_from weights were pre-trained on data that holds our test objects."""


class DataNotPreparedError(UserError, FileNotFoundError):
    """The data set is not built and cannot be generated here."""


class NonFiniteError(UserError, FloatingPointError):
    """Training produced a NaN/inf loss or gradient."""


class CheckpointSaveError(UserError, RuntimeError):
    """A checkpoint could not be written (disk full, permissions, ...)."""
