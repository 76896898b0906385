#!/usr/bin/env bash
# Runs every test: unit tests, API tests over real HTTP, and the root tests that build simulated
# servers in network namespaces with real LXC. Needs root; installs missing packages first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the root tests need root (network namespaces, LXC); run it with sudo" >&2
  exit 1
fi
bash scripts/install-deps.sh
exec cargo test --locked "$@"
