#!/usr/bin/env bash
# The main job: build swarm-chat and run its demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo run --quiet --release -p swarm-examples --bin swarm-chat -- demo "$@"
