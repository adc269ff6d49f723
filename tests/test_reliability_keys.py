"""Issue #26, class "a key means one thing everywhere", through the installed `cream` script: a labeled folder whose
tables come from two labelings, or whose responses were replaced after labeling, is neither published nor inspected;
`cream publish --out` never points into the folder it publishes; a pool that copies the input is refused by content;
a pair whose chosen and rejected are one response is refused by `cream train` and `cream publish`, and pairing never
makes one.

Every refusal is one stderr line, exit 2, no traceback, nothing new on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from cream_data.tables import io
from tests.support.cli import assert_user_error, snapshot

# two samplings of the same prompts: one labeling of each is "another labeling" of the other's prompts
TEXTS = {"a": {"p1": ["Answer: 2", "It is two.", "2"], "p2": ["Answer: 4", "Four.", "4, I think"],
               "p3": ["Answer: 6", "six", "It is 6."]},
         "b": {"p1": ["Two.", "1 + 1 = 2", "I do not know"], "p2": ["4", "Answer: four", "2 + 2 is 4"],
               "p3": ["6!", "Answer is 6", "three times two"]}}


def responses_table(texts: dict[str, list[str]]) -> pa.Table:
    rows = [{"prompt_id": pid, "prompt": [{"role": "user", "content": f"What is {pid[-1]} + {pid[-1]}?"}],
             "response_idx": i, "response": text, "model": "m", "iteration": 1, "seed": 0, "temperature": 0.8,
             "top_p": 0.95, "max_new_tokens": 32, "finish_reason": "stop", "n_tokens": 5}
            for pid, answers in texts.items() for i, text in enumerate(answers)]
    return pa.Table.from_pylist(rows, schema=schemas.get("responses").arrow)


@pytest.fixture(scope="module")
def labelings(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Two real `cream label` outputs of the same prompts (other samples), each with the responses it labeled
    beside its tables (as in a run's iter-<t>/)."""
    from cream_data.stages.label import LabelConfig, label

    root = tmp_path_factory.mktemp("labelings")
    out = {}
    for name, texts in TEXTS.items():
        resp = io.write_table(responses_table(texts), root / f"responses-{name}", "responses")
        label(resp, LabelConfig(model=str(tiny_model)), root / name)
        shutil.copytree(resp, root / name / "responses")
        out[name] = root / name
    return out


def refused(cream_exe, cwd: Path, *args, needles):
    before = snapshot(cwd)
    r = cream_exe(*args, cwd=cwd)
    assert_user_error(r, *needles)
    assert snapshot(cwd) == before, f"`cream {args[0]}` changed files"
    return r


def publish_args(folder: Path, out: Path) -> list:
    return ["publish", folder, "--repo-id", "me/x", "--dry-run", "--out", out]


def rewrite(table: pa.Table, folder: Path, kind: str) -> None:
    """Replace the table at ``folder`` by ``table`` (written whole, with its manifest)."""
    shutil.rmtree(folder)
    io.write_table(table, folder, kind)


def with_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


# ---------------------------------------------------------------------------- item 1: a table of another labeling
@pytest.mark.parametrize("part", ["scores", "preferences", "responses"])
def test_a_table_of_another_labeling_is_refused(tmp_path, cream_exe, labelings, part):
    """One table replaced by the same-named table of a labeling of other samples of the same prompts: publish and
    inspect refuse, naming the table and the first key that does not match (row 0, prompt_id 'p1')."""
    lab = shutil.copytree(labelings["a"], tmp_path / "lab")
    shutil.rmtree(lab / part)
    shutil.copytree(labelings["b"] / part, lab / part)
    needles = [str(lab / part), "row 0 (prompt_id 'p1')"]
    refused(cream_exe, tmp_path, *publish_args(lab, tmp_path / "pub"), needles=needles)
    refused(cream_exe, tmp_path, "inspect", lab, "--out", tmp_path / "rep", needles=needles)


def test_a_label_output_without_responses_is_checked_by_its_scores(tmp_path, cream_exe, labelings):
    """What `cream label --out` alone holds (no responses beside): other scores are caught by the rewards the
    pairs recorded; the first pair's reward names the scorer."""
    lab = shutil.copytree(labelings["a"], tmp_path / "lab", ignore=shutil.ignore_patterns("responses"))
    shutil.rmtree(lab / "scores")
    shutil.copytree(labelings["b"] / "scores", lab / "scores")
    needles = [str(lab / "scores"), "row 0 (prompt_id 'p1'): rewards[0]", "current reward"]
    refused(cream_exe, tmp_path, *publish_args(lab, tmp_path / "pub"), needles=needles)
    refused(cream_exe, tmp_path, "inspect", lab, "--out", tmp_path / "rep", needles=needles)


