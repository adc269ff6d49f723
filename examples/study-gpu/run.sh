#!/usr/bin/env bash
# The GPU study (README.md beside this file): the paper's rows — SRLM, CREAM w/o RC, CREAM and Oracle (an external
# reward model: method rm) — with the paper's settings at 8B or 1B, for several training seeds; after each seed's
# four runs, `cream inspect` over them (the paper's two tables) and over its CREAM run (the premise table).
#
#   bash examples/study-gpu/run.sh                  # 8B (Llama-3-8B-Instruct, one machine x 8 GPUs), seeds 0 1 2
#   SIZE=1b bash examples/study-gpu/run.sh          # 1B (Llama-3.2-1B-Instruct, one GPU)
#   SEEDS="3 4" bash examples/study-gpu/run.sh      # more seeds: their own run directories, the same tables
#   bash examples/study-gpu/run.sh --plan           # every run's stages and command lines; nothing run or written
#   STUDY_DATA=~/data bash examples/study-gpu/run.sh    # the data in another folder (a plain clone: below)
#
# Settings (environment): SIZE 1b | 8b (default 8b); CONFIG another run config instead; SEEDS (default "0 1 2");
# METHODS (default "cream cream-no-rc srlm rm"); RUNS the study folder (default runs/study-gpu/<config name>);
# STUDY_DATA the data folder (default ../shared/data beside the repository, below); CREAM the `cream` console script
# (default: the one on PATH) and PYTHON the Python that has cream installed (default: `python` on PATH). A relative
# CONFIG, RUNS or STUDY_DATA is read from the repository root.
#
# The data: the configs read their SFT data and evaluation sets from one folder, ../shared/data beside the
# repository (D_U's task questions come from the Hub). Elsewhere, put these public files in a folder with this
# layout and run with STUDY_DATA=DIR (README.md: the same list):
#   oasst2_srlm_pairs/oasst2_en_first_turn_ranked_pairs.jsonl  OpenAssistant oasst2, English first-turn
#       prompt/answer pairs with their rank, as made by github.com/AndrisWillow/self-rewarding-models
#       (app/datasets/0_EFT_seed_data_input.jsonl): the SFT data (rank 0) and D_S's prompts
#   gsm8k/test.jsonl  GSM8K (github.com/openai/grade-school-math, grade_school_math/data/)
#   arc/ARC-Easy-Test.jsonl, arc/ARC-Challenge-Test.jsonl  AI2 ARC (ARC-V1-Feb2018), the original jsonl
#   openbookqa/test.jsonl  OpenBookQA main, the same jsonl layout as ARC
#   siqa/dev.jsonl, siqa/dev-labels.lst  Social IQa v1 dev (socialiqa-train-dev.zip) and its line-aligned labels
# run.sh stops (one line, before any `cream` call) when the folder lacks a file the config reads there. With
# STUDY_DATA naming another folder, `cream run` gets a copy of the config with every path into ../shared/data moved
# there (RUNS/<config file name>, written by examples/study/variant.py; with --plan a temporary one), so its stages'
# fingerprints differ from runs made from ../shared/data and the two are not mixed.
#
# Layout: RUNS/seed-S/<method>/ is one `cream run` (its report, with the premise table: RUNS/seed-S/<method>/report/),
# RUNS/seed-S/study/ the comparison of seed S's runs (study.md, study.json, plots).
# Within a seed, each run takes the finished stages of the seed's earlier runs whose fingerprint is the same
# (`--reuse-from`: the prompt split, SFT -> M1, the evaluation of M0 and M1, iteration-1 samples, and for
# cream-no-rc cream's iteration-1 labels) instead of recomputing them; a later seed also takes the first seed's
# evaluation of M0 (no seed in it). Resumable: rerun after an interruption and finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
source examples/study/seed_runs.sh  # run_seed: one seed's runs, shared with the CPU study

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

DEFAULT_DATA=../shared/data  # where the configs' data paths point (../../../shared/data from examples/study-gpu/)
DATA="${STUDY_DATA:-$DEFAULT_DATA}"
PYTHON="${PYTHON:-python}"
if ! command -v "$PYTHON" > /dev/null; then
    echo "run.sh: PYTHON=$PYTHON: no such command (expected the Python that has cream installed; set PYTHON=...)" >&2
    exit 2
