"""kdmem's PEP 517 build backend: maturin's hooks behind one toolchain check.

Building kdmem from its sdist compiles Rust. When ``cargo`` is not on PATH, maturin's own
backend downloads and runs rustup into a cache directory: on a cluster node without internet
that ends in a network traceback, and elsewhere it installs a toolchain nobody asked for.
kdmem never downloads a toolchain during ``pip install``; the first hook pip calls fails
instead, with one message naming the missing toolchain and the two ways out.

Every hook is maturin's, unchanged, once the check has passed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import maturin as _maturin

# maturin's hooks read this when they decide whether to fetch Rust themselves (puccinialin).
os.environ["MATURIN_NO_INSTALL_RUST"] = "1"


def _rust_version() -> str:
    try:
        cargo = tomllib.loads(Path("Cargo.toml").read_text(encoding="utf-8"))
        return str(cargo["workspace"]["package"]["rust-version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "1.85"


def _require_cargo() -> None:
    if shutil.which("cargo") is None:
        sys.stderr.write(
            "kdmem: building kdmem from source needs the Rust toolchain (cargo and rustc "
            f">= {_rust_version()}), and `cargo` is not on PATH. Install Rust "
            "(https://rustup.rs or your system's package manager) and retry, or install a "
            "prebuilt wheel instead: pip install --only-binary=kdmem kdmem\n"
        )
        raise SystemExit(1)


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    _require_cargo()
    return _maturin.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    _require_cargo()
    return _maturin.get_requires_for_build_editable(config_settings)


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    _require_cargo()
    return _maturin.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    _require_cargo()
    return _maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    _require_cargo()
    return _maturin.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    _require_cargo()
    return _maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    _require_cargo()
    return _maturin.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    _require_cargo()
    return _maturin.build_sdist(sdist_directory, config_settings)
