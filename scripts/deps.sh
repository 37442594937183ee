#!/usr/bin/env bash
# Check that the Debian packages orchard builds with are installed. As root,
# install the missing ones with apt-get; otherwise print the exact command and
# fail, so `make` never half-builds against a missing library.
#   scripts/deps.sh [build|test|all]
set -euo pipefail

what="${1:-build}"
build_pkgs=(build-essential cmake pkg-config libopenblas-openmp-dev libjansson-dev libmicrohttpd-dev
            libcurl4-openssl-dev libsqlite3-dev libopenmpi-dev openmpi-bin)
test_pkgs=(libcmocka-dev clang libclang-rt-14-dev)

pkgs=("${build_pkgs[@]}")
if [[ "$what" == "test" || "$what" == "all" ]]; then
  pkgs+=("${test_pkgs[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
  echo "orchard: installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "orchard: missing Debian packages: ${missing[*]}" >&2
  echo "orchard: install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
