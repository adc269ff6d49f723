"""`cream browse`: the static pair page of a run, opened in headless Chromium.

The run is written without models (tests/support/published.py's consistent tables, plus an oracle role, a human
answer table and a response whose text tries to end the page's data element). Every count the page shows under a
filter in the URL hash is computed here again from the tables."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

import schemas
from cream_data.tables.io import read_table, write_table
from tests.support.browser import dump_dom, shown_count
from tests.support.cli import assert_user_error, refused
from tests.support.published import conv, make_tables

N_PROMPTS = 8  # per iteration, two iterations
NASTY = "</script><script>window.broken = 1</script> <!-- x & y > z\n  second line of the marked response"


# ---------------------------------------------------------------------------- fixtures
def _retext(tables: dict[str, pa.Table], pid: str, idx: int, text: str) -> None:
    """Give response ``idx`` of prompt ``pid`` another text, in the responses and in the pair that uses it."""
    resp = tables["responses"].to_pylist()
    for r in resp:
        if r["prompt_id"] == pid and r["response_idx"] == idx:
            r["response"] = text
    prefs = tables["preferences"].to_pylist()
    for p in prefs:
        for side in ("chosen", "rejected"):
            if p["prompt_id"] == pid and p[f"{side}_idx"] == idx:
                p[side] = conv("assistant", text)
    tables["responses"] = pa.Table.from_pylist(resp, schema=schemas.get("responses").arrow)
    tables["preferences"] = pa.Table.from_pylist(prefs, schema=schemas.get("preferences").arrow)


def _oracle_rows(scores: pa.Table) -> pa.Table:
    """An oracle role: response i of prompt p{t}-k is correct when (i + k) is even."""
    rows = [r for r in scores.to_pylist() if r["scorer"] == "current"]
    extra = [{**r, "scorer": "oracle", "model": "oracle", "ref_model": None, "logp": None, "ref_logp": None,
              "reward_kind": "oracle", "reward": float((r["response_idx"] + int(r["prompt_id"].split("-")[1])) % 2 == 0)}
             for r in rows]
    return pa.concat_tables([scores, pa.Table.from_pylist(extra, schema=scores.schema)])


def _human(prefs: pa.Table, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = [{"prompt_id": pid, "scorer": scorer, "model": "m", "ref_model": None, "logp": None, "ref_logp": None,
             "n_tokens": 4, "reward": float(np.round(rng.normal(), 3)), "reward_kind": "dpo", "judge_text": None,
             "confidence": None, "human_answer": f"the human answer to {pid}"}
            for pid in prefs.column("prompt_id").to_pylist() for scorer in ("current", "previous")]
    return pa.Table.from_pylist(rows, schema=schemas.get("human_scores").arrow)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A two-iteration run as `cream run` lays it out: iteration 1 with human answers and a marked response,
    iteration 2 with an oracle role in its scores."""
    root = tmp_path_factory.mktemp("browse") / "run"
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump({"method": "cream", "iterations": 2}))
    (root / "manifest.json").write_text(json.dumps({"method": "cream", "stages": {}}))
    for t in (1, 2):
        tables = make_tables(t, N_PROMPTS, seed=t)
        if t == 1:
            _retext(tables, "p1-3", 2, NASTY)
            tables["human_scores"] = _human(tables["preferences"], seed=5)
        else:
            tables["scores"] = _oracle_rows(tables["scores"])
        for kind, table in tables.items():
            folder = "human" if kind == "human_scores" else kind
            extra = {"config": {"scope": "sample", "reward": "dpo"}} if kind == "preferences" else None
            write_table(table, root / f"iter-{t}" / folder, kind, manifest_extra=extra)
    return root


@pytest.fixture(scope="module")
def page(run, tmp_path_factory) -> Path:
    from cream_data.reports.browse import browse

    out = tmp_path_factory.mktemp("page") / "pairs.html"
    result = browse(run, out)
    assert result.pairs == 2 * N_PROMPTS and result.bytes == out.stat().st_size
    return out


