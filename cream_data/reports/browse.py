"""`cream browse`: the pairs of a run, a labeled folder or a preferences table as one static HTML page.

This module finds the tables and turns them into one record per pair (JSON-ready); :mod:`cream_data.reports.
browse_page` puts the records into the page (``browse_page.html``, inline JS/CSS) and writes it.

What one record holds (the keys the page reads; ``null`` where the tables do not say):

- ``id``, ``t``, ``p``: the prompt id, the iteration, the prompt's turns as ``[role, content]``;
- ``c``, ``w``, ``tau``, ``cm``: the consistency C, the weight the trainer uses, Kendall's tau and the C method;
- ``ch``, ``rj``: the chosen and rejected ``response_idx``; ``m``: the margin ``rewards[ch] - rewards[rj]`` (the
  preferences' ``rewards``, i.e. the reward that picked the pair);
- ``idx``, ``txt``: the responses shown, by index and text: every sampled response of the prompt when its
  responses table is at hand (and holds the pair's texts at those indices), else the chosen and the rejected;
- ``n``: how many responses the prompt had; ``sc`` / ``rk``: per scorer role, the reward and the rank (1 = best,
  ordinal over all ``n`` responses, ties by index as in :func:`cream_data.rewards.ranking.ordinal_ranks`) of each
  shown response, from the scores table (without one: ``current`` and ``previous`` from the pair's
  ``rewards``/``ranks`` and ``prev_rewards``/``prev_ranks``); ``jt``: the judge's output text per shown response;
- ``or``: the oracle per shown response (1 correct, 0 wrong, null unknown): the scores table's ``oracle`` role, or,
  in a run without one, the prompt's reference answer checked as ``cream_data.rewards.answers.oracle_reward``
  does; ``ov``: the oracle's verdict on the pair: ``right`` (chosen correct, rejected wrong), ``wrong`` (chosen
  wrong, rejected correct), ``tie`` (both correct or both wrong), null (unknown);
- ``ag``: do the scorers agree? Over the scorer roles other than the oracle that gave every response of the prompt
  a finite reward (at least two of them, else null): true when each one's best response (first maximum) is the
  chosen and its worst (first minimum) is the rejected — the top-pair agreement of ``cream inspect`` — else false;
- ``h``: the human-written answer (``human/``, from ``cream label --human-answers``): its text, each role's reward
  and its rank among the samples under that role (1 + the samples with a strictly higher reward, of ``n + 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cream_data.errors import CreamError
from cream_data.reports import agreement_report
from cream_data.reports.browse_page import check_out, write_page
from cream_data.reports.inspect import find_labeled
from cream_data.reports.run_report import is_run_dir, run_info
from cream_data.reports.run_tables import preference_tables
from cream_data.rewards.agreement import role_order
from cream_data.rewards.answers import oracle_reward
from cream_data.rewards.ranking import ordinal_ranks
from cream_data.tables import io


@dataclass
class Labeled:
    """One labeling's tables as the page shows them (None where absent)."""

    where: str
    prefs: pa.Table
    scores: pa.Table | None = None
    responses: pa.Table | None = None
    human: pa.Table | None = None
    references: dict[str, str | None] | None = None  # prompt_id → reference answer (a run's prompt subset)


@dataclass
class Collected:
    """Everything the page embeds: the records and what the page says about where they came from."""

    source: str
    kind: str  # "run", "label" or "preferences"
    method: str | None = None
    pairs: list[dict] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    oracle: str | None = None  # "scores", "reference answers" or None
    notes: list[str] = field(default_factory=list)

    def data(self) -> dict:
        iterations = sorted({p["t"] for p in self.pairs if p["t"] is not None})
        return {"source": self.source, "kind": self.kind, "method": self.method, "roles": self.roles,
                "oracle": self.oracle, "iterations": iterations, "notes": self.notes,
                "human": any("h" in p for p in self.pairs), "pairs": self.pairs}


@dataclass
class BrowseResult:
    out: Path
    pairs: int
    bytes: int


def browse(source: str | Path, out: str | Path) -> BrowseResult:
    """Write the page of ``source`` (a run directory, a labeled folder or a preferences table) to ``out``."""
    out = check_out(Path(out))
    collected = collect(source)
    size = write_page(collected.data(), out)
    return BrowseResult(out, len(collected.pairs), size)


