"""User-facing errors: anything a user can cause (bad path, image, config, checkpoint).

The CLI prints these as one line without a traceback; library callers can catch them.
"""


class MimkitError(Exception):
    """An error caused by the user's input; the message names the thing and what to do."""


class ConfigError(MimkitError, ValueError):
    """A configuration key or value is wrong."""


class DataError(MimkitError):
    """A dataset or image cannot be read."""


class CheckpointError(MimkitError):
    """A checkpoint is missing, unsafe or does not match its model."""


class TrainingError(MimkitError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message names the step and
    the last good checkpoint."""
