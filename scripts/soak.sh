#!/usr/bin/env bash
# The soak test (issue 17, tests/soak_root.rs): two simulated servers and a seeded random mix of
# requests, daemon kills and one full disk, for a bounded time, checking the invariants after
# every restart. Needs root (network namespaces, LXC, tmpfs mounts).
#
#   scripts/soak.sh [SECONDS] [SEED]     # defaults: 120 s, a seed from the clock (printed)
#
# A failing run prints its seed: the same SECONDS and SEED replay the same operations.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/soak.sh: needs root (network namespaces, LXC, tmpfs mounts); run it with sudo" >&2
  exit 1
fi
seconds="${1:-120}"
seed="${2:-$(date +%s)}"
case "$seconds$seed" in
  *[!0-9]*) echo "scripts/soak.sh: SECONDS and SEED are whole numbers" >&2; exit 2 ;;
esac
bash scripts/install-deps.sh
export SOAK_SECONDS="$seconds" SOAK_SEED="$seed"
exec cargo test --locked --test soak_root -- --ignored --nocapture
