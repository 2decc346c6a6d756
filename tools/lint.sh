#!/usr/bin/env bash
# Lint and format checks, in seconds; they change nothing. ruff (settings in pyproject.toml)
# over the Python files, clang-format (.clang-format) over csrc/. Run by .ci/run; the same tools
# and versions run on each commit with pre-commit (.pre-commit-config.yaml). To apply the
# formatters: ruff format . && ruff check --fix . && clang-format -i <the csrc files>.
#   BIN=.venv/bin bash tools/lint.sh      (BIN: the folder with ruff and clang-format)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
status=0
"$BIN/ruff" check . || status=1
"$BIN/ruff" format --check . || status=1
find csrc -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' | sort |
  xargs "$BIN/clang-format" --dry-run -Werror || status=1
exit $status
