"""Class "contract": the command line as users mistype it — unknown or misspelled flags, wrong types, out-of-range
values, options that do not go together, queries that would write — each one line that names the flag or value."""

from __future__ import annotations

from bench.hostile.helpers import DATA, refuse, run_config

C = "contract"


def label(*extra):
    return lambda d, w: ["label", w.responses, "--out", d / "o", "--model", w.tiny, *extra]


def sample(*extra):
    return lambda d, w: ["sample", w.prompts, "--out", d / "o", "--model", w.tiny, *extra]


def train(*extra):
    return lambda d, w: ["train", w.labeled, "--model", w.tiny, "--out", d / "m", *extra]


def sql(query):
    return lambda d, w: ["sql", w.labeled, query]


def run(*extra, **keys):
    return lambda d, w: ["run", run_config(d, w, **keys), *extra]


CASES = [
    refuse(C, "sample: an unknown flag", sample("--temprature", "0.5"), "--temprature"),
    refuse(C, "label: a flag of another command", label("--n", "4"), "--n"),
    refuse(C, "sample --n abc", sample("--n", "abc"), "--n"),
    refuse(C, "sample --n 0", sample("--n", "0"), "--n"),
    refuse(C, "sample --engine xyz", sample("--engine", "xyz"), "--engine"),
    refuse(C, "sample --shard 3/2", sample("--shard", "3/2"), "--shard"),
    refuse(C, "sample --shard 0/0", sample("--shard", "0/0"), "--shard"),
    refuse(C, "sample: --out missing", lambda d, w: ["sample", w.prompts, "--model", w.tiny], "--out"),
    refuse(C, "label --consistency-between current,current", label("--consistency-between", "current,current"),
           "--consistency-between"),
    refuse(C, "label --consistency-between current,astrology", label("--consistency-between", "current,astrology"),
           "astrology"),
    refuse(C, "label --reward oracle without --prompts", label("--reward", "oracle"), "--prompts"),
    refuse(C, "label --judge-template without placeholders", lambda d, w: (d / "j.txt").write_text("Rate it.") and [
        "label", w.responses, "--out", d / "o", "--model", w.tiny, "--reward", "judge", "--judge-template",
        d / "j.txt"], "placeholder"),
    refuse(C, "train --stage xyz", train("--stage", "xyz"), "--stage"),
    refuse(C, "train --stage sft --method cream", train("--stage", "sft", "--method", "cream"), "--method"),
    refuse(C, "train --lora-r 0", train("--lora", "--lora-r", "0"), "--lora-r"),
    refuse(C, "train --precision pure --dtype fp16", train("--precision", "pure", "--dtype", "fp16"), "fp16"),
    refuse(C, "sql: DROP TABLE", sql("DROP TABLE scores"), "read-only"),
    refuse(C, "sql: COPY TO a file", lambda d, w: ["sql", w.labeled, f"COPY scores TO '{d}/x.csv'"]),
    refuse(C, "sql: two statements", sql("SELECT 1; SELECT 2")),
    refuse(C, "sql: a syntax error", sql("SELEC * FROM scores"), "SELEC"),
    refuse(C, "sql: an unknown view", sql("SELECT * FROM nosuchview"), "nosuchview"),
    refuse(C, "sql: read_csv of a system file", sql("SELECT * FROM read_csv('/etc/passwd')")),
    refuse(C, "inspect: an empty folder", lambda d, w: (d / "e").mkdir() or ["inspect", d / "e", "--out", d / "r"],
           "e"),
    refuse(C, "publish: a bad repo id", lambda d, w: ["publish", w.labeled, "--repo-id", "no slash here",
                                                      "--dry-run", "--out", d / "p"], "--repo-id"),
    refuse(C, "publish --exclude outside the source", lambda d, w: [
        "publish", w.labeled, "--repo-id", "me/x", "--dry-run", "--out", d / "p", "--exclude", "../elsewhere"],
        "--exclude"),
    refuse(C, "run --method nonsense", run("--method", "nonsense", "--check"), "--method"),
    refuse(C, "run --machine-rank 5 without nodes", run("--machine-rank", "5", "--check"), "--machine-rank"),
    refuse(C, "run: an unknown top-level key", run("--check", modle="x"), "modle"),
    refuse(C, "run: an unknown section key", run("--check", sample="{n: 3, temprature: 0.5}"), "temprature"),
    refuse(C, "run: iterations 0", run("--check", iterations="0"), "iterations"),
    refuse(C, "eval --tasks nosuchtask", lambda d, w: ["eval", "--model", w.tiny, "--out", d / "o", "--tasks",
                                                      "nosuchtask", "--data-dir", DATA / "eval"], "nosuchtask"),
    refuse(C, "eval --harness with --suffix", lambda d, w: ["eval", "--model", w.tiny, "--out", d / "o",
                                                           "--harness", "arc_easy", "--suffix", "x"], "--suffix"),
    refuse(C, "prompts --layout nonsense", lambda d, w: ["prompts", w.prompts, "--out", d / "o", "--layout", "zzz"],
           "--layout"),
    refuse(C, "prompts: an empty file", lambda d, w: (d / "e.jsonl").write_text("") or [
        "prompts", d / "e.jsonl", "--out", d / "o"], "e.jsonl"),
    refuse(C, "label: an empty responses table", lambda d, w: _empty_responses(d, w), "responses"),
    refuse(C, "train: --config with a key of another stage", lambda d, w: (d / "t.yaml").write_text("n: 4\n") and [
        "train", w.labeled, "--model", w.tiny, "--out", d / "m", "--config", d / "t.yaml"], "n"),
]


def _empty_responses(d, w):
    from bench.hostile.helpers import edited

    edited(w, "responses", d, lambda t: t.slice(0, 0), "r.parquet")
    return ["label", d / "r.parquet", "--out", d / "o", "--model", w.tiny]
