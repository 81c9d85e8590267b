"""Errors a user can act on. The engine raises them; the CLI prints one line and exits non-zero."""


class EngineError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ImageError(EngineError):
    """An input image is missing, unreadable, too large or empty."""


class OutputError(EngineError):
    """An output path cannot be written safely."""


class WeightsError(EngineError):
    """Model weights are missing, corrupt or do not match."""


class UsageError(EngineError):
    """Options that do not fit together or are out of range."""


class PluginError(EngineError):
    """Code from a plugin failed while doing what it registered for."""
