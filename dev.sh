#!/usr/bin/env bash
# kdmem's one entry point for a fresh machine (Python 3.11, Rust toolchain, internet to the
# package registries). Everything is installed into ./.venv from pinned versions.
#
#   ./dev.sh demo    install everything, then run `kdmem demo` (the embedded default job)
#   ./dev.sh test    install everything, then run every quality gate and the test suite
#   ./dev.sh setup   install only
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
export PYO3_PYTHON=$PY
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The report tests render in headless Chromium; in the test command a missing browser fails.
export KDMEM_REQUIRE_CHROMIUM=1

say() { printf '\n== %s\n' "$*"; }

system_packages() {
  # Headless Chromium renders the HTML report in its tests (Debian's package).
  if ! command -v chromium >/dev/null 2>&1; then
    say "system packages (chromium)"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
  fi
}

setup() {
  say "python environment (.venv, requirements/lock.txt)"
  if [ ! -x "$PY" ]; then
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip==25.3
  "$PY" -m pip install -q --disable-pip-version-check -r requirements/lock.txt
  say "building the Rust extension (release, LTO) into the venv"
  VIRTUAL_ENV=$VENV "$VENV/bin/maturin" develop --release --quiet
}

run_tests() {
  say "ruff"
  "$VENV/bin/ruff" check python tests benches
  "$VENV/bin/ruff" format --check python tests benches
  say "cargo fmt --check"
  cargo fmt --all --check
  say "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
  say "cargo test -p kdmem-core"
  cargo test -p kdmem-core --quiet
  say "mypy --strict (python/kdmem) and mypy.stubtest kdmem._core"
  "$VENV/bin/mypy"
  "$PY" -m mypy.stubtest kdmem._core
  say "pytest"
  "$PY" -m pytest -q
  say "release wheel in a fresh virtual environment"
  rm -rf dist && "$VENV/bin/maturin" build --release --quiet -o dist
  local smoke
  smoke=$(mktemp -d -t kdmem-wheel-XXXXXX)
  python3 -m venv "$smoke/venv"
  "$smoke/venv/bin/pip" install -q --disable-pip-version-check -c requirements/lock.txt dist/kdmem-*.whl
  "$smoke/venv/bin/kdmem" --version
  "$smoke/venv/bin/python" tests/smoke_wheel.py "$smoke" "$smoke/venv/bin/kdmem"
  rm -rf "$smoke"
  say "all gates passed"
}

case "${1:-}" in
  setup) setup ;;
  demo) setup; shift; "$VENV/bin/kdmem" demo "$@" ;;
  test) system_packages; setup; run_tests ;;
  *) echo "usage: ./dev.sh demo|test|setup" >&2; exit 2 ;;
esac
