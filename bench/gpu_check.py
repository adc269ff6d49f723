"""The GPU check: cream's GPU path measured in one command on a bare GPU machine, one table (Markdown + JSON).

    python bench/gpu_check.py                                     # random Llama-3.2-1B and Llama-3.1-8B shapes
    python bench/gpu_check.py --results docs/results/gpu          # also DIR/<card>-<date>.{md,json}, to commit
    python bench/gpu_check.py --device cpu --model random:tiny --large random:tiny --budget 900   # CPU rehearsal

The models are random-initialised at the shapes of real checkpoints (``--model random:llama-1b`` for the small rows,
``--large random:llama-8b`` for the LoRA and 8B rows; ``random:qwen2.5-1.5b``; bench/gpu/shapes.py), built on the GPU
in seconds, with the tokenizer folder ``--tokenizer`` (bench/gpu_pack.sh ships SmolLM2's; without it, the embedded
model's): nothing is downloaded, and throughput, memory and numerics are real while the text is noise. A checkpoint
folder or alias works too. On a GPU machine without trl/datasets, bench/gpu_pack.sh prepares the wheels and prints
the command.

Rows, a function per group of them (bench/gpu/groups.py; measured in bench/gpu/rows.py and bench/gpu/run_row.py), each
with its figure and, where one exists, its bound:

- labeling: `cream label`'s scorer, prefix sharing on and off: tokens/s and MFU against the card's bf16 peak, at
  both sizes;
- sampling: `cream sample`'s hf engine tokens/s (vLLM rows only where vLLM imports);
- the stored-vs-computed reference: the labeler's stored log-probs against the trainer's own reference forward
  (fp32: agree below 1e-3; bf16: no bias, |t| of the mean Δh below 4);
- DPO: step time and peak memory with the stored and the computed reference, full fine-tuning of the small model
  (default precision: fp32 master weights, bf16 autocast) and LoRA on the large one;
- mixed precision: the fraction of weights moved after ``--steps`` (5) steps at lr 1e-6 (pure bf16 keeps ~2 %);
- `cream run`, 1 iteration at small sizes: each stage's seconds and peak GPU memory.

The check stops starting rows when ``--budget`` seconds would be exceeded (each row has a rough estimate); such a
row says "budget" and ``--rows`` reruns groups of rows later. Exit 1 when a row failed (its reason in the table, the
traceback on stderr), 2 for a usage mistake; the table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # appended: an installed cream (the GPU pack's wheel) wins over the checkout

from bench.gpu import shapes  # noqa: E402
from bench.gpu.check import GROUPS, Check, table, write  # noqa: E402
from bench.gpu.groups import run_check  # noqa: E402

OUR_ENTRIES = ("work", "run", "run.yaml", "run.log", "gpu_check.md", "gpu_check.json")
PROMPTS = REPO / "examples" / "data" / "demo_prompts.jsonl"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="random:llama-1b", help="small rows: random:SHAPE, a checkpoint or an alias")
    ap.add_argument("--large", default="random:llama-8b", help="LoRA rows and the large labeling row ('none': skip)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder for random models (default: .gpu-pack/"
                    "tokenizer when present, else the embedded model's)")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                    help="every stage's dtype (auto: bf16 on CUDA, fp32 on CPU; bf16 on CPU rehearses GPU numerics)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds: no row starts that would end past it")
    ap.add_argument("--rows", default=",".join(GROUPS), help=f"groups to run, of {', '.join(GROUPS)}")
    ap.add_argument("--prompts", type=int, default=16, help="prompts sampled, labeled and trained on")
    ap.add_argument("--prompts-source", default=str(PROMPTS))
    ap.add_argument("--n", type=int, default=4, help="responses per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--label-prompts", type=int, default=24, help="prompts of the labeling rows (x --n responses)")
    ap.add_argument("--response-tokens", type=int, default=256, help="tokens per response in the labeling rows")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the labeling rows (median)")
    ap.add_argument("--steps", type=int, default=5, help="DPO optimizer steps per variant (lr 1e-6)")
    ap.add_argument("--batch-size", type=int, default=4, help="DPO pairs per step")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU when the card is not known")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (and OMP_NUM_THREADS of cream run)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-check", help="work folder (models, run)")
    ap.add_argument("--results", type=Path, default=None, help="also write DIR/<card>-<date>.{md,json}")
    args = ap.parse_args(argv)
    for name in ("prompts", "n", "max_new_tokens", "label_prompts", "response_tokens", "repeats", "steps",
                 "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: got {getattr(args, name)}, expected >= 1")
    args.rows = [g.strip() for g in args.rows.split(",") if g.strip()]
    unknown = sorted(set(args.rows) - set(GROUPS))
    if unknown:
        ap.error(f"--rows: unknown {', '.join(unknown)}; expected some of {', '.join(GROUPS)}")
    for flag in ("model", "large"):
        spec = getattr(args, flag)
        if shapes.is_random(spec):
            try:
                shapes.shape_of(spec)
            except ValueError as e:
                ap.error(str(e).replace("--model", f"--{flag}"))
    return args


def setup(args) -> Check:
    """Device, tokenizer, prompts and the work folder; a usage mistake raises CreamError (exit 2)."""
    import torch

    from cream_data.engines import models
    from cream_data.errors import CreamError
    from cream_data.inputs.prompts import load_prompts

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    models.check_device(device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()) and not (out / "gpu_check.json").exists():
        raise CreamError(f"--out {out}: holds files that are not an earlier gpu check's; pick an empty or new folder")
    for entry in OUR_ENTRIES:  # an earlier check's: removed, so nothing is resumed instead of measured
        path = out / entry
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Check(args, out, device, models.resolve_dtype(args.dtype, device), name)
    prompts = load_prompts(args.prompts_source)
    if max(args.prompts, args.label_prompts) > prompts.num_rows:
        raise CreamError(f"--prompts/--label-prompts: {args.prompts_source} has only {prompts.num_rows} prompts")
    ctx.state["prompts"] = prompts
    ctx.state["tokenizer"] = tokenizer(args)
    return ctx


def tokenizer(args):
    """The tokenizer folder (a tokenizer alone, as bench/gpu_pack.sh writes it), else the embedded model's."""
    from cream_data.engines import models
    from cream_data.errors import CreamError

    folder = Path(args.tokenizer or REPO / ".gpu-pack" / "tokenizer")
    if not (args.tokenizer or folder.is_dir()):
        return models.load(models.EMBEDDED_ALIAS, with_model=False)[1]
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise CreamError(f"--tokenizer {folder}: not a tokenizer folder ({str(e).strip().splitlines()[0][:150]})") \
            from None
    if not tok.chat_template:
        raise CreamError(f"--tokenizer {folder}: no chat template; cream needs a chat tokenizer")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainers and the cream run stay on the CPU too
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from cream_data.errors import CreamError

    try:
        ctx = setup(args)
    except CreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with contextlib.redirect_stdout(sys.stderr):  # the trainers' log lines: stdout holds the table alone
        rows = run_check(ctx)
    written = write(ctx, rows)
    print(table(ctx, rows), flush=True)
    ctx.say("written: " + ", ".join(map(str, written)))
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