fi
# The files CONFIG reads inside ../shared/data, relative to it: sft.data, prompts' files and, in eval.data_dir, the
# test file of each evaluated task (eval.tasks and eval.harness.tasks; SIQA: dev.jsonl and dev-labels.lst). A path
# elsewhere is the config's own: `cream run` checks it.
needed_text=$("$PYTHON" - "$CONFIG" "$DEFAULT_DATA" << 'EOF'
import sys
from pathlib import Path

config, folder = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
try:
    import yaml

    sys.path.insert(0, "examples/study")
    from cream_data.errors import CreamError
    from cream_data.inputs.prompts import BENCHMARKS
    from cream_data.vocab import TASKS
    from variant import absolute_paths
except ImportError as e:
    sys.exit(f"run.sh: PYTHON={sys.executable} cannot import {e.name} (expected the Python that has cream installed; "
             "set PYTHON=...)")


def task_files(data_dir, tasks, split):
    """The files of ``tasks`` (a list, or a comma-separated string) that cream reads from ``data_dir``."""
    for task in tasks.split(",") if isinstance(tasks, str) else tasks or ():
        if task in BENCHMARKS:  # an unknown task: `cream run` names it
            path = Path(data_dir) / (BENCHMARKS[task].train if split == "train" else BENCHMARKS[task].file)
            yield path
            if task == "siqa":  # its gold labels, line-aligned, beside the questions
                yield path.with_name(f"{path.stem}-labels.lst")


try:
    raw = absolute_paths(yaml.safe_load(config.read_text(encoding="utf-8")), config.resolve().parent)
    sft, prompts, evals = (raw.get(k) if isinstance(raw.get(k), dict) else {} for k in ("sft", "prompts", "eval"))
    sources = [e for e in prompts.get("sources") or () if isinstance(e, dict)]
    paths = [Path(p) for p in [sft.get("data"), *(e.get("source") for e in sources)] if isinstance(p, str)]
    if prompts.get("data_dir"):
        for e in sources:
            if "task" in e:
                paths += task_files(prompts["data_dir"], [e["task"]], e.get("split", "train"))
    if evals.get("data_dir"):
        paths += task_files(evals["data_dir"], evals.get("tasks", TASKS), "test")
        if isinstance(evals.get("harness"), dict):
            paths += task_files(evals["data_dir"], evals["harness"].get("tasks", TASKS), "test")
except (OSError, yaml.YAMLError, CreamError, AttributeError, TypeError) as e:
    sys.exit(f"run.sh: {config}: cannot read its data paths ({e.__class__.__name__})")
inside = [str(p.relative_to(folder)) for p in paths if folder in p.parents]
print(" ".join(dict.fromkeys(inside)))
EOF
) || exit 2
read -ra needed <<< "$needed_text"
data_moved=()
if (( ${#needed[@]} )); then
    source examples/study/data.sh
    check_data_folder "$DATA" examples/study-gpu/README.md "${needed[@]}"
    if [[ "$(cd "$DATA" && pwd -P)" != "$(cd "$DEFAULT_DATA" 2> /dev/null && pwd -P)" ]]; then
        data_moved=(--data "$DEFAULT_DATA" "$DATA")
    fi
elif [[ -n "${STUDY_DATA:-}" ]]; then
    echo "run.sh: $CONFIG reads nothing from $DEFAULT_DATA: STUDY_DATA=$STUDY_DATA changes nothing" >&2
fi
if (( ${#data_moved[@]} )); then  # a variant: CONFIG with its paths into ../shared/data moved into DATA
    if (( ${#PLAN[@]} )); then
        folder=$(mktemp -d)
        trap 'rm -rf "$folder"' EXIT
    else
        folder="$RUNS"
    fi
    variant="$folder/$(basename "$CONFIG")"
    # written beside and renamed: the tasks of a Slurm array (study.sbatch) write the same file at the same time
    "$PYTHON" examples/study/variant.py "$CONFIG" "$variant.$$" "${data_moved[@]}" || exit 2
    mv -f "$variant.$$" "$variant"
    echo "run.sh: config $variant = $CONFIG with the data in $DATA" >&2
    CONFIG="$variant"
fi

start=$(date +%s)
all_runs=()  # every run of every seed: pooled at the end (across seeds: mean ± sd per method, paired tests)
for seed in "${seeds[@]}"; do
    run_seed "$seed"
    runs=("${seed_runs[@]}")
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
