#!/usr/bin/env bash
# kdmem's one entry point for a fresh machine (Python 3.11, Rust toolchain, internet to the
# package registries). Everything is installed into ./.venv from pinned versions.
#
#   ./dev.sh demo    install everything, then run `kdmem demo` (the embedded default job)
#   ./dev.sh test    install everything, then run every quality gate and the test suite
#   ./dev.sh setup   install only
#   ./dev.sh wheels  build and check dist/: the abi3 manylinux2014 (glibc >= 2.17) x86_64 wheel
#                    (maturin + zig, no container needed) and the sdist
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
export PYO3_PYTHON=$PY
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The report tests render in headless Chromium; in the test command a missing browser fails.
export KDMEM_REQUIRE_CHROMIUM=1

say() { printf '\n== %s  [%ss]\n' "$*" "$SECONDS"; }

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

python_env() {
  say "python environment (.venv, requirements/lock.txt)"
  if [ ! -x "$PY" ]; then
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip==25.3
  "$PY" -m pip install -q --disable-pip-version-check -r requirements/lock.txt
}

# Only what building and checking dist/ needs (versions from the lock), for `./dev.sh wheels`.
build_env() {
  say "build tools (.venv: maturin, ziglang, auditwheel, twine from requirements/lock.txt)"
  if [ ! -x "$PY" ]; then
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip==25.3
  "$PY" -m pip install -q --disable-pip-version-check -c requirements/lock.txt \
    maturin ziglang auditwheel twine
}

setup() {
  python_env
  say "building the Rust extension (release, LTO) into the venv"
  VIRTUAL_ENV=$VENV "$VENV/bin/maturin" develop --release --quiet
}

# A wheel for users runs on any CPU of its architecture: refuse CPU-specific flags from the
# environment or a cargo config (the repository has none; tests/test_release.py checks that).
portable_guard() {
  local var cfg
  for var in RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CFLAGS CXXFLAGS; do
    if printf '%s' "${!var:-}" | grep -Eq 'target-cpu|target-feature=\+|-march=|-mcpu=|-mtune='; then
      echo "error: $var=${!var} would make the wheel CPU-specific; unset it for ./dev.sh wheels" >&2
      return 1
    fi
  done
  for cfg in "${CARGO_HOME:-$HOME/.cargo}/config" "${CARGO_HOME:-$HOME/.cargo}/config.toml" \
      .cargo/config .cargo/config.toml; do
    if [ -f "$cfg" ] && grep -Eq 'target-cpu|target-feature *= *"\+' "$cfg"; then
      echo "error: $cfg sets a CPU-specific flag; a release wheel must not" >&2
      return 1
    fi
  done
}

