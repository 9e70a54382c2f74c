#!/usr/bin/env bash
# Installs what swarm's demo and tests need on a fresh Debian machine with Rust, idempotently:
# only missing Debian packages are installed, and the rustup target only if absent.
set -euo pipefail

# Stock git (interop tests run git log / fsck / verify-commit) and ssh-keygen (git's ssh
# signature verifier); python3 and openssl run the Jami fixtures' signature oracle.
# transport-dht links OpenDHT's C API (libopendht-c-dev, found through pkg-config; bindgen needs
# libclang-dev) and its tests start real `dhtnode` processes. The plugin host's compile cache
# links libzstd (libzstd-dev) rather than building it from C.
APT_PACKAGES=(git openssh-client pkg-config python3 openssl dhtnode libopendht-c-dev libclang-dev libzstd-dev)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }

# The test script checks formatting and lints.
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
  done
fi

# The plugin tests build the guest plugins (plugins/guests/) for wasm32-unknown-unknown.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "installing the rustup target wasm32-unknown-unknown" >&2
  rustup target add wasm32-unknown-unknown
fi
