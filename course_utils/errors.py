"""The course's error types.

Every error a user can cause (a bad name, a bad threshold, missing data, a corrupt
checkpoint, a diverging loss) is a ``CourseError`` whose message names the problem
and the fix.  The command line prints that message alone, without a traceback.
"""


class CourseError(Exception):
    """Base class for the course's user-facing errors."""


class UnknownNameError(CourseError, KeyError):
    """An unknown model, dataset, experiment or tapping-point name."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(CourseError, FileNotFoundError):
    """A dataset is not on disk and could not be downloaded."""


class CheckpointError(CourseError):
    """A checkpoint is corrupt, truncated, or belongs to another model or run."""


class NonFiniteLossError(CourseError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


class ThresholdError(CourseError, ValueError):
    """An exit threshold or budget outside its valid range."""
