#!/usr/bin/env bash
# creepy-meow demo: two simulated servers (network namespaces on one switch) on this machine,
# a daemon on each, containers created through the client, and proof that containers on
# different servers reach each other on the same VLAN and not across VLANs. Server 1's daemon
# serves HTTPS with a token on its underlay address, and is driven from server 2.
#
#   sudo scripts/demo.sh          # run it and clean up
#   sudo scripts/demo.sh --keep   # leave it running and print how to explore it
#
# It touches nothing outside the namespaces and the temporary directory it creates, and
# removes them on exit (also on failure or Ctrl-C), unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0
case "${1:-}" in
  --keep) KEEP=1 ;;
  "") ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (network namespaces, LXC); run with sudo" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing missing system packages, building"
bash scripts/install-deps.sh
cargo build --locked --quiet
BIN="$PWD/target/debug/creepy-meow"

TAG="cmdemo$$"
WORK="$(mktemp -d /tmp/creepy-meow-demo.XXXXXX)"
SW="$TAG-sw"
PIDS=()

on() { local ns="$1"; shift; nsenter --net="/run/netns/$ns" -- "$@"; }

cleanup() {
  local rc=$?
  if [ "$KEEP" -eq 1 ] && [ "$rc" -eq 0 ]; then return; fi
  say "tearing down"
  for i in 1 2; do
    local ns="$TAG-s$i" lxc="$WORK/s$i/lxc"
    [ -e "/run/netns/$ns" ] || continue
    if [ -d "$lxc" ]; then
      for c in $(on "$ns" lxc-ls -P "$lxc" 2>/dev/null); do
        on "$ns" lxc-stop -k -P "$lxc" -n "$c" >/dev/null 2>&1 || true
        on "$ns" lxc-destroy -P "$lxc" -n "$c" >/dev/null 2>&1 || true
      done
    fi
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  # Anything else still living in the namespaces (nothing should be) goes too.
  for ns in "$TAG-s1" "$TAG-s2" "$SW"; do
    [ -e "/run/netns/$ns" ] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  done
  for ns in "$TAG-s1" "$TAG-s2" "$SW"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
  echo "removed namespaces $TAG-* and $WORK"
}
trap cleanup EXIT

say "two simulated servers on one switch (underlay 10.77.0.0/24 inside the namespaces)"
ip netns add "$SW"
ip -n "$SW" link add sw0 type bridge mcast_snooping 0
ip -n "$SW" link set sw0 up
for i in 1 2; do
  ns="$TAG-s$i"
  ip netns add "$ns"
  ip link add eth1 netns "$ns" type veth peer name "sw-p$i" netns "$SW"
  ip -n "$SW" link set "sw-p$i" master sw0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.0.$i/24" dev eth1
  ip -n "$ns" link set eth1 up
  echo "server $i: namespace $ns, eth1 10.77.0.$i"
done

say "host fabric on each server: creepy-meow setup --host-id N"
for i in 1 2; do
  echo "-- server $i"
  on "$TAG-s$i" "$BIN" setup --host-id "$i"
done
for v in 2 3 4; do
  on "$TAG-s1" ping -c 1 -W 2 "192.168.$v.2" >/dev/null
  echo "server 1 reaches server 2 on vlan $v (192.168.$v.2) over vxlan$v"
done

say "a daemon on each server: server 1 on its underlay, HTTPS with a token; server 2 on 127.0.0.1:8080"
echo "-- a lab CA and server 1's certificate: scripts/make-lab-certs.sh DIR 10.77.0.1"
bash scripts/make-lab-certs.sh "$WORK/tls" 10.77.0.1
head -c 24 /dev/urandom | base64 >"$WORK/token"
S1_URL=https://10.77.0.1:8443
S1_FLAGS=(--listen 10.77.0.1:8443 --tls-cert "$WORK/tls/server.pem" --tls-key "$WORK/tls/server.key"
  --token-file "$WORK/token")
# Server 1 as its clients on server 2 see it: the URL, the lab CA, the token.
s1() { on "$TAG-s2" env CREEPY_MEOW_SERVER="$S1_URL" CREEPY_MEOW_CACERT="$WORK/tls/ca.pem" \
  CREEPY_MEOW_TOKEN="$(cat "$WORK/token")" "$BIN" "$@"; }
for i in 1 2; do
  mkdir -p "$WORK/s$i"
  flags=()
  [ "$i" -eq 1 ] && flags=("${S1_FLAGS[@]}")
  # nsenter execs the daemon, so $! is the daemon itself.
  nsenter --net="/run/netns/$TAG-s$i" -- "$BIN" serve --host-id "$i" --data-dir "$WORK/s$i/data" \
    --lxc-path "$WORK/s$i/lxc" "${flags[@]}" >"$WORK/s$i/daemon.log" 2>&1 &
  PIDS+=($!)
