"""D_U as a mix (`prompts.sources` of a run config), as the CREAM paper builds it: the prompts of the SFT data D_S
(an ``{sft: true}`` entry: the questions that have an SFT answer) plus the downstream tasks' train questions.

The expected rows are worked out here from the records written (or from the shared files read as plain JSON), not
from the loaders under test.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from tests.support import REPO
from tests.support.cli import assert_user_error

PAPER = REPO / "examples" / "paper.yaml"

# oasst-style ranked pairs: each question once per answer; only a rank-0 answer is an SFT example
PAIRS = [("What is a cat?", "A small mammal, sometimes.", 1), ("What is a cat?", "A small furry mammal.", 0),
         ("Name a colour.", "Blue?", 1), ("Why is the sky blue?", "Rayleigh scattering.", 0),
         ("Why is the sky blue?", "Because.", 2), ("Say hello.", "Hello!", 0)]
ANSWERED = ["What is a cat?", "Why is the sky blue?", "Say hello."]  # the questions with a rank-0 answer, in order


def hashed_id(question: str) -> str:
    """The id a question without a source id gets: sha256 of its canonical JSON turns, first 16 hex digits."""
    turns = [{"role": "user", "content": question}]
    canon = json.dumps(turns, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": a, "rank": r}) + "\n" for q, a, r in PAIRS))
    return path


def test_answered_keeps_the_questions_of_the_sft_table(pairs_file, tmp_path):
    from cream_data.inputs.prompts import load_prompts, load_sft

    everything = load_prompts(str(pairs_file), layout="oasst")
    assert everything.num_rows == 4  # every question once, "Name a colour." too
    t = load_prompts(str(pairs_file), layout="oasst", answered=True)
    assert [p[-1]["content"] for p in t["prompt"].to_pylist()] == ANSWERED
    assert t["prompt_id"].to_pylist() == [hashed_id(q) for q in ANSWERED]  # the ids the whole source gives them
    assert t["human_answer"].to_pylist() == ["A small furry mammal.", "Rayleigh scattering.", "Hello!"]
    sft = load_sft(str(pairs_file), layout="oasst")
    assert [p[-1]["content"] for p in sft["prompt"].to_pylist()] == ANSWERED
    assert load_prompts(str(pairs_file), layout="oasst", answered=True, limit=2).num_rows == 2

    # a prompts table as the source: its rows with a human answer
    from cream_data.tables.io import write_table

    write_table(everything, tmp_path / "table", "prompts")
    again = load_prompts(str(tmp_path / "table"), answered=True)
    assert sorted(again["prompt_id"].to_pylist()) == sorted(hashed_id(q) for q in ANSWERED)

    unanswered = tmp_path / "none.jsonl"
    unanswered.write_text(json.dumps({"question": "Q?", "answer": "A.", "rank": 1}) + "\n")
    from cream_data.errors import CreamError

    with pytest.raises(CreamError, match="none of its records has an answer"):
        load_prompts(str(unanswered), layout="oasst", answered=True)


def _config(tmp_path, pairs_file, prompts: str, sft_extra: str = "") -> str:
    path = tmp_path / "run.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\nsft: {{data: {pairs_file}, layout: oasst{sft_extra}}}\n{prompts}")
    return path


def test_run_mixes_the_sft_prompts_with_task_train_files(pairs_file, tmp_path, shared_data):
    from cream_train.run.config import load_run_config

    gsm, arc = shared_data / "gsm8k" / "train.jsonl", shared_data / "arc" / "ARC-Easy-Train.jsonl"
    gsm_q = [json.loads(x)["question"] for x in gsm.read_text().splitlines()[:2]]
    arc_id = json.loads(arc.read_text().splitlines()[0])["id"]
    mix = f"""prompts:
  sources: [{{sft: true}}, {{source: {gsm}, limit: 2}}, {{source: {arc}, limit: 1}}]
  suffix: "Think."
