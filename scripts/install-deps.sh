#!/usr/bin/env bash
# Installs the Debian 12 packages healthgpt.cpp builds with (as root, or through sudo).
# Only what is missing is installed, so a second run costs nothing.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config ccache
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  libstb-dev libpng-dev zlib1g-dev libjpeg-dev libtiff-dev
  libpcre2-dev
  python3                    # scripts/run.sh reads the VQA-RAD item it asks healthgpt-nano
  python3-venv               # scripts/test-python.sh: the openai client for tests/server (PyPI)
  libgdcm-dev
  libsqlite3-dev
  clang libclang-rt-14-dev   # scripts/fuzz.sh: libFuzzer targets (CI runs each briefly)
  orthanc orthanc-dicomweb   # tests/pacs: a real PACS on 127.0.0.1 (scripts/orthanc.sh starts it)
  python3-pydicom            # tests/pacs: the SR and Secondary Capture re-read by pydicom
  chromium chromium-driver python3-selenium   # tests/web: the page driven in headless Chromium
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's orthanc package starts a system-wide Orthanc (ports 8042/4242 on every interface). The
# project never uses it: tests/pacs starts its own on a free loopback port (scripts/orthanc.sh).
# Stop and disable the system one so that installing our dependencies opens no port.
if printf '%s\n' "${missing[@]}" | grep -qx orthanc; then
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now orthanc >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/orthanc ]; then
    $SUDO /etc/init.d/orthanc stop >/dev/null 2>&1 || true
    $SUDO update-rc.d orthanc disable >/dev/null 2>&1 || true
  fi
fi
