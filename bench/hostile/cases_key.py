"""Class "key": a prompt_id names one prompt in every table, (prompt_id, response_idx) one response, and every index
a table stores resolves to a row shipped or readable beside it — checked where tables meet."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from bench.hostile.helpers import edited, read, refuse, set_col, write

K = "key"


def _label(*extra):
    return lambda d, w: ["label", w.responses, "--out", d / "out", "--model", w.tiny, *extra]


def _label_table(fn):
    def setup(d, w):
        edited(w, "responses", d, fn, "r.parquet")
        return ["label", d / "r.parquet", "--out", d / "out", "--model", w.tiny]
    return setup


def _dup_key(t):
    return pa.concat_tables([t, t.slice(0, 1)])


def _two_prompts(t):  # the first prompt_id's second row gets another prompt text
    prompts = t.column("prompt").to_pylist()
    prompts[1] = [{"role": "user", "content": "Something else entirely?"}]
    return set_col(t, "prompt", prompts)


def _other_text(t):
    return set_col(t, "prompt", [[{"role": "user", "content": "Other?"}]] * t.num_rows)


def _renumber(t, pid_fn):
    return set_col(t, "prompt_id", [pid_fn(p) for p in t.column("prompt_id").to_pylist()])


def _pool(fn, flag="--chosen-from"):
    def setup(d, w):
        edited(w, "responses_other", d, fn, "pool.parquet")
        return ["label", w.responses, "--out", d / "out", "--model", w.tiny, flag, d / "pool.parquet"]
    return setup


def _pool_copy(d, w):
    w.copy("responses", d, "copy")
    return ["label", w.responses, "--out", d / "out", "--model", w.tiny, "--chosen-from", d / "copy"]


def _pool_copy_rejected(d, w):
    edited(w, "responses", d, lambda t: t, "copy.parquet")
    return ["label", w.responses, "--out", d / "out", "--model", w.tiny, "--rejected-from", d / "copy.parquet"]


def _pool_twice(d, w):
    p = str(w.responses_other)
    return ["label", w.responses, "--out", d / "out", "--model", w.tiny, "--chosen-from", f"{p},{p}"]


def _pool_both_sides(d, w):
    p = str(w.responses_other)
    return ["label", w.responses, "--out", d / "out", "--model", w.tiny, "--chosen-from", p, "--rejected-from", p]


def _other_prompts_oracle(d, w):  # the prompts table's prompt_ids match, their texts do not
    def fn(t):
        prompts = t.column("prompt").to_pylist()
        return set_col(t, "prompt", [[{"role": "user", "content": f"Unrelated {i}"}] for i, _ in enumerate(prompts)])
    edited(w, "prompts_gsm", d, fn, "p.parquet")
    return ["label", w.responses_gsm, "--out", d / "out", "--model", w.tiny, "--reward", "oracle", "--prompts",
            d / "p.parquet"]


def _foreign_scores(d, w):  # --scores from a labeling of other responses
    return ["label", w.responses, "--out", d / "out", "--scores", w.labeled_other]


def _label_folder_mixed(part: str):
    """A label folder whose ``part`` table comes from another labeling of the same prompts."""
    def make(d, w):
        lab = w.copy("labeled", d)
        shutil.rmtree(lab / part)
        shutil.copytree(w.labeled_other / part, lab / part)
        return lab
    return make


def _prefs(fn):
    def setup(d, w):
        write(fn(read(w.labeled / "preferences")), d / "prefs.parquet")
        return ["train", d / "prefs.parquet", "--model", w.tiny, "--out", d / "m", "--max-steps", "1"]
    return setup


def _same_sides(t):
    return set_col(set_col(t, "rejected", t.column("chosen").to_pylist()), "rejected_idx",
                   t.column("chosen_idx").to_pylist())


def _same_text(t):
    return set_col(t, "rejected", t.column("chosen").to_pylist())


def _publish_mixed(part):
    def setup(d, w):
        lab = _label_folder_mixed(part)(d, w)
        return ["publish", lab, "--repo-id", "me/x", "--dry-run", "--out", d / "pub"]
    return setup


def _inspect_mixed(part):
    def setup(d, w):
        lab = _label_folder_mixed(part)(d, w)
        return ["inspect", lab, "--out", d / "rep"]
    return setup


def _publish_run_responses_replaced(d, w):
    """The part file of iteration 1's responses rewritten in place: same keys and row count, other texts."""
    run = w.copy("run", d)
    part = next((run / "iter-1" / "responses").glob("part-*.parquet"))
    t = pq.read_table(part)
    t = set_col(t, "response", [f"Replaced answer {i}." for i in range(t.num_rows)])
    pq.write_table(t, part)
    return ["publish", run, "--repo-id", "me/x", "--dry-run", "--out", d / "pub"]