# dist/: the wheel users on Linux x86_64 get (abi3, manylinux_2_17: RHEL/Rocky 8, Ubuntu 20.04+)
# and the sdist everyone else builds from. zig (the pinned `ziglang` package) links against
# glibc 2.17 symbols, so no manylinux container is needed. No -C target-cpu: the wheel runs on
# every x86_64 CPU.
build_wheels() {
  say "manylinux2014 abi3 wheel (maturin --zig) and sdist into dist/"
  portable_guard
  rm -rf dist
  # maturin looks for zig on PATH, then for the ziglang package of the Python on PATH.
  PATH=$VENV/bin:$PATH VIRTUAL_ENV=$VENV "$VENV/bin/maturin" build --release --quiet \
    --compatibility manylinux2014 --zig -o dist
  "$VENV/bin/maturin" sdist -o dist
  say "checking dist/ (tags, auditwheel, sdist contents, twine check --strict)"
  "$PY" tests/check_dist.py dist
  "$VENV/bin/twine" check --strict dist/*.whl dist/*.tar.gz
}

# A fresh venv with only the wheel and its dependencies; runs tests/smoke_wheel.py from there.
smoke() { # WHEEL LABEL
  local dir
  dir=$(mktemp -d -t kdmem-smoke-XXXXXX)
  say "smoke test of the $2 wheel in a fresh virtual environment: $(basename "$1")"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q --disable-pip-version-check -c requirements/lock.txt "$1"
  "$dir/venv/bin/kdmem" --version
  (cd "$dir" && "$dir/venv/bin/python" "$ROOT/tests/smoke_wheel.py" --kdmem "$dir/venv/bin/kdmem" \
    --cargo-toml "$ROOT/Cargo.toml" "$dir/work")
  rm -rf "$dir"
}

# PATH without the directories that hold cargo or rustc.
path_without_rust() {
  "$PY" -c 'import os; print(":".join(d for d in os.environ["PATH"].split(":") if d and not any(os.access(os.path.join(d, t), os.X_OK) for t in ("cargo", "rustc"))))'
}

# Bad input: the sdist on a machine without Rust fails at once, names the missing toolchain,
# and leaves nothing installed.
sdist_without_rust() {
  local dir log
  dir=$(mktemp -d -t kdmem-norust-XXXXXX)
  log=$dir/pip.log
  say "sdist without a Rust toolchain: pip must fail with the toolchain message"
  python3 -m venv "$dir/venv"
  if env PATH="$(path_without_rust)" "$PY" -m pip --python "$dir/venv/bin/python" install \
      --disable-pip-version-check --no-deps --build-constraint requirements/lock.txt \
      dist/kdmem-*.tar.gz >"$log" 2>&1; then
    cat "$log"; echo "error: the sdist installed without cargo on PATH" >&2; return 1
  fi
  if ! grep -q "needs the Rust toolchain (cargo and rustc" "$log"; then
    cat "$log"; echo "error: pip failed without naming the missing Rust toolchain" >&2; return 1
  fi
  if "$dir/venv/bin/python" -c "import kdmem" 2>/dev/null; then
    echo "error: a failed sdist install left kdmem importable" >&2; return 1
  fi
  grep "kdmem: building" "$log"
  rm -rf "$dir"
}

# The user's path on a platform without a wheel: pip builds the sdist (isolated build env,
# maturin pinned by the lock). Compiled dependencies are shared with earlier runs through
# target/from-sdist; kdmem's own crates always compile from the unpacked sdist.
wheel_from_sdist() {
  say "building a wheel from the sdist with pip"
  rm -rf dist/from-sdist
  CARGO_TARGET_DIR=$ROOT/target/from-sdist "$PY" -m pip wheel -q --disable-pip-version-check \
    --no-deps --build-constraint requirements/lock.txt -w dist/from-sdist dist/kdmem-*.tar.gz
}

run_tests() {
  say "ruff"
  "$VENV/bin/ruff" check python tests benches build-backend
  "$VENV/bin/ruff" format --check python tests benches build-backend
  say "actionlint (.github/workflows, shellcheck on run: steps) and zizmor (offline)"
  PATH=$VENV/bin:$PATH "$VENV/bin/actionlint"
  "$VENV/bin/zizmor" --offline --quiet .github/workflows
  "$VENV/bin/shellcheck" dev.sh .ci/run benches/device_check.sh
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
  say "mkdocs build --strict (docs site: guides, formats, CLI and Python API reference)"
  local site
  site=$(mktemp -d -t kdmem-site-XXXXXX)
  NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet --site-dir "$site"
  rm -rf "$site"
  build_wheels
  smoke dist/kdmem-*manylinux_2_17_x86_64*.whl "manylinux2014"
  sdist_without_rust
  wheel_from_sdist
  smoke dist/from-sdist/kdmem-*.whl "sdist-built"
  say "all gates passed"
}

case "${1:-}" in
  setup) setup ;;
  demo) setup; shift; "$VENV/bin/kdmem" demo "$@" ;;
  test) system_packages; setup; run_tests ;;
  wheels) build_env; build_wheels ;;
  *) echo "usage: ./dev.sh demo|test|setup|wheels" >&2; exit 2 ;;
esac
