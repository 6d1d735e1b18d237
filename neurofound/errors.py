"""Errors that describe a user's mistake, as opposed to a bug in neurofound.

Validation code raises `UserError` or one of its subclasses. The command line prints these as one
line naming the problem and the fix, and exits with status 2. Any other exception is a bug: the
command line prints its traceback followed by a line saying so.

The subclasses also derive from the matching built-in exception (`ValueError`, `FileNotFoundError`,
`KeyError`), so library users who catch those keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in how neurofound was called or in what it was given (printed without traceback)."""


class ConfigError(UserError, ValueError):
    """An unknown or invalid configuration key or value."""


class DataError(UserError, ValueError):
    """Input data that cannot be used as given (NaN/Inf, wrong shape, missing metadata, ...)."""


class ContractError(DataError):
    """Data that does not match a model's input contract (the message names the field)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or model folder that is corrupt, incomplete or of another family."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user pointed at does not exist."""


class UnknownNameError(UserError, KeyError):
    """An unknown registered name (family, tokenizer, recipe, experiment)."""

    def __str__(self) -> str:  # KeyError quotes its message; a user message should read plainly
        return str(self.args[0]) if self.args else ""


class UnsupportedError(UserError, NotImplementedError):
    """A valid request that this family or this machine does not support (e.g. a fine-tuning mode)."""


__all__ = ["UserError", "ConfigError", "DataError", "ContractError", "CheckpointError", "MissingFileError",
           "UnknownNameError", "UnsupportedError"]