def _tables(run: Path, t: int) -> dict[str, pa.Table]:
    return {kind: read_table(run / f"iter-{t}" / kind, kind) for kind in ("preferences", "scores", "responses")}


def _embedded(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="cream-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


# ---------------------------------------------------------------------------- the page
def test_page_opens_and_shows_every_pair(chromium, page, tmp_path):
    shot = tmp_path / "shot.png"
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1200,900", "--virtual-time-budget=5000",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert int.from_bytes(png[16:20], "big") == 1200 and int.from_bytes(png[20:24], "big") == 900

    dom = dump_dom(chromium, page)
    assert shown_count(dom) == (2 * N_PROMPTS, 2 * N_PROMPTS, 2 * N_PROMPTS)
    text = html.unescape(dom)
    assert "answer 3 to p2-5" in text and "the human answer to p1-0" in text
    assert NASTY in text  # shown as text, whole: it neither ended the data element nor ran
    raw = page.read_text(encoding="utf-8")
    assert "</script><script>window.broken" not in raw and "\\u003c/script\\u003e\\u003cscript\\u003ewindow" in raw


def test_filters_in_the_hash_match_the_tables(chromium, page, run):
    prefs = pa.concat_tables([_tables(run, t)["preferences"] for t in (1, 2)])
    c = np.array(prefs.column("consistency").to_pylist())
    want = int(((c >= 0.4) & (c <= 0.75)).sum())
    assert 0 < want < len(c)
    shown, total, rows = shown_count(dump_dom(chromium, page, "cmin=0.4&cmax=0.75"))
    assert (shown, total, rows) == (want, 2 * N_PROMPTS, want)

    # text search: one response's words; scorers agree/disagree and the oracle, iteration 2 only
    assert shown_count(dump_dom(chromium, page, "q=WINDOW.broken%20second"))[0] == 1
    t2 = _tables(run, 2)
    agree, right = _independent_agreement(t2)
    shown, _, _ = shown_count(dump_dom(chromium, page, "t=2&agree=disagree"))
    assert shown == N_PROMPTS - sum(agree)
    shown, _, _ = shown_count(dump_dom(chromium, page, "t=2&oracle=right"))
    assert shown == sum(right) and 0 < shown < N_PROMPTS


def _independent_agreement(tables: dict[str, pa.Table]) -> tuple[list[bool], list[bool]]:
    """Per pair of iteration 2: do `current` and `previous` both pick it (argmax = chosen, argmin = rejected), and
    is the oracle right (chosen correct, rejected wrong)?"""
    s = tables["scores"].to_pydict()
    reward = {(p, i, r): v for p, i, r, v in zip(s["prompt_id"], s["response_idx"], s["scorer"], s["reward"])}
    agree, right = [], []
    for pid, ch, rj in zip(*(tables["preferences"].column(c).to_pylist()
                             for c in ("prompt_id", "chosen_idx", "rejected_idx"))):
        picks = [(int(np.argmax(v)), int(np.argmin(v))) for v in
                 ([reward[(pid, i, role)] for i in range(4)] for role in ("current", "previous"))]
        agree.append(all(p == (ch, rj) for p in picks))
        right.append(reward[(pid, ch, "oracle")] == 1.0 and reward[(pid, rj, "oracle")] == 0.0)
    return agree, right


def test_embedded_data_round_trips_to_the_tables(page, run):
    data = _embedded(page)
    assert data["kind"] == "run" and data["method"] == "cream" and data["iterations"] == [1, 2]
    assert data["roles"] == ["current", "previous"] and data["oracle"] == "scores"
    records = {(p["t"], p["id"]): p for p in data["pairs"]}
    for t in (1, 2):
        tb = _tables(run, t)
        texts = {(r["prompt_id"], r["response_idx"]): r["response"] for r in tb["responses"].to_pylist()}
        rewards = {(r["prompt_id"], r["response_idx"], r["scorer"]): r["reward"] for r in tb["scores"].to_pylist()}
        for row in tb["preferences"].to_pylist():
            rec = records[(t, row["prompt_id"])]
            assert (rec["c"], rec["w"], rec["tau"]) == (row["consistency"], row["weight"], row["kendall_tau"])
            assert (rec["ch"], rec["rj"], rec["n"], rec["idx"]) == (row["chosen_idx"], row["rejected_idx"], 4,
                                                                    [0, 1, 2, 3])
            assert rec["txt"] == [texts[(row["prompt_id"], i)] for i in range(4)]
            assert rec["p"] == [[turn["role"], turn["content"]] for turn in row["prompt"]]
            assert rec["m"] == pytest.approx(row["rewards"][row["chosen_idx"]] - row["rewards"][row["rejected_idx"]])
            for role, ranks in (("current", row["ranks"]), ("previous", row["prev_ranks"])):
                assert rec["sc"][role] == [rewards[(row["prompt_id"], i, role)] for i in range(4)]
                assert rec["rk"][role] == ranks  # the scores' ordinal ranks are the pairing's own
            assert ("h" in rec) == (t == 1) and ("or" in rec) == (t == 2)
    h = read_table(run / "iter-1" / "human", "human_scores").to_pylist()[0]
    rec = records[(1, h["prompt_id"])]
    assert rec["h"]["txt"] == h["human_answer"] and rec["h"]["sc"][h["scorer"]] == h["reward"]
    samples = rec["sc"][h["scorer"]]
    assert rec["h"]["rk"][h["scorer"]] == 1 + sum(v > h["reward"] for v in samples)


def test_a_preferences_table_alone_shows_chosen_and_rejected(run, tmp_path):
    from cream_data.reports.browse import collect

    data = collect(run / "iter-2" / "preferences").data()
    prefs = read_table(run / "iter-2" / "preferences", "preferences").to_pylist()
    assert data["kind"] == "preferences" and len(data["pairs"]) == N_PROMPTS and data["oracle"] is None
    for rec, row in zip(data["pairs"], prefs):
        assert rec["idx"] == [row["chosen_idx"], row["rejected_idx"]]
        assert rec["txt"] == [row["chosen"][0]["content"], row["rejected"][0]["content"]]
        assert rec["sc"]["current"] == [row["rewards"][i] for i in rec["idx"]]
        assert rec["rk"]["previous"] == [row["prev_ranks"][i] for i in rec["idx"]]


# ---------------------------------------------------------------------------- mistakes
def test_mistakes_are_one_line_and_write_nothing(cream_exe, run, tmp_path):
    (tmp_path / "only-responses").mkdir()
    shutil.copytree(run / "iter-1" / "responses", tmp_path / "only-responses" / "responses")
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    refused(cream_exe, tmp_path, "browse", tmp_path / "missing", "--out", "p.html", needles=("missing", "no such"))
    refused(cream_exe, tmp_path, "browse", "only-responses", "--out", "p.html", needles=("no preferences",))
    refused(cream_exe, tmp_path, "browse", run, "--out", "folder", needles=("--out", "is a folder"))
    refused(cream_exe, tmp_path, "browse", run, "--out", "notes.txt/p.html", needles=("--out", "not a folder"))
    refused(cream_exe, tmp_path, "browse", run, "--out", "notes.txt", needles=("--out", "not a `cream browse` page"))
    assert (tmp_path / "notes.txt").read_text() == "mine"

    ok = cream_exe("browse", run, "--out", tmp_path / "p.html")  # a page it wrote is replaced
    assert ok.code == 0 and "16 pairs" in ok.out, ok
    again = cream_exe("browse", run / "iter-1" / "preferences", "--out", tmp_path / "p.html")
    assert again.code == 0 and "8 pairs" in again.out, again


def test_a_failed_write_leaves_nothing(cli, run, tmp_path, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    r = cli("browse", run, "--out", tmp_path / "p.html")
    assert_user_error(r, "p.html", "disk is full")
    assert list(tmp_path.iterdir()) == []
