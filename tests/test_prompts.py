"""Prompt/SFT loaders and `cream prompts`: benchmark layouts checked row by row against the raw files and
the official answer keys, file formats, datasets folders, splits."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from cream_data.tables import io
from cream_data.inputs.prompts import (
    FieldMap, format_mc, gsm8k_reference, load_benchmark, load_prompts, load_sft, mc_letter, prompt_hash,
    split_prompts,
)


def jsonl(path):
    return [json.loads(ln) for ln in open(path, encoding="utf-8") if ln.strip()]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def user_text(row):
    return row["prompt"][-1]["content"]


# ---------------------------------------------------------------------------- benchmarks vs raw files
def test_gsm8k_train_via_cli(cli, shared_data, tmp_path):
    res = cli("prompts", shared_data / "gsm8k/train.jsonl", "--out", tmp_path / "g")
    assert res.code == 0, res
    assert "7473 prompts (7473 with reference answers)" in res.out
    rows = io.read_table(tmp_path / "g", "prompts").to_pylist()
    raw = jsonl(shared_data / "gsm8k/train.jsonl")
    assert len(rows) == len(raw) == 7473
    for row, r in zip(rows, raw):
        # Independent parse: the solution's last line is "#### N".
        last = r["answer"].strip().splitlines()[-1]
        assert last.startswith("#### ")
        assert row["reference_answer"] == last[5:].replace(",", "").strip()
        float(row["reference_answer"])  # numeric
        assert row["prompt"] == [{"role": "user", "content": r["question"]}]
    # a few by hand
    assert rows[0]["reference_answer"] == "72" and rows[1]["reference_answer"] == "10"
    with_commas = [r for r in raw if "," in r["answer"].rsplit("####", 1)[1]]
    assert with_commas, "the file has answers like 1,000"
    assert len({r["prompt_id"] for r in rows}) == 7473


def _mc_check(rows, raw, keys, expect_source):
    """Every row's letter equals the official key mapped by option position; returns shape counts."""
    key_of = {k["id"]: k["answerKey"] for k in keys}
    counts = {"3-choice": 0, "5-choice": 0, "numeric labels": 0}
    assert len(rows) == len(raw) == len(key_of)
    for row, r in zip(rows, raw):
        labels = [c["label"] for c in r["question"]["choices"]]
        idx = labels.index(key_of[r["id"]])
        assert row["prompt_id"] == r["id"]
        assert row["reference_answer"] == "ABCDE"[idx]
        assert row["source"].startswith(expect_source)
        lines = user_text(row).splitlines()
        n = len(labels)
        assert lines[-n:] == [f"{'ABCDE'[i]}. {c['text']}" for i, c in enumerate(r["question"]["choices"])]
        counts["3-choice"] += n == 3
        counts["5-choice"] += n == 5
        counts["numeric labels"] += labels[0] == "1"
    return counts


@pytest.mark.parametrize("name,keyfile,expected", [
    ("ARC-Easy-Test", "official-test-answer-keys-easy.jsonl", {"3-choice": 7, "5-choice": 4, "numeric labels": 97}),
    ("ARC-Challenge-Test", "official-test-answer-keys-challenge.jsonl",
     {"3-choice": 4, "5-choice": 3, "numeric labels": 22}),
])
def test_arc_letters_match_official_keys(cli, shared_data, tmp_path, name, keyfile, expected):
    res = cli("prompts", shared_data / f"arc/{name}.jsonl", "--out", tmp_path / "a")
    assert res.code == 0, res
    rows = io.read_table(tmp_path / "a", "prompts").to_pylist()
    counts = _mc_check(rows, jsonl(shared_data / f"arc/{name}.jsonl"), jsonl(shared_data / f"arc/{keyfile}"), "arc:")
    assert counts == expected
    assert {r["reference_answer"] for r in rows} <= set("ABCDE")


def test_openbookqa_letters_match_official_keys(shared_data):
    rows = load_prompts(str(shared_data / "openbookqa/test.jsonl")).to_pylist()
    counts = _mc_check(rows, jsonl(shared_data / "openbookqa/test.jsonl"),
                       jsonl(shared_data / "openbookqa/official-test-answer-keys.jsonl"), "openbookqa:")
    assert counts == {"3-choice": 0, "5-choice": 0, "numeric labels": 0}