done
# Both asked from server 2: server 1 across the switch, over HTTPS with the lab CA.
for i in 1 2; do
  health=(http://127.0.0.1:8080/healthz)
  [ "$i" -eq 1 ] && health=(--cacert "$WORK/tls/ca.pem" "$S1_URL/healthz")
  for _ in $(seq 100); do
    on "$TAG-s2" curl -sf "${health[@]}" >/dev/null 2>&1 && break
    sleep 0.1
  done
  on "$TAG-s2" curl -sf "${health[@]}" >/dev/null || { cat "$WORK/s$i/daemon.log"; exit 1; }
  echo "server $i: daemon up (log: $WORK/s$i/daemon.log)"
done
echo "-- server 2 asks server 1 without the lab CA: refused, nothing sent"
on "$TAG-s2" env CREEPY_MEOW_TOKEN="$(cat "$WORK/token")" "$BIN" list --server "$S1_URL" || echo "(refused, exit $?)"

say "creating containers through the client"
echo "-- server 1, from server 2 over HTTPS: creepy-meow create --id 5 --vlan 2 --ip 192.168.2.5/24 (--server $S1_URL, CA and token from the environment)"
s1 create --id 5 --vlan 2 --ip 192.168.2.5/24
echo "-- server 2: the original tool's request: curl --data \"id=6&vlan=2&ip=192.168.2.6/24\""
on "$TAG-s2" curl -s --data "id=6&vlan=2&ip=192.168.2.6/24" http://127.0.0.1:8080/api/container/create; echo
JOB=$(on "$TAG-s2" "$BIN" jobs --json --limit 1 | sed -n 's/.*"id": "\([0-9a-f-]\{36\}\)".*/\1/p' | head -1)
on "$TAG-s2" "$BIN" job "$JOB" --wait
echo "-- server 2: creepy-meow create --id 8 --vlan 3 --ip 192.168.2.8/24 (same subnet, other VLAN)"
on "$TAG-s2" "$BIN" create --id 8 --vlan 3 --ip 192.168.2.8/24
echo "-- server 2: a request that fails validation (VLAN 9 is not served)"
on "$TAG-s2" "$BIN" create --id 9 --vlan 9 --ip 192.168.9.9/24 || echo "(refused, exit $?)"

say "what the servers say"
s1 list
on "$TAG-s2" "$BIN" list
s1 info 5

say "reachability, from inside container5 on server 1"
attach() { local i="$1" c="$2"; shift 2; on "$TAG-s$i" lxc-attach -P "$WORK/s$i/lxc" -n "$c" -- "$@"; }
if attach 1 container5 ping -c 2 -W 2 192.168.2.6 >/dev/null; then
  echo "OK   container5 (server 1, vlan 2) -> container6 (server 2, vlan 2): reachable"
else
  echo "FAIL container5 cannot reach container6"; exit 1
fi
PID5=$(on "$TAG-s1" lxc-info -P "$WORK/s1/lxc" -n container5 -p -H)
if nsenter --net="/proc/$PID5/ns/net" ping -c 1 -W 2 -M do -s 1422 192.168.2.6 >/dev/null; then
  echo "OK   a full 1450-byte packet with DF crosses the overlay"
else
  echo "FAIL full-MTU packet lost"; exit 1
fi
if attach 1 container5 ping -c 2 -W 1 192.168.2.8 >/dev/null 2>&1; then
  echo "FAIL container5 (vlan 2) reached container8 (vlan 3)"; exit 1
else
  echo "OK   container5 (vlan 2) -> container8 (server 2, vlan 3, same subnet): isolated"
fi

if [ "$KEEP" -eq 1 ]; then
  say "left running (--keep)"
  cat <<EOT
Explore (server 1 serves HTTPS on 10.77.0.1:8443, with a token):
  export CREEPY_MEOW_SERVER=$S1_URL CREEPY_MEOW_CACERT=$WORK/tls/ca.pem CREEPY_MEOW_TOKEN=\$(cat $WORK/token)
  nsenter --net=/run/netns/$TAG-s2 $BIN list
  nsenter --net=/run/netns/$TAG-s2 $BIN info 5
  unset CREEPY_MEOW_SERVER CREEPY_MEOW_CACERT CREEPY_MEOW_TOKEN
  nsenter --net=/run/netns/$TAG-s1 lxc-attach -P $WORK/s1/lxc -n container5
  nsenter --net=/run/netns/$TAG-s2 $BIN jobs
  ip -n $TAG-s1 -d link show vxlan2
Tear down:
  kill ${PIDS[*]}; for c in container5; do nsenter --net=/run/netns/$TAG-s1 lxc-destroy -f -P $WORK/s1/lxc -n \$c; done
  for c in container6 container8; do nsenter --net=/run/netns/$TAG-s2 lxc-destroy -f -P $WORK/s2/lxc -n \$c; done
  ip netns del $TAG-s1; ip netns del $TAG-s2; ip netns del $SW; rm -rf $WORK
EOT
  exit 0
fi

say "destroying through the client"
s1 destroy 5
on "$TAG-s2" "$BIN" destroy 6
on "$TAG-s2" "$BIN" destroy 8
say "demo passed"
