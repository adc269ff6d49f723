#!/usr/bin/env bash
# `make study`: the CPU study (README.md beside this file): CREAM, CREAM with per-prompt C, CREAM w/o RC and SRLM on
# SmolLM2-135M-Instruct, three training seeds each, from the one config study.yaml; then one `cream inspect` over
# every run (its section "Across seeds" pools the seeds), written to docs/results/ and between the markers of
# docs/RESULTS.md.
#
#   bash examples/study/run.sh                    # the study: 4 methods x seeds 0 1 2 (hours: README.md)
#   STUDY_QUICK=1 bash examples/study/run.sh      # the reduced variant, same methods and seeds, well under an hour
#   bash examples/study/run.sh --plan             # every run's stages and command lines; nothing run
#
# Settings (environment): SEEDS (default "0 1 2"); METHODS (default "cream cream-prompt cream-no-rc srlm"; oracle or
# cream-avg may be added); STUDY_DATA the data folder (default ../shared/data beside the repository; README.md lists its files);
# STUDY_QUICK=1 the reduced variant (QUICK_SETTINGS below); STUDY_RUNS the study folder (default runs/study, or
# runs/study-quick); CREAM the `cream` console script and PYTHON the Python with cream installed (default .venv's).
#
# Layout: STUDY_RUNS/seed-S/<method>/ is one `cream run` (its report: .../report/report.md). Within a seed, each run
# takes the finished stages of the seed's earlier runs whose fingerprint is the same (`--reuse-from`: the prompt
# split, SFT -> M1, the evaluation of M0 and M1, iteration-1 samples, and for cream-no-rc cream's iteration-1
# labels) instead of recomputing them; a later seed also takes the first seed's evaluation of M0 (no seed in it).
# Resumable: rerun after an interruption and finished stages are skipped.
#
# `cream run` overrides only --method, --seed and --out; STUDY_DATA and STUDY_QUICK are applied to a copy of
# study.yaml that examples/study/variant.py writes (STUDY_RUNS/study.yaml), study.yaml's settings with only the
# ones named here replaced.
set -euo pipefail
cd "$(dirname "$0")/../.."

PLAN=()
for arg in "$@"; do
    case "$arg" in
        --plan) PLAN=(--plan) ;;
        *) echo "run.sh: unknown argument '$arg' (expected --plan or nothing)" >&2; exit 2 ;;
    esac
done

CONFIG=examples/study/study.yaml
CREAM="${CREAM:-.venv/bin/cream}"
PYTHON="${PYTHON:-.venv/bin/python}"
DEFAULT_DATA=../shared/data  # what study.yaml's data paths name (../../../shared/data from examples/study/)
DATA="${STUDY_DATA:-$DEFAULT_DATA}"
QUICK="${STUDY_QUICK:-0}"
case "$QUICK" in
    0|"") QUICK=0; RUNS="${STUDY_RUNS:-runs/study}" ;;
    1) RUNS="${STUDY_RUNS:-runs/study-quick}" ;;
    *) echo "run.sh: STUDY_QUICK=$QUICK: expected 1 (the reduced variant) or 0" >&2; exit 2 ;;
esac
read -ra seeds <<< "${SEEDS:-0 1 2}"
read -ra methods <<< "${METHODS:-cream cream-prompt cream-no-rc srlm}"
if (( ${#seeds[@]} == 0 || ${#methods[@]} == 0 )); then
    echo "run.sh: SEEDS and METHODS must each name at least one" >&2
    exit 2
fi

# The files the study reads from the data folder (README.md: where each comes from).
NEEDED=(oasst2_srlm_pairs/oasst2_en_first_turn_ranked_pairs.jsonl
        gsm8k/train.jsonl arc/ARC-Easy-Train.jsonl arc/ARC-Challenge-Train.jsonl openbookqa/train.jsonl
        arc/ARC-Easy-Test.jsonl arc/ARC-Challenge-Test.jsonl openbookqa/test.jsonl siqa/dev.jsonl
        siqa/dev-labels.lst gsm8k/test.jsonl)
source examples/study/data.sh
source examples/study/seed_runs.sh
check_data_folder "$DATA" examples/study/README.md "${NEEDED[@]}"

# The reduced variant (README.md: what it costs): 16 SFT examples, 8 prompts per iteration, ≤ 48-token answers,
# 50 questions per multiple-choice task and 10 of GSM8K; the same methods, seeds and stages.
QUICK_SETTINGS=(sft.limit=16 sft.max_length=256 "prompts.sources.*.limit=4" sample.max_new_tokens=48
                label.judge_max_new_tokens=32 eval.harness.limit=50 eval.limit=10 eval.max_new_tokens=48)

settings=()
data_moved=()
if [[ "$(cd "$DATA" && pwd -P)" != "$(cd "$DEFAULT_DATA" 2>/dev/null && pwd -P)" ]]; then
    data_moved=(--data "$DEFAULT_DATA" "$DATA")
fi
if [[ "$QUICK" == 1 ]]; then
    settings=("${QUICK_SETTINGS[@]}")
fi
if (( ${#settings[@]} || ${#data_moved[@]} )); then  # a variant: study.yaml with these settings replaced
    if (( ${#PLAN[@]} )); then
        folder=$(mktemp -d)
        trap 'rm -rf "$folder"' EXIT
    else
        folder="$RUNS"
    fi
    "$PYTHON" examples/study/variant.py "$CONFIG" "$folder/study.yaml" ${data_moved[@]+"${data_moved[@]}"} \
        ${settings[@]+"${settings[@]}"}
    echo "run.sh: config $folder/study.yaml = $CONFIG with${data_moved[*]:+ the data in $DATA}" \
         "${settings[*]:-}" >&2
    CONFIG="$folder/study.yaml"
fi

start=$(date +%s)
all_runs=()  # every run of every seed: one study at the end (across seeds: mean ± sd per method, paired tests)
for seed in "${seeds[@]}"; do
    run_seed "$seed"
done
if [[ "$QUICK" == 1 ]]; then  # the reduced variant leaves docs/ alone
    inspect=(--out "$RUNS/study")
else
    inspect=(--out docs/results --markdown docs/RESULTS.md)
fi
if (( ${#all_runs[@]} == 1 )); then  # one run: its own report (a study compares several)
    inspect=()
fi
if (( ${#PLAN[@]} )); then
    echo "run.sh: then: $CREAM inspect ${all_runs[*]}${inspect[*]:+ }${inspect[*]:-}" >&2
    exit 0
fi
"$CREAM" inspect "${all_runs[@]}" ${inspect[@]+"${inspect[@]}"}
echo "run.sh: study finished in $(( ($(date +%s) - start) / 60 )) min;" \
     "${inspect[1]:+the study: ${inspect[1]}/study.md${inspect[3]:+ and ${inspect[3]}}; }each run's report:" \
     "$RUNS/seed-*/<method>/report/report.md" >&2
