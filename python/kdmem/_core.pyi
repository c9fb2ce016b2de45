# Typed stubs for the private extension kdmem._core; checked against the built module by
# `python -m mypy.stubtest kdmem._core` in the test command.
import numpy as np
import numpy.typing as npt

__version__: str

def zlib_bytes(texts: list[str | bytes], threads: int | None = None) -> npt.NDArray[np.int64]: ...
def zlib_version() -> str: ...
def resolve_threads(threads: int | None = None) -> int: ...