# ---------------------------------------------------------------------------- finding the tables
def collect(source: str | Path) -> Collected:
    """The records of every pair under ``source``; one line naming it when it holds none."""
    source = Path(source)
    if not source.exists():
        raise CreamError(f"{source}: no such file or folder")
    if is_run_dir(source):
        labeled = [_labeled_folder(path.parent, path, references=_references(source, t))
                   for t, path in preference_tables(source).items()]
        found = Collected(str(source), "run", method=_method(source))
    else:
        prefs_path, scores_path = find_labeled(source)
        if prefs_path is None:
            raise CreamError(f"{source}: no preferences table found (only scores); `cream browse` shows pairs: "
                             "point it at the --out folder of `cream label` or a preferences table")
        if prefs_path == source:
            labeled = [Labeled(str(source), io.read_table(source, "preferences"))]
            found = Collected(str(source), "preferences")
        else:
            labeled = [_labeled_folder(source, prefs_path, scores_path)]
            found = Collected(str(source), "label")
    if not labeled:
        raise CreamError(f"{source}: no preferences table found (expected iter-<t>/preferences in a run directory)")
    for lab in labeled:
        found.pairs.extend(pair_records(lab))
        if lab.scores is None and lab.responses is None and found.kind != "preferences":
            found.notes.append(f"{lab.where}: no scores or responses table beside the pairs: chosen and rejected only")
    roles = {r for p in found.pairs for r in p["sc"]}
    found.roles = role_order(roles)
    found.oracle = next((lab_oracle for lab_oracle in map(_oracle_source, labeled) if lab_oracle), None)
    return found


def _labeled_folder(folder: Path, prefs_path: Path, scores_path: Path | None = None, *,
                    references: dict | None = None) -> Labeled:
    """The tables of one labeled folder, refused in one line unless they are of one labeling."""
    from cream_data.stages.label import check_labeled
    from cream_data.tables.keys import Found

    def found(path: Path | None, kind: str) -> Found | None:
        if path is None or not path.exists():
            return None
        return Found(io.read_table(path, kind), str(path), io.read_manifest(path) if path.is_dir() else None)

    if scores_path is None and (folder / "scores" / io.MANIFEST).exists():
        scores_path = folder / "scores"
    prefs, scores = found(prefs_path, "preferences"), found(scores_path, "scores")
    human = found(agreement_report.find_human(folder, scores_path) if scores_path else None, "human_scores")
    responses = found(_responses_path(folder, prefs_path, prefs), "responses")
    check_labeled(prefs, scores, responses, human)
    return Labeled(str(prefs_path), prefs.table, scores and scores.table, responses and responses.table,
                   human and human.table, references)


def _responses_path(folder: Path, prefs_path: Path, prefs) -> Path | None:
    """The responses the pairs were labeled from: beside them (a run's ``iter-<t>/``), or the table the labeling
    recorded in its manifest (``cream label --out``) when it is still there."""
    beside = prefs_path.parent / "responses"
    if (beside / io.MANIFEST).exists():
        return beside
    recorded = ((prefs.manifest or {}).get("config") or {}).get("responses")
    if isinstance(recorded, str) and recorded:
        path = Path(recorded) if Path(recorded).is_absolute() else folder / recorded
        if path.is_dir() and (path / io.MANIFEST).exists() or path.is_file():
            return path
    return None


def _references(run: Path, t: int) -> dict[str, str | None] | None:
    """prompt_id → reference answer of iteration ``t``'s prompts (``RUN/prompts/subset-<t>``), None without."""
    path = run / "prompts" / f"subset-{t}"
    if not (path / io.MANIFEST).exists():
        return None
    d = io.read_table(path, "prompts", columns=["prompt_id", "reference_answer"]).to_pydict()
    refs = dict(zip(d["prompt_id"], d["reference_answer"]))
    return refs if any(v is not None for v in refs.values()) else None


def _method(run: Path) -> str | None:
    return run_info(run).get("method")


def _oracle_source(lab: Labeled) -> str | None:
    if lab.scores is not None and "oracle" in set(lab.scores.column("scorer").to_pylist()):
        return "scores"
    return "reference answers" if lab.references else None


# ---------------------------------------------------------------------------- one record per pair
def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _text(turns) -> str:
    """The assistant text of a conversation column value (the chosen / rejected turn)."""
    return "\n\n".join(t["content"] for t in turns or [])


def _by_prompt(table: pa.Table | None, columns: list[str]) -> dict:
    if table is None:
        return {}
    d = table.select(columns).to_pydict()
    out: dict = {}
    for row in zip(*(d[c] for c in columns)):
        out.setdefault(row[0], []).append(row[1:])
    return out


