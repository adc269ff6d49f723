"""`cream label --oracle-scores` (label setting ``oracle_scores``): the oracle role (1 correct / 0 wrong against the
prompt's reference answer) added to the scores table as a diagnostic, the pairs unchanged. Checked with the tiny
models on responses whose answers are written by hand (each verdict worked out below, not by the extractor), with
and without the option, sharded and rerun, in `cream inspect`'s premise table, through the console script, in a run
config and in the demo config."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cream_data.errors import CreamError
from cream_data.reports import premise_report
from cream_data.stages.label import label
from cream_data.stages.label_config import LabelConfig
from cream_data.tables import io
from tests.support import REPO
from tests.support.cli import assert_user_error, snapshot
from tests.support.runs import tiny_run_config, write_yaml
from tests.support.tables import responses_table

# prompt -> (reference answer, [(response, verdict)], human answer or None). A verdict worked out by hand: the
# number after the last "Answer:" / "####" (else the last number) equals the reference's number, or the option
# letter after the marker (or in parentheses) is the reference's; None where the reference cannot be checked.
GSM8K = "She sold 48 / 2 = 24 in May, and 48 + 24 = 72 in all.\n#### 72"
HAND = {
    "p000": ("7", [("3 + 4 = 7. Answer: 7", 1.0), ("Answer: 8", 0.0), ("It is 7", 1.0), ("I cannot tell", 0.0)],
             "Three and four make seven. Answer: 7"),
    "p001": ("B", [("Answer: B", 1.0), ("Answer: C", 0.0), ("The answer is (B)", 1.0), ("Answer: A", 0.0)],
             "Answer: C"),
    "p002": (GSM8K, [("48 + 24 = 72. Answer: 72", 1.0), ("Answer: 24", 0.0), ("#### 72", 1.0),
                     ("Answer: 70", 0.0)], None),
    "p003": (None, [("Answer: 5", None), ("Answer: 6", None), ("5", None), ("no idea", None)], "Answer: 5"),
    "p004": ("Paris", [("Answer: Paris", None), ("Lyon", None), ("Answer: 5", None), ("Paris!", None)], None),
    "p005": ("1,000", [("Answer: 1000", 1.0), ("Answer: 1000.0", 1.0), ("Answer: 100", 0.0),
                       ("Answer: $1,000", 1.0)], None),
    "p006": ("12", [("Answer: 12", 1.0), ("Answer: 13", 0.0), ("Answer: 21", 0.0), ("12", 1.0)], None),
    "p007": ("D", [("Answer: D", 1.0), ("Answer: E", 0.0), ("(D)", 1.0), ("Answer: B", 0.0)], None),
}
VERDICT = {(p, i): v for p, (_, rows, _) in HAND.items() for i, (_, v) in enumerate(rows)}
HUMAN_VERDICT = {"p000": 1.0, "p001": 0.0, "p003": None}
NO_REFERENCE = {"p003", "p004"}


def write_inputs(tmp_path):
    """The responses (HAND's texts) and a prompts table with HAND's reference and human answers."""
    rows = responses_table(n_prompts=len(HAND), n=4).to_pylist()
    for r in rows:
        r["response"] = HAND[r["prompt_id"]][1][r["response_idx"]][0]
    resp = io.write_table(pa.Table.from_pylist(rows), tmp_path / "responses", "responses")
    first = {r["prompt_id"]: r["prompt"] for r in reversed(rows)}
    ids = sorted(HAND)
    prompts = pa.table({"prompt_id": ids, "prompt": [first[p] for p in ids], "source": ["t"] * len(ids),
                        "reference_answer": pa.array([HAND[p][0] for p in ids], pa.string()),
                        "human_answer": pa.array([HAND[p][2] for p in ids], pa.string())})
    return resp, io.write_table(prompts, tmp_path / "prompts", "prompts")


def models(tiny_model, tiny_model_b) -> dict:
    """CREAM's labeling: M_t, its reference M_{t-1}, and M_{t-1} as the previous scorer (C between the two)."""
    return dict(model=str(tiny_model), ref=str(tiny_model_b), prev_model=str(tiny_model_b), iteration=1)


def by_role(table: pa.Table, role: str) -> pa.Table:
    return table.filter(pc.equal(table["scorer"], role))


def without_role(table: pa.Table, role: str) -> pa.Table:
    return table.filter(pc.not_equal(table["scorer"], role))


def test_the_option_adds_the_verdicts_and_changes_no_pair(tmp_path, cli, tiny_model, tiny_model_b):
    resp, prompts = write_inputs(tmp_path)
    out = tmp_path / "lab"
    base = dict(**models(tiny_model, tiny_model_b), prompts=str(prompts), human_answers=True)
    plain = label(resp, LabelConfig(**base), out)
    plain_scores = io.read_table(out / "scores", "scores")
    plain_prefs = io.read_table(out / "preferences", "preferences")
    plain_human = io.read_table(out / "human", "human_scores")
    assert "oracle" not in plain_scores["scorer"].to_pylist() and plain_prefs.num_rows == len(HAND)

    lines = []  # the same folder labeled again with the option: the stored log-probs serve, nothing is rescored
    diag = label(resp, LabelConfig(**base, oracle_scores=True), out, log=lines.append)
    assert diag.models_scored == [] and sorted(diag.models_reused) == sorted(plain.models_scored)
    assert any(f"--oracle-scores: {len(NO_REFERENCE)} of the {len(HAND)} labeled prompts have no reference answer"
               in line for line in lines), lines

    scores = io.read_table(out / "scores", "scores")
    assert without_role(scores, "oracle").equals(plain_scores)  # every other row as it was
    oracle = by_role(scores, "oracle").to_pylist()
    assert {(r["prompt_id"], r["response_idx"]): r["reward"] for r in oracle} == VERDICT
    assert {(r["model"], r["reward_kind"], r["logp"]) for r in oracle} == {("oracle:reference_answer", "oracle", None)}

    prefs = io.read_table(out / "preferences", "preferences")
    assert prefs.equals(plain_prefs)  # the pairs, C and weights, value for value
    assert diag.pairing.to_dict() == plain.pairing.to_dict()
    manifest = io.read_manifest(out / "preferences")
    assert manifest["config"]["oracle_scores"] is True

    human = io.read_table(out / "human", "human_scores")
    assert without_role(human, "oracle").equals(plain_human)
    assert {r["prompt_id"]: r["reward"] for r in by_role(human, "oracle").to_pylist()} == HUMAN_VERDICT

    # `cream inspect` of the folder prints the premise table, the pairs of the prompts without a reference unknown
    entry = premise_report.folder_premise(prefs, scores, manifest)
    assert entry["absent"] is None and entry["right"] > 0 and entry["wrong"] > 0, entry
    assert entry["unknown"] == sum(p in NO_REFERENCE for p in prefs["prompt_id"].to_pylist()) == len(NO_REFERENCE)
    res = cli("inspect", out, "--out", tmp_path / "plots")
    assert res.code == 0, res
    assert premise_report.TITLE in res.out and premise_report.ACCURACY_TITLE in res.out
    assert f"{entry['pairs']} pairs; {entry['unknown']} with an unknown oracle verdict" in res.out
    saved = json.loads((tmp_path / "plots" / "summary.json").read_text())["premise"]
    assert saved == json.loads(json.dumps(entry))


def test_a_sharded_labeling_and_a_rerun_shard_carry_the_oracle_rows(tmp_path, tiny_model, tiny_model_b):
    """`--shard i/k` (a run's label.data_parallel): each shard writes its prompts' oracle rows, a shard run again (a
    restarted process) replaces its part, and the tables equal an unsharded labeling's."""
    resp, prompts = write_inputs(tmp_path)
    cfg = LabelConfig(**models(tiny_model, tiny_model_b), prompts=str(prompts), oracle_scores=True)
    sharded = tmp_path / "sharded"
    assert label(resp, cfg, sharded, shard=(0, 2)).pairing is None
    again = label(resp, cfg, sharded, shard=(0, 2))
    assert again.models_scored == [] and again.pairing is None
    assert label(resp, cfg, sharded, shard=(1, 2)).pairing is not None
    label(resp, cfg, tmp_path / "whole")
    order = [("prompt_id", "ascending"), ("scorer", "ascending"), ("response_idx", "ascending")]
    parts = io.read_table(sharded / "scores", "scores").sort_by(order)
    whole = io.read_table(tmp_path / "whole" / "scores", "scores").sort_by(order)
    assert by_role(parts, "oracle").equals(by_role(whole, "oracle")) and parts.num_rows == whole.num_rows
    assert {(r["prompt_id"], r["response_idx"]): r["reward"] for r in by_role(parts, "oracle").to_pylist()} == VERDICT
    p_sharded = io.read_table(sharded / "preferences", "preferences")
    p_whole = io.read_table(tmp_path / "whole" / "preferences", "preferences")
    for column in ("prompt_id", "chosen_idx", "rejected_idx"):
        assert p_sharded[column].equals(p_whole[column]), column
    for column in ("consistency", "weight"):
        assert p_sharded[column].to_pylist() == pytest.approx(p_whole[column].to_pylist(), abs=1e-12), column


@pytest.mark.parametrize("settings", [dict(reward="oracle"), dict(consistency_between="current,oracle"),
                                      dict(reward="oracle", oracle_scores=True)],
                         ids=["reward-oracle", "oracle-partner", "reward-oracle-with-the-option"])
def test_where_the_oracle_pairs_every_prompt_still_needs_a_reference(tmp_path, tiny_model, settings):
    resp, prompts = write_inputs(tmp_path)
    with pytest.raises(CreamError, match=f"{len(NO_REFERENCE)} of the {len(HAND)} labeled prompts have no "
                                         "reference_answer the oracle can check"):
        label(resp, LabelConfig(model=str(tiny_model), prompts=str(prompts), **settings), tmp_path / "lab")
    assert not (tmp_path / "lab").exists()


def test_the_option_needs_a_prompts_table(tmp_path, cream_exe, tiny_model):
    resp = io.write_table(responses_table(2, 2), tmp_path / "responses", "responses")
    before = snapshot(tmp_path)
    r = cream_exe("label", resp, "--model", tiny_model, "--out", tmp_path / "lab", "--oracle-scores")
    assert_user_error(r, "--oracle-scores: needs --prompts")
    assert snapshot(tmp_path) == before


def test_a_run_config_turns_it_on_and_keeps_old_fingerprints_off(tmp_path, cream_exe, tiny_model):
    from cream_train.run.config import LabelSection, RunConfig
    from cream_train.run.launch import stage_argv
    from cream_train.run.sections import Stages, fingerprinted
    from cream_train.run.stage import inputs_fingerprint

    on = write_yaml(tmp_path / "on.yaml", tiny_run_config({"label": {"oracle_scores": True}}, model=tiny_model,
                                                          run_dir=tmp_path / "run"))
    r = cream_exe("run", on, "--check")
    assert r.code == 0 and "oracle_scores: true" in r.out, r
    bad = write_yaml(tmp_path / "bad.yaml", tiny_run_config({"label": {"oracle_scores": "yes"}}, model=tiny_model,
                                                            run_dir=tmp_path / "run"))
    assert_user_error(cream_exe("run", bad, "--check"), "label.oracle_scores")
    assert not (tmp_path / "run").exists()

    def argv(section):
        cfg = Stages(RunConfig(method="cream", label=section), tmp_path).label(2, model="M2", ref="M1")
        return stage_argv("label", cfg, positional=["responses"])

    assert "--oracle-scores" not in argv(LabelSection()) and "--oracle-scores" in argv(LabelSection(oracle_scores=True))
    plain = fingerprinted(LabelSection())  # off: no input of the label stage (runs made before it are not redone)
    assert "oracle_scores" not in plain and fingerprinted(LabelSection(oracle_scores=False)) == plain
    turned_on = fingerprinted(LabelSection(oracle_scores=True))
    assert turned_on == {**plain, "oracle_scores": True}
    assert inputs_fingerprint(turned_on) != inputs_fingerprint(plain)


def test_the_demo_turns_it_on_with_the_demo_prompts_answers():
    """examples/demo.yaml scores the oracle; its prompts table holds each demo prompt's `answer` as the reference
    (demo-18 … demo-23 have none: their responses get null oracle rewards)."""
    from cream_train.run.config import load_run_config

    cfg, _, table = load_run_config(REPO / "examples" / "demo.yaml", {}, machine_checks=None)
    assert cfg.label.oracle_scores is True
    source = [json.loads(line) for line in (REPO / "examples" / "data" / "demo_prompts.jsonl").open()]
    answer = {row["prompt"]: row["answer"] for row in source}
    read = {conv[-1]["content"]: ref for conv, ref in zip(table["prompt"].to_pylist(),
                                                          table["reference_answer"].to_pylist())}
    assert read == answer
    assert [row["id"] for row in source if row["answer"] is None] == [f"demo-{k}" for k in range(18, 24)]


def test_a_shard_without_human_answers_still_completes_the_human_table(tmp_path, tiny_model, tiny_model_b):
    """With 2 label shards and one prompt with a human answer, one shard has none to score: it writes an empty part,
    so the human table is complete and equals an unsharded labeling's (before, it was never complete)."""
    resp, prompts = write_inputs(tmp_path)
    t = io.read_table(prompts, "prompts")
    only = pa.array([a if p == "p000" else None for p, a in zip(t["prompt_id"].to_pylist(),
                                                                 t["human_answer"].to_pylist())], pa.string())
    one = io.write_table(t.set_column(t.schema.get_field_index("human_answer"), "human_answer", only),
                         tmp_path / "one-human", "prompts")
    cfg = LabelConfig(**models(tiny_model, tiny_model_b), prompts=str(one), human_answers=True)
    for i in range(2):
        label(resp, cfg, tmp_path / "sharded", shard=(i, 2))
    label(resp, cfg, tmp_path / "whole")
    order = [("scorer", "ascending")]
    sharded = io.read_table(tmp_path / "sharded" / "human", "human_scores").sort_by(order)
    whole = io.read_table(tmp_path / "whole" / "human", "human_scores").sort_by(order)
    assert set(sharded["prompt_id"].to_pylist()) == {"p000"} and sharded.num_rows == whole.num_rows > 0
    assert sharded.equals(whole)
    # responses to none of the prompts with a human answer: the table is still written, empty (a run links it as
    # label-t's output)
    r = io.read_table(resp, "responses")
    others = io.write_table(r.filter(pc.not_equal(r["prompt_id"], "p000")), tmp_path / "others", "responses")
    label(others, cfg, tmp_path / "empty")
    assert io.read_table(tmp_path / "empty" / "human", "human_scores").num_rows == 0
