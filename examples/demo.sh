#!/usr/bin/env bash
# `make demo`: the CREAM loop on the embedded SmolLM2-135M-Instruct, then the report.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
.venv/bin/cream run examples/demo.yaml
echo "demo finished in $(( $(date +%s) - start ))s; explore it with: .venv/bin/cream inspect runs/demo  |  .venv/bin/cream sql runs/demo \"SELECT * FROM eval LIMIT 5\""
