#!/usr/bin/env bash
# `make study`: the small-scale replication study (docs/RESULTS.md). Four methods from one config with the same
# seeds; the method-independent stages (prompt split, SFT → M1, eval of M0/M1, iteration-1 samples, and for
# cream-no-rc also iteration-1 labels) run once, in the first run, and are reused by fingerprint.
# Resumable: rerun after an interruption and finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
CREAM=.venv/bin/cream
RUNS=${STUDY_RUNS:-runs/study}
CFG=examples/study/study.yaml
start=$(date +%s)
$CREAM run $CFG --method cream --out $RUNS/cream
for m in cream-no-rc srlm oracle; do
  $CREAM run $CFG --method $m --out $RUNS/$m --reuse-from $RUNS/cream
done
$CREAM inspect $RUNS/srlm $RUNS/cream-no-rc $RUNS/cream $RUNS/oracle --out docs/results --markdown docs/RESULTS.md
echo "study finished in $(( ($(date +%s) - start) / 60 )) min; tables: docs/RESULTS.md, plots: docs/results/"
