"""The front door: light imports, --version, --help, doctor."""

from __future__ import annotations

import subprocess
import sys
import types
import zlib

import pytest
from click.testing import CliRunner

import kdmem
from kdmem.cli import main

HEAVY = ("torch", "transformers", "sklearn")


def test_import_and_help_stay_light() -> None:
    code = (
        "import sys, kdmem, kdmem.cli\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(kdmem.cli.main, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for sub in kdmem.cli.main.commands:\n"
        "    r = CliRunner().invoke(kdmem.cli.main, [sub, '--help'])\n"
        "    assert r.exit_code == 0, (sub, r.output)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]", f"heavy modules imported by import kdmem / --help: {out}"


def test_version() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0
    assert kdmem.__version__ in r.output


def test_doctor_reports_zlib() -> None:
    r = CliRunner().invoke(main, ["doctor"])
    assert r.exit_code == 0, r.output
    assert f"zlib linked into kdmem: {kdmem._core.zlib_version()}" in r.output
    assert "agrees" in r.output


def test_doctor_warns_when_the_host_zlib_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    import kdmem.doctor

    fake = types.SimpleNamespace(
        ZLIB_RUNTIME_VERSION="1.3.0.zlib-ng",
        compress=lambda data: zlib.compress(data) + b"!",  # a deflate that differs by a byte
    )
    monkeypatch.setattr(kdmem.doctor, "host_zlib", fake)
    r = CliRunner().invoke(main, ["doctor"])
    assert r.exit_code == 1
    assert "1.3.0.zlib-ng" in r.output
    assert "warning: the host Python's zlib gives other sizes" in r.output
