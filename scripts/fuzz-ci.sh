#!/usr/bin/env bash
# CI: every fuzz target for a short bounded time on its seed corpus (a fresh corpus each run),
# so that a target which cannot build, has no seeds, cannot start or crashes fails CI.
#   scripts/fuzz-ci.sh [seconds per target, default 15]   (13 targets: about 4 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_CI=1 exec ./scripts/fuzz.sh "${1:-15}"
