"""kdmem's exception hierarchy.

Every error kdmem raises on bad input is a :class:`KdmemError`. Each variant of the Rust
core's error enum has its own class here (same name), so callers can catch precisely, and
each message is one line naming the bad value and the fix. Where a builtin exception fits,
the class also derives from it (``except ValueError`` keeps working).
"""

from __future__ import annotations


class KdmemError(Exception):
    """Base class of every kdmem error."""


class KdmemIOError(KdmemError, OSError):
    """A file could not be read or written (missing, permissions, ...)."""


class DiskFullError(KdmemIOError):
    """The disk filled up while writing; finished work is kept and a rerun resumes."""


class MalformedRecordError(KdmemError, ValueError):
    """An input record could not be parsed (``--skip-bad`` counts and skips such records)."""


class MissingFieldError(KdmemError, KeyError):
    """An input record lacks the text field (see ``--text-field``)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidUtf8Error(KdmemError, ValueError):
    """Input bytes are not valid UTF-8."""


class TokenRangeError(KdmemError, ValueError):
    """A token id does not fit the dtype or the vocabulary."""


class EmptyCorpusError(KdmemError, ValueError):
    """The inputs produced no documents."""


class CorruptFileError(KdmemError, ValueError):
    """A kdmem file fails its magic, size or checksum checks."""


class FormatVersionError(KdmemError, ValueError):
    """A kdmem file was written by an incompatible format version."""


class TokenizerMismatchError(KdmemError, ValueError):
    """Data was tokenized with a different tokenizer than expected."""


class TokenizerLoadError(KdmemError, ValueError):
    """A tokenizer file could not be loaded."""


class InvalidArgumentError(KdmemError, ValueError):
    """An argument is outside its domain."""


class ConfigError(InvalidArgumentError):
    """A config (experiment or recipe) has an unknown key, a wrong type or an invalid value."""


class StaleIndexError(KdmemError, ValueError):
    """A shard has no suffix-array index, or changed after it was indexed; rerun ``kdmem index``."""


class IncompleteShardSetError(CorruptFileError):
    """A shard set whose ``kdmem shard`` run has not finished (or whose files disagree with
    its manifest): rerun the same command to finish it."""


class MissingStageInputError(KdmemIOError, FileNotFoundError):
    """A stage's input file is absent; the message names the file and the command that writes it."""


class StudySetMismatchError(KdmemError, ValueError):
    """Per-example tables that must describe the same study set have different example ids."""


class TableSchemaError(KdmemError, ValueError):
    """A per-example table lacks a documented column, has the wrong type, or is not sorted by id."""


class NoPositiveExamplesError(KdmemError, ValueError):
    """A predictor was asked to learn memorization from a target with (almost) no memorized examples."""


class NonFiniteLossError(KdmemError, ArithmeticError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept and the message names the step."""


class TrainingOutOfMemoryError(KdmemError, MemoryError):
    """A training step ran out of device memory; the message suggests a batch size and accumulation."""


class NonFiniteLogitsError(KdmemError, ArithmeticError):
    """A model produced NaN logits while being measured; the message names the example and dtype."""


class LockedError(KdmemError, OSError):
    """Another process is writing the same output; the message names its pid."""


class LaunchFailedError(KdmemError, RuntimeError):
    """A process of a launched model pass (torchrun) failed; the message names the stage, the rank and its log file."""


class DoesNotFitError(KdmemError, MemoryError):
    """A stage's memory estimate exceeds the GPU memory; the message names the stage, the bytes and a [launch] change that fits."""


class MissingDependencyError(KdmemError, ImportError):
    """An optional dependency is not installed; the message names the ``kdmem[extra]`` to install."""


__all__ = [
    "ConfigError",
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
    "LockedError",
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
]
