#!/usr/bin/env bash
# creepy-meow demo: two simulated servers (network namespaces on one switch) on this machine,
# a daemon on each, containers created through the client, and proof that containers on
# different servers reach each other on the same VLAN and not across VLANs. Server 1's daemon
# serves HTTPS with a token on its underlay address, and is driven from server 2.
# Then the cluster act: the switch drops multicast, three more servers share an etcd
# (`serve --etcd`, no --peers), find each other, and their containers reach each other.
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
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
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
# Simulated servers (namespace $TAG-<name>, files under $WORK/<name>), and other namespaces.
SERVERS=(s1 s2)
OTHERS=()

on() { local ns="$1"; shift; nsenter --net="/run/netns/$ns" -- "$@"; }

cleanup() {
  local rc=$?
  if [ "$KEEP" -eq 1 ] && [ "$rc" -eq 0 ]; then return; fi
  say "tearing down"
  for s in "${SERVERS[@]}"; do
    local ns="$TAG-$s" lxc="$WORK/$s/lxc"
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
  local all=("$SW")
  for s in "${SERVERS[@]}" "${OTHERS[@]}"; do all+=("$TAG-$s"); done
  for ns in "${all[@]}"; do
    [ -e "/run/netns/$ns" ] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  done
  for ns in "${all[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
  echo "removed namespaces $TAG-* and $WORK"
}
trap cleanup EXIT

say "two simulated servers on one switch (underlay 10.77.0.0/24 inside the namespaces)"
ip netns add "$SW"
ip -n "$SW" link add sw0 type bridge mcast_snooping 0
ip -n "$SW" link set sw0 up
# plug NAME N: namespace $TAG-NAME on the switch, its eth1 at 10.77.0.N.
plug() {
  local ns="$TAG-$1" n="$2"
  ip netns add "$ns"
  ip link add eth1 netns "$ns" type veth peer name "sw-p$n" netns "$SW"
  ip -n "$SW" link set "sw-p$n" master sw0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.0.$n/24" dev eth1
  ip -n "$ns" link set eth1 up
}
for i in 1 2; do
  plug "s$i" "$i"
  echo "server $i: namespace $TAG-s$i, eth1 10.77.0.$i"
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

say "cluster act: the switch drops multicast; three more servers share an etcd, no --peers"
# As most clouds do: nft on the switch drops IPv4 multicast (counted, to show it did).
on "$SW" nft -f - <<'EOT'
table bridge demo {
  chain c {
    type filter hook forward priority 0;
    ip daddr 224.0.0.0/4 counter drop;
  }
}
EOT
echo "switch: IPv4 multicast dropped (nft table bridge demo)"
OTHERS+=(etcd)
plug etcd 10
mkdir -p "$WORK/etcd"
ETCD=http://10.77.0.10:2379
# One etcd member in a namespace of its own on the switch; clients reach it across the switch.
nsenter --net="/run/netns/$TAG-etcd" -- etcd --name demo --data-dir "$WORK/etcd/data" \
  --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster demo=http://127.0.0.1:2380 >"$WORK/etcd/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  on "$TAG-etcd" etcdctl --endpoints="$ETCD" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
on "$TAG-etcd" etcdctl --endpoints="$ETCD" endpoint health
for i in 11 12 13; do
  SERVERS+=("c$i")
  plug "c$i" "$i"
  mkdir -p "$WORK/c$i"
  echo "-- server $i (namespace $TAG-c$i, eth1 10.77.0.$i): creepy-meow serve --host-id $i --etcd $ETCD"
  nsenter --net="/run/netns/$TAG-c$i" -- "$BIN" serve --host-id "$i" --etcd "$ETCD" \
    --data-dir "$WORK/c$i/data" --lxc-path "$WORK/c$i/lxc" >"$WORK/c$i/daemon.log" 2>&1 &
  PIDS+=($!)
done
# c N ARGS...: the client on cluster server N, against its own daemon.
c() { local i="$1"; shift; on "$TAG-c$i" "$BIN" "$@"; }
for i in 11 12 13; do
  for _ in $(seq 100); do
    on "$TAG-c$i" curl -sf http://127.0.0.1:8080/healthz 2>/dev/null | grep -q '"state":"connected"' && break
    sleep 0.2
  done
  on "$TAG-c$i" curl -sf http://127.0.0.1:8080/healthz | grep -q '"state":"connected"' \
    || { cat "$WORK/c$i/daemon.log"; exit 1; }
done
echo "-- server 11: creepy-meow cluster hosts"
c 11 cluster hosts
for i in 11 12 13; do
  c "$i" create --id "2${i: -1}" --vlan 2 --ip "192.168.2.2${i: -1}/24"
done
echo "-- server 11: creepy-meow cluster containers"
c 11 cluster containers
echo "-- server 11's vxlan2 floods by unicast to the other members (bridge fdb show dev vxlan2):"
on "$TAG-c11" bridge fdb show dev vxlan2 | grep '^00:00:00:00:00:00'
echo "-- server 12: the same container ID again is refused, naming the server that holds it"
c 12 create --id 21 --vlan 2 --ip 192.168.2.99/24 || echo "(refused, exit $?)"

say "reachability across the cluster, from inside each container"
for i in 11 12 13; do
  for j in 11 12 13; do
    [ "$i" = "$j" ] && continue
    from="container2${i: -1}" to="192.168.2.2${j: -1}"
    if on "$TAG-c$i" lxc-attach -P "$WORK/c$i/lxc" -n "$from" -- ping -c 2 -W 2 "$to" >/dev/null; then
      echo "OK   $from (server $i) -> $to (server $j): reachable without multicast"
    else
      echo "FAIL $from cannot reach $to"; exit 1
    fi
  done
done
echo "-- the switch's drop rule counted the multicast it dropped:"
on "$SW" nft list table bridge demo | grep counter

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
  nsenter --net=/run/netns/$TAG-c11 $BIN cluster hosts      # the cluster act (servers 11-13, etcd $ETCD)
  nsenter --net=/run/netns/$TAG-c12 $BIN cluster containers
Tear down:
  kill ${PIDS[*]}; for c in container5; do nsenter --net=/run/netns/$TAG-s1 lxc-destroy -f -P $WORK/s1/lxc -n \$c; done
  for c in container6 container8; do nsenter --net=/run/netns/$TAG-s2 lxc-destroy -f -P $WORK/s2/lxc -n \$c; done
  for i in 11 12 13; do nsenter --net=/run/netns/$TAG-c\$i lxc-destroy -f -P $WORK/c\$i/lxc -n container2\${i: -1}; done
  for n in s1 s2 c11 c12 c13 etcd; do ip netns del $TAG-\$n; done; ip netns del $SW; rm -rf $WORK
EOT
  exit 0
fi

say "destroying through the client"
s1 destroy 5
on "$TAG-s2" "$BIN" destroy 6
on "$TAG-s2" "$BIN" destroy 8
for i in 11 12 13; do c "$i" destroy "2${i: -1}"; done
echo "-- server 11: creepy-meow cluster containers (the destroys gave their reservations back)"
c 11 cluster containers
say "demo passed"
