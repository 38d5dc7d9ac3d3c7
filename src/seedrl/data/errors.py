"""Errors of the trajectory store; each message names the field or file."""

from seedrl.errors import UserError


class DataError(UserError):
    """Base class of trajectory-store errors: input at fault (a :class:`~seedrl.errors.UserError`, so a ValueError)."""


class MissingKeyError(DataError, KeyError):
    """A field, split or episode id that the dataset does not have (also a ``KeyError``)."""


class SpecError(DataError):
    """A step or episode does not match the dataset spec (the message names the field)."""


class EpisodeError(DataError):
    """An episode breaks the RLDS step rules (is_first / is_last placement)."""


class DuplicateEpisodeError(DataError):
    """An episode id is already in the dataset (ids are unique within a dataset)."""


class ChecksumError(DataError):
    """An episode's bytes no longer match the checksum recorded when it was written."""


class ConversionError(DataError):
    """A format conversion cannot be done losslessly."""


class TornTailWarning(UserWarning):
    """A segment ends in a partly written episode (a writer was killed mid-write)."""


class DamagedSegmentWarning(UserWarning):
    """A segment is damaged beyond a torn tail (unreadable schema header, index past its end)."""
