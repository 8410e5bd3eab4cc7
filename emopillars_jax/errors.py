"""User-facing errors: the CLI prints these as one line, without a traceback."""
from __future__ import annotations

from contextlib import contextmanager


class EmoPillarsError(Exception):
    """Bad input or environment the user can fix (file, field, expectation in the message)."""


class ConfigError(EmoPillarsError):
    """A config file or override is invalid."""


class AssetError(EmoPillarsError):
    """A model file or package is missing, corrupted or of the wrong kind."""


class NotBuiltError(EmoPillarsError):
    """A capability the CLI names but the project has not built yet."""


@contextmanager
def reading_text(path):
    """Wrap the reading of a text file: a binary or non-UTF-8 file becomes an error naming it."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise EmoPillarsError(f"{path}: not UTF-8 text (cannot decode byte "
                              f"0x{exc.object[exc.start]:02x})") from None
