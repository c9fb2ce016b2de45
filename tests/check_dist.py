"""Check dist/ before anything is published; run by `./dev.sh wheels` and `./dev.sh test`.

    python tests/check_dist.py DIST [--platform-tag manylinux_2_17_x86_64]

DIST holds exactly one wheel and one sdist of the version in Cargo.toml. The wheel is abi3 for
CPython >= 3.11 with the platform tag given, and `auditwheel show` agrees that its symbols fit
that policy; it carries the extension, the stub, py.typed, the license and the `kdmem` command.
The sdist carries everything a build needs (both crates, Cargo.lock, the Python package, the
build backend, README, LICENSE: every tracked file of those trees when run in a git checkout)
and nothing that is built or downloaded (target/, .venv/, runs/, dist/, shared libraries).
Not collected by pytest (no test_ prefix). Exits 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import email.parser
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

from packaging.utils import parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# What the sdist must hold (relative to its top directory).
SDIST_REQUIRED = [
    "PKG-INFO",
    "pyproject.toml",
    "Cargo.toml",
    "Cargo.lock",
    "README.md",
    "LICENSE",
    "build-backend/kdmem_backend.py",
    "rust/kdmem-core/Cargo.toml",
    "rust/kdmem-core/src/lib.rs",
    "rust/kdmem-py/Cargo.toml",
    "rust/kdmem-py/src/lib.rs",
    "python/kdmem/__init__.py",
    "python/kdmem/_core.pyi",
    "python/kdmem/py.typed",
]
# Trees whose every tracked file the sdist must carry.
SDIST_TREES = ["rust/kdmem-core", "rust/kdmem-py", "python/kdmem", "build-backend"]
SDIST_FORBIDDEN = re.compile(
    r"(^|/)(target|\.venv|runs|dist|bench-data|\.git|__pycache__|\.hypothesis)(/|$)"
    r"|\.(so|pyd|dylib|whl|pyc)$"
)
SDIST_MAX_BYTES = 2_000_000


def cargo_version() -> Version:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    return Version(cargo["workspace"]["package"]["version"])


def check_wheel(path: Path, platform_tag: str, version: Version) -> list[str]:
    problems = []
    name, wheel_version, _build, tags = parse_wheel_filename(path.name)
    if name != "kdmem" or wheel_version != version:
        problems.append(f"{path.name}: expected kdmem {version}, got {name} {wheel_version}")
    if {(t.interpreter, t.abi) for t in tags} != {("cp311", "abi3")}:
        problems.append(
            f"{path.name}: expected the cp311-abi3 tag only, got {sorted(map(str, tags))}"
        )
    if platform_tag not in {t.platform for t in tags}:
        problems.append(f"{path.name}: platform tag {platform_tag} missing")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        info = f"kdmem-{wheel_version}.dist-info"
        for member in ["kdmem/__init__.py", "kdmem/_core.pyi", "kdmem/py.typed", "kdmem/cli"]:
            if not any(
                n == member or n.startswith(member + "/") or n == member + ".py" for n in names
            ):
                problems.append(f"{path.name}: {member} missing")
        if not any(re.fullmatch(r"kdmem/_core\.abi3\.(so|pyd)", n) for n in names):
            problems.append(f"{path.name}: the extension kdmem/_core.abi3.so is missing")
        if f"{info}/licenses/LICENSE" not in names:
            problems.append(f"{path.name}: {info}/licenses/LICENSE missing")
        meta = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode("utf-8"))
        if Version(meta["Version"]) != version:
            problems.append(f"{path.name}: METADATA Version {meta['Version']} != Cargo {version}")
        if meta["Requires-Python"] != ">=3.11":
            problems.append(f"{path.name}: Requires-Python {meta['Requires-Python']!r}")
        entry_points = zf.read(f"{info}/entry_points.txt").decode("utf-8")
        if not re.search(r"^kdmem\s*=\s*kdmem\.cli:main$", entry_points, re.M):
            problems.append(f"{path.name}: the `kdmem` console script is missing")
        stray = sorted(n for n in names if not n.startswith(("kdmem/", f"{info}/")))
        if stray:
            problems.append(f"{path.name}: files outside the package: {stray[:5]}")
    if platform_tag.startswith(("manylinux", "musllinux")):
        shown = subprocess.run(
            [sys.executable, "-m", "auditwheel", "show", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        text = " ".join(shown.stdout.split())
        consistent = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
        if shown.returncode != 0 or consistent is None:
            problems.append(f"{path.name}: auditwheel show failed: {shown.stdout}{shown.stderr}")
        elif consistent.group(1) != platform_tag:
            problems.append(
                f"{path.name}: auditwheel says {consistent.group(1)}, not {platform_tag}: {text}"
            )
        else:
            print(f"auditwheel show: {path.name} is consistent with {platform_tag}")
    return problems


def tracked_files(tree: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--", tree],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.split() if out.returncode == 0 else []


def check_sdist(path: Path, version: Version) -> list[str]:
    problems = []
    name, sdist_version = parse_sdist_filename(path.name)
    if name != "kdmem" or sdist_version != version:
        problems.append(f"{path.name}: expected kdmem {version}, got {name} {sdist_version}")
    if path.stat().st_size > SDIST_MAX_BYTES:
        problems.append(f"{path.name}: {path.stat().st_size} bytes, over {SDIST_MAX_BYTES}")
    top = f"kdmem-{sdist_version}"
    with tarfile.open(path) as tf:
        members = [m.name for m in tf.getmembers() if m.isfile()]
        pkg_info = tf.extractfile(f"{top}/PKG-INFO")
        meta = email.parser.Parser().parsestr(pkg_info.read().decode("utf-8")) if pkg_info else {}
    inner = set()
    for m in members:
        if not m.startswith(top + "/"):
            problems.append(f"{path.name}: {m} is outside {top}/")
            continue
        inner.add(m[len(top) + 1 :])
    for rel in SDIST_REQUIRED:
        if rel not in inner:
            problems.append(f"{path.name}: {rel} missing")
    for tree in SDIST_TREES:
        for rel in tracked_files(tree):
            if rel not in inner and not rel.endswith((".gitignore", ".gitattributes")):
                problems.append(f"{path.name}: tracked file {rel} missing")
    bad = sorted(rel for rel in inner if SDIST_FORBIDDEN.search(rel))
    if bad:
        problems.append(f"{path.name}: build or run outputs inside: {bad[:5]}")
    if meta and Version(meta["Version"]) != version:
        problems.append(f"{path.name}: PKG-INFO Version {meta['Version']} != Cargo {version}")
    if not problems:
        print(f"sdist: {path.name}, {len(inner)} files, {path.stat().st_size:,} bytes")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dist", type=Path)
    ap.add_argument("--platform-tag", default="manylinux_2_17_x86_64")
    args = ap.parse_args()
    version = cargo_version()
    wheels = sorted(args.dist.glob("*.whl"))
    sdists = sorted(args.dist.glob("*.tar.gz"))
    problems = []
    if len(wheels) != 1 or len(sdists) != 1:
        problems.append(f"{args.dist}: expected one wheel and one sdist, found {wheels + sdists}")
    for wheel in wheels:
        problems += check_wheel(wheel, args.platform_tag, version)
    for sdist in sdists:
        problems += check_sdist(sdist, version)
    for p in problems:
        print(f"check_dist: {p}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {[p.name for p in wheels + sdists]} OK (version {version})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
