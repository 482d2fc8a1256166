#!/usr/bin/env bash
# The README's main-job command: builds healthgpt.cpp and runs it end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
./build/bin/healthgpt info
