#!/usr/bin/env bash
# Create .venv (Python 3.11) and install optimlab with its test dependencies, torch pinned
# through constraints.txt. Re-installs only when pyproject.toml or constraints.txt change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.optimlab-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "optimlab: setting up .venv (first run only)..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# (this machine's pip configuration names local index folders that may be absent: drop those warnings)
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]" 2> >(grep -v "is ignored: it is neither" >&2)
echo "$want" > "$stamp"
