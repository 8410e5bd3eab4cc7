"""User-facing errors: the CLI prints these as one line, without a traceback."""


class EmoPillarsError(Exception):
    """Bad input or environment the user can fix (file, field, expectation in the message)."""


class ConfigError(EmoPillarsError):
    """A config file or override is invalid."""


class AssetError(EmoPillarsError):
    """A model file or package is missing, corrupted or of the wrong kind."""


class NotBuiltError(EmoPillarsError):
    """A capability the CLI names but the project has not built yet."""