def test_siqa_letters_match_labels_file(cli, shared_data, tmp_path):
    res = cli("prompts", shared_data / "siqa/dev.jsonl", "--out", tmp_path / "s")
    assert res.code == 0, res
    rows = io.read_table(tmp_path / "s", "prompts").to_pylist()
    raw = jsonl(shared_data / "siqa/dev.jsonl")
    labels = (shared_data / "siqa/dev-labels.lst").read_text().split()
    assert len(rows) == len(raw) == len(labels) == 1954
    for row, r, lab in zip(rows, raw, labels):
        assert row["reference_answer"] == {"1": "A", "2": "B", "3": "C"}[lab]
        assert user_text(row).endswith(f"A. {r['answerA']}\nB. {r['answerB']}\nC. {r['answerC']}")
        assert r["context"] in user_text(row) and r["question"] in user_text(row)
    # SIQA repeats some items verbatim with different labels: ids are positions, so all rows survive.
    assert len({r["prompt_id"] for r in rows}) == 1954


def test_siqa_without_labels_file_has_null_reference(shared_data, tmp_path):
    lines = (shared_data / "siqa/dev.jsonl").read_text().splitlines()[:5]
    (tmp_path / "dev.jsonl").write_text("\n".join(lines) + "\n")
    t = load_prompts(str(tmp_path / "dev.jsonl"))
    assert t.num_rows == 5 and t.column("reference_answer").null_count == 5


def test_load_benchmark_from_data_dir(shared_data):
    sizes = {"arc_easy": 2376, "arc_challenge": 1172, "openbookqa": 500, "siqa": 1954, "gsm8k": 1319}
    suffix = "Answer the question by thinking step by step."
    for task, n in sizes.items():
        t = load_benchmark(task, shared_data, suffix=suffix)
        assert t.num_rows == n and t.column("reference_answer").null_count == 0
        assert user_text(t.slice(0, 1).to_pylist()[0]).endswith("\n" + suffix)
    assert load_benchmark("gsm8k", shared_data / "gsm8k/test.jsonl", limit=7).num_rows == 7


def test_oasst_tree_reproduces_the_derived_rank0_pairs(shared_data):
    pairs = {r["prompt_id"]: r for r in jsonl(shared_data / "oasst1/oasst1_en_validation_first_turn_rank0_pairs.jsonl")}
    sft = load_sft(str(shared_data / "oasst1/oasst1_en_validation.jsonl")).to_pylist()
    assert len(sft) == len(pairs) == 186
    for row in sft:
        p = pairs[row["prompt_id"]]
        assert user_text(row) == p["prompt"]
        assert row["completion"] == [{"role": "assistant", "content": p["response"]}]
    # the pairs file itself loads to the same table content
    sft2 = load_sft(str(shared_data / "oasst1/oasst1_en_validation_first_turn_rank0_pairs.jsonl")).to_pylist()
    assert sorted((r["prompt_id"], r["completion"][0]["content"]) for r in sft2) == \
        sorted((r["prompt_id"], r["completion"][0]["content"]) for r in sft)


def test_oasst2_sft_keeps_rank0_and_prompts_are_unique(shared_data):
    path = shared_data / "oasst2_srlm_pairs/oasst2_en_first_turn_ranked_pairs.jsonl"
    raw = jsonl(path)
    sft = load_sft(str(path)).to_pylist()
    want = sorted((r["question"], r["answer"]) for r in raw if r["rank"] == 0)
    assert sorted((user_text(r), r["completion"][0]["content"]) for r in sft) == want
    assert len(sft) == 800
    prompts = load_prompts(str(path))
    assert prompts.num_rows == len({r["question"] for r in raw}) == 2293


def test_alpaca_eval_ids_agree_across_files(shared_data):
    a = load_prompts(str(shared_data / "alpaca_eval/alpaca_eval_805_instructions.jsonl"))
    b = load_prompts(str(shared_data / "alpaca_eval/gpt4_1106_preview_model_outputs.json"))
    assert a.num_rows == 805 and a.column("prompt_id").to_pylist() == b.column("prompt_id").to_pylist()
    assert load_sft(str(shared_data / "alpaca_eval/gpt4_1106_preview_model_outputs.json")).num_rows == 805


def test_self_instruct_seed(shared_data):
    raw = jsonl(shared_data / "self_instruct_seed/seed_tasks.jsonl")
    t = load_prompts(str(shared_data / "self_instruct_seed/seed_tasks.jsonl")).to_pylist()
    assert [r["prompt_id"] for r in t] == [r["id"] for r in raw]
    with_input = next(i for i, r in enumerate(raw) if r["instances"][0]["input"].strip())
    assert user_text(t[with_input]).endswith(raw[with_input]["instances"][0]["input"].strip())


