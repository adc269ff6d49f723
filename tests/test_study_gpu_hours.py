"""The GPU study's README (examples/study-gpu/README.md), its GPU-hours section: the hours tables are recomputed here
from the README's own inputs table, so a changed input without changed hours (or the reverse) fails; and the inputs
that come from the configs and the data (prompts, batches, test sizes) and the derived figures the prose states are
checked against them.
"""

from __future__ import annotations

import math
import re

from tests.support.scripts import load
from tests.test_study_gpu import CONFIGS, PAPER, SEEDS, STUDY


def readme_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of the text as (header cells, body rows of cells)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def named(rows: list[list[str]]) -> dict[str, list[str]]:
    found = {}
    for row in rows:
        m = re.fullmatch(r"`(\w+)`", row[0])
        assert m, row
        found[m.group(1)] = row[1:]
    return found


def readme_numbers() -> tuple[dict, dict, dict]:
    """The README's inputs for each size, and its hours per row name for each size."""
    wanted = {("input", "value", "basis"), ("input", "1B", "8B", "basis"), ("stage", "formula", "1B", "8B"),
              ("total", "formula", "1B", "8B")}
    found = [(tuple(h), rows) for h, rows in readme_tables((STUDY / "README.md").read_text(encoding="utf-8"))]
    assert sorted(h for h, _ in found if h in wanted) == sorted(wanted), "one table of each"
    tables = {h: named(rows) for h, rows in found if h in wanted}
    shared = {k: number(v[0]) for k, v in tables[("input", "value", "basis")].items()}
    inputs = {size: {**shared, **{k: number(v[i]) for k, v in tables[("input", "1B", "8B", "basis")].items()}}
              for i, size in enumerate(("1B", "8B"))}
    hours = {size: {k: number(v[i + 1]) for h in (("stage", "formula", "1B", "8B"), ("total", "formula", "1B", "8B"))
                    for k, v in tables[h].items()} for i, size in enumerate(("1B", "8B"))}
    return inputs["1B"], inputs["8B"], hours


def estimate(v: dict) -> dict[str, float]:
    """The README's formulas: hours of each stage, run, seed and the study (see its GPU-hours section)."""
    peak, h = v["peak_flops"], 3600
    q = v["prompts"] / v["iterations"]
    r = q * v["n"]
    seq = v["prompt_tokens"] + v["response_tokens"]
    fwd, trn = v["mfu_forward"] * peak * h, v["mfu_train"] * peak * h
    s = {"sft": v["sft_examples"] * v["sft_epochs"] * v["sft_tokens"] * 6 * v["params"] / trn,
         "sample": r * v["response_tokens"] / v["vllm_tok_s"] / h,
         "label_1": r * seq * 2 * (v["label_models_1"] * v["params"] + v["rm_params"]) / fwd,
         "label_2": r * seq * 2 * (v["label_models_2"] * v["params"] + v["rm_params"]) / fwd,
         "judge": math.ceil(r / v["judge_batch"]) * v["judge_steps"] * v["hf_step_s"] / h
         + r * v["judge_tokens"] * 2 * v["params"] / fwd,
         "train": q * 2 * seq * 6 * v["params"] / trn,
         "eval": v["eval_batches"] * v["eval_steps"] * v["hf_step_s"] / h}
    run = s["sft"] + 2 * s["sample"] + s["label_1"] + s["label_2"] + 2 * s["train"] + 4 * s["eval"]
    per_method = s["sample"] + s["label_2"] + 2 * s["train"] + 2 * s["eval"]
    seed = s["sft"] + s["sample"] + 2 * s["eval"] + 4 * per_method + 3 * s["label_1"] + 2 * s["judge"]
    k, gpus = v["seeds"], v["gpus"]
    study = k * seed - (k - 1) * s["eval"]
    evals = (10 * k - (k - 1)) * s["eval"]
    wall = (study - evals) / gpus + evals
    return {**s, "run": run, "run_srlm": run + 2 * s["judge"], "seed": seed,
            "seed_wall": (seed - 10 * s["eval"]) / gpus + 10 * s["eval"], "study": study, "study_wall": wall,
            "study_allocated": gpus * wall}


def test_readme_hours_are_the_arithmetic_of_its_inputs():
    small, large, hours = readme_numbers()
    for size, inputs in (("1B", small), ("8B", large)):
        want = estimate(inputs)
        assert set(hours[size]) == set(want), size
        wrong = {k: (hours[size][k], round(want[k], 2)) for k in want if abs(hours[size][k] - want[k]) > 0.0051}
        assert not wrong, f"{size}: README shows vs its inputs give (README hours to update): {wrong}"
    assert small["gpus"] == 1 and large["gpus"] == 8  # what the configs use
    assert (small["seeds"], small["iterations"], small["n"]) == (len(SEEDS), 2, 5)


def test_readme_inputs_match_the_configs_and_data(shared_data):
    small, large, _ = readme_numbers()
    paper = load(PAPER)
    assert small["n"] == paper["sample"]["n"] and small["iterations"] == paper["iterations"]
    for path in CONFIGS.values():
        assert small["judge_batch"] == load(path)["label"]["batch_size"], path
    assert small["eval_steps"] == paper["eval"]["max_new_tokens"]
    # D_U from the Hub: the 16,597 prompts read offline (above) and SIQA's train questions, one per train label
    siqa_train = sum(1 for line in (shared_data / "siqa" / "train-labels.lst").open(encoding="utf-8") if line.strip())
    assert small["prompts"] == large["prompts"] == 16597 + siqa_train
    sizes = {}
    for task, name in (("arc_easy", "arc/ARC-Easy-Test.jsonl"), ("arc_challenge", "arc/ARC-Challenge-Test.jsonl"),
                       ("openbookqa", "openbookqa/test.jsonl"), ("siqa", "siqa/dev.jsonl"),
                       ("gsm8k", "gsm8k/test.jsonl")):
        sizes[task] = sum(1 for line in (shared_data / name).open(encoding="utf-8") if line.strip())
    batch = paper["eval"]["batch_size"]
    assert small["eval_batches"] == sum(math.ceil(n / batch) for n in sizes.values())
    text = (STUDY / "README.md").read_text(encoding="utf-8")
    assert f"{sum(sizes.values()):,} questions" in text
    # the derived figures the prose states
    q = small["prompts"] / small["iterations"]
    r, seq = q * small["n"], small["prompt_tokens"] + small["response_tokens"]
    for figure in (f"Q = prompts / iterations = {q:,.1f}", f"R = Q · n = {r:,.1f}",
                   f"= {r * small['response_tokens'] / 1e6:.1f} M tokens", f"= {r * seq / 1e6:.1f} M tokens",
                   f"= {q * 2 * seq / 1e6:.1f} M tokens",
                   f"{int(small['eval_batches'] * small['eval_steps']):,} decode",
                   f"{sum(sizes.values()) * int(small['eval_steps']) / 1e6:.1f} M tokens"):
        assert figure in text, figure
    for params, shown in ((large["params"], "53,400 tokens/s at 8B"), (small["params"], "346,000 at")):
        bound = 256 * 3.35e12 / (2 * params)
        assert shown.split(" ")[0] == f"{round(bound, -2 if params > 5e9 else -3):,.0f}", (bound, shown)
        assert shown in text
