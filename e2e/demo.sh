#!/usr/bin/env bash
# Shoal demo on one machine: 3 nodes on loopback (127.0.0.1-3), each with its own
# containerd and Shoal, and an upstream registry on 127.0.0.200:5000. Node 1 pulls
# from the upstream, the upstream is stopped, nodes 2 and 3 pull through their
# peers; then it prints where every byte came from and tears everything down.
#
# Run as root on a fresh Debian machine with a Rust toolchain:
#   sudo bash e2e/demo.sh                      # defaults: --nodes 3 --layers 4K,1M,32M,256M
#   sudo bash e2e/demo.sh --nodes 5 --layers 4K,64M
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (containerd and iptables need it)" >&2
  exit 1
fi

missing=()
for pair in containerd:containerd ctr:containerd docker-registry:docker-registry skopeo:skopeo \
            protoc:protobuf-compiler iptables:iptables curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "demo.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u)
fi
command -v cargo >/dev/null 2>&1 || { echo "demo.sh: needs a Rust toolchain (cargo)" >&2; exit 1; }

cargo build --release --bin shoal
SHOAL_BIN="$PWD/target/release/shoal" exec cargo run --release -p shoal-e2e -- demo "$@"
