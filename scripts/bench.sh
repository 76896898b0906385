#!/usr/bin/env bash
# Runs creepy-meow's benchmarks (issue 7) one after another and writes one report,
# target/bench/report.md: the machine, then each bench's numbers next to the baselines it
# measured in the same run. See docs/PERFORMANCE.md for what each one measures.
#
#   sudo scripts/bench.sh                      # all of them, about 17 minutes
#   sudo scripts/bench.sh provision accept     # only these (provision accept reads scale restart restore fabric events cluster memory)
#
# Sizes (env): CMBENCH_CREATES=30 CMBENCH_ACCEPT_SECS=3 CMBENCH_READ_SECS=3 CMBENCH_READ_BUSY=40
#              CMBENCH_SCALE_N=500 CMBENCH_FINISHED=10000 CMBENCH_QUEUED=1000 CMBENCH_RESTARTS=7
#              CMBENCH_RESTORE_N=100 CMBENCH_RECONCILE_RECORDS=1000 CMBENCH_RECONCILE_PASSES=20
#              CMBENCH_PEERS=100 CMBENCH_FABRIC_ROUNDS=7 CMBENCH_CLUSTER_SECS=3
#              CMBENCH_MEMORY_N=5000
#
# Every bench builds its own simulated server with the root tests' lab (tests/common/lab.rs:
# namespaces cm<tag>-sw and cm<tag>-s1, scratch directory /tmp/creepy-meow-lab-cm<tag>) and
# removes it, containers included. If a bench is killed, the next bench or root test sweeps
# what it left (labs whose process is gone). Nothing outside is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(provision accept reads scale restart restore fabric events cluster memory)
case "${1:-}" in
  -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
esac
BENCHES=("$@")
[ "${#BENCHES[@]}" -gt 0 ] || BENCHES=("${ALL[@]}")
for b in "${BENCHES[@]}"; do
  [[ " ${ALL[*]} " == *" $b "* ]] || { echo "bench: unknown bench $b (one of: ${ALL[*]})" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench: needs root (network namespaces, LXC); run with sudo" >&2; exit 1; }

bash scripts/install-deps.sh

OUT="$PWD/target/bench"
mkdir -p "$OUT"
rm -f "$OUT"/*.md
export CMBENCH_OUT="$OUT"

echo "bench: building (release)"
# Only the bench targets (a bare `cargo bench` would also build the unit tests in release).
cargo bench --locked --no-run --quiet $(printf -- '--bench %s ' "${BENCHES[@]}")

{
  echo "# creepy-meow benchmark report"
  echo
  echo "run: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo
  echo '```'
  echo "nproc: $(nproc)"
  grep -m1 'model name' /proc/cpuinfo || true
  free -h
  echo "kernel: $(uname -r)"
  df -h /tmp | tail -1
  lsblk -d -o NAME,ROTA,SIZE,MODEL 2>/dev/null | sed -n '1,4p' || true
  echo "lxc: $(lxc-create --version 2>/dev/null || echo '?')"
  echo '```'
  echo
} >"$OUT/report.md"

for b in "${BENCHES[@]}"; do
  echo "bench: $b (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "load average before $b: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/$b.md"
  start=$(date +%s)
  cargo bench --locked --quiet --bench "$b"
  echo "($b took $(( $(date +%s) - start )) s)" >>"$OUT/$b.md"
  { cat "$OUT/$b.md"; echo; } >>"$OUT/report.md"
done
echo "bench: report in $OUT/report.md"