def test_human_scores_of_another_labeling_are_refused_by_inspect(tmp_path, cream_exe, labelings):
    """The human answers' scores (`--human-answers`, OUT/human) meet the scores by (prompt_id, scorer), and were
    labeled from the responses the scores were: another prompt, or another responses table, is refused."""
    lab = shutil.copytree(labelings["a"], tmp_path / "lab", ignore=shutil.ignore_patterns("responses"))
    fp = io.read_manifest(lab / "scores")["inputs"]["responses"]

    def human(pid: str, fingerprint: str) -> None:
        row = {"prompt_id": pid, "scorer": "current", "model": "m", "ref_model": None, "logp": -3.0,
               "ref_logp": None, "n_tokens": 4, "reward": -0.75, "reward_kind": "likelihood_norm", "judge_text": None,
               "confidence": None, "human_answer": "It is 2."}
        shutil.rmtree(lab / "human", ignore_errors=True)
        io.write_table(pa.Table.from_pylist([row], schema=schemas.get("human_scores").arrow), lab / "human",
                       "human_scores", manifest_extra={"inputs": {"responses": fingerprint}})

    human("p1", fp)
    assert cream_exe("inspect", lab, "--out", tmp_path / "rep", cwd=tmp_path).code == 0
    shutil.rmtree(tmp_path / "rep")
    human("p9", fp)
    refused(cream_exe, tmp_path, "inspect", lab, "--out", tmp_path / "rep",
            needles=[str(lab / "human"), "row 0 (prompt_id 'p9')", "scored no response", str(lab / "scores")])
    human("p1", "0123456789abcdef")
    refused(cream_exe, tmp_path, "inspect", lab, "--out", tmp_path / "rep",
            needles=[str(lab / "human"), "labeled from another responses table", "fingerprint 0123456789abcdef"])


# ---------------------------------------------------------------------------- item 2: responses replaced after labeling
def test_responses_replaced_after_labeling_are_refused_by_publish(tmp_path, cream_exe, labelings):
    """A run's iter-1: the responses rewritten after labeling, same keys. The chosen response's text changed: the
    row is named; only an unpicked one changed: the fingerprint the labeling recorded differs; rewritten as a bare
    Parquet part (no manifest): the folder beside the pairs is no table, and says so."""
    run = tmp_path / "run"
    it = shutil.copytree(labelings["a"], run / "iter-1")
    r = cream_exe(*publish_args(run, tmp_path / "pub"), cwd=tmp_path)  # as `cream label` wrote them: published
    assert r.code == 0 and (tmp_path / "pub" / "data" / "responses").is_dir(), r
    r = cream_exe("inspect", it, "--out", tmp_path / "rep", cwd=tmp_path)
    assert r.code == 0, r
    shutil.rmtree(tmp_path / "pub")
    prefs = io.read_table(it / "preferences", "preferences")
    first = prefs.sort_by("prompt_id").to_pylist()[0]
    resp = io.read_table(it / "responses", "responses")
    keys = list(zip(resp["prompt_id"].to_pylist(), resp["response_idx"].to_pylist()))
    texts = resp["response"].to_pylist()
    chosen = keys.index((first["prompt_id"], first["chosen_idx"]))
    rewrite(with_column(resp, "response", [t + " (edited)" if k == chosen else t for k, t in enumerate(texts)]),
            it / "responses", "responses")
    refused(cream_exe, tmp_path, *publish_args(run, tmp_path / "pub"),
            needles=[str(it / "preferences"), f"prompt_id {first['prompt_id']!r}", "its chosen is",
                     f"response {first['chosen_idx']} of that prompt in {it / 'responses'}", "(edited)"])

    unpicked = next(k for k, (pid, i) in enumerate(keys) if pid == first["prompt_id"]
                    and i not in (first["chosen_idx"], first["rejected_idx"]))
    rewrite(with_column(resp, "response", [t + " (edited)" if k == unpicked else t for k, t in enumerate(texts)]),
            it / "responses", "responses")
    refused(cream_exe, tmp_path, *publish_args(run, tmp_path / "pub"),
            needles=[str(it / "responses"), "not the responses", "fingerprint"])

    shutil.rmtree(it / "responses")
    (it / "responses").mkdir()
    pq.write_table(with_column(resp, "response", [f"Replaced {k}." for k in range(len(texts))]),
                   it / "responses" / "part-00000.parquet")
    refused(cream_exe, tmp_path, *publish_args(run, tmp_path / "pub"), needles=[str(it / "responses")])


