#!/usr/bin/env bash
# Prints the path of a `promtool` binary, fetching Debian's package into .run/tools when none is
# on PATH (only the binary is extracted; nothing is installed system-wide, no root needed).
# Exits 1 with a message on stderr when neither is possible (e.g. not a Debian-based machine).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v promtool >/dev/null; then
  command -v promtool
  exit 0
fi
target=.run/tools/promtool
if [ ! -x "$target" ]; then
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "promtool not found and apt-get/dpkg-deb unavailable to fetch Debian's 'prometheus' package" >&2
    exit 1
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1) || {
    echo "could not download Debian's 'prometheus' package (apt-get download prometheus)" >&2
    exit 1
  }
  dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
  mkdir -p "$(dirname "$target")"
  cp "$work/x/usr/bin/promtool" "$target"
fi
echo "$PWD/$target"
