"""kdmem: which training examples did a distilled model memorize, could it have been
predicted before distilling, and did the teacher leak them?

The public API is typed Python; the Rust extension ``kdmem._core`` is private. Importing
kdmem is light: torch, transformers and scikit-learn load only when a command needs them.
"""

from __future__ import annotations

from kdmem._version import __version__
from kdmem.errors import (
    CorruptFileError,
    DiskFullError,
    DoesNotFitError,
    EmptyCorpusError,
    FormatVersionError,
    IncompleteShardSetError,
    InvalidArgumentError,
    InvalidUtf8Error,
    KdmemError,
    KdmemIOError,
    LaunchFailedError,
    MalformedRecordError,
    MissingDependencyError,
    MissingFieldError,
    MissingStageInputError,
    NonFiniteLogitsError,
    NonFiniteLossError,
    NoPositiveExamplesError,
    StaleIndexError,
    StudySetMismatchError,
    TableSchemaError,
    TokenizerLoadError,
    TokenizerMismatchError,
    TokenRangeError,
    TrainingOutOfMemoryError,
)
from kdmem.zlib import zlib_bytes, zlib_ratio

__all__ = [
    "CorruptFileError",
    "DiskFullError",
    "DoesNotFitError",
    "EmptyCorpusError",
    "FormatVersionError",
    "IncompleteShardSetError",
    "InvalidArgumentError",
    "InvalidUtf8Error",
    "KdmemError",
    "KdmemIOError",
    "LaunchFailedError",
    "MalformedRecordError",
    "MissingDependencyError",
    "MissingFieldError",
    "MissingStageInputError",
    "NoPositiveExamplesError",
    "NonFiniteLogitsError",
    "NonFiniteLossError",
    "StaleIndexError",
    "StudySetMismatchError",
    "TableSchemaError",
    "TokenRangeError",
    "TokenizerLoadError",
    "TokenizerMismatchError",
    "TrainingOutOfMemoryError",
    "__version__",
    "zlib_bytes",
    "zlib_ratio",
]


def __getattr__(name: str) -> object:
    # kdmem.Index is imported on first use, so `import kdmem` stays light.
    if name == "Index":
        from kdmem.corpus.index import Index

        return Index
    raise AttributeError(f"module 'kdmem' has no attribute {name!r}")
