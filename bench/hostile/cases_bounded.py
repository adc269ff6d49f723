"""Class "bounded": readers of configs and data finish in bounded time and memory on hostile input, numbers have
honest bounds, and texts beyond a model's context follow a stated rule — one line, never a traceback or a hang."""

from __future__ import annotations

import json
import os

from bench.hostile.helpers import either, fifo, refuse, run_config, says

B = "bounded"
BIG = "x" * 600_000
NOT_FOUND = ("not found", "no such")  # it is there: it is no regular file


def _run(**keys):
    return lambda d, w: ["run", run_config(d, w, **keys), "--check"]


def _run_extra(extra):
    return lambda d, w: ["run", run_config(d, w, extra), "--check"]


def _special_config(kind):
    def setup(d, w):
        if kind == "fifo":
            return ["run", fifo(d / "c.yaml"), "--check"]
        return ["run", "/dev/zero" if kind == "zero" else d, "--check"]
    return setup


def _prompts_source(kind):
    def setup(d, w):
        src = fifo(d / "p.jsonl") if kind == "fifo" else "/dev/zero"
        return ["run", run_config(d, w, prompts=f"{{source: {src}, per_iteration: 4}}"), "--check"]
    return setup


def _stage_config(kind):
    def setup(d, w):
        cfg = fifo(d / "s.yaml") if kind == "fifo" else "/dev/zero"
        return ["sample", w.prompts, "--out", d / "o", "--model", w.tiny, "--config", cfg]
    return setup


def _sample(*extra):
    return lambda d, w: ["sample", w.prompts, "--out", d / "o", "--model", w.tiny, "--max-new-tokens", "4", *extra]


def _label(*extra):
    return lambda d, w: ["label", w.responses, "--out", d / "o", "--model", w.tiny, *extra]


def _train(*extra):
    return lambda d, w: ["train", w.labeled, "--model", w.tiny, "--out", d / "m", "--max-steps", "1", *extra]


def _prompts_file(name, text_fn):
    def setup(d, w):
        p = d / name
        data = text_fn()
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
        return ["prompts", p, "--out", d / "o"]
    return setup


def _deep_json():
    return "[" * 100_000 + "]" * 100_000 + "\n"


def _deep_field():
    return json.dumps({"prompt": "hi"})[:-1] + ', "meta": ' + "{\"a\": " * 50_000 + "1" + "}" * 50_000 + "}\n"


def _csv_long():
    return "prompt,answer\n" + '"' + "y" * 200_000 + '",1\n' + "short question?,2\n"


def _fifo_prompts(d, w):
    return ["prompts", fifo(d / "p.jsonl"), "--out", d / "o"]


def _responses_beyond_context(d, w):
    return ["label", w.responses, "--out", d / "o", "--model", w.tiny_short, "--long-responses", "error"]


def _yaml_laughs():
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def _publish_laughs(d, w):
    run = w.copy("run", d)
    (run / "config.yaml").write_text(_yaml_laughs())
    return ["publish", run, "--repo-id", "me/x", "--dry-run", "--out", d / "pub"]


def _publish_huge_config(d, w):
    run = w.copy("run", d)
    with open(run / "config.yaml", "a") as f:
        f.write("note: " + "z" * 3_000_000 + "\n")
    return ["publish", run, "--repo-id", "me/x", "--dry-run", "--out", d / "pub"]


def _too_long_scored_or_counted(d, r):
    return says("too long", "long")(d, r) if r.code == 0 else None


