#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine for Linea and builds it. Idempotent: packages already present
# are not reinstalled, the build is incremental and the corpus is prepared once.
#   1. installs the Debian packages the build and the embedded corpus need (apt-get, as root or
#      through sudo);
#   2. configures and builds in Release into build/ (the CLI is build/linea), with all cores;
#   3. prepares the embedded English corpus (the `fortunes` package) into data/fortunes.tokens.
# Environment: LINEA_BUILD_DIR (default build), LINEA_CMAKE_ARGS (extra configure arguments),
# LINEA_SKIP_APT=1 to skip step 1 (for machines set up by other means).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${LINEA_BUILD_DIR:-build}

packages=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libprotobuf-dev
  protobuf-compiler libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libgtest-dev
  libopenblas-dev fortunes)

if [ "${LINEA_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${LINEA_CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$jobs"

corpus=data/fortunes.tokens
if [ ! -f "$corpus" ]; then
  mkdir -p data
  # The fortune-mod cookie files (BSD licence): every plain-text file of the package, in name
  # order, documents split at the '%' separator lines.
  mapfile -t sources < <(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' \
    ! -name '*.u8' | LC_ALL=C sort)
  "$build_dir/linea" prepare-data --separator '%' --output "$corpus" "${sources[@]}"
fi
echo "setup: done; the CLI is $build_dir/linea"
