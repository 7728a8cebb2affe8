#!/usr/bin/env bash
# The test command (README, line 2; CI runs exactly this): installs what the tests need, builds once, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh --env)"
cargo build --release --bins
eval "$(scripts/slurm-up.sh --env)"  # a real single-node Slurm cluster for tests/it/slurm.rs (root, no systemd)
# The README's first command, as a smoke run: emoji dataset built, daemon up, one epoch recorded over the HTTP API.
RUSH_HOME="$(mktemp -d)" RUSH_PORT="${RUSH_DEMO_PORT:-18470}" ./scripts/demo.sh --smoke
cargo test --release --no-fail-fast -- --test-threads="${RUSH_TEST_THREADS:-2}" "$@"