# ---------------------------------------------------------------------------- item 3: --out inside DIR
def test_publish_out_inside_the_published_folder_is_refused(tmp_path, cream_exe, labelings):
    lab = shutil.copytree(labelings["a"], tmp_path / "lab")
    for out, where in ((lab / "hub", "is inside"), (lab, "is"), (lab / "scores" / "x", "is inside"),
                       (tmp_path, "holds")):
        refused(cream_exe, tmp_path, *publish_args(lab, out),
                needles=[f"--out {out}: {where} {lab}", "the folder being published"])


# ---------------------------------------------------------------------------- item 4: a pool that copies the input
def test_a_pool_that_copies_the_input_is_refused_by_content(tmp_path, cream_exe, tiny_model):
    """A byte-for-byte copy of the input at another path (a folder, or a plain Parquet file), or of another pool,
    is refused before any model runs; refused by what it holds, not where it is."""
    resp = io.write_table(responses_table(TEXTS["a"]), tmp_path / "responses", "responses")
    copy = shutil.copytree(resp, tmp_path / "copy")
    pq.write_table(io.read_table(resp, "responses"), tmp_path / "copy.parquet")
    pool = io.write_table(responses_table(TEXTS["b"]), tmp_path / "pool", "responses")
    pool_copy = shutil.copytree(pool, tmp_path / "pool-copy")
    cases = [
        (["--chosen-from", copy], ["--chosen-from", str(copy), f"the input {resp}", "'Answer: 2'", "copy"]),
        (["--rejected-from", tmp_path / "copy.parquet"], ["--rejected-from", str(tmp_path / "copy.parquet"),
                                                          "holds no response that the input"]),
        (["--chosen-from", pool, "--rejected-from", pool_copy],
         ["--rejected-from", str(pool_copy), f"--chosen-from {pool} does not hold already"]),
    ]
    for flags, needles in cases:
        refused(cream_exe, tmp_path, "label", resp, "--model", tiny_model, "--out", "o", *flags, needles=needles)
    from cream_data.stages.label_pools import pooled

    table, (choose, reject) = pooled(responses_table({"p1": ["2", "two"]}), (), (io.write_table(
        responses_table({"p1": ["2", "Answer: 2"]}), tmp_path / "one-new", "responses"),))  # one response new: pooled
    assert table["response"].to_pylist() == ["2", "two", "2", "Answer: 2"]
    assert reject.tolist() == [True] * 4 and choose.tolist() == [True, True, False, False]


def test_a_pool_sharing_some_answers_with_the_input_is_pooled_and_published(tmp_path, cream_exe, tiny_model):
    """Another model's draws may say the same short answer as the input: a pool with new responses is pooled
    (temporal self-rewarding's anchor samples). The folder it labeled publishes with its pools read back from the
    paths the labeling recorded, and is refused once a pool says something else at a pair's index."""
    from cream_data.stages.label import LabelConfig, label

    resp = io.write_table(responses_table(TEXTS["a"]), tmp_path / "responses", "responses")
    pool_texts = {pid: [texts[0], *TEXTS["b"][pid]] for pid, texts in TEXTS["a"].items()}  # one shared answer each
    pool = io.write_table(responses_table(pool_texts), tmp_path / "pool", "responses")
    lab = tmp_path / "lab"
    label(resp, LabelConfig(model=str(tiny_model), rejected_from=(str(pool),)), lab)
    shutil.copytree(resp, lab / "responses")
    prefs = io.read_table(lab / "preferences", "preferences").sort_by("prompt_id").to_pylist()
    assert prefs and all(p["n_responses"] == 7 for p in prefs)
    r = cream_exe(*publish_args(lab, tmp_path / "pub"), cwd=tmp_path)
    assert r.code == 0, r
    shutil.rmtree(tmp_path / "pub")

    row = next(i for i, p in enumerate(prefs) if p["rejected_idx"] >= 3)  # a rejected side from the pool
    pid, at = prefs[row]["prompt_id"], prefs[row]["rejected_idx"] - 3
    table = io.read_table(pool, "responses")
    edited = [t + " (edited)" if (p, i) == (pid, at) else t for p, i, t in
              zip(table["prompt_id"].to_pylist(), table["response_idx"].to_pylist(), table["response"].to_pylist())]
    rewrite(with_column(table, "response", edited), pool, "responses")
    refused(cream_exe, tmp_path, *publish_args(lab, tmp_path / "pub"),
            needles=[f"row {row} (prompt_id {pid!r}): its rejected is", "with the pools it was labeled with",
                     "(edited)"])


# ---------------------------------------------------------------------------- item 5: a pair of one response
def _one_response_pairs(labeled: Path, same_idx: bool) -> pa.Table:
    prefs = io.read_table(labeled / "preferences", "preferences").sort_by("prompt_id")
    rows = prefs.to_pylist()
    rows[1]["rejected"] = rows[1]["chosen"]
    if same_idx:
        rows[1]["rejected_idx"] = rows[1]["chosen_idx"]
    return pa.Table.from_pylist(rows, schema=prefs.schema)