CASES = [
    refuse(B, "run config: a 600 KB model value", _run(model=BIG), "model"),
    refuse(B, "run config: a 600 KB value for an int key", _run(iterations=BIG), "iterations"),
    refuse(B, "run config: a 600 KB key", _run_extra(f"{BIG}: 1\n")),
    refuse(B, "run config is /dev/zero", _special_config("zero"), "/dev/zero", timeout=30, absent=NOT_FOUND),
    refuse(B, "run config is a named pipe", _special_config("fifo"), "c.yaml", timeout=30, absent=NOT_FOUND),
    refuse(B, "run config is a folder", _special_config("dir"), "folder", timeout=30, absent=NOT_FOUND),
    refuse(B, "prompts.source is /dev/zero", _prompts_source("zero"), "/dev/zero", timeout=30, absent=NOT_FOUND),
    refuse(B, "prompts.source is a named pipe", _prompts_source("fifo"), "p.jsonl", timeout=30, absent=NOT_FOUND),
    refuse(B, "sample --config /dev/zero", _stage_config("zero"), "/dev/zero", timeout=30, absent=NOT_FOUND),
    refuse(B, "sample --config is a named pipe", _stage_config("fifo"), "s.yaml", timeout=30, absent=NOT_FOUND),
    refuse(B, "prompts: the source is a named pipe", _fifo_prompts, "p.jsonl", timeout=30, absent=NOT_FOUND),
    refuse(B, "sample --n 40000 (beyond int16 response_idx)", _sample("--n", "40000"), "--n"),
    refuse(B, "sample --n 10**12", _sample("--n", str(10**12)), "--n"),
    refuse(B, "sample --seed 2**70", _sample("--seed", str(2**70)), "--seed"),
    refuse(B, "sample --seed below -2**63", _sample("--seed", str(-2**63 - 1)), "--seed"),
    refuse(B, "sample --iteration 2**40", _sample("--iteration", str(2**40)), "--iteration"),
    refuse(B, "sample --max-new-tokens 2**40", _sample("--max-new-tokens", str(2**40)), "--max-new-tokens"),
    refuse(B, "sample --top-p nan", _sample("--top-p", "nan"), "--top-p"),
    refuse(B, "sample --temperature inf", _sample("--temperature", "inf"), "--temperature"),
    refuse(B, "sample --batch-size 0", _sample("--batch-size", "0"), "--batch-size"),
    refuse(B, "label --iteration 2**40", _label("--iteration", str(2**40)), "--iteration"),
    refuse(B, "label --max-batch-tokens 0", _label("--max-batch-tokens", "0"), "--max-batch-tokens"),
    refuse(B, "train --lr nan", _train("--lr", "nan"), "--lr"),
    refuse(B, "train --beta -1", _train("--beta", "-1"), "--beta"),
    refuse(B, "train --max-length -5", _train("--max-length", "-5"), "--max-length"),
    refuse(B, "run config: seed 2**70", _run(seed=str(2**70)), "seed"),
    refuse(B, "run config: sample.n 10**9", _run(sample="{n: 1000000000}"), "sample.n"),
    refuse(B, "run config: iterations 10**12", _run(iterations=str(10**12)), "iterations"),
    refuse(B, "run config: a billion laughs", _run_extra(_yaml_laughs()), timeout=60),
    refuse(B, "prompts: JSONL nested 100,000 levels", _prompts_file("p.jsonl", _deep_json), "p.jsonl", timeout=60),
    refuse(B, "prompts: a field nested 50,000 levels", _prompts_file("p.jsonl", _deep_field), "p.jsonl", timeout=60),
    either(B, "prompts: a CSV field of 200,000 characters", _prompts_file("p.csv", _csv_long),
           lambda d, r: None, timeout=60),
    refuse(B, "prompts: UTF-16 bytes", _prompts_file("p.jsonl", lambda: '{"prompt": "hi"}\n'.encode("utf-16")),
           "p.jsonl"),
    refuse(B, "prompts: binary garbage", _prompts_file("p.jsonl", lambda: os.urandom(4096)), "p.jsonl"),
    refuse(B, "label: responses beyond the model's context (--long-responses error)", _responses_beyond_context,
           "context"),
    either(B, "label: responses beyond the model's context (default rule)", lambda d, w: [
        "label", w.responses, "--out", d / "o", "--model", w.tiny_short], _too_long_scored_or_counted),
    refuse(B, "publish: a run whose config.yaml is a billion laughs", _publish_laughs, "config.yaml", timeout=60),
    refuse(B, "publish: a run whose config.yaml is 3 MB", _publish_huge_config, "config.yaml", timeout=60),
    refuse(B, "run config: a nested 40-level value", _run(sample="{n: " + "[" * 40 + "]" * 40 + "}"), "line 8"),
    refuse(B, "sample: prompts all beyond the context", lambda d, w: [
        "sample", w.prompts, "--out", d / "o", "--model", w.tiny_short, "--max-new-tokens", "60"], "context"),
]
