#!/usr/bin/env bash
# Installs the system packages creepy-meow's demo and tests need, if any is missing.
# Debian/Ubuntu, as root. Safe to run again: it does nothing when all are present.
set -euo pipefail

need=()
command -v lxc-create >/dev/null || need+=(lxc)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v nsenter >/dev/null || need+=(util-linux)
command -v pgrep >/dev/null || need+=(procps)
command -v curl >/dev/null || need+=(curl)
# The unicast peers' root test drops multicast on its simulated switch with nft.
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v openssl >/dev/null || need+=(openssl)
# The HTTPS tests check servers against the system's CA bundle too.
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# Cluster mode: the etcd-client crate compiles etcd's protos with protoc at build time; the
# cluster root test and the demo's cluster act start etcd and read it with etcdctl.
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