@pytest.mark.parametrize("same_idx", [True, False], ids=["same-index", "same-text"])
def test_a_pair_whose_sides_are_one_response_is_refused(tmp_path, cream_exe, labelings, tiny_model, same_idx):
    """`cream train` (DPO) and `cream publish` name the row; the index when both sides have one, else the text."""
    table = _one_response_pairs(labelings["a"], same_idx)
    pid = table["prompt_id"][1].as_py()
    what = "chosen_idx = rejected_idx" if same_idx else "the same text"
    pq.write_table(table, tmp_path / "prefs.parquet")
    refused(cream_exe, tmp_path, "train", tmp_path / "prefs.parquet", "--model", tiny_model, "--out", "m",
            "--max-steps", "1", needles=[str(tmp_path / "prefs.parquet"), f"row 1 (prompt_id {pid!r})",
                                         "chosen and rejected are one response", what])
    lab = shutil.copytree(labelings["a"], tmp_path / "lab", ignore=shutil.ignore_patterns("responses"))
    rewrite(table, lab / "preferences", "preferences")
    refused(cream_exe, tmp_path, *publish_args(lab, tmp_path / "pub"),
            needles=[str(lab / "preferences"), f"row 1 (prompt_id {pid!r})", "chosen and rejected are one response"])


def test_pairing_skips_a_pair_of_one_text():
    """Two draws of the same answer whose rewards differ (a sampled judge, batch numerics) are no preference: the
    prompt is skipped as no_margin rather than paired with itself."""
    from cream_data.rewards.pairing import build_preferences
    from cream_data.rewards.spec import PairingSpec

    resp = responses_table({"p1": ["same", "other", "same"], "p2": ["x", "y", "z"]})
    rewards = {("p1", 0): 3.0, ("p1", 1): 2.0, ("p1", 2): 1.0, ("p2", 0): 1.0, ("p2", 1): 2.0, ("p2", 2): 0.5}
    scores = pa.Table.from_pylist([
        {"prompt_id": p, "response_idx": i, "scorer": "judge", "model": "m", "ref_model": None, "logp": None,
         "ref_logp": None, "n_tokens": 3, "reward": r, "reward_kind": "judge", "judge_text": None}
        for (p, i), r in rewards.items()], schema=schemas.get("scores").arrow)
    prefs, summary = build_preferences(resp, scores, PairingSpec(reward_scorer="judge", partner=None), logp_scorer=None)
    assert prefs["prompt_id"].to_pylist() == ["p2"]
    assert (prefs["chosen_idx"][0].as_py(), prefs["rejected_idx"][0].as_py()) == (1, 2)
    assert summary.pairs == 1 and summary.skipped["no_margin"] == 1
    assert np.isclose(summary.margin_mean, 1.5)


def _prompts_for(labeled: Path, folder: Path, *, repeat_first: bool = False, drop: str | None = None) -> Path:
    """A prompts table for the labeled responses (one row per prompt; answers so the oracle could score)."""
    resp = io.read_table(labeled / "responses")
    first = {}
    for pid, prompt in zip(resp["prompt_id"].to_pylist(), resp["prompt"].to_pylist()):
        first.setdefault(pid, prompt)
    rows = [{"prompt_id": p, "prompt": t, "source": "test", "reference_answer": "2", "human_answer": "Two."}
            for p, t in first.items()]
    rows += rows[:1] if repeat_first else []
    table = pa.Table.from_pylist(rows)
    pq.write_table(table.drop_columns([drop]) if drop else table, folder / "prompts.parquet")
    return folder / "prompts.parquet"


def test_a_prompts_table_names_each_prompt_once(tmp_path, cream_exe, labelings, tiny_model):
    """Two rows under one prompt_id could carry two reference answers: which one would the oracle use?"""
    prompts = _prompts_for(labelings["a"], tmp_path, repeat_first=True)
    refused(cream_exe, tmp_path, "label", labelings["a"] / "responses", "--out", tmp_path / "o", "--model",
            tiny_model, "--reward", "oracle", "--prompts", prompts, needles=["prompts.parquet", "is given 2 times"])


def test_human_answers_need_the_column(tmp_path, cream_exe, labelings, tiny_model):
    prompts = _prompts_for(labelings["a"], tmp_path, drop="human_answer")
    refused(cream_exe, tmp_path, "label", labelings["a"] / "responses", "--out", tmp_path / "o", "--model",
            tiny_model, "--human-answers", "--prompts", prompts,
            needles=["prompts.parquet", "no column 'human_answer'"])
