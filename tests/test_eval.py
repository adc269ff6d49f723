"""`cream eval`: extraction on the real benchmark files, the table and its summary, --limit, resume, bad input.

Gold answers, ids and option counts are read here straight from the JSON files (plain ``json``), independently
of the loaders under test.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

import schemas
from cream_data.tables import io
from cream_data.errors import CreamError
from cream_data.engines.base import Generation
from cream_data.inputs.tasks import TASKS
from cream_data.stages.eval_config import SUFFIX
from cream_data.stages.evaluate import EvalConfig, evaluate, load_examples, option_letters, score
from cream_data.tables.validate import violations
from tests.support.benchmarks import raw_items
from tests.support.cli import assert_user_error


@pytest.fixture(scope="module")
def raw(shared_data) -> dict[str, list[dict]]:
    return {t: raw_items(shared_data, t) for t in TASKS}


@pytest.fixture(scope="module")
def examples(shared_data) -> dict:
    cfg = EvalConfig(data_dir=str(shared_data))
    return {t: load_examples(t, cfg) for t in TASKS}


# ---------------------------------------------------------------------------- config
def test_config_lists_every_problem_and_the_known_tasks():
    with pytest.raises(CreamError) as e:
        EvalConfig(tasks=("arc_easy", "mmlu", "arc_easy"), limit=0, max_new_tokens=0, batch_size=0)
    msg = str(e.value)
    for needle in ("unknown 'mmlu'", "known tasks: arc_easy, arc_challenge, openbookqa, siqa, gsm8k",
                   "arc_easy named more than once", "limit: got 0", "max_new_tokens: got 0", "batch_size: got 0"):
        assert needle in msg, msg
    with pytest.raises(CreamError, match="got none"):
        EvalConfig(tasks=())
    assert EvalConfig(tasks=["gsm8k"]).tasks == ("gsm8k",)
    assert "starting with 'Answer:'" in EvalConfig().suffix


# ---------------------------------------------------------------------------- loading: ids, answers, letters
def test_examples_match_the_benchmark_files(examples, raw):
    for task in TASKS:
        ex, items = examples[task], raw[task]
        assert ex.ids == [it["id"] for it in items], task
        assert ex.answers == [it["gold"] for it in items], task
        assert all(p[-1]["content"].endswith("\n" + SUFFIX) for p in ex.prompts), task
        if task == "gsm8k":
            assert ex.letters == [None] * len(items)
        else:  # the item's own letters: 3 for SIQA, 3 to 5 for some ARC items (numeric labels included)
            assert [len(lt) for lt in ex.letters] == [it["n_choices"] for it in items], task
            assert all(lt == "ABCDE"[: len(lt)] for lt in ex.letters)


def test_option_letters_with_newlines_inside_options():
    assert option_letters("Q?\nA. one\nline two\nB. x\nC. y") == "ABC"
    assert option_letters("A. starts the text\nB. no newline before A") is None
    assert option_letters("Q with a list:\nA. a\nB. b\n\nthen\nA. real\nB. r2\nC. r3\nD. r4\nE. r5") == "ABCDE"


# ---------------------------------------------------------------------------- extraction on real answers
@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge", "openbookqa", "siqa"])
def test_gold_letters_are_read_back_in_every_form(task, examples, raw):
    ex = examples[task]
    for it, letters in zip(raw[task], ex.letters):
        gold = it["gold"]
        pos = letters.index(gold) + 1
        forms = [f"Let me think step by step. {it['text'][:80]} ... so it must be this one.\nAnswer: {gold}",
                 f"The answer is ({gold}).",
                 f"{gold}) {it['options'][pos - 1]}",
                 f"Thinking it through, the option numbered {pos} fits.\nAnswer: {pos}",  # positional number
                 f"**Answer:** option {gold}"]
        for text in forms:
            assert score(task, text, gold, letters) == (gold, True), (it["id"], text)
        wrong = next(x for x in letters if x != gold)
        assert score(task, f"Answer: {wrong}", gold, letters) == (wrong, False)


def test_gsm8k_reference_solutions_and_answers_are_correct(raw):
    for it in raw["gsm8k"]:
        gold = it["gold"]
        assert score("gsm8k", it["solution"], gold, None) == (gold, True), it["id"]  # "… #### 18"
        assert score("gsm8k", f"Step by step: …\nAnswer: {gold}", gold, None)[1], it["id"]
        wrong = str(int(gold) + 1)
        assert score("gsm8k", f"Answer: {wrong}", gold, None) == (wrong, False)


def _item(raw, task, item_id):
    return next(it for it in raw[task] if it["id"] == item_id)


def test_messy_generations(examples, raw):
    def letters_of(task, item_id):
        return examples[task].letters[examples[task].ids.index(item_id)]

    numeric = _item(raw, "arc_easy", "NYSEDREGENTS_2015_8_28")  # labels "1".."4", key "2"
    five = _item(raw, "arc_easy", "TIMSS_2003_4_pg35")  # five choices
    three = _item(raw, "arc_challenge", "NYSEDREGENTS_2012_8_42")  # three choices labelled "1".."3"
    assert numeric["labels"] == ["1", "2", "3", "4"] and numeric["gold"] == "B"
    assert five["n_choices"] == 5 and three["n_choices"] == 3 and three["labels"][0] == "1"
    lt_num, lt_five = letters_of("arc_easy", numeric["id"]), letters_of("arc_easy", five["id"])
    lt_three, lt_siqa = letters_of("arc_challenge", three["id"]), examples["siqa"].letters[0]
    assert (lt_num, lt_five, lt_three, lt_siqa) == ("ABCD", "ABCDE", "ABC", "ABC")
    cases = [  # (task, text, letters, gold, expected prediction)
        ("arc_easy", "The answer is (B).", lt_num, "B", "B"),
        ("arc_easy", "Answer: 2", lt_num, "B", "B"),  # the file's own label "2" → B by position
        ("arc_easy", "B) " + numeric["options"][1], lt_num, "B", "B"),
        ("arc_easy", "Answer: E", lt_num, "B", None),  # no option E on a four-choice item
        ("arc_easy", "After comparing all five.\nAnswer: E", lt_five, five["gold"], "E"),
        ("arc_challenge", "Answer: 3", lt_three, three["gold"], "C"),
        ("arc_challenge", "Answer: D", lt_three, three["gold"], None),
        ("siqa", "They would feel (A) happy... Actually the answer is C.", lt_siqa, "C", "C"),
        ("siqa", "Answer: a new plan", lt_siqa, "C", None),  # lower-case word, not option A
        ("openbookqa", "I cannot decide between these.", "ABCD", "B", None),
        ("openbookqa", "", "ABCD", "B", None),
        ("openbookqa", "First I thought (A), but no.\n**Answer:** (D)", "ABCD", "D", "D"),
        # A restated option list is not a choice (the embedded model does this); an answer after it still counts.
        ("arc_easy", "\n".join(f"{x}. {o}" for x, o in zip("ABCD", numeric["options"])), lt_num, "A", None),
        ("arc_easy", "A. one\nB. two\nC. three\nD. four\nStep 3: decide.\nAnswer: B. two", lt_num, "B", "B"),
        ("arc_easy", "A) one\nB) two\nC) three\nSo I pick (C).", lt_num, "C", "C"),
        ("gsm8k", "She sells 16 - 3 - 4 = 9 eggs for 9 * 2 = $18.\nAnswer: $18", None, "18", "18"),
        ("gsm8k", "Answer: 1,200.00 dollars", None, "1200", "1200"),
        ("gsm8k", "5 + 3 = 8, so 8 in total.", None, "8", "8"),  # no marker: the last number
        ("gsm8k", "Answer: 18.0", None, "18", "18"),
        ("gsm8k", "I do not know.", None, "18", None),
    ]
    for task, text, letters, gold, expected in cases:
        pred, ok = score(task, text, gold, letters)
        assert pred == expected, (task, text, pred)
        assert ok is (expected is not None and expected == gold), (task, text)


# ---------------------------------------------------------------------------- the pipeline on a tiny model
def _run(model, data, out, **kw):
    cfg = EvalConfig(**{"limit": 3, "data_dir": str(data), "max_new_tokens": 5, "batch_size": 2, **kw})
    return evaluate(str(model), cfg, out)


@pytest.fixture(scope="module")
def tiny_runs(tiny_model, tiny_model_b, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    a1 = _run(tiny_model, shared_data, root / "a1", label="M0")
    a2 = _run(tiny_model, shared_data, root / "a2", label="M0")
    b = _run(tiny_model_b, shared_data, root / "b", label="M1")
    return root, a1, a2, b


def test_table_is_schema_valid_and_matches_the_files(tiny_runs, raw, tiny_model):
    root, a1, _, _ = tiny_runs
    table = io.read_table(root / "a1", "eval")
    assert violations(table, schemas.get("eval")) == []
    assert table.num_rows == 3 * len(TASKS)
    rows = table.to_pylist()
    for task in TASKS:  # the first 3 items in file order, with their gold answers
        mine = [r for r in rows if r["task"] == task]
        assert [(r["example_id"], r["answer"]) for r in mine] == [(it["id"], it["gold"]) for it in raw[task][:3]]
    assert {r["model"] for r in rows} == {str(Path(tiny_model).resolve())}
    for r in rows:  # each row's verdict is the extraction of its own response
        letters = None if r["task"] == "gsm8k" else "ABCDE"
        assert (r["prediction"], r["correct"]) == score(r["task"], r["response"], r["answer"], letters)
    manifest = io.read_manifest(root / "a1")
    assert manifest["label"] == "M0" and manifest["summary"]["label"] == "M0"
    assert manifest["summary"]["n"] == {t: 3 for t in TASKS}
    assert manifest["summary"]["model"] == a1.model
    assert a1.tasks_run == TASKS and a1.tasks_skipped == ()
    assert set(a1.truncated) == set(TASKS) and all(0 <= v <= 3 for v in a1.truncated.values())
    assert manifest["summary"]["truncated"] == a1.truncated


def test_limit_subset_is_the_same_for_every_run_and_model(tiny_runs):
    root = tiny_runs[0]
    keys = {}
    for name in ("a1", "a2", "b"):
        t = io.read_table(root / name, "eval")
        keys[name] = list(zip(t.column("task").to_pylist(), t.column("example_id").to_pylist()))
    assert keys["a1"] == keys["a2"] == keys["b"]
    a1, a2 = io.read_table(root / "a1", "eval"), io.read_table(root / "a2", "eval")
    assert a1.column("response").to_pylist() == a2.column("response").to_pylist()  # greedy: same text
    b = io.read_table(root / "b", "eval")
    assert set(a1.column("model").to_pylist()) != set(b.column("model").to_pylist())
    assert io.read_manifest(root / "b")["label"] == "M1"


class ScriptedEngine:
    """A sampling engine that answers from a script keyed by the question (the Protocol's fake for tests)."""

    name = "scripted"

    def __init__(self, script: dict[str, str]):
        self.script = script
        self.calls = 0

    def prompt_lengths(self, prompts):
        return [len(p[-1]["content"]) for p in prompts]

    def generate(self, prompts, seeds, n, params):
        self.calls += 1
        assert params.temperature == 0 and n == 1
        out = []
        for p in prompts:
            text = next(v for k, v in self.script.items() if k in p[-1]["content"])
            out.append([Generation(text, "stop", 7)])
        return out


def test_accuracy_and_average_against_an_independent_count(raw, shared_data, tmp_path, tiny_model):
    """Task t, item i: right when (i + t) % 3 == 0, wrong when 1, no answer when 2; K = 5 items per task."""
    K, script, expected = 5, {}, {}
    for t, task in enumerate(TASKS):
        hits = []
        for i, it in enumerate(raw[task][:K]):
            kind = (i + t) % 3
            if task == "gsm8k":
                wrong = str(int(it["gold"]) + 7)
            else:
                wrong = "ABCDE"[("ABCDE".index(it["gold"]) + 1) % it["n_choices"]]
            script[it["text"]] = {0: f"Reasoning.\nAnswer: {it['gold']}", 1: f"Reasoning.\nAnswer: {wrong}",
                                  2: "No idea, sorry."}[kind]
            hits.append(kind == 0)
        expected[task] = float(np.mean(hits))
    engine = ScriptedEngine(script)
    cfg = EvalConfig(limit=K, data_dir=str(shared_data), batch_size=2)
    s = evaluate(str(tiny_model), cfg, tmp_path / "ev", engine=engine)
    assert s.accuracy == pytest.approx(expected)
    assert s.average == pytest.approx(np.mean(list(expected.values())))
    table = io.read_table(tmp_path / "ev", "eval")
    for task in TASKS:  # accuracy = mean(correct) over the task's rows of the written table
        rows = table.filter(pc.equal(table.column("task"), task))
        assert s.accuracy[task] == pytest.approx(np.mean(rows.column("correct").to_pylist()))
        assert s.n[task] == K and s.extracted[task] == sum(p is not None for p in rows.column("prediction").to_pylist())
    assert len(set(expected.values())) > 1  # the rule gives tasks different accuracies
    assert engine.calls == len(TASKS) * 3  # length-sorted batches of 2: 3 calls per task of 5
    summary = io.read_manifest(tmp_path / "ev")["summary"]
    assert summary["accuracy"] == pytest.approx(expected) and summary["average"] == pytest.approx(s.average)


def test_interrupted_run_resumes_without_redoing_finished_tasks(tiny_model, shared_data, tmp_path, tiny_runs):
    cfg = EvalConfig(limit=3, data_dir=str(shared_data), max_new_tokens=5, batch_size=2, label="M0")
    started = []

    def stop_at_third_task(task, done, total, tokens):
        if done == 0:
            started.append(task)
            if len(started) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(str(tiny_model), cfg, tmp_path / "ev", progress=stop_at_third_task)
    assert len(list((tmp_path / "ev").glob("part-*.parquet"))) == 2
    assert not (tmp_path / "ev" / "_manifest.json").exists()

    s = evaluate(str(tiny_model), cfg, tmp_path / "ev")
    assert s.tasks_skipped == TASKS[:2] and s.tasks_run == TASKS[2:]
    key = [("task", "ascending"), ("example_id", "ascending")]
    uninterrupted = io.read_table(tiny_runs[0] / "a1", "eval").sort_by(key)
    resumed = io.read_table(tmp_path / "ev", "eval").sort_by(key)
    assert resumed.equals(uninterrupted)
    assert s.truncated == tiny_runs[1].truncated  # counts of the earlier call's tasks kept in their parts

    again = evaluate(str(tiny_model), cfg, tmp_path / "ev")  # finished: nothing to do, no model loaded
    assert again.tasks_run == () and again.tokens == 0 and again.accuracy == s.accuracy


def test_other_settings_in_the_same_folder_are_refused(tiny_model, shared_data, tmp_path):
    _run(tiny_model, shared_data, tmp_path / "ev", tasks=("siqa",))
    with pytest.raises(CreamError, match=r"other settings \(limit 3 -> 2"):
        _run(tiny_model, shared_data, tmp_path / "ev", tasks=("siqa",), limit=2)
    cfg = EvalConfig(tasks=("siqa",), limit=2, data_dir=str(shared_data), max_new_tokens=5)
    evaluate(str(tiny_model), cfg, tmp_path / "ev", overwrite=True)
    assert io.read_table(tmp_path / "ev", "eval").num_rows == 2


# ---------------------------------------------------------------------------- the command
def test_cli_prints_accuracy_table_and_writes_summary(cli, tiny_model, shared_data, tmp_path):
    r = cli("eval", "--model", tiny_model, "--tasks", "openbookqa, gsm8k", "--limit", "2", "--data-dir", shared_data,
            "--max-new-tokens", "4", "--label", "M1", "--out", tmp_path / "ev")
    assert r.code == 0, r
    for needle in ("openbookqa", "gsm8k", "average", "accuracy", "M1"):
        assert needle in r.out, r.out
    m = io.read_manifest(tmp_path / "ev")
    assert m["summary"]["n"] == {"openbookqa": 2, "gsm8k": 2} and m["rows"] == 4


def test_cli_default_tasks_are_the_library_tasks():
    import typer

    from cli.main import app

    command = typer.main.get_command(app).commands["eval"]
    assert next(p for p in command.params if p.name == "tasks").default == ",".join(TASKS)


@pytest.mark.parametrize("args, needles", [
    (["--tasks", "arc_easy,mmlu"], ["unknown 'mmlu'", "known tasks: arc_easy"]),
    (["--limit", "0"], ["limit: got 0"]),
    (["--data-dir", "/nonexistent/data"], ["--data-dir /nonexistent/data", "no such folder"]),
    (["--data-dir", "{empty}"], ["no arc/ARC-Easy-Test.jsonl for task arc_easy"]),
    (["--model", "/nonexistent/model"], ["/nonexistent/model", "does not exist"]),
    (["--data-dir", None], ["allenai/ai2_arc", "--data-dir"]),  # HF_HUB_OFFLINE=1 in tests: the Hub fails
])
def test_bad_input_is_one_line_and_writes_nothing(args, needles, cli, tiny_model, shared_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = {"--model": str(tiny_model), "--tasks": "arc_easy,siqa", "--data-dir": str(shared_data),
            "--limit": "2", "--max-new-tokens": "2"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value if value != "{empty}" else str(empty)
    argv = [x for k, v in base.items() if v is not None for x in (k, v)]
    r = cli("eval", *argv, "--out", tmp_path / "ev")
    assert_user_error(r, *needles)
    assert not (tmp_path / "ev").exists()


# ---------------------------------------------------------------------------- the embedded model
@pytest.fixture
def one_thread():
    """One torch thread: on this shared 2-core machine, 2 threads under load ran ~25x slower (spin-waiting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_embedded_model_answers_are_extracted(shared_data, tmp_path, one_thread):
    cfg = EvalConfig(limit=3, data_dir=str(shared_data), max_new_tokens=96, batch_size=16, label="M0")
    s = evaluate("smollm2-135m-instruct", cfg, tmp_path / "ev")
    table = io.read_table(tmp_path / "ev", "eval")
    assert table.num_rows == 15 and s.n == {t: 3 for t in TASKS}
    assert all(r.strip() for r in table.column("response").to_pylist())
    announced = 0
    for r, letters in zip(table.to_pylist(), [lt for t in TASKS for lt in load_examples(t, cfg).letters]):
        assert (r["prediction"], r["correct"]) == score(r["task"], r["response"], r["answer"], letters)
        # Wherever "Answer:" is followed by an option label or a number, an answer is extracted.
        pattern = r"Answer:\s*\**\s*\(?(-?\$?[\d,.]*\d)" if r["task"] == "gsm8k" else r"Answer:\s*\**\s*\(?([A-E])\b"
        if re.search(pattern, r["response"]):
            announced += 1
            assert r["prediction"] is not None, r["response"]
    print(f"embedded model, 3 per task, {cfg.max_new_tokens} tokens: accuracy {s.accuracy}, average "
          f"{s.average:.3f}, answers announced {announced}/15, truncated {s.truncated}, {s.seconds:.0f} s")
