#!/usr/bin/env bash
# The GPU machine rehearsed on the CPU (issue #24): a venv that holds only what the lent GPU machine has
# preinstalled (bench/gpu_machine.txt), at the versions seen there, with this checkout's CPU torch linked in
# where the GPU has its CUDA torch. tests/test_gpu_pack.py installs the pack (bench/gpu_pack.sh) into it the way
# the device command does and runs the check, so a module that the GPU lacks fails here, not on device minutes.
#
#   bash bench/gpu_rehearsal_venv.sh [TORCH_PYTHON]   # prints the venv's folder on its last line
#
# TORCH_PYTHON (default .venv/bin/python): an interpreter whose torch is linked in; the venv is made from its base
# Python (a torch build is for one Python version). Built once into .cache/gpu-rehearsal-<hash>/, the hash of what
# goes in (the list below, the Python and torch versions); a second call reuses it. The stamp file is written last.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCH_PYTHON=${1:-$REPO/.venv/bin/python}
MACHINE=$REPO/bench/gpu_machine.txt

# What the venv gets (pip --no-deps, exactly these). Every name must be on bench/gpu_machine.txt. Versions: the
# GPU's where a session saw them; else a release out by 2026-11 (the image was read on 2026-11-17) that installs
# on our Python, mostly the newest or the one .venv has. Only what the GPU check's path needs: torch's,
# transformers', huggingface_hub's, accelerate's, datasets' and trl's needs, and our own (pyproject.toml;
# matplotlib: the report that `cream run` writes).
REQUIREMENTS='
transformers==5.17.0
accelerate==1.15.0
huggingface-hub==1.33.0
safetensors==0.8.0
tokenizers==0.23.2
numpy==2.4.6  # GPU: 2.5.2, which needs Python >= 3.12 (the rehearsal runs the Python of the linked torch)
filelock==4.2.11
typing-extensions==4.16.0
sympy==1.14.0
mpmath==1.3.0
networkx==3.6.1
jinja2==3.1.6
markupsafe==3.0.4
fsspec==2026.9.0
click==8.5.1
hf-xet==1.8.0
httpx==0.28.1
httpcore==1.0.9
h11==0.16.0
anyio==4.16.0
idna==3.20
certifi==2026.10.19.post1
packaging==26.3
pyyaml==6.0.3
tqdm==4.70.1
regex==2026.11.15
typer==0.29.1
shellingham==1.5.4
annotated-doc==0.0.6
rich==15.0.0
markdown-it-py==4.3.0
mdurl==0.1.2
pygments==2.21.0
psutil==7.2.2
peft==0.21.2
pandas==3.1.1
python-dateutil==2.9.0.post0
six==1.17.0
pyarrow==26.0.1
xxhash==4.1.0
scipy==1.17.1
matplotlib==3.11.2
contourpy==1.3.3
cycler==0.12.1
fonttools==4.68.0
kiwisolver==1.5.1
pillow==13.0.0
pyparsing==3.3.3
'

normalize() { tr 'A-Z_.' 'a-z--' | sed -E 's/-+/-/g'; }  # PEP 503 names

# Every requirement is on the GPU machine's list (the test checks the built venv again).
on_gpu=$(grep -v '^#' "$MACHINE" | sed 's/==.*//' | normalize | sort -u)
wanted=$(echo "$REQUIREMENTS" | sed 's/#.*//; /^ *$/d; s/==.*//' | normalize | sort -u)
extra=$(comm -23 <(echo "$wanted") <(echo "$on_gpu"))
if [[ -n $extra ]]; then
  echo "gpu_rehearsal_venv.sh: not on bench/gpu_machine.txt: $extra" >&2
  exit 2
fi

# torch: where it lives, its site-packages entries (torch, torchgen, functorch, its dist-info), the base Python.
read -r BASE_PYTHON PY_VERSION TORCH_VERSION TORCH_SITE TORCH_ENTRIES < <("$TORCH_PYTHON" - <<'EOF'
import importlib.metadata as md, pathlib, sys, torch
dist = md.distribution("torch")
site = pathlib.Path(torch.__file__).resolve().parents[1]
top = sorted({f.parts[0] for f in dist.files if ".." not in f.parts and len(f.parts) > 1})
print(getattr(sys, "_base_executable", sys.executable), "%d.%d" % sys.version_info[:2], torch.__version__, site,
      ",".join(top))
EOF
)

HASH=$(printf '%s\n' "$REQUIREMENTS" "$PY_VERSION" "$TORCH_VERSION" "$TORCH_SITE" | sha256sum | cut -c1-12)
VENV=$REPO/.cache/gpu-rehearsal-$HASH
STAMP=$VENV/.rehearsal-complete
mkdir -p "$REPO/.cache"

exec 9>"$VENV.lock"
flock 9  # one build at a time; a second caller waits and then reuses it
if [[ ! -f $STAMP ]]; then
  t0=$SECONDS
  trap '[[ -f $STAMP ]] || rm -rf "$VENV"' EXIT  # a failed build leaves nothing behind
  rm -rf "$VENV"
  "$BASE_PYTHON" -m venv "$VENV"
  echo "$REQUIREMENTS" | sed 's/ *#.*//; /^$/d' >"$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install -q --no-compile --no-deps --only-binary=:all: --disable-pip-version-check \
    -r "$VENV/requirements.txt" 2> >(grep -v "^WARNING: Location 'file:" >&2)
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for entry in ${TORCH_ENTRIES//,/ }; do
    ln -s "$TORCH_SITE/$entry" "$site/$entry"
  done
  echo "built in $((SECONDS - t0)) s from $BASE_PYTHON (Python $PY_VERSION), torch $TORCH_VERSION linked from" \
    "$TORCH_SITE" >"$STAMP"
fi
echo "$VENV"
