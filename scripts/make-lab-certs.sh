#!/usr/bin/env bash
# Makes a certificate authority of your own and a server certificate it signs, for a lab's
# `creepy-meow serve --tls-cert --tls-key` (never for production: see docs/OPERATIONS.md).
#
#   scripts/make-lab-certs.sh [--name NAME] DIR [SAN...]
#
# In DIR (created if missing):
#   ca.pem, ca.key        the lab CA (made on the first run, reused after: one CA for every
#                         server of the lab, so each client needs one --cacert)
#   NAME.pem, NAME.key    a server certificate and its key (NAME defaults to "server"),
#                         valid for each SAN: an IPv4 or IPv6 address becomes an IP SAN,
#                         anything else a DNS name [default: localhost 127.0.0.1 ::1]
#
#   scripts/make-lab-certs.sh /etc/creepy-meow/tls 10.0.0.1 node1.lab
#   creepy-meow serve --tls-cert /etc/creepy-meow/tls/server.pem \
#       --tls-key /etc/creepy-meow/tls/server.key --token-file ... --listen 10.0.0.1:8443 ...
#   creepy-meow list --server https://10.0.0.1:8443 --cacert /etc/creepy-meow/tls/ca.pem
#
# Keys are ECDSA P-256, written mode 600; certificates last 825 days. It never overwrites a
# server certificate: remove NAME.pem and NAME.key to make a new one.
set -euo pipefail

usage() { echo "usage: $0 [--name NAME] DIR [SAN...]  (--help tells more)" >&2; exit 2; }

NAME=server
case "${1:-}" in
  -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  --name) [ $# -ge 2 ] || usage; NAME="$2"; shift 2 ;;
esac
[ $# -ge 1 ] || usage
DIR="$1"; shift
[ $# -gt 0 ] || set -- localhost 127.0.0.1 ::1
case "$NAME" in ''|*/*|.*) echo "make-lab-certs: --name must be a plain file name" >&2; exit 2 ;; esac
command -v openssl >/dev/null || { echo "make-lab-certs: needs openssl (apt-get install openssl)" >&2; exit 1; }

# Each SAN as IP:... or DNS:..., comma-separated, for the subjectAltName extension.
san=""
for name in "$@"; do
  if [[ "$name" =~ ^[0-9]+(\.[0-9]+){3}$ || "$name" == *:* ]]; then kind=IP; else kind=DNS; fi
  san="${san:+$san,}$kind:$name"
done

mkdir -p "$DIR"
cd "$DIR"
umask 077
if [ -e "$NAME.pem" ] || [ -e "$NAME.key" ]; then
  echo "make-lab-certs: $DIR/$NAME.pem or $NAME.key exists; remove both to make a new pair" >&2
  exit 1
fi

# A name of its own per CA: a client that trusts another lab's CA then finds no issuer of
# that name (an unknown CA), rather than a signature that does not verify.
if [ ! -e ca.pem ]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -days 825 -subj "/CN=creepy-meow lab CA $(openssl rand -hex 4)" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made the lab CA: $DIR/ca.pem (its key: $DIR/ca.key)"
elif [ ! -e ca.key ]; then
  echo "make-lab-certs: $DIR/ca.pem exists without ca.key; cannot sign with it" >&2
  exit 1
fi

ext="$(mktemp)"
trap 'rm -f "$ext" "$NAME.csr"' EXIT
cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
EOF
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
  -subj "/CN=$1" -keyout "$NAME.key" -out "$NAME.csr" 2>/dev/null
openssl x509 -req -in "$NAME.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
  -days 825 -extfile "$ext" -out "$NAME.pem" 2>/dev/null
chmod 644 ca.pem "$NAME.pem"
echo "made $DIR/$NAME.pem and $DIR/$NAME.key for $san"
