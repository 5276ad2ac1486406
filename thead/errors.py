"""thead's typed failures.

Every error a user can cause is a ``TheadError`` subclass carrying a one-line message and an
exit code; the CLI prints ``error: <message>`` and exits with ``exit_code`` (never a traceback
unless ``--debug``). Library code raises these instead of logging and returning None.
"""

from __future__ import annotations


class TheadError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code: int = 1


class UsageError(TheadError):
    """Arguments that cannot work together, or a value out of range."""

    exit_code = 2


class CheckpointError(TheadError):
    """An authors' TF checkpoint that is missing, corrupt or does not map onto thead's networks,
    or a thead training checkpoint (``state.json``, its training config) that cannot be read."""


class WeightsError(TheadError):
    """thead weights (config.json + model.safetensors) missing, corrupt or incompatible."""


class HubError(WeightsError):
    """The Hub could not be reached, or it served something wrong."""


class ImageError(TheadError):
    """A file that is not a readable image."""


class VideoError(TheadError):
    """A video that cannot be read or written."""


class NoFaceError(TheadError):
    """No face where one is needed."""


class AvatarError(TheadError):
    """A missing, unknown or incompatible avatar."""


class DatasetError(TheadError):
    """A training or test set that is missing or malformed."""


class TrainingError(TheadError):
    """Training cannot go on (e.g. a non-finite loss)."""


class OutputError(TheadError):
    """An output path that cannot be written (not writable, disk full)."""