def pair_records(lab: Labeled) -> list[dict]:
    """One record per row of ``lab.prefs`` (see the module docstring for every key)."""
    texts = {pid: dict(rows) for pid, rows in _by_prompt(lab.responses, ["prompt_id", "response_idx",
                                                                          "response"]).items()}
    scored = _by_prompt(lab.scores, ["prompt_id", "scorer", "response_idx", "reward", "judge_text"])
    humans = _by_prompt(lab.human, ["prompt_id", "scorer", "reward", "human_answer"])
    oracle_role = lab.scores is not None and "oracle" in {s for rows in scored.values() for s, *_ in rows}
    records = []
    for row in lab.prefs.to_pylist():
        pid, ch, rj = row["prompt_id"], int(row["chosen_idx"]), int(row["rejected_idx"])
        chosen, rejected = _text(row["chosen"]), _text(row["rejected"])
        own = texts.get(pid, {})
        if own.get(ch) == chosen and own.get(rj) == rejected:
            idx = sorted(own)
            txt = [own[i] for i in idx]
        else:
            idx, txt = [ch, rj], [chosen, rejected]
        rewards, judge = _rewards(row, scored.get(pid))
        rec = {"id": pid, "t": row["iteration"], "p": [[t["role"], t["content"]] for t in row["prompt"]],
               "c": _finite(row["consistency"]), "w": _finite(row["weight"]), "tau": _finite(row["kendall_tau"]),
               "cm": row["consistency_method"], "ch": ch, "rj": rj, "m": _margin(row["rewards"], ch, rj),
               "idx": idx, "txt": txt, "n": int(row["n_responses"]), "src": lab.where}
        ranks = {role: _ranks(r) for role, r in rewards.items()}
        if pid not in scored:  # without scores, the ranks stored with the pair (the pairing's own)
            ranks = {"current": dict(enumerate(row["ranks"]))}
            if row["prev_ranks"] is not None:
                ranks["previous"] = dict(enumerate(row["prev_ranks"]))
        shown = {role: r for role, r in rewards.items() if role != "oracle"}
        rec["sc"] = {role: [r.get(i) for i in idx] for role, r in shown.items()}
        rec["rk"] = {role: [ranks.get(role, {}).get(i) for i in idx] for role in shown}
        if any(judge.get(i) for i in idx):
            rec["jt"] = [judge.get(i) for i in idx]
        verdicts = _oracle(rewards.get("oracle") if oracle_role else None, idx, txt, lab.references, pid)
        if verdicts is not None:
            rec["or"] = [verdicts.get(i) for i in idx]
            rec["ov"] = _verdict(verdicts.get(ch), verdicts.get(rj))
        rec["ag"] = _agree(shown, ch, rj)
        if pid in humans:
            rec["h"] = _human(humans[pid], rewards)
        records.append(rec)
    return records


def _rewards(row: dict, scored: list | None) -> tuple[dict[str, dict[int, float | None]], dict[int, str]]:
    """role → response_idx → reward (None: not finite), and the judge's text per response_idx."""
    if scored is None:
        out = {"current": dict(enumerate(map(_finite, row["rewards"])))}
        if row["prev_rewards"] is not None:
            out["previous"] = dict(enumerate(map(_finite, row["prev_rewards"])))
        return out, {}
    out, judge = {}, {}
    for role, i, reward, judge_text in scored:
        out.setdefault(role, {})[int(i)] = _finite(reward)
        if role == "judge" and judge_text:
            judge[int(i)] = judge_text
    return out, judge


def _ranks(rewards: dict[int, float | None]) -> dict[int, int]:
    """Ordinal ranks (1 = best) of one role's rewards over every response it scored; unknown rewards rank last."""
    idx = sorted(rewards)
    values = np.array([np.nan if rewards[i] is None else rewards[i] for i in idx], dtype=np.float64)
    return dict(zip(idx, ordinal_ranks(values[None, :])[0].tolist()))


def _margin(rewards: list, ch: int, rj: int) -> float | None:
    a, b = (_finite(rewards[i]) if 0 <= i < len(rewards) else None for i in (ch, rj))
    return None if a is None or b is None else a - b


def _oracle(scores: dict | None, idx: list[int], txt: list[str], refs: dict | None, pid: str) -> dict | None:
    """response_idx → 1.0 / 0.0 / None from the oracle role's rewards, else from the reference answer."""
    if scores is not None:
        return {i: v if v in (0.0, 1.0) else None for i, v in scores.items()}
    if refs is None:
        return None
    ref = refs.get(pid)
    return {i: oracle_reward(text, ref) for i, text in zip(idx, txt)}


def _verdict(chosen: float | None, rejected: float | None) -> str | None:
    if chosen is None or rejected is None:
        return None
    return "right" if chosen > rejected else "wrong" if chosen < rejected else "tie"


def _agree(rewards: dict[str, dict[int, float | None]], ch: int, rj: int) -> bool | None:
    """Every role with a finite reward for each response picks this pair (first max = chosen, first min =
    rejected); None with fewer than two such roles."""
    full = [r for r in rewards.values() if r and all(v is not None for v in r.values())]
    if len(full) < 2:
        return None
    for r in full:
        idx = sorted(r)
        values = np.array([r[i] for i in idx])
        if idx[int(values.argmax())] != ch or idx[int(values.argmin())] != rj:
            return False
    return True


def _human(rows: list, rewards: dict[str, dict[int, float | None]]) -> dict:
    """The human answer's text, its reward per role and its rank among that role's sample rewards."""
    sc, rk = {}, {}
    for role, reward, _ in rows:
        sc[role] = _finite(reward)
        samples = [v for v in rewards.get(role, {}).values() if v is not None]
        rk[role] = None if sc[role] is None else 1 + sum(v > sc[role] for v in samples)
    return {"txt": rows[0][2], "sc": sc, "rk": rk}