# ---------------------------------------------------------------------------- ids, suffix, splits
def test_content_hash_id_is_sha256_of_canonical_turns(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi"}, {"prompt": "Say bye"}])
    t = load_prompts(str(tmp_path / "p.jsonl"), suffix="Answer briefly.").to_pylist()
    canon = '[{"content":"Say hi","role":"user"}]'
    assert t[0]["prompt_id"] == hashlib.sha256(canon.encode()).hexdigest()[:16]
    assert t[0]["prompt_id"] == prompt_hash([{"role": "user", "content": "Say hi"}])
    assert t[0]["prompt"] == [{"role": "user", "content": "Say hi\nAnswer briefly."}]  # id names the question


def test_split_into_three_disjoint_union_deterministic(cli, shared_data, tmp_path):
    src = shared_data / "gsm8k/test.jsonl"
    for out in ("a", "b"):
        res = cli("prompts", src, "--out", tmp_path / out, "--split-into", "3")
        assert res.code == 0, res
    whole = load_prompts(str(src)).column("prompt_id").to_pylist()
    subsets = [io.read_table(tmp_path / "a" / f"subset-{k}", "prompts").column("prompt_id").to_pylist()
               for k in (1, 2, 3)]
    again = [io.read_table(tmp_path / "b" / f"subset-{k}", "prompts").column("prompt_id").to_pylist()
             for k in (1, 2, 3)]
    assert subsets == again
    assert sorted(sum(subsets, [])) == sorted(whole)
    assert all(not set(subsets[i]) & set(subsets[j]) for i in range(3) for j in range(i + 1, 3))
    assert sorted(map(len, subsets)) == [439, 440, 440]
    for s in subsets:  # each keeps the input order
        assert s == sorted(s, key=whole.index)
    other = split_prompts(load_prompts(str(src)), 3, seed=1)
    assert other[0].column("prompt_id").to_pylist() != subsets[0]


def test_split_adding_rows_moves_few(shared_data):
    t = load_prompts(str(shared_data / "gsm8k/test.jsonl"))
    before = split_prompts(t.slice(0, 1000), 4)
    after = split_prompts(t, 4)
    where = {pid: k for k, s in enumerate(after) for pid in s.column("prompt_id").to_pylist()}
    moved = sum(where[pid] != k for k, s in enumerate(before) for pid in s.column("prompt_id").to_pylist())
    assert moved < 0.5 * 1000  # a random reshuffle would move ~75%


# ---------------------------------------------------------------------------- file formats and folders
ROWS = [{"question": "What is 2+2?", "answer": "#### 4"}, {"question": "What is 10*100?", "answer": "so #### 1,000"}]


def _expect_gsm(t):
    assert t.column("reference_answer").to_pylist() == ["4", "1000"]
    assert t.column("source").to_pylist()[0].startswith("gsm8k:")


def test_json_csv_tsv_parquet_sources(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "b.json").write_text(json.dumps({"version": 1, "data": ROWS}))
    pacsv.write_csv(pa.Table.from_pylist(ROWS), tmp_path / "c.csv")
    pacsv.write_csv(pa.Table.from_pylist(ROWS), tmp_path / "d.tsv", pacsv.WriteOptions(delimiter="\t"))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "e.parquet")
    (tmp_path / "f.json").write_text("".join(json.dumps(r) + "\n" for r in ROWS))  # JSON Lines named .json
    for name in ("a.json", "b.json", "c.csv", "d.tsv", "e.parquet", "f.json"):
        _expect_gsm(load_prompts(str(tmp_path / name)))


def test_datasets_folders(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    _expect_gsm(load_prompts(str(tmp_path / "ds")))
    # The Hub forms of ARC (question string + choices{text,label}) and SIQA (label field) in a DatasetDict.
    arc = [{"id": "q1", "question": "Pick one", "choices": {"text": ["x", "y", "z"], "label": ["1", "2", "3"]},
            "answerKey": "3"}]
    siqa = [{"context": "C.", "question": "Q?", "answerA": "a", "answerB": "b", "answerC": "c", "label": "2"}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(arc)}).save_to_disk(str(tmp_path / "arc"))
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(siqa)}).save_to_disk(str(tmp_path / "siqa"))
    row = load_prompts(str(tmp_path / "arc")).to_pylist()[0]
    assert row["reference_answer"] == "C" and user_text(row) == "Pick one\nA. x\nB. y\nC. z"
    row = load_prompts(str(tmp_path / "siqa"), split="validation").to_pylist()[0]
    assert row["reference_answer"] == "B" and row["prompt_id"] == "validation-00001"


def test_cream_table_passes_through(tmp_path, shared_data):
    t = load_prompts(str(shared_data / "gsm8k/test.jsonl"), limit=5)
    io.write_table(t, tmp_path / "t", "prompts")
    assert load_prompts(str(tmp_path / "t")).equals(t)
    assert load_prompts(str(tmp_path / "t"), limit=2).num_rows == 2


