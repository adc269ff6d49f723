"""Class "replace": a command that redoes or replaces work keeps the old outputs until the new ones are complete,
and never writes over something it did not make or over its own input."""

from __future__ import annotations

from bench.hostile.helpers import DATA, refuse, run_config

P = "replace"


def _overwrite(fixture, args_fn):
    def setup(d, w):
        out = w.copy(fixture, d)
        return args_fn(d, w, out)
    return setup


def _bad_jsonl(d):
    (d / "bad.jsonl").write_text('{"prompt": "a?"}\n{"prompt": "b?"}\n{"prompt": \n')
    return d / "bad.jsonl"


CASES = [
    refuse(P, "sample --overwrite: every prompt beyond the new model's context", _overwrite(
        "responses", lambda d, w, o: ["sample", w.prompts, "--out", o, "--model", w.tiny_short, "--max-new-tokens",
                                      "60", "--overwrite"]), "context"),
    refuse(P, "sample --overwrite: the new model is missing", _overwrite(
        "responses", lambda d, w, o: ["sample", w.prompts, "--out", o, "--model", d / "nope", "--overwrite"]), "nope"),
    refuse(P, "prompts --overwrite: the new source breaks at line 3", _overwrite(
        "prompts", lambda d, w, o: ["prompts", _bad_jsonl(d), "--out", o, "--overwrite"]), "line 3"),
    refuse(P, "prompts --overwrite onto a responses table", _overwrite(
        "responses", lambda d, w, o: ["prompts", _bad_jsonl(d).with_name("x.jsonl"), "--out", o, "--overwrite"])),
    refuse(P, "eval --overwrite: the new model has no tokenizer", _overwrite(
        "evaluated", lambda d, w, o: ["eval", "--model", w.no_tokenizer, "--out", o, "--tasks", "arc_easy", "--limit",
                                      "1", "--data-dir", DATA / "eval", "--overwrite"]), "tokenizer"),
    refuse(P, "label into an earlier labeling with other settings and a bad model", _overwrite(
        "labeled", lambda d, w, o: ["label", w.responses, "--out", o, "--model", w.rm])),
    refuse(P, "train --out an existing checkpoint without --overwrite", _overwrite(
        "tiny_b", lambda d, w, o: ["train", w.labeled, "--model", w.tiny, "--out", o, "--max-steps", "1"]), "--out"),
    refuse(P, "train --overwrite: the data is unreadable", _overwrite(
        "tiny_b", lambda d, w, o: ["train", _bad_jsonl(d), "--model", w.tiny, "--out", o, "--overwrite",
                                   "--max-steps", "1"])),
    refuse(P, "train --out is the starting model", _overwrite(
        "tiny_b", lambda d, w, o: ["train", w.labeled, "--model", o, "--out", o, "--overwrite", "--max-steps", "1"]),
        "--out"),
    refuse(P, "label --out is its own responses folder", _overwrite(
        "responses", lambda d, w, o: ["label", o, "--out", o, "--model", w.tiny]), "--out"),
    refuse(P, "sample --out is its prompts table", _overwrite(
        "prompts", lambda d, w, o: ["sample", o, "--out", o, "--model", w.tiny, "--overwrite"]), "--out"),
    refuse(P, "prompts --out is the source file", lambda d, w: [
        "prompts", _bad_jsonl(d), "--out", d / "bad.jsonl", "--overwrite"], "bad.jsonl"),
    refuse(P, "sample --out is an existing file", lambda d, w: (d / "f.txt").write_text("mine") and [
        "sample", w.prompts, "--out", d / "f.txt", "--model", w.tiny], "f.txt"),
    refuse(P, "publish --out a non-empty folder of mine", lambda d, w: (d / "mine").mkdir() or (
        d / "mine" / "notes.txt").write_text("keep") and [
        "publish", w.labeled, "--repo-id", "me/x", "--dry-run", "--out", d / "mine"], "mine"),
    refuse(P, "publish --out inside the folder published", _overwrite(
        "labeled", lambda d, w, o: ["publish", o, "--repo-id", "me/x", "--dry-run", "--out", o / "pub"]), "--out"),
    refuse(P, "run: run_dir a folder of other files", lambda d, w: (d / "mine").mkdir() or (
        d / "mine" / "thesis.tex").write_text("keep") and [
        "run", run_config(d, w, run_dir="mine")], "mine"),
]
