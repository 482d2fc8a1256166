#!/usr/bin/env bash
# Regenerates every committed reference output under tests/fixtures/ from the pinned Python
# packages. Not part of CI: CI reads the committed outputs. Usage:
#   tests/reference/regenerate.sh            # all generators
#   tests/reference/regenerate.sh gen_quants # only tests/reference/gen_quants.py
# The virtual environment is created at tests/reference/.venv (or $HG_REF_VENV) on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${HG_REF_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
"$venv/bin/pip" install -q -r "$here/requirements.txt"
export HEALTHGPT_SHARED_DATA="${HEALTHGPT_SHARED_DATA:-$here/../../../shared/data}"
cd "$here"
if [ $# -gt 0 ]; then gens=("$@"); else gens=($(ls gen_*.py | sed 's/\.py$//')); fi
for g in "${gens[@]}"; do
  echo "== $g =="
  "$venv/bin/python" "$g.py"
done