"""
    _, _, table = load_run_config(_config(tmp_path, pairs_file, mix))
    assert table["prompt_id"].to_pylist() == [hashed_id(q) for q in ANSWERED + gsm_q] + [arc_id]
    assert table["source"].to_pylist() == ["oasst:pairs.jsonl"] * 3 + ["gsm8k:train.jsonl"] * 2 + \
        ["arc:ARC-Easy-Train.jsonl"]
    texts = [p[-1]["content"] for p in table["prompt"].to_pylist()]
    assert texts[:3] == [f"{q}\nThink." for q in ANSWERED] and all(x.endswith("\nThink.") for x in texts)
    # D_S is the first sft.limit SFT examples: its prompts are those questions; an entry limit cuts further
    _, _, two = load_run_config(_config(tmp_path, pairs_file, mix, ", limit: 2"))
    assert two["prompt_id"].to_pylist()[:3] == [hashed_id(q) for q in ANSWERED[:2]] + [hashed_id(gsm_q[0])]
    capped = mix.replace("{sft: true}", "{sft: true, limit: 1}")
    _, _, one = load_run_config(_config(tmp_path, pairs_file, capped, ", limit: 2"))
    assert one.num_rows == 1 + 2 + 1 and one["prompt_id"][0].as_py() == hashed_id(ANSWERED[0])


def test_sft_entry_mistakes_are_named(pairs_file, tmp_path, cream_exe):
    bad = """prompts:
  sources: [{sft: true, source: x.jsonl}, {sft: "yes"}, {sft: true, layout: arc}, {sft: true, limit: 0}]
