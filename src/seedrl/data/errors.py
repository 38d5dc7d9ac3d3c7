"""Errors of the trajectory store; each message names the field or file."""


class DataError(ValueError):
    """Base class of trajectory-store errors."""


class SpecError(DataError):
    """A step or episode does not match the dataset spec (the message names the field)."""


class EpisodeError(DataError):
    """An episode breaks the RLDS step rules (is_first / is_last placement)."""


class ConversionError(DataError):
    """A format conversion cannot be done losslessly."""


class TornTailWarning(UserWarning):
    """A segment ends in a partly written episode (a writer was killed mid-write)."""