def test_field_flags_and_messages(cli, tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"uid": 7, "q": "Capital of France?", "gold": "Paris", "sys": "Be brief."},
                                       {"uid": 8, "q": "Capital of Spain?", "gold": "Madrid", "sys": "Be brief."}])
    res = cli("prompts", tmp_path / "x.jsonl", "--out", tmp_path / "o", "--prompt-field", "q", "--answer-field",
              "gold", "--id-field", "uid", "--system-field", "sys", "--limit", "1")
    assert res.code == 0, res
    rows = io.read_table(tmp_path / "o", "prompts").to_pylist()
    assert rows == [{"prompt_id": "7", "source": "generic:x.jsonl", "reference_answer": "Paris", "human_answer": None,
                     "prompt": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Capital of France?"}]}]
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue"}]
    write_jsonl(tmp_path / "m.jsonl", [{"messages": conv}])
    sft = load_sft(str(tmp_path / "m.jsonl")).to_pylist()[0]
    assert sft["prompt"] == conv[:3] and sft["completion"] == conv[3:]
    res = cli("prompts", tmp_path / "m.jsonl", "--out", tmp_path / "sft", "--sft")
    assert res.code == 0 and "1 SFT examples" in res.out
    assert io.read_table(tmp_path / "sft", "sft").num_rows == 1
    assert load_sft(str(tmp_path / "x.jsonl"), fields=FieldMap(prompt="q", completion="gold")).num_rows == 2


def test_answer_helpers():
    assert format_mc("Q?", ["a", "b", "c"]) == ("Q?\nA. a\nB. b\nC. c", ["A", "B", "C"])
    assert mc_letter("3", ["1", "2", "3", "4"]) == "C" and mc_letter("E", list("ABCDE")) == "E"
    with pytest.raises(ValueError):
        mc_letter("E", list("ABCD"))
    assert gsm8k_reference("x\n#### 1,234") == "1234" and gsm8k_reference("#### -3.5") == "-3.5"
    for bad in ("no hashes", "#### many"):
        with pytest.raises(ValueError):
            gsm8k_reference(bad)


# ---------------------------------------------------------------------------- human-written answers (prompts v2)
def test_human_answers_from_each_layout(shared_data, tmp_path):
    """human_answer holds what a person wrote: the GSM8K solution, the oasst rank-0 reply (even where a lower-ranked
    row of the question comes first), a self-instruct seed output, a generic record's response field; never a
    model's output (alpaca_eval) nor the reference answer's own field."""
    raw = jsonl(shared_data / "gsm8k/test.jsonl")[:5]
    g = load_prompts(str(shared_data / "gsm8k/test.jsonl"), limit=5)
    assert g.column("human_answer").to_pylist() == [r["answer"] for r in raw]
    assert g.column("reference_answer").to_pylist() == [gsm8k_reference(r["answer"]) for r in raw]

    path = shared_data / "oasst2_srlm_pairs/oasst2_en_first_turn_ranked_pairs.jsonl"
    rows = jsonl(path)
    best = {}
    for r in rows:  # a question asked in several trees: the first rank-0 reply
        if r["rank"] == 0:
            best.setdefault(r["question"], r["answer"])
    first_not_best = next(r for r in rows if r["rank"] != 0 and r["question"] in best)
    p = {user_text(r): r["human_answer"] for r in load_prompts(str(path)).to_pylist()}
    assert p[first_not_best["question"]] == best[first_not_best["question"]]
    assert {q: a for q, a in p.items() if a is not None} == best

    seed = jsonl(shared_data / "self_instruct_seed/seed_tasks.jsonl")[:3]
    s = load_prompts(str(shared_data / "self_instruct_seed/seed_tasks.jsonl"), limit=3)
    assert s.column("human_answer").to_pylist() == [r["instances"][0]["output"] for r in seed]

    a = load_prompts(str(shared_data / "alpaca_eval/gpt4_1106_preview_model_outputs.json"), limit=3)
    assert a.column("human_answer").to_pylist() == [None] * 3  # a model's output, not a person's

    write_jsonl(tmp_path / "g.jsonl", [{"prompt": "2+2?", "answer": "4", "response": "2 + 2 = 4.\nAnswer: 4"},
                                       {"prompt": "3+3?", "answer": "6"}])
    gen = load_prompts(str(tmp_path / "g.jsonl"))
    assert gen.column("human_answer").to_pylist() == ["2 + 2 = 4.\nAnswer: 4", None]
    assert gen.column("reference_answer").to_pylist() == ["4", "6"]
