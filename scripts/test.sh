#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, component and multi-node
# tests, real-containerd tests, the end-to-end suite, and the chart checks.
# Runs as root on a fresh Debian machine (containerd and iptables need root).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

step() { printf '\n==> %s\n' "$*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "build"
cargo build --workspace --all-targets
step "tests (unit, component, multi-node, real containerd, end-to-end)"
cargo test --workspace
step "fuzz every untrusted-input parser (bounded smoke run; scripts/fuzz.sh for longer)"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" FUZZ_FLAGS="${FUZZ_FLAGS:---dev --sanitizer none}" scripts/fuzz.sh
if [ -x .ci/chart-checks.sh ]; then
  step "chart, image and dashboard checks"
  .ci/chart-checks.sh
fi
