#!/usr/bin/env bash
# The test command: starts the local servers (moto, kinesalite, tansu) on loopback if they are
# not running, then runs every unit and integration test. Extra arguments go to cargo nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/dev-servers.sh start >/dev/null
eval "$(scripts/dev-servers.sh env)"
# fault-injection: the crash harness aborts workers at each step of the commit protocols;
# testsuite: connectors assembled from in-process parts (the lineage property test).
cargo nextest run --features fault-injection,testsuite --lib --bins --tests --no-fail-fast "$@"
