#!/usr/bin/env bash
# The GPU study (README.md beside this file): the paper's rows — SRLM, CREAM w/o RC, CREAM and Oracle (an external
# reward model: method rm) — with the paper's settings at 8B or 1B, for several training seeds; after each seed's
# four runs, `cream inspect` over them (the paper's two tables) and over its CREAM run (the premise table).
#
#   bash examples/study-gpu/run.sh                  # 8B (Llama-3-8B-Instruct, one machine x 8 GPUs), seeds 0 1 2
#   SIZE=1b bash examples/study-gpu/run.sh          # 1B (Llama-3.2-1B-Instruct, one GPU)
#   SEEDS="3 4" bash examples/study-gpu/run.sh      # more seeds: their own run directories, the same tables
#   bash examples/study-gpu/run.sh --plan           # every run's stages and command lines; nothing run or written
#
# Settings (environment): SIZE 1b | 8b (default 8b); CONFIG another run config instead; SEEDS (default "0 1 2");
# METHODS (default "cream cream-no-rc srlm rm"); RUNS the study folder (default runs/study-gpu/<config name>);
# CREAM the `cream` console script (default: the one on PATH).
#
# Layout: RUNS/seed-S/<method>/ is one `cream run` (its report, with the premise table: RUNS/seed-S/<method>/report/),
# RUNS/seed-S/study/ the comparison of seed S's runs (study.md, study.json, plots).
# Within a seed, each run takes the finished stages of the seed's earlier runs whose fingerprint is the same
# (`--reuse-from`: the prompt split, SFT -> M1, the evaluation of M0 and M1, iteration-1 samples, and for
# cream-no-rc cream's iteration-1 labels) instead of recomputing them; a later seed also takes the first seed's
# evaluation of M0 (no seed in it). Resumable: rerun after an interruption and finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."

PLAN=()
for arg in "$@"; do
    case "$arg" in
        --plan) PLAN=(--plan) ;;
        *) echo "run.sh: unknown argument '$arg' (expected --plan or nothing)" >&2; exit 2 ;;
    esac
done

SIZE="${SIZE:-8b}"
case "$SIZE" in
    1b) DEFAULT_CONFIG=examples/study-gpu/llama-3.2-1b.yaml ;;
    8b) DEFAULT_CONFIG=examples/study-gpu/llama-3-8b.yaml ;;
    *) echo "run.sh: SIZE=$SIZE: expected 1b or 8b (or set CONFIG)" >&2; exit 2 ;;
esac
CONFIG="${CONFIG:-$DEFAULT_CONFIG}"
if [[ ! -f "$CONFIG" ]]; then
    echo "run.sh: config not found: $CONFIG (run from anywhere; a relative CONFIG is read from the repository root)" >&2
    exit 2
fi
CREAM="${CREAM:-cream}"
RUNS="${RUNS:-runs/study-gpu/$(basename "$CONFIG" .yaml)}"
read -ra seeds <<< "${SEEDS:-0 1 2}"
read -ra methods <<< "${METHODS:-cream cream-no-rc srlm rm}"
if (( ${#seeds[@]} == 0 || ${#methods[@]} == 0 )); then
    echo "run.sh: SEEDS and METHODS must each name at least one" >&2
    exit 2
fi

start=$(date +%s)
all_runs=()  # every run of every seed: pooled at the end (across seeds: mean ± sd per method, paired tests)
for seed in "${seeds[@]}"; do
    earlier=()  # run directories whose finished stages this seed's runs may take
    if [[ "$seed" != "${seeds[0]}" ]]; then
        earlier+=("$RUNS/seed-${seeds[0]}/${methods[0]}")
    fi
    runs=()
    for method in "${methods[@]}"; do
        out="$RUNS/seed-$seed/$method"
        reuse=()
        for dir in ${earlier[@]+"${earlier[@]}"}; do  # a plan names only the runs that exist already
            if (( ${#PLAN[@]} == 0 )) || [[ -f "$dir/manifest.json" ]]; then
                reuse+=(--reuse-from "$dir")
            fi
        done
        echo "run.sh: seed $seed, method $method -> $out" >&2
        "$CREAM" run "$CONFIG" --method "$method" --seed "$seed" --out "$out" ${reuse[@]+"${reuse[@]}"} \
            ${PLAN[@]+"${PLAN[@]}"}
        earlier+=("$out")
        runs+=("$out")
        all_runs+=("$out")
    done
    if (( ${#PLAN[@]} )); then
        echo "run.sh: then: $CREAM inspect ${runs[*]} --out $RUNS/seed-$seed/study" >&2
        echo "run.sh: then: $CREAM inspect $RUNS/seed-$seed/${methods[0]}" >&2
        continue
    fi
    if (( ${#runs[@]} > 1 )); then  # the paper's two tables, paired differences, each method's pairs vs the oracle
        "$CREAM" inspect "${runs[@]}" --out "$RUNS/seed-$seed/study"
    fi
    "$CREAM" inspect "$RUNS/seed-$seed/${methods[0]}"  # its report again: both tables, agreement, premise
done
if (( ${#seeds[@]} > 1 )); then  # the seeds pooled: ΔAvg mean ± sd per method, paired t-tests across seeds
    if (( ${#PLAN[@]} )); then
        echo "run.sh: then: $CREAM inspect ${all_runs[*]} --out $RUNS/study" >&2
    else
        "$CREAM" inspect "${all_runs[@]}" --out "$RUNS/study"
    fi
fi
if (( ${#PLAN[@]} == 0 )); then
    echo "run.sh: study finished in $(( ($(date +%s) - start) / 60 )) min; pooled over seeds: $RUNS/study/study.md;" \
         "per seed: $RUNS/seed-*/study/study.md," \
         "each run's report (premise table included): $RUNS/seed-*/<method>/report/report.md" >&2
fi
