#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders that read peer bytes (fuzz/, cargo-fuzz + libFuzzer):
# each target runs for SECONDS (default 60). Needs a nightly toolchain and cargo-fuzz, installed
# here if missing. A crash leaves its input under fuzz/artifacts/<target>/; it becomes a
# regression test in the stable harnesses (swarm-api/tests/decoders.rs, fuzz_sync.rs,
# rpc_lines.rs, transport-dht/tests/decoders.rs), which CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/logs
status=0
for target in $(cd fuzz && cargo +nightly fuzz list); do
    log="fuzz/logs/$target.log"
    if (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$secs" \
        -rss_limit_mb=2048) >"$log" 2>&1; then
        echo "$target: ok, $(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
    else
        echo "$target: FAILED (see $log; the input is under fuzz/artifacts/$target/)"
        status=1
    fi
done
exit "$status"