"""
    assert_user_error(cream_exe("run", _config(tmp_path, pairs_file, bad), "--check"), "4 problem(s)",
                      "prompts.sources[0].source: not with sft: true", "prompts.sources[1].sft: got 'yes'",
                      "prompts.sources[2].layout: not with sft: true", "prompts.sources[3].limit: got 0")
    twice = "prompts:\n  sources: [{sft: true}, {sft: true}]\n"
    assert_user_error(cream_exe("run", _config(tmp_path, pairs_file, twice), "--check"), "prompts.sources:",
                      "also comes from")
    # SFT data without an SFT answer: one problem, about sft.data (not again about the prompts read from it)
    none = tmp_path / "none.jsonl"
    none.write_text(json.dumps({"question": "Q?", "answer": "A.", "rank": 1}) + "\n")
    r = cream_exe("run", _config(tmp_path, none, "prompts:\n  sources: [{sft: true}]\n"), "--check")
    assert_user_error(r, "1 problem(s)", "sft.data:", "none of its 1 records has an answer")


def test_papers_prompt_set_is_the_sft_prompts_and_the_task_train_splits(tmp_path, shared_data):
    """examples/paper.yaml's D_U names each task's train split, read from the Hub (no data_dir), and so does every
    GPU example. Read from shared_data instead (without SIQA, whose train questions it lacks) it is, counted from the
    files as plain JSON, D_S's distinct questions with a rank-0 answer plus every train question of ARC-Easy,
    ARC-Challenge, OpenBookQA and GSM8K: 16,597 prompts, the same table the files named as sources give."""
    from cream_train.run.config import load_run_config

    paper = yaml.safe_load(PAPER.read_text())
    tasks = [{"task": t, "split": "train"} for t in ("arc_easy", "arc_challenge", "openbookqa", "gsm8k", "siqa")]
    assert paper["prompts"]["sources"] == [{"sft": True}] + tasks and "data_dir" not in paper["prompts"]
    for example in sorted((REPO / "examples").glob("scale/*.yaml")) + sorted((REPO / "examples").glob("study-gpu/*.yaml")):
        prompts = yaml.safe_load(example.read_text())["prompts"]
        assert prompts["sources"] == paper["prompts"]["sources"] and "data_dir" not in prompts, example
    files = [shared_data / rel for rel in ("arc/ARC-Easy-Train.jsonl", "arc/ARC-Challenge-Train.jsonl",
                                           "openbookqa/train.jsonl", "gsm8k/train.jsonl")]
    sft_data = (PAPER.parent / paper["sft"]["data"]).resolve()
    rows = [json.loads(x) for x in sft_data.read_text().splitlines() if x.strip()]
    d_s = {r["question"] for r in rows if r["rank"] == 0}
    lines = [[json.loads(x) for x in f.read_text().splitlines() if x.strip()] for f in files]
    # the paper's sections that decide D_U, with absolute paths, in a config of their own; SIQA's entry left out
    own = {"run_dir": str(tmp_path / "run"), "sft": {"data": str(sft_data), "layout": paper["sft"].get("layout")},
           "prompts": {**paper["prompts"], "data_dir": str(shared_data), "sources": [{"sft": True}] + tasks[:4]}}
    path = tmp_path / "paper_prompts.yaml"
    path.write_text(yaml.safe_dump(own, sort_keys=False))
    _, _, table = load_run_config(path)
    assert table.num_rows == len(d_s) + sum(map(len, lines)) == 16597
    texts = [p[-1]["content"] for p in table["prompt"].to_pylist()[:len(d_s)]]
    suffix = paper["prompts"]["suffix"]
    assert {t.removesuffix(f"\n{suffix}").strip() for t in texts} == {q.strip() for q in d_s}
    ids = table["prompt_id"].to_pylist()
    start = len(d_s)
    for task_rows in lines[:3]:  # ARC and OpenBookQA keep their ids, in file order
        assert ids[start:start + len(task_rows)] == [r["id"] for r in task_rows]
        start += len(task_rows)
    assert ids[start:] == [hashed_id(r["question"]) for r in lines[3]]  # GSM8K's: hashed before the suffix
    # the same table as the files named as sources (the form these configs had before the task entries)
    own["prompts"] = {**paper["prompts"], "sources": [{"sft": True}] + [{"source": str(f)} for f in files]}
    path.write_text(yaml.safe_dump(own, sort_keys=False))
    assert load_run_config(path)[2].equals(table)


HUB = {"arc_easy": "allenai/ai2_arc:ARC-Easy", "arc_challenge": "allenai/ai2_arc:ARC-Challenge",
       "openbookqa": "allenai/openbookqa:main", "gsm8k": "openai/gsm8k:main", "siqa": "lighteval/siqa"}
TRAIN_FILES = {"arc_easy": "arc/ARC-Easy-Train.jsonl", "arc_challenge": "arc/ARC-Challenge-Train.jsonl",
               "openbookqa": "openbookqa/train.jsonl", "gsm8k": "gsm8k/train.jsonl", "siqa": "siqa/train.jsonl"}


def test_a_task_split_is_its_file_under_data_dir_else_its_hub_copy(pairs_file, tmp_path, shared_data, cream_exe):
    from cream_data.errors import CreamError
    from cream_data.inputs.prompts import task_source
    from cream_data.stages.evaluate import task_source as eval_file

    assert {t: task_source(t, "train") for t in HUB} == {t: (hub, "train") for t, hub in HUB.items()}
    assert {t: task_source(t, "test") for t in HUB} == {t: (hub, "validation" if t == "siqa" else "test")
                                                        for t, hub in HUB.items()}
    for task, rel in TRAIN_FILES.items():
        if task == "siqa":  # the shared folder has SIQA's train labels, not its questions
            with pytest.raises(CreamError, match="no siqa/train.jsonl for task siqa split train.*lighteval/siqa"):
                task_source(task, "train", shared_data)
        else:
            assert task_source(task, "train", shared_data) == (str(shared_data / rel), None)
        # the evaluation split: the file `cream eval --data-dir` reads (one table for both)
        assert task_source(task, "test", shared_data) == (str(eval_file(task, shared_data)), None)
    # a run config without prompts.data_dir reads the Hub: offline, with nothing cached, that is the one problem
    cfg = _config(tmp_path, pairs_file, "prompts:\n  sources: [{task: arc_challenge, split: train, limit: 3}]\n")
    r = cream_exe("run", cfg, "--check", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert_user_error(r, "1 problem(s)", "prompts.sources: allenai/ai2_arc:ARC-Challenge:",
                      "set prompts.data_dir to read a local copy")


def test_siqa_train_questions_are_read_from_a_local_file_with_its_labels(pairs_file, tmp_path):
    from cream_train.run.config import load_run_config

    data = tmp_path / "data" / "siqa"
    data.mkdir(parents=True)
    items = [("Ann lent Bo a pen.", "How would Bo feel?", ["angry", "grateful", "sleepy"], "2"),
             ("Cy fell over.", "What will Cy want to do?", ["get up", "fly", "sing"], "1"),
             ("Di won the race.", "Why did Di do this?", ["to lose", "to rest", "to win"], "3")]
    (data / "train.jsonl").write_text("".join(json.dumps({"context": c, "question": q, "answerA": a[0],
                                                          "answerB": a[1], "answerC": a[2]}) + "\n"
                                              for c, q, a, _ in items))
    (data / "train-labels.lst").write_text("".join(lab + "\n" for *_, lab in items))
    prompts = f"prompts:\n  sources: [{{task: siqa, split: train}}]\n  data_dir: {data.parent}\n"
    _, _, table = load_run_config(_config(tmp_path, pairs_file, prompts))
    assert table["prompt_id"].to_pylist() == ["train-00001", "train-00002", "train-00003"]
    assert table["reference_answer"].to_pylist() == ["B", "A", "C"]
    assert table["source"].to_pylist() == ["siqa:train.jsonl"] * 3
    for (c, q, answers, _), turns in zip(items, table["prompt"].to_pylist()):
        text = turns[-1]["content"]
        assert text.startswith(f"{c} {q}") and all(f"{x}. {a}" in text for x, a in zip("ABC", answers))


def test_task_entry_mistakes_are_named(pairs_file, tmp_path, shared_data, cream_exe):
    bad = f"""prompts:
  sources: [{{task: arc, split: train}}, {{task: gsm8k, split: test}}, {{task: gsm8k, split: train, source: x.jsonl}},
            {{task: siqa}}, {{source: {pairs_file}, split: train}}, {{task: gsm8k, split: train, layout: arc}},
            {{task: gsm8k, split: train, sft: true}}]
