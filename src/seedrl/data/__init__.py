"""The trajectory store: the RLDS data model in Apache Arrow segments.

- :class:`DatasetWriter` / :class:`EpisodeWriter` append episodes (many
  writers at once, crash safe, a checksum per episode);
- :class:`Dataset` reads them (iteration, random access by index or id,
  field selection, metadata filters, step and sequence sampling);
- :mod:`seedrl.data.repair` recovers dead writers' segments without destroying anything;
- :mod:`seedrl.data.transforms` holds the rlds transformations;
- :mod:`seedrl.data.recording` records Gymnasium / dm_env episodes;
- :mod:`seedrl.data.formats` converts to and from TFDS, Minari and Hugging Face;
- :mod:`seedrl.data.torch` gives PyTorch datasets and loaders (steps, windows,
  episodes; workers, ranks, resumable), :mod:`seedrl.data.windows` their index
  arithmetic; :mod:`seedrl.data.subset` filters, selects and merges datasets.
"""

from seedrl.data.episode import Episode
from seedrl.data.errors import (
    ChecksumError,
    ConversionError,
    DamagedSegmentWarning,
    DataError,
    DuplicateEpisodeError,
    EpisodeError,
    SpecError,
    TornTailWarning,
)
from seedrl.data.reader import Dataset, open_dataset
from seedrl.data.spec import CORE_FIELDS, FieldSpec, StepSpec
from seedrl.data.writer import DatasetWriter, EpisodeWriter

__all__ = [
    "CORE_FIELDS",
    "ChecksumError",
    "ConversionError",
    "DamagedSegmentWarning",
    "DataError",
    "Dataset",
    "DatasetWriter",
    "DuplicateEpisodeError",
    "Episode",
    "EpisodeError",
    "EpisodeWriter",
    "FieldSpec",
    "SpecError",
    "StepSpec",
    "TornTailWarning",
    "open_dataset",
]
