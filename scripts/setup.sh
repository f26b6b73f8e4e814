#!/usr/bin/env bash
# Installs what is missing (Debian 12, as root), builds, then runs the main job or the whole test suite.
#   scripts/setup.sh run    build, then open the bundled sample checkpoint in the window
#   scripts/setup.sh test   build, then run every test through CTest
set -euo pipefail
mode=${1:-run}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

build_pkgs=(build-essential cmake ninja-build pkg-config zlib1g-dev nlohmann-json3-dev qt6-base-dev
            libqcustomplot-dev libtorch-dev libsleef-dev libsnappy-dev libhdf5-dev)
test_pkgs=(time python3-torch python3-numpy python3-torchvision python3-h5py clang libclang-rt-14-dev xvfb xauth
           libleveldb-dev desktop-file-utils appstream shared-mime-info xdg-utils libglib2.0-bin dpkg-dev file)
pkgs=("${build_pkgs[@]}")
[ "$mode" = test ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=$(nproc)
case "$mode" in
  run)
    cmake --preset release >/dev/null
    cmake --build build/release -j "$jobs"
    build/release/app/ckpt info resources/sample/training_checkpoint.pt
    exec build/release/app/ckpt-browser resources/sample/training_checkpoint.pt
    ;;
  test)
    cmake --preset dev >/dev/null
    cmake --build build/dev -j "$jobs"
    status=0
    ctest --test-dir build/dev --output-on-failure -j "$jobs" --timeout 3600 || status=$?
    # Everything but the > 4 GiB test again under AddressSanitizer and UndefinedBehaviorSanitizer.
    cmake --preset asan >/dev/null
    cmake --build build/asan -j "$jobs"
    ctest --test-dir build/asan --output-on-failure -j "$jobs" -LE large --timeout 3600 || status=$?
    # The parsers under libFuzzer with the same sanitizers.
    cmake --preset fuzz >/dev/null
    cmake --build build/fuzz -j "$jobs"
    ctest --test-dir build/fuzz --output-on-failure -j "$jobs" -L fuzz || status=$?
    exit "$status"
    ;;
  *)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
