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


__all__ = [
    "CorruptFileError",
    "DiskFullError",
    "EmptyCorpusError",
    "FormatVersionError",
    "InvalidArgumentError",
    "InvalidUtf8Error",
    "KdmemError",
    "KdmemIOError",
    "MalformedRecordError",
    "MissingFieldError",
    "TokenRangeError",
    "TokenizerLoadError",
    "TokenizerMismatchError",
]
