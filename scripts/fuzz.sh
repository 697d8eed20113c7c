#!/usr/bin/env bash
# Fuzzes every parser that reads untrusted input (targets in fuzz/) for a
# bounded time each, and fails if any target crashes.
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=60 scripts/fuzz.sh reference digest
#   FUZZ_FLAGS="--dev --sanitizer none" scripts/fuzz.sh   # quicker build (CI's smoke run)
#
# Only stable Rust is needed: RUSTC_BOOTSTRAP=1 lets stable take the nightly
# flags cargo-fuzz passes (-Zsanitizer=address; stable ships the asan runtime).
# New inputs go to a scratch corpus; the checked-in seeds in fuzz/corpus/ are
# only read. A crash leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
# Extra cargo-fuzz flags for both build and run, e.g. "--dev --sanitizer none".
read -r -a flags <<<"${FUZZ_FLAGS:-}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "==> building ${#targets[@]} fuzz targets"
cargo fuzz build ${flags[@]+"${flags[@]}"}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
printf '\n%-20s %12s %10s %s\n' target executions corpus result
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  result=ok
  if ! cargo fuzz run ${flags[@]+"${flags[@]}"} "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    result=CRASH
    failed+=("$target")
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
  corpus="$(find "$scratch/$target" -type f | wc -l)"
  printf '%-20s %12s %10s %s\n' "$target" "${runs:-?}" "$corpus" "$result"
  if [ "$result" != ok ]; then
    tail -n 40 "$log"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
