#!/usr/bin/env bash
# daifu's build dependencies for a machine without a network or apt (a lent GPU machine): fetch
# Debian 12's packages here, carry the folder there, unpack them there into a prefix that CMake,
# pkg-config, the compiler and the loader are pointed at. LibTorch is not among them.
# Usage: scripts/offline_deps.sh fetch DIR            download the .deb files into DIR (here)
#        eval "$(scripts/offline_deps.sh unpack DIR PREFIX)"
#                                                     unpack DIR's .deb files into PREFIX (there)
#                                                     and export the variables that find them
# scripts/gpu_check.sh --deps DIR does the second step itself.
set -euo pipefail

# The -dev packages setup.sh installs, with the libraries they need at run time.
packages=(
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 nlohmann-json3-dev libcli11-dev
  libboost1.74-dev libboost-stacktrace1.74-dev libboost-stacktrace1.74.0
  libssl-dev libssl3 libxxhash-dev libxxhash0 zlib1g-dev libgloo-dev libgtest-dev
  pkgconf pkgconf-bin libpkgconf3 pkg-config
)

case ${1:-} in
  fetch)
    dir=${2:?usage: scripts/offline_deps.sh fetch DIR}
    mkdir -p "$dir"
    (cd "$dir" && apt-get download "${packages[@]}")
    ;;
  unpack)
    dir=${2:?usage: scripts/offline_deps.sh unpack DIR PREFIX}
    prefix=${3:?usage: scripts/offline_deps.sh unpack DIR PREFIX}
    mkdir -p "$prefix/loader" "$prefix/include-extra"
    for deb in "$dir"/*.deb; do dpkg -x "$deb" "$prefix"; done
    usr=$prefix/usr
    lib=$usr/lib/x86_64-linux-gnu
    for pc in "$lib"/pkgconfig/*.pc "$usr"/share/pkgconfig/*.pc; do
      [[ -f $pc ]] && sed -i "s|^prefix=/usr\$|prefix=$usr|" "$pc"
    done
    # The loader takes the unpacked libraries, but the machine's own OpenSSL where it has one
    # (other programs there were built against it).
    known=$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null || true)
    for so in "$lib"/lib*.so.*; do
      name=$(basename "$so")
      case $name in libssl.so.* | libcrypto.so.*) [[ $known == *"$name "* ]] && continue ;; esac
      ln -sf "$so" "$prefix/loader/"
    done
    # LibTorch's Gloo header includes <gloo/...> from the system include path: only Gloo goes
    # there, so the machine's other headers are not shadowed.
    ln -sfn "$usr/include/gloo" "$prefix/include-extra/gloo"
    printf 'export CMAKE_PREFIX_PATH=%q\n' "$usr"
    printf 'export PKG_CONFIG_PATH=%q\n' "$lib/pkgconfig:$usr/share/pkgconfig"
    command -v pkg-config >/dev/null || printf 'export PKG_CONFIG=%q\n' "$usr/bin/pkgconf"
    printf 'export LD_LIBRARY_PATH=%q\n' "$prefix/loader${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    printf 'export CPLUS_INCLUDE_PATH=%q\n' "$prefix/include-extra${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
    # Debian 12's package configs predate CMake 4, which refuses cmake_minimum_required < 3.5.
    echo "export CMAKE_POLICY_VERSION_MINIMUM=3.5"
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
