#!/usr/bin/env bash
# The test command: starts the local servers (moto, kinesalite, tansu) on loopback if they are
# not running, then runs every unit and integration test. Extra arguments go to cargo nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/dev-servers.sh start >/dev/null
eval "$(scripts/dev-servers.sh env)"
cargo nextest run --lib --bins --tests --no-fail-fast "$@"
