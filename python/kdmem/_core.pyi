# Typed stubs for the private extension kdmem._core; checked against the built module by
# `python -m mypy.stubtest kdmem._core` in the test command.
from collections.abc import Callable
from os import PathLike
from typing import Any, final

import numpy as np
import numpy.typing as npt

__version__: str

def zlib_bytes(texts: list[str | bytes], threads: int | None = None) -> npt.NDArray[np.int64]: ...
def zlib_version() -> str: ...
def resolve_threads(threads: int | None = None) -> int: ...
def _error_kinds() -> list[str]: ...
def _raise_error_sample(i: int) -> None: ...

# ---- index (kdmem.corpus.index) ----

_Rows = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]
_Overlap = tuple[npt.NDArray[np.uint32], int, float]

_Query = npt.NDArray[np.uint32] | npt.NDArray[np.uint16] | npt.NDArray[np.int64]

@final
class Index:
    def __new__(cls, dir: str | PathLike[str], shards: list[int] | None = None) -> Index: ...
    @property
    def format(self) -> str: ...
    @property
    def n_shards(self) -> int: ...
    @property
    def shard_ids(self) -> list[int]: ...
    @property
    def units(self) -> list[list[int]]: ...
    @property
    def n_tokens(self) -> int: ...
    @property
    def n_docs(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def token_width(self) -> int: ...
    @property
    def tokenizer_hash(self) -> str: ...
    @property
    def ram_bytes(self) -> int: ...
    @property
    def disk_bytes(self) -> int: ...
    @property
    def files(self) -> list[str]: ...
    def check_tokenizer(self, hash: str) -> None: ...
    def count(self, tokens: _Query, threads: int | None = None) -> int: ...
    def locate(self, tokens: _Query, limit: int, threads: int | None = None) -> _Rows: ...
    def longest_match(
        self, tokens: _Query, threads: int | None = None
    ) -> npt.NDArray[np.uint32]: ...
    def ngram_overlap(self, tokens: _Query, n: int, threads: int | None = None) -> _Overlap: ...
    def count_many(
        self, queries: list[npt.NDArray[np.uint32]], threads: int | None = None
    ) -> npt.NDArray[np.uint64]: ...
    def locate_many(
        self, queries: list[npt.NDArray[np.uint32]], limit: int, threads: int | None = None
    ) -> list[_Rows]: ...
    def longest_match_many(
        self, queries: list[npt.NDArray[np.uint32]], threads: int | None = None
    ) -> list[npt.NDArray[np.uint32]]: ...
    def ngram_overlap_many(
        self, queries: list[npt.NDArray[np.uint32]], n: int, threads: int | None = None
    ) -> list[_Overlap]: ...
    def verify(
        self,
        threads: int | None = None,
        progress: Callable[[int, int, int, int], Any] | None = None,
    ) -> None: ...

def build_index(
    dir: str | PathLike[str],
    threads: int | None = None,
    progress: Callable[[int, int, int, int], Any] | None = None,
    shards: list[int] | None = None,
    memory: int | None = None,
) -> dict[str, Any]: ...
def verify_index(
    dir: str | PathLike[str],
    threads: int | None = None,
    progress: Callable[[int, int, int, int], Any] | None = None,
) -> None: ...

# ---- shard (kdmem.corpus.shard, kdmem.corpus.importers) ----

def shard_files(
    inputs: list[str | PathLike[str]],
    tokenizer: str | PathLike[str],
    out: str | PathLike[str],
    *,
    threads: int | None = None,
    dtype: str = "auto",
    text_field: str = "text",
    eos: str = "auto",
    skip_bad: bool = False,
    shard_tokens: int | None = None,
    memory: int | None = None,
    overwrite: bool = False,
    append: bool = False,
    encoder: str = "auto",
    batch_bytes: int = 4194304,
    max_doc_bytes: int | None = None,
    progress: Callable[[int, int, int, int], Any] | None = None,
) -> tuple[str, int, int, int]: ...
def tokenizer_info(
    path: str | PathLike[str], eos: str = "auto", encoder: str = "auto"
) -> tuple[str, int, int | None, str, str]: ...
def parse_size(text: str) -> int: ...
def default_memory() -> int: ...

@final
class ShardWriter:
    def __new__(
        cls,
        out: str | PathLike[str],
        *,
        config: str,
        tokenizer: str | PathLike[str] | None = None,
        dtype: str = "auto",
        eos: str = "auto",
        shard_tokens: int | None = None,
        memory: int | None = None,
        overwrite: bool = False,
        append: bool = False,
        encoder: str = "auto",
        threads: int | None = None,
        vocab_size: int = 0,
        tokenizer_hash: str | None = None,
        eos_id: int | None = None,
    ) -> ShardWriter: ...
    @property
    def records_to_skip(self) -> int: ...
    @property
    def is_complete(self) -> bool: ...
    @property
    def resumed_shards(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def encoder(self) -> str | None: ...
    def add_texts(self, texts: list[str], source: str, first_record: int) -> int: ...
    def skip_records(self, n: int, bad: bool = False) -> None: ...
    def add_tokens(
        self, tokens: npt.NDArray[np.uint32], offsets: npt.NDArray[np.uint64]
    ) -> None: ...
    def finish(self, inputs: str) -> str: ...

# PyO3 defines __all__ at runtime; stubtest checks the stub lists the same names.
__all__ = [
    "Index",
    "ShardWriter",
    "__version__",
    "_error_kinds",
    "_raise_error_sample",
    "build_index",
    "default_memory",
    "parse_size",
    "resolve_threads",
    "shard_files",
    "tokenizer_info",
    "verify_index",
    "zlib_bytes",
    "zlib_version",
]