"""
    assert_user_error(cream_exe("run", _config(tmp_path, pairs_file, bad), "--check"), "7 problem(s)",
                      "prompts.sources[0].task: got 'arc', expected one of arc_easy, arc_challenge",
                      "prompts.sources[1].split: got 'test', expected train",
                      "prompts.sources[2].source: not with task", "prompts.sources[3].split: missing, expected train",
                      "prompts.sources[4].split: only with task", "prompts.sources[5].layout: not with task",
                      "prompts.sources[6].sft: not with task")
    siqa = f"prompts:\n  sources: [{{sft: true}}, {{task: siqa, split: train}}]\n  data_dir: {shared_data}\n"
    assert_user_error(cream_exe("run", _config(tmp_path, pairs_file, siqa), "--check"), "1 problem(s)",
                      "prompts.sources[1]:", "no siqa/train.jsonl for task siqa split train",
                      "without a data dir the Hub's lighteval/siqa is read")
    nowhere = "prompts:\n  sources: [{task: gsm8k, split: train}]\n  data_dir: no-such-folder\n"
    assert_user_error(cream_exe("run", _config(tmp_path, pairs_file, nowhere), "--check"), "1 problem(s)",
                      f"prompts.data_dir: {tmp_path / 'no-such-folder'} is not a folder")
    unused = f"prompts:\n  sources: [{{sft: true}}]\n  data_dir: {shared_data}\n"
    assert_user_error(cream_exe("run", _config(tmp_path, pairs_file, unused), "--check"), "1 problem(s)",
                      "prompts.data_dir: set, but prompts.sources has no {task, split} entry")
