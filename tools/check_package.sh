#!/usr/bin/env bash
# The package as a user gets it: build the sdist and, from the sdist, the wheel
# (python -m build --no-isolation, against the torch of $PYTHON's environment), check both file
# lists against git (tools/check_dist.py), install the wheel into a fresh venv with the pinned
# torch, and run tests against the installed package from a folder outside the source tree,
# so that a file missing from the wheel fails here. Run by .ci/run after tools/setup.sh.
#
#   PYTHON=.venv/bin/python bash tools/check_package.sh
#
# PYTHON: a Python with torch, setuptools and build (default .venv/bin/python). DIST: where the
# sdist and the wheel go (default dist/). WORK: where the fresh venv and the test folder go
# (default: a new temporary folder, removed at the end; KEEP_WORK=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-.venv/bin/python}
DIST=${DIST:-dist}
WORK=${WORK:-$(mktemp -d)}
if [ "${KEEP_WORK:-0}" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi
case "$WORK" in "$ROOT"|"$ROOT"/*) echo "WORK must be outside the source tree" >&2; exit 2;; esac

# The tests run against the installed wheel: these test files, with every helper module of
# tests/ and pytest.ini. They must not read the source tree (csrc/, examples/, bench/, tools/).
# (The LSTM layer, the cell, the attention families, errors, backend choice, pickling: about
# 40 s of CPU; tests/test_lstm_parity.py would add another 45 s.)
TESTS="tests/installed/test_installed_package.py tests/test_show_config.py tests/test_lstm_cell.py
  tests/test_attention.py tests/test_errors.py tests/test_backends_replace.py
  tests/test_serialization.py"
HELPERS="$(ls tests/*.py | grep -v '^tests/test_') pytest.ini"

# The commit the build records (setup.py, _git_commit): HEAD, +dirty with uncommitted changes.
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then commit="$commit+dirty"; fi

start=$SECONDS
rm -rf "$DIST"
# sdist first, then the wheel built from the unpacked sdist: a file the build needs but the
# sdist lacks fails here.
"$PYTHON" -m build --no-isolation --outdir "$DIST" . > "$WORK/build.log" 2>&1 ||
  { tail -n 40 "$WORK/build.log"; exit 1; }
echo "check_package: built $(cd "$DIST" && ls) in $((SECONDS - start)) s"
"$PYTHON" tools/check_dist.py "$DIST"/*.tar.gz "$DIST"/*.whl

step=$SECONDS
"$PYTHON" -m venv "$WORK/venv"
# torch as tools/setup.sh pins it (a CPU build); pip takes it from the local disk when there.
# --no-compile: no .pyc files for the thousands of modules of torch and triton up front.
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile \
  torch==2.13.0 triton==3.6.0 numpy pytest "$DIST"/*.whl > "$WORK/pip.log" 2>&1 ||
  { tail -n 40 "$WORK/pip.log"; exit 1; }
echo "check_package: fresh venv with the wheel in $((SECONDS - step)) s"

step=$SECONDS
mkdir -p "$WORK/run"
cp $TESTS $HELPERS "$WORK/run/"
# From $WORK/run: the source tree is neither the working directory nor on sys.path, so
# `import lstm_fused` can only find the installed package (the first test checks where).
(cd "$WORK/run" &&
  LSTM_FUSED_SOURCE_TREE="$ROOT" LSTM_FUSED_EXPECT_COMMIT="$commit" \
  "$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider $(for t in $TESTS; do basename "$t"; done))
echo "check_package: tests of the installed package in $((SECONDS - step)) s; total $((SECONDS - start)) s"
