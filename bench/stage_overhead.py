"""What starting a stage as its own process costs (`cream run` starts every model stage as a `cream …` process).

Side by side in this process, ``--repeats`` times each (medians):

* in process: ``sample()`` called here, imports already warm — what `cream run --in-process` pays per stage
  (loading the model included: every stage loads its models in both modes);
* as a process: ``python -m cli.main sample …`` with the same settings — interpreter, imports, model load, work;
* forked from a stage server (cream_train/run/stage_server.py, what `cream run` does on a CPU machine): the same
  command line in a process forked from one that has imported torch, transformers and TRL once;

then the parts of a process start on their own: the interpreter, the `cream` command line (``import cli.main``),
the stage's imports (torch, transformers, the stage module) and loading the model. The stage is deliberately tiny
(2 prompts, 1 response of 1 token each) so the overhead is what is measured; on a real stage it is the same few
seconds against minutes of work.

    python bench/stage_overhead.py                      # the embedded SmolLM2-135M-Instruct, 5 repeats
    python bench/stage_overhead.py --model PATH --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PROMPTS = REPO / "examples" / "data" / "demo_prompts.jsonl"


def timed_process(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def timed_fork(server, argv: list[str], env: dict) -> float:
    """Seconds from asking the stage server for ``argv`` to the forked process's exit (its output drained)."""
    t0 = time.perf_counter()
    proc = server.spawn(argv, env, str(REPO))
    if proc is None:
        raise SystemExit("the stage server could not fork the stage (see its log)")
    proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"forked stage failed: {argv}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    py = sys.executable

    from cream_data.engines.models import resolve
    from cream_data.inputs.prompts import load_prompts
    from cream_data.stages.sample import sample
    from cream_data.stages.sample_config import SampleConfig
    from cream_data.tables import io
    from cream_train.run.stage_server import StageServer

    model = resolve(args.model).path or args.model  # the embedded alias is built once, here
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = tmp / "prompts"
        io.write_table(load_prompts(str(PROMPTS), limit=2), prompts, "prompts")
        cfg = SampleConfig(model=str(model), n=1, max_new_tokens=1, batch_size=2, seed=0)
        sample(prompts, cfg, tmp / "warm", overwrite=True)  # warm the imports, as a running `cream run` has them
        inproc, proc, forked = [], [], []
        server = StageServer(py, env, tmp / "server.out")

        def argv(out: str) -> list[str]:
            return [py, "-m", "cli.main", "sample", str(prompts), "--out", str(tmp / out), "--model", str(model),
                    "--n", "1", "--max-new-tokens", "1", "--batch-size", "2", "--seed", "0"]

        timed_fork(server, argv("fork-warm"), env)  # waits for the server's imports, as a run's first stage does
        for r in range(args.repeats):  # interleaved, so machine noise hits every mode alike
            t0 = time.perf_counter()
            sample(prompts, cfg, tmp / f"in-{r}", overwrite=True)
            inproc.append(time.perf_counter() - t0)
            proc.append(timed_process(argv(f"proc-{r}"), env))
            forked.append(timed_fork(server, argv(f"fork-{r}"), env))
        server.close()
        parts = {
            "interpreter (python -c pass)": [py, "-c", "pass"],
            "+ the cream command line (import cli.main)": [py, "-c", "import cli.main"],
            "+ a stage's imports (torch, transformers, sample)": [
                py, "-c", "import cli.main, torch, transformers, cream_data.stages.sample, cream_data.engines.hf_sample"],
            "+ loading the model (tokenizer and weights)": [
                py, "-c", "import cli.main; from cream_data.engines import models; "
                f"models.load(models.resolve({str(model)!r}))"],
        }
        times = {name: [timed_process(argv, env) for _ in range(args.repeats)] for name, argv in parts.items()}

    med_in, med_proc = statistics.median(inproc), statistics.median(proc)
    print(f"model {args.model}; {args.repeats} repeats; medians (s)")
    print(f"{'a 2-prompt sample stage, in process (model load included)':58s} {med_in:7.2f}")
    print(f"{'the same stage as its own process':58s} {med_proc:7.2f}")
    print(f"{'  overhead of a process per stage':58s} {med_proc - med_in:7.2f}   ratio {med_proc / med_in:.2f}x")
    med_fork = statistics.median(forked)
    print(f"{'the same stage forked from the stage server':58s} {med_fork:7.2f}")
    print(f"{'  overhead of a forked process per stage':58s} {med_fork - med_in:7.2f}   "
          f"new process / forked {med_proc / med_fork:.2f}x, {med_proc - med_fork:.2f} s saved a stage")
    for name, ts in times.items():
        print(f"{name:58s} {statistics.median(ts):7.2f}")


if __name__ == "__main__":
    main()
