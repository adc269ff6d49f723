"""Class "paths": every relative path in a run config means the same file whatever folder `cream run` starts in (the
config's folder), and odd paths (spaces, non-ASCII, links that loop, empty strings) are handled or refused."""

from __future__ import annotations

import os

import yaml

from bench.hostile.helpers import DATA, has_rows, ok, refuse, run_config

A = "paths"


def _beside(d, w, key, value, *, method="cream", extra="", folder="cfg dir é"):
    """A config in ``d/folder`` whose ``key`` is the relative ``value``; `cream run --check` from ``d``."""
    cfg = d / folder
    cfg.mkdir()
    os.symlink(w.tiny, cfg / "tiny")
    os.symlink(w.rm, cfg / "rm")
    os.symlink(DATA, cfg / "data")
    (cfg / "judge.txt").write_text("Rate {request} and {response}.\n")
    (cfg / "acc.yaml").write_text("compute_environment: LOCAL_MACHINE\nnum_processes: 1\n")
    path = run_config(cfg, w, extra, method=method, **{key: value})
    return ["run", path.relative_to(d), "--check"]


def _resolved(needle_fn):
    """--check's settings (YAML) hold the path beside the config (as written, or with its links resolved)."""
    def check(d, r):
        want = needle_fn(d)
        try:
            shown = set(_strings(yaml.safe_load(r.out.rsplit("\n", 2)[0])))
        except yaml.YAMLError as e:
            return f"--check printed no YAML ({str(e)[:80]})"
        return None if {str(want), str(want.resolve())} & shown else f"--check does not show {want}"
    return check


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _run_dir_as_typed(d, r):
    line = next((ln for ln in r.out.splitlines() if ln.startswith("run_dir:")), "")
    return None if "cfg dir é" in line else f"--check shows {line[:80]!r}"


def case(name, key, value, want, **kw):
    return ok(A, name, lambda d, w: _beside(d, w, key, value, **kw),
              _resolved(lambda d: d / "cfg dir é" / want))


def _loop(d, w):
    os.symlink(d / "b", d / "a")
    os.symlink(d / "a", d / "b")
    return ["label", d / "a", "--out", d / "o", "--model", w.tiny]


def _through_file(d, w):
    (d / "f").write_text("a file")
    return ["run", run_config(d, w, run_dir="f/run"), "--check"]


def _stage_config(d, w):
    (d / "sub").mkdir()
    (d / "sub" / "s.yaml").write_text("n: 2\nmax_new_tokens: 4\n")
    return ["sample", w.prompts, "--out", d / "o", "--model", w.tiny, "--config", "sub/s.yaml"]


CASES = [
    case("model: relative to the config", "model", "tiny", "tiny"),
    case("prompts.source: relative to the config", "prompts", "{source: data/demo_prompts.jsonl, per_iteration: 4}",
         "data/demo_prompts.jsonl"),
    case("sft.data: relative to the config", "sft", "{data: data/demo_sft.jsonl, limit: 8}", "data/demo_sft.jsonl"),
    case("eval.data_dir: relative to the config", "eval", "{tasks: [arc_easy], limit: 2, data_dir: data/eval}",
         "data/eval"),
    case("run_dir: relative to the config", "run_dir", "out/run", "out/run"),
    case("label.reward_model: relative to the config", "label", "{reward_model: rm}", "rm", method="rm"),
    case("label.judge_template: relative to the config", "label", "{judge_template: judge.txt}", "judge.txt",
         method="srlm"),
    case("train.accelerate_config: relative to the config", "train",
         "{lr: 1.0e-3, launcher: accelerate, accelerate_config: acc.yaml}", "acc.yaml"),
    ok(A, "--check shows a non-ASCII path as typed", lambda d, w: _beside(d, w, "run_dir", "out"),
       _run_dir_as_typed),
    refuse(A, "a symlink loop as the input", _loop, "a"),
    refuse(A, "an empty input path", lambda d, w: ["label", "", "--out", d / "o", "--model", w.tiny], "responses"),
    refuse(A, "an empty --out", lambda d, w: ["label", w.responses, "--out", "", "--model", w.tiny], "--out"),
    refuse(A, "run --reuse-from a missing folder", lambda d, w: [
        "run", run_config(d, w), "--reuse-from", d / "nope", "--check"], "nope"),
    refuse(A, "run_dir through a file", _through_file, "f"),
    refuse(A, "model: a relative path that is not there", lambda d, w: [
        "run", run_config(d, w, model="./nope"), "--check"], "nope"),
    ok(A, "a stage's --config, run from another folder", _stage_config, has_rows("o", 8)),
]