def _index_beyond(t):  # a chosen_idx that no response row has
    return set_col(t, "chosen_idx", [int(i) + 50 for i in t.column("chosen_idx").to_pylist()])


def _publish_prefs_beyond(d, w):
    """The preferences part rewritten in place (its manifest kept) with chosen_idx values no response has."""
    lab = w.copy("labeled", d)
    part = next((lab / "preferences").glob("part-*.parquet"))
    pq.write_table(_index_beyond(pq.read_table(part)), part)
    return ["publish", lab, "--repo-id", "me/x", "--dry-run", "--out", d / "pub"]


def _null_id(t):
    ids = t.column("prompt_id").to_pylist()
    ids[0] = None
    return t.set_column(0, pa.field("prompt_id", pa.string()), pa.array(ids, pa.string()))


def _human_without_column(d, w):
    edited(w, "prompts", d, lambda t: t.drop_columns(["human_answer"]), "p.parquet")
    return ["label", w.responses, "--out", d / "out", "--model", w.tiny, "--human-answers", "--prompts",
            d / "p.parquet"]


def _prompts_dup_id(d, w):
    edited(w, "prompts_gsm", d, lambda t: pa.concat_tables([t, t.slice(0, 1)]), "p.parquet")
    return ["label", w.responses_gsm, "--out", d / "out", "--model", w.tiny, "--reward", "oracle", "--prompts",
            d / "p.parquet"]


CASES = [
    refuse(K, "label: a (prompt_id, response_idx) given twice", _label_table(_dup_key), "response_idx"),
    refuse(K, "label: one prompt_id with two prompt texts", _label_table(_two_prompts), "prompt_id"),
    refuse(K, "label: a null prompt_id", _label_table(_null_id), "prompt_id"),
    refuse(K, "label: an empty prompt_id", _label_table(lambda t: _renumber(t, lambda p: "")), "prompt_id"),
    refuse(K, "label: a negative response_idx", _label_table(
        lambda t: set_col(t, "response_idx", [-1 - i for i in t.column("response_idx").to_pylist()])),
        "response_idx"),
    refuse(K, "--chosen-from: same prompt_id, other prompt text", _pool(_other_text), "prompt"),
    refuse(K, "--chosen-from: no prompt_id in common", _pool(lambda t: _renumber(t, lambda p: "zz-" + p)),
           "prompt_id"),
    refuse(K, "--chosen-from: a copy of the input at another path", _pool_copy, "chosen-from"),
    refuse(K, "--rejected-from: a copy of the input as a file", _pool_copy_rejected, "rejected-from"),
    refuse(K, "--chosen-from: the same pool twice", _pool_twice, "chosen-from"),
    refuse(K, "one pool as --chosen-from and --rejected-from", _pool_both_sides),
    refuse(K, "--chosen-from: the input itself", lambda d, w: _label("--chosen-from", w.responses)(d, w),
           "chosen-from"),
    refuse(K, "oracle: the prompts table's texts differ under the same ids", _other_prompts_oracle, "prompt"),
    refuse(K, "--prompts: a prompt_id given twice", _prompts_dup_id, "prompt_id"),
    refuse(K, "--human-answers: prompts table without human_answer", _human_without_column, "human_answer"),
    refuse(K, "--scores: stored scores of other responses", _foreign_scores, "scores"),
    refuse(K, "train: a pair whose chosen and rejected are one response", _prefs(_same_sides), "chosen"),
    refuse(K, "train: a pair whose chosen and rejected texts are equal", _prefs(_same_text), "chosen"),
    refuse(K, "train: chosen_idx beyond n_responses", _prefs(_index_beyond), "chosen_idx"),
    refuse(K, "publish: a label folder whose scores come from another labeling", _publish_mixed("scores"),
           "scores"),
    refuse(K, "publish: a label folder whose preferences come from another labeling",
           _publish_mixed("preferences")),
    refuse(K, "inspect: a label folder whose scores come from another labeling", _inspect_mixed("scores"),
           "scores"),
    refuse(K, "publish: a run whose responses were replaced after labeling", _publish_run_responses_replaced,
           "response"),
    refuse(K, "publish: preferences whose chosen_idx no response has", _publish_prefs_beyond, "chosen_idx"),
]
