"""User-facing errors. The CLI prints them as one clear message, without a traceback.

Every message names the file, key, task or tensor at fault and says what to do.
"""


class TrmlabError(Exception):
    """Base class of every error trmlab raises for bad input."""


class ConfigError(TrmlabError, ValueError):
    """A config key, value or source is invalid."""


class DataError(TrmlabError, ValueError):
    """Input data (ARC JSON, a built dataset) is invalid."""


class CheckpointError(TrmlabError, ValueError):
    """A checkpoint is unreadable, corrupt, unsafe or does not match the requested model."""
