#!/usr/bin/env bash
# Fetches real medical test files that Debian packages ship, without installing the packages:
# `apt-get download` + `dpkg-deb -x` into a cache folder (default build/testdata/, or $1).
#   python3-pydicom      pydicom/data/test_files/: CT/MR in every transfer syntax, RLE, JPEG-LS,
#                        JPEG 2000, deflate, palette colour, DICOMDIR series, broken files
#   python3-nibabel      nibabel/tests/data/: NIfTI-1/2, big-endian, 4-D
#   dicom3tools          examples/ (real MR)
#   invesalius-examples  Cranium.inv3: a real CT head volume as raw int16 (gzip tar + plist)
# Tests that use these files look in build/testdata/ (or $HG_TESTDATA) and skip when absent.
# A second run reuses what is there. Needs network access to the Debian mirror only.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-${HG_TESTDATA:-build/testdata}}"
mkdir -p "$dest/debs"
dest="$(cd "$dest" && pwd)"
pkgs=(python3-pydicom python3-nibabel dicom3tools invesalius-examples)
need=0
for p in "${pkgs[@]}"; do
  [ -f "$dest/.done-$p" ] || need=1
done
if [ "$need" = 0 ]; then
  echo "fetch-test-data: $dest is complete"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "fetch-test-data: apt-get not found; tests that need these files will skip" >&2
  exit 0
fi
# apt-get download needs package lists; update them once if none are there.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  apt-get update -qq || true
fi
for p in "${pkgs[@]}"; do
  [ -f "$dest/.done-$p" ] && continue
  # apt-get warns that root downloads unsandboxed; that is expected here.
  (cd "$dest/debs" && apt-get download -qq "$p" 2>/dev/null) || { echo "fetch-test-data: could not download $p" >&2; continue; }
  deb="$(ls -t "$dest"/debs/"${p}"_*.deb | head -1)"
  dpkg-deb -x "$deb" "$dest/$p"
  rm -f "$deb"
  touch "$dest/.done-$p"
  echo "fetch-test-data: $p -> $dest/$p"
done
# InVesalius stores its example CT as a gzip tar holding a raw int16 volume and a plist.
inv="$(find "$dest/invesalius-examples" -name 'Cranium.inv3' 2>/dev/null | head -1 || true)"
if [ -n "$inv" ] && [ ! -f "$dest/cranium/matrix.dat" ]; then
  tmp="$(mktemp -d)"
  if tar -xzf "$inv" -C "$tmp"; then
    mkdir -p "$dest/cranium"
    find "$tmp" -name 'matrix.dat' -o -name 'main.plist' | while read -r f; do mv "$f" "$dest/cranium/"; done
  else
    echo "fetch-test-data: could not unpack $inv" >&2
  fi
  rm -rf "$tmp"
fi
# Only the examples of dicom3tools are needed, not its programs.
rm -rf "$dest/dicom3tools/usr/bin" 2>/dev/null || true
