#!/bin/sh
# tests/format.sh: every tracked C and CUDA source is formatted as .clang-format
# says (test `format`). Exit 77 (skip) without clang-format. To fix a change:
#   git ls-files '*.c' '*.h' '*.cu' | xargs clang-format -i
cd "$(dirname "$0")/.." || exit 1
command -v clang-format >/dev/null 2>&1 || { echo "clang-format not found: skipped"; exit 77; }
files=$(git ls-files '*.c' '*.h' '*.cu' 2>/dev/null)
[ -n "$files" ] || { echo "not a git checkout: skipped"; exit 77; }
# shellcheck disable=SC2086
clang-format --dry-run --Werror $files
