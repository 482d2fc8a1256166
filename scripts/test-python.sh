#!/usr/bin/env bash
# A virtual environment with the PyPI packages the tests use (tests/server/requirements.txt: the
# `openai` client the server must be compatible with), under build/py-test. Prints its python.
# Fails (non-zero) when PyPI cannot be reached; scripts/test.sh then runs without it and those
# tests skip with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/py-test
req=tests/server/requirements.txt
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$venv" >&2
fi
stamp="$venv/.requirements"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$PWD/$venv/bin/python"
