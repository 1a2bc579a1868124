#!/usr/bin/env bash
# PyTorch's own optimizer tests (test/test_optim.py from a pytorch checkout; NOT shipped with the
# wheel and NOT kept in this repository) run against optimlab: every OptimizerInfo of torch's
# optim_db gets optimlab's class of the same name (scripts/torch_external/conftest.py). CPU only.
#
#   scripts/run_torch_optim_tests.sh PATH/TO/test_optim.py [--baseline] [PYTEST ARGS...]
#
# The test file is copied into a scratch folder outside the repository ($TORCH_OPTIM_WORKDIR, else
# a fresh mktemp -d), with stand-ins for the three helper modules it re-exports
# (scripts/torch_external/stubs.py). --baseline runs the same file against torch's own classes
# (OPTIMLAB_SWAP=0): a test failing there too is not a difference of optimlab's. After pytest,
# scripts/torch_external/wording.py checks every error input of optim_db (torch's test_errors stops
# at a class's first mismatch): error types must match; differing wording is listed.
# Python: $PYTHON, else .venv/bin/python. See docs/torch_tests.md.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
src="${1:?usage: scripts/run_torch_optim_tests.sh PATH/TO/test_optim.py [--baseline] [PYTEST ARGS...]}"
shift
[ -f "$src" ] || { echo "no such file: $src" >&2; exit 2; }
swap=1
if [ "${1:-}" = "--baseline" ]; then swap=0; shift; fi
py="${PYTHON:-$repo/.venv/bin/python}"
work="${TORCH_OPTIM_WORKDIR:-$(mktemp -d -t torch-optim-XXXXXX)}"
work="$(mkdir -p "$work" && cd "$work" && pwd)"
case "$work/" in "$repo"/*) echo "the work folder must be outside the repository: $work" >&2; exit 2 ;; esac
cp "$src" "$work/test_optim.py"
cp "$repo/scripts/torch_external/conftest.py" "$work/conftest.py"
"$py" "$repo/scripts/torch_external/stubs.py" "$work"
echo "work folder: $work (optimlab from $repo/src; swap=$swap)" >&2
cd "$work"
status=0
OPTIMLAB_SWAP=$swap PYTHONPATH="$repo/src:$work" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  "$py" -m pytest test_optim.py -p no:cacheprovider -q -rfE --tb=line "$@" || status=$?
if [ "$swap" = 1 ]; then
  PYTHONPATH="$repo/src" "$py" "$repo/scripts/torch_external/wording.py" || status=$?
fi
exit $status
