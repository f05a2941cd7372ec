"""Exceptions for bad user input, reported as one line by the entry points."""


class UserError(ValueError):
    """An input, config or file that the user must fix, as the message explains."""


class ConfigError(UserError):
    """A config value that is unknown, of the wrong type, missing or impossible."""


class DataError(UserError):
    """A data file or column that cannot be used as configured."""
