#!/usr/bin/env bash
# bench/gpu_pack.sh [DIR]: everything the lent GPU machine needs to run bench/gpu_check.py, in one folder that
# travels with the working tree (issue #24). `make gpu-pack` runs it; DIR defaults to .gpu-pack (git-ignored).
#
# Why: the GPU machine (Python 3.12, torch 2.11 + CUDA, transformers 5.17; bench/gpu_machine.txt lists what it
# has) reaches no package registry and has no trl, datasets or pydantic. So we bring, prepared here:
#   DIR/wheels/     the wheels of what the check's path imports and the machine lacks (trl, datasets, pydantic
#                   and their needs), of small packages we pin whose version there is unknown, and of this project;
#   DIR/tokenizer/  the embedded SmolLM2-135M-Instruct tokenizer with its chat template (the random models of
#                   the check use it; nothing can be downloaded there);
#   DIR/command.txt the one command for the device tool's `run`, with `carry: [".gpu-pack"]`; also printed.
# tests/test_gpu_pack.py rehearses the command on the CPU in a venv that holds only what the GPU has
# (bench/gpu_rehearsal_venv.sh).
#
# Settings (environment): PY (default .venv/bin/python) reads the versions we test with and extracts the
# tokenizer; PACK_PYTHON (default 3.12, the GPU's) is the Python the wheels are for; GPU_CHECK_ARGS replaces the
# check's arguments below and GPU_SCRATCH (default /tmp) the device's scratch folder (the rehearsal sets both).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$(realpath -m "${1:-$REPO/.gpu-pack}")
PACK=${DIR#"$REPO"/}  # as the command names it: relative to the repo root when inside it

# On the device: the wheels go to $SCRATCH/site and the check works in $SCRATCH/gpu-check (its models are GBs:
# not under $OUT, which the device tool copies back); the tables go to $OUT, expanded there.
SCRATCH=${GPU_SCRATCH:-/tmp}
CHECK_ARGS=${GPU_CHECK_ARGS:-"--model random:llama-1b --tokenizer $PACK/tokenizer --budget 450 --out $SCRATCH/gpu-check --results \$OUT"}
TIMEOUT_S=490  # the check's hard limit (its --budget leaves slack: a row may outrun its estimate); with the install
               # and the imports the command ends inside 9 minutes
PY=${PY:-$REPO/.venv/bin/python}
PACK_PYTHON=${PACK_PYTHON:-3.12}
MAX_MIB=40

# Wheels, at the versions of $PY's environment (the ones the test suite runs with). One version of each.
#  Missing on the GPU, imported on the check's path: trl (cream_train.dpo), datasets (trl, cream_train.prefs) with
#  dill and multiprocess, and pydantic with its needs (typer 0.29 parses every option through it: `cream run`).
MISSING="trl datasets dill multiprocess pydantic pydantic-core annotated-types typing-inspection"
#  On the GPU at an unknown version: what pyproject.toml pins (typer, rich, peft, filelock) or a packed wheel needs
#  recent (datasets: fsspec<=2026.9.0; pydantic: typing-extensions>=4.16). Small: cheap insurance.
PINNED="typer rich peft filelock fsspec typing-extensions"
# Imported before the check starts: a missing module fails in seconds, by name, not rows later.
PREFLIGHT="trl datasets pydantic cream_train.train cream_train.sft cream_data.stages.sample cream_data.stages.label cli.main"

log=$(mktemp)
src=$(mktemp -d)
trap 'rm -rf "$src" "$log"' EXIT
rm -rf "$DIR/wheels" "$DIR/tokenizer" "$DIR/command.txt"
mkdir -p "$DIR/wheels"

echo "gpu-pack: wheels for CPython $PACK_PYTHON, manylinux x86_64 -> $DIR/wheels" >&2
pins=$("$PY" -c 'import importlib.metadata as m, sys; print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
  $MISSING $PINNED)
read -ra PINS <<<"$pins"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PACK_PYTHON" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DIR/wheels" "${PINS[@]}" 2> >(grep -v "^WARNING: Location 'file:" >&2)

# The project as a wheel, built from a copy of the working tree (what travels): no build/ or egg-info is left in
# the shared checkout. The check puts an installed cream ahead of the checkout, so the wheel is built every time.
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$src"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation "$src" -w "$DIR/wheels" >"$log" 2>&1 \
  || { cat "$log" >&2; exit 1; }

echo "gpu-pack: the embedded model's tokenizer -> $DIR/tokenizer" >&2
(cd "$REPO" && CREAM_CACHE=${CREAM_CACHE:-$REPO/.cache/cream} "$PY" - "$DIR/tokenizer" <<'EOF'
import sys

from cream_data.engines import models

_, tok, _ = models.load(models.EMBEDDED_ALIAS, with_model=False)  # one-line error without the embedded model
tok.save_pretrained(sys.argv[1])
EOF
)
test -f "$DIR/tokenizer/chat_template.jinja" || { echo "gpu-pack: the tokenizer has no chat template" >&2; exit 1; }

mib=$(du -sm --apparent-size "$DIR" | cut -f1)
if ((mib > MAX_MIB)); then
  echo "gpu-pack: $DIR is $mib MiB, over $MAX_MIB MiB (the working tree that travels is at most 64 MiB)" >&2
  exit 1
fi

# The command: the image's own versions to $OUT (they keep bench/gpu_machine.txt true), the wheels installed
# ahead of the image's packages, offline (the machine reaches nothing: fail at once, not after time-outs), the
# imports checked, the check (its log to $OUT), the cream run's log to $OUT; its exit code is the check's.
INSTALL="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SCRATCH/site $PACK/wheels/*.whl"
IMPORTS="python3 -c 'import ${PREFLIGHT// /, }; print(\"imports ok\")'"
COMMAND="python3 -m pip list --format=freeze >\$OUT/gpu-pip-list.txt 2>&1; $INSTALL"
COMMAND+=" && export PYTHONPATH=$SCRATCH/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 && set -o pipefail"
COMMAND+=" && { $IMPORTS && timeout -k 10 $TIMEOUT_S python3 bench/gpu_check.py $CHECK_ARGS; } 2>&1 | tee \$OUT/gpu-check.log"
COMMAND+="; rc=\$?; cp $SCRATCH/gpu-check/run.log \$OUT/cream-run.log 2>/dev/null; exit \$rc"  # --out of CHECK_ARGS
if ((${#COMMAND} > 2000)); then
  echo "gpu-pack: the command is ${#COMMAND} characters, over the device tool's 2000" >&2
  exit 1
fi
printf '%s\n' "$COMMAND" >"$DIR/command.txt"

echo "gpu-pack: $DIR, $mib MiB; wheels (KiB):" >&2
(cd "$DIR/wheels" && du -k --apparent-size -- *.whl | sed 's/^/  /') >&2
echo "gpu-pack: for the device tool's run, with carry [\"$PACK\"] and timeout_s 570 ($DIR/command.txt):" >&2
printf '%s\n' "$COMMAND"
