#!/usr/bin/env bash
# Installs, on Debian, what building and testing Shoal needs and is missing.
# Idempotent: does nothing when everything is present. Needs root to install.
set -euo pipefail

packages=(
  containerd        # real containerd daemons for the contract and e2e tests
  docker-registry   # the upstream registry (CNCF distribution)
  skopeo            # pushes test images
  protobuf-compiler # containerd-client's build script needs protoc
  iptables          # fault injection (blackholed peers) in e2e
  curl
  prometheus        # promtool and a real Prometheus for the chart checks
  nginx-light       # the reference file server of `shoal-e2e bench`
  fonts-dejavu-core # the font of the benchmark's PNG charts (no fontconfig needed)
  iproute2          # `tc`: the benchmark shapes the upstream's bandwidth
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing packages needs root (run as root or with sudo)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed (install Rust with rustup first)" >&2
  exit 1
fi
