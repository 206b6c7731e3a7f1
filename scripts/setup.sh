#!/usr/bin/env bash
# Installs what daifu needs (as root, only what is missing) and builds it.
# Usage: scripts/setup.sh [--torch wheel|wheel-cuda|debian|PREFIX] [--no-install] [--target NAME]... BUILD_DIR [cmake arguments...]
#        scripts/setup.sh [--torch wheel|wheel-cuda|debian|PREFIX] --install-only
#   --torch wheel   LibTorch 2.13 (CPU) from the torch wheel, pip-installed into .venv/ (the default)
#   --torch wheel-cuda  LibTorch 2.14.1 for CUDA 13 from the torch wheel and its nvidia-* wheels
#                   (5.5 GB), pip-installed into .venv-cuda/; compiling needs nvcc (a CUDA toolkit)
#   --torch debian  Debian's libtorch-dev (1.13 on Debian 12)
#   --torch PREFIX  a LibTorch you unpacked yourself (the folder holding lib/ and include/)
#   --target NAME   build only this target and what it needs (repeatable); default: everything
#   --install-only  install, do not build
#   --no-install    check and install no Debian package (a machine without apt or a network,
#                   whose dependencies CMake finds itself, e.g. through CMAKE_PREFIX_PATH); with
#                   it, name the LibTorch as --torch PREFIX (the wheels are pip-installed)
set -euo pipefail
cd "$(dirname "$0")/.."

torch=wheel
targets=()
install_only=
no_install=
while [[ $# -gt 0 ]]; do
  case $1 in
    --torch) torch=$2; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    --install-only) install_only=1; shift ;;
    --no-install) no_install=1; shift ;;
    *) break ;;
  esac
done
if [[ -z $install_only ]]; then
  build_dir=${1:?usage: scripts/setup.sh [--torch wheel|wheel-cuda|debian|PREFIX] [--no-install] [--target NAME]... BUILD_DIR [cmake args...]}
  shift
fi

packages=(
  g++ make cmake ninja-build pkg-config python3 python3-venv
  libopenblas0-pthread
  libspdlog-dev libfmt-dev nlohmann-json3-dev libboost-stacktrace-dev libcli11-dev libgloo-dev zlib1g-dev libssl-dev libxxhash-dev
  googletest libgtest-dev libbenchmark-dev
  dataset-fashion-mnist fortunes
)
[[ $torch == debian ]] && packages+=(libtorch-dev)
[[ -z $no_install ]] || packages=()
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A torch wheel is a complete LibTorch: headers, libraries and its CMake config.
# wheel_torch VENV VERSION: installs torch==VERSION into VENV unless it is there; prints its root.
wheel_torch() {
  local venv=$1 version=$2
  if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$version')" 2>/dev/null; then
    echo "setup: installing torch==$version into $venv/" >&2
    [[ -x $venv/bin/pip ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q "torch==$version" >&2
  fi
  "$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null
}
case $torch in
  wheel) torch_prefix=$(wheel_torch .venv 2.13.0) ;;
  wheel-cuda)
    torch_prefix=$(wheel_torch .venv-cuda 2.14.1)
    ;;
  debian) torch_prefix=/usr ;;
  *) torch_prefix=$torch ;;
esac
# A CUDA LibTorch's CMake config finds the toolkit from CUDA_PATH, else from nvcc on PATH (a
# wrapper script there, as /usr/local/bin/nvcc is on some machines, misleads it).
[[ $torch == wheel || $torch == debian || -n ${CUDA_PATH:-} || ! -d /usr/local/cuda ]] || export CUDA_PATH=/usr/local/cuda
if [[ -z $torch_prefix ]]; then
  echo "setup: the torch wheel did not install (pip's messages above); nothing was built" >&2
  exit 1
fi

[[ -z $install_only ]] || exit 0

generator=()
[[ -f $build_dir/CMakeCache.txt ]] || generator=(-G Ninja)
# CMAKE_PREFIX_PATH is the LibTorch root: its share/cmake/Torch config then takes the
# libraries from the root's lib/, not from another LibTorch in the system directories.
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$torch_prefix" "$@" >/dev/null
target_args=()
for t in "${targets[@]}"; do target_args+=(--target "$t"); done
cmake --build "$build_dir" -j"$(nproc)" "${target_args[@]}"
