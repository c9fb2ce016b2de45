"""Release invariants: one version, portable build settings, pinned and complete workflows, and
the sdist's build backend refusing to build without Rust.

The wheels themselves are built and checked by `./dev.sh test` (tests/check_dist.py,
tests/smoke_wheel.py); these tests guard the files that decide what gets built.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from importlib.metadata import version as dist_version
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from click.testing import CliRunner
from packaging.version import Version

import kdmem
from kdmem.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def cargo_version() -> Version:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    return Version(cargo["workspace"]["package"]["version"])


def test_one_version_cargo_metadata_module_and_cli() -> None:
    want = cargo_version()
    for crate in ("kdmem-core", "kdmem-py"):
        manifest = tomllib.loads((ROOT / "rust" / crate / "Cargo.toml").read_text())
        assert manifest["package"]["version"] == {"workspace": True}, crate
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert Version(dist_version("kdmem")) == want, "installed metadata is stale: rebuild"
    assert kdmem.__version__ == str(want)
    result = CliRunner().invoke(cli_main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kdmem, version {want}"


def test_changelog_has_unreleased_and_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert headings[0] == "Unreleased"
    assert str(cargo_version()) in headings


def test_readme_opens_with_the_two_commands_then_install() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["./dev.sh demo", "./dev.sh test"]
    install = text.split("\n## Install\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", install, re.S)
    assert block is not None
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert lines[:2] == ["pip install kdmem", 'pip install "kdmem[torch,analysis]"']


# A flag with a value that would tie a release build to one CPU (dev.sh's guard mentions the
# flag names without values, which is fine).
CPU_SPECIFIC = re.compile(
    r"target-cpu\s*=\s*[\w-]+|target-feature\s*=\s*[\"']?\+\w|-m(arch|cpu|tune)=[\w-]+"
)


def build_settings_files() -> list[Path]:
    files = [ROOT / "Cargo.toml", ROOT / "pyproject.toml", ROOT / "dev.sh", ROOT / ".ci" / "run"]
    files += sorted((ROOT / "rust").glob("*/Cargo.toml"))
    files += sorted((ROOT / "rust").glob("*/build.rs"))
    files += sorted(WORKFLOWS.glob("*.yml"))
    return files


def test_no_cpu_specific_flags_in_release_builds() -> None:
    for config in (ROOT / ".cargo" / "config", ROOT / ".cargo" / "config.toml"):
        if config.exists():
            assert not CPU_SPECIFIC.search(config.read_text()), config
    for path in build_settings_files():
        text = path.read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert not CPU_SPECIFIC.search(code), f"{path.relative_to(ROOT)} sets a CPU-specific flag"


def test_cpu_flag_check_catches_a_native_build() -> None:
    assert CPU_SPECIFIC.search('rustflags = ["-C", "target-cpu=native"]')
    assert CPU_SPECIFIC.search('RUSTFLAGS="-C target-cpu=x86-64-v3" maturin build')
    assert CPU_SPECIFIC.search('rustflags = ["-C", "target-feature=+avx2"]')
    assert CPU_SPECIFIC.search("CFLAGS=-march=native")
    assert not CPU_SPECIFIC.search("--compatibility manylinux2014 --zig")
    assert not CPU_SPECIFIC.search("grep -Eq 'target-cpu|target-feature=\\+|-march=|-mcpu='")


USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def uses_lines() -> list[tuple[str, str, str]]:
    out = []
    for wf in sorted(WORKFLOWS.glob("*.yml")):
        for line in wf.read_text(encoding="utf-8").splitlines():
            m = USES.match(line)
            if m:
                out.append((wf.name, m.group(1), m.group(2)))
    return out


def test_every_action_is_pinned_by_commit_with_its_tag() -> None:
    found = uses_lines()
    assert len(found) > 10
    for name, ref, rest in found:
        assert PINNED.match(ref), f"{name}: {ref} is not pinned to a full commit SHA"
        assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", rest), (
            f"{name}: {ref} lacks a '# vX.Y.Z' comment"
        )
    # One action, one commit: the same action is not pinned to two versions.
    shas: dict[str, set[str]] = {}
    for _, ref, _ in found:
        action, sha = ref.split("@")
        shas.setdefault(action, set()).add(sha)
    assert all(len(s) == 1 for s in shas.values()), shas


def load_workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def test_release_workflow_covers_every_platform_and_publishes_trusted() -> None:
    wf = load_workflow("release.yml")
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert on["push"]["tags"] == ["v*"]
    jobs = wf["jobs"]
    platforms = jobs["wheels"]["strategy"]["matrix"]["platform"]
    built = {(p["target"], p.get("manylinux", "")) for p in platforms}
    assert built == {
        ("x86_64-unknown-linux-gnu", "2014"),
        ("aarch64-unknown-linux-gnu", "2014"),
        ("x86_64-unknown-linux-musl", "musllinux_1_2"),
        ("aarch64-apple-darwin", ""),
        ("x86_64-apple-darwin", ""),
        ("x86_64-pc-windows-msvc", ""),
    }
    build_step = next(s for s in jobs["wheels"]["steps"] if "maturin-action" in s.get("uses", ""))
    assert "--release" in build_step["with"]["args"] and "--locked" in build_step["with"]["args"]
    assert jobs["sdist"]["steps"][1]["with"]["command"] == "sdist"
    # Every wheel is smoke-tested on a machine of its own platform.
    names = {p["name"] for p in platforms}
    native = {p["wheel"] for p in jobs["smoke"]["strategy"]["matrix"]["platform"]}
    in_containers = {c["wheel"] for c in jobs["smoke-containers"]["strategy"]["matrix"]["include"]}
    assert native | in_containers == names
    runner_of = {p["name"]: p["runner"] for p in platforms}
    for p in jobs["smoke"]["strategy"]["matrix"]["platform"]:
        assert p["runner"] == runner_of[p["wheel"]], p
    assert "3.11" in jobs["smoke"]["strategy"]["matrix"]["python"]
    for job in ("smoke", "smoke-containers", "smoke-sdist"):
        assert any("tests/smoke_wheel.py" in s.get("run", "") for s in jobs[job]["steps"]), job
    publish = jobs["publish"]
    assert set(publish["needs"]) == {"smoke", "smoke-containers", "smoke-sdist"}
    assert publish["permissions"] == {"id-token": "write"}
    assert any("gh-action-pypi-publish" in s.get("uses", "") for s in publish["steps"])
    assert not any("password" in s.get("with", {}) for s in publish["steps"])
    assert wf["permissions"] == {"contents": "read"}


def test_pull_request_workflow_runs_the_test_command() -> None:
    wf = load_workflow("ci.yml")
    on = wf.get("on", wf.get(True))
    assert "pull_request" in on
    steps = wf["jobs"]["test"]["steps"]
    assert any(s.get("run", "").strip() == "./dev.sh test" for s in steps)


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.chdir(ROOT)  # the backend reads Cargo.toml from the source root, as under pip
    spec = importlib.util.spec_from_file_location(
        "kdmem_backend_under_test", ROOT / "build-backend" / "kdmem_backend.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    monkeypatch.delenv("MATURIN_NO_INSTALL_RUST", raising=False)
    spec.loader.exec_module(module)
    # The module sets this for maturin's hooks at import; undo it after the test.
    monkeypatch.setenv("MATURIN_NO_INSTALL_RUST", "1")
    return module


@pytest.mark.parametrize(
    "hook",
    [
        "get_requires_for_build_wheel",
        "get_requires_for_build_editable",
        "get_requires_for_build_sdist",
        "build_sdist",
    ],
)
def test_backend_without_cargo_names_the_toolchain(
    backend: ModuleType, hook: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(backend.shutil, "which", lambda name: None)
    args = ["unused-dir"] if hook == "build_sdist" else []
    with pytest.raises(SystemExit) as exc:
        getattr(backend, hook)(*args)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    rust_version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"][
        "rust-version"
    ]
    assert f"needs the Rust toolchain (cargo and rustc >= {rust_version})" in err
    assert "pip install --only-binary=kdmem kdmem" in err
    assert err.count("\n") == 1


def test_backend_with_cargo_is_maturins(backend: ModuleType) -> None:
    import maturin

    # Found cargo: the hook is maturin's, which asks for nothing extra for pyo3 bindings, and
    # maturin will not try to download Rust.
    assert backend.get_requires_for_build_wheel() == maturin.get_requires_for_build_wheel()
    assert backend.get_requires_for_build_wheel() == []
    assert backend.os.environ["MATURIN_NO_INSTALL_RUST"] == "1"
