"""What a labeled folder says: summary statistics of its preferences/scores tables, and PNG plots.

Definitions (one row of the preferences table = one prompt that yielded a pair; ``r`` = ``rewards``,
``r'`` = ``prev_rewards``, both indexed by response):

- ``margin``            = r[chosen_idx] - r[rejected_idx]  (≥ 0 by construction of the pair)
- ``ties_current``      = #pairs where two entries of r are equal (the ranking broke the tie by index;
                          prompts skipped because all rewards were equal are counted under ``skipped``)
- ``agreement_chosen``  = mean over rows with r' of [argmax r' == chosen_idx]: the previous model would have
                          chosen the same response (argmax takes the first maximum, like the ordinal ranks)
- ``agreement_rejected``= mean over rows with r' of [argmin r' == rejected_idx]
- ``consistency``       = the stored C: mean, median, std (population, ddof = 0), min, max; likewise
                          ``kendall_tau`` over the rows where it is defined
- ``skipped``           = prompts that yielded no pair, by reason, from the manifest's ``summary``
- ``agreement``         = from the scores table (and ``human/`` beside it): every two scorers' Kendall tau-b and
                          top-pair agreement, each scorer vs the oracle, the human answers' ranks
                          (:mod:`cream_data.rewards.agreement`)
- ``premise``           = from the preferences and scores with an oracle role: how well C (and each scorer's reward
                          margin) tells right pairs from wrong ones (:mod:`cream_data.rewards.premise`)

Everything is computed on whole columns: list columns become a (rows × N_max) matrix padded with NaN.
matplotlib is imported only when a plot is drawn, with the Agg backend (no display needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.reports import agreement_report, premise_report
from cream_data.tables import io
from cream_data import markdown
from cream_data.errors import CreamError
from cream_data.reports.figures import new_figure, save_png
from cream_data.stats import describe

PREF_COLUMNS = ["prompt_id", "chosen_idx", "rejected_idx", "iteration", "n_responses", "rewards", "prev_rewards",
                "kendall_tau", "consistency", "consistency_method", "weight", "model", "prev_model"]
SCORE_COLUMNS = ["prompt_id", "response_idx", "scorer", "model", "reward_kind", "reward", "n_tokens"]


# ---------------------------------------------------------------------------- numbers
def padded(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list<float> column as a (rows × N_max) float matrix padded with NaN, and a mask of non-null rows."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    rows = len(arr)
    present = ~arr.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy().astype(np.int64)
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float64)  # null values → NaN
    width = int(lengths.max(initial=0))
    if values.size == rows * width:  # every row full (the usual fixed N): a plain reshape
        return values.reshape(rows, width), present
    mat = np.full((rows, width), np.nan)
    # Row-major boolean assignment fills each row's first `length` cells with its values, in order.
    mat[np.arange(width) < lengths[:, None]] = values
    return mat, present


def has_ties(mat: np.ndarray) -> np.ndarray:
    """Per row: do two (non-NaN) entries share a value? Sorting puts the NaN padding last; NaN ≠ NaN."""
    if mat.shape[1] < 2:
        return np.zeros(mat.shape[0], dtype=bool)
    s = np.sort(mat, axis=1)
    return (s[:, 1:] == s[:, :-1]).any(axis=1)


def first_argmax(mat: np.ndarray) -> np.ndarray:
    """Index of the first maximum per row, ignoring NaN (padding or missing rewards)."""
    return np.where(np.isnan(mat), -np.inf, mat).argmax(axis=1)


def first_argmin(mat: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(mat), np.inf, mat).argmin(axis=1)


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    return col.to_numpy().astype(np.float64)  # nulls → NaN


def summarize_preferences(prefs: pa.Table, manifest: dict | None = None) -> dict:
    """The summary of one preferences table (see the module docstring for every definition)."""
    n = prefs.num_rows
    cur, _ = padded(prefs.column("rewards"))
    prev, has_prev = padded(prefs.column("prev_rewards"))
    chosen = prefs.column("chosen_idx").to_numpy().astype(np.int64)
    rejected = prefs.column("rejected_idx").to_numpy().astype(np.int64)
    margin = _margins(cur, chosen, rejected)

    agree_c = agree_r = None
    if has_prev.any():
        p = prev[has_prev]
        agree_c = float((first_argmax(p) == chosen[has_prev]).mean())
        agree_r = float((first_argmin(p) == rejected[has_prev]).mean())

    # The labeling stage stores its PairingSummary under the manifest key "summary".
    labeled = (manifest or {}).get("summary") or {}
    skipped = {str(k): int(v) for k, v in sorted((labeled.get("skipped") or {}).items())}
    prompts = labeled.get("prompts")
    if not isinstance(prompts, int):
        prompts = n + sum(skipped.values()) if labeled else None
    return {
        "pairs": n,
        "prompts": prompts,
        "scope": labeled.get("scope"),
        "skipped": skipped,
        "skipped_total": sum(skipped.values()),
        "iterations": _distinct(prefs, "iteration"),
        "consistency_methods": _distinct(prefs, "consistency_method"),
        "models": _distinct(prefs, "model"),
        "prev_models": _distinct(prefs, "prev_model"),
        "n_responses": describe(prefs.column("n_responses").to_numpy()),
        "consistency": describe(_floats(prefs.column("consistency"))),
        "weight_mean": describe(_floats(prefs.column("weight")))["mean"],
        "kendall_tau": describe(_floats(prefs.column("kendall_tau"))),
        "ties_current": int(has_ties(cur).sum()),
        "ties_previous": int(has_ties(prev[has_prev]).sum()) if has_prev.any() else 0,
        "with_previous": int(has_prev.sum()),
        "agreement_chosen": agree_c,
        "agreement_rejected": agree_r,
        "margin": describe(margin),
    }


def _distinct(t: pa.Table, name: str) -> list:
    return sorted(v for v in pc.unique(t.column(name)).to_pylist() if v is not None)


def summarize_scores(scores: pa.Table) -> list[dict]:
    """Per (scorer, model, reward_kind): row count, null rewards (unparsed judge outputs), reward statistics."""
    out = []
    for key, r in reward_groups(scores).items():
        scorer, model, kind = key
        finite = r[np.isfinite(r)]
        out.append({"scorer": scorer, "model": model, "reward_kind": kind, "rows": int(r.size),
                    "null_or_nonfinite": int(r.size - finite.size), **describe(finite)})
    return out


def reward_groups(scores: pa.Table) -> dict[tuple[str, str, str], np.ndarray]:
    """Rewards split by (scorer, model, reward_kind), nulls as NaN (one hash group-by, no row loop)."""
    keys = ["scorer", "model", "reward_kind"]
    g = scores.select(keys + ["reward"]).group_by(keys, use_threads=False).aggregate([("reward", "list")])
    g = g.sort_by([(k, "ascending") for k in keys])
    lists = g.column("reward_list").combine_chunks()
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.float64)  # nulls → NaN
    ends = np.cumsum(pc.list_value_length(lists).to_numpy())
    names = zip(*(g.column(k).to_pylist() for k in keys))
    return dict(zip((tuple(k) for k in names), np.split(values, ends[:-1])))


def preference_reward_groups(prefs: pa.Table) -> dict[tuple[str, str, str], np.ndarray]:
    """Reward distributions from a preferences table alone (when no scores table is at hand)."""
    groups = {}
    for col, role, model_col in (("rewards", "current", "model"), ("prev_rewards", "previous", "prev_model")):
        mat, present = padded(prefs.column(col))
        if present.any():
            models = "/".join(_distinct(prefs, model_col)) or "?"
            groups[(role, models, "")] = mat[present][~np.isnan(mat[present])]
    return groups


# ---------------------------------------------------------------------------- plots
def plot_consistency(prefs: pa.Table, path: str | Path) -> Path:
    """Histogram of the per-pair consistency C; bins centred on multiples of 0.05 (Kendall C is discrete)."""
    c = _floats(prefs.column("consistency"))
    c = c[np.isfinite(c)]
    fig, (ax,) = new_figure()
    ax.hist(c, bins=np.linspace(-0.025, 1.025, 22), color="#4C72B0", edgecolor="white")
    if c.size:
        ax.axvline(c.mean(), color="#C44E52", linestyle="--", label=f"mean {c.mean():.3f}")
        ax.legend(loc="upper left")
    methods = ", ".join(_distinct(prefs, "consistency_method")) or "?"
    ax.set(title=f"Consistency C per pair ({methods}, n={c.size})", xlabel="C", ylabel="pairs", xlim=(-0.05, 1.05))
    return save_png(fig, Path(path))


def plot_rewards(groups: dict[tuple[str, str, str], np.ndarray] | pa.Table, path: str | Path) -> Path:
    """One histogram per scorer/model (rewards of different kinds live on different scales)."""
    if isinstance(groups, pa.Table):
        groups = reward_groups(groups)
    groups = {k: v[np.isfinite(v)] for k, v in groups.items()}
    fig, axes = new_figure(2.4, max(1, len(groups)))
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    for i, (ax, ((scorer, model, kind), r)) in enumerate(zip(axes, groups.items())):
        ax.hist(r, bins=40 if r.size > 40 else max(r.size, 1), color=palette[i % len(palette)], edgecolor="white")
        kind = f", {kind}" if kind else ""
        ax.set_title(f"{scorer}: {_short(model)}{kind} (n={r.size})", fontsize=9)
        ax.set_ylabel("responses")
    axes[-1].set_xlabel("reward")
    return save_png(fig, Path(path))


def plot_margins(prefs: pa.Table, path: str | Path) -> Path:
    """Histogram of the reward margin r[chosen] - r[rejected] of every pair."""
    m = margins(prefs)
    m = m[np.isfinite(m)]
    fig, (ax,) = new_figure()
    ax.hist(m, bins=40 if m.size > 40 else max(m.size, 1), color="#55A868", edgecolor="white")
    ax.set(title=f"Reward margin chosen − rejected (n={m.size})", xlabel="margin", ylabel="pairs")
    return save_png(fig, Path(path))


def margins(prefs: pa.Table) -> np.ndarray:
    """r[chosen_idx] - r[rejected_idx] per pair."""
    return _margins(padded(prefs.column("rewards"))[0], prefs.column("chosen_idx").to_numpy().astype(np.int64),
                    prefs.column("rejected_idx").to_numpy().astype(np.int64))


def _margins(cur: np.ndarray, chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    if cur.shape[0] == 0:
        return np.zeros(0)
    rows = np.arange(cur.shape[0])
    return cur[rows, chosen] - cur[rows, rejected]


def _short(s: str, n: int = 48) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1):]


# ---------------------------------------------------------------------------- a labeled folder
@dataclass
class InspectReport:
    """The summary of a labeled folder, the files written for it and those that could not be (path -> why)."""

    summary: dict
    files: dict[str, Path] = field(default_factory=dict)
    unwritten: dict[Path, str] = field(default_factory=dict)

    def keep(self, name: str, path: Path, write) -> None:
        """``write()`` a file of the report; one that fails (a read-only folder, a full disk) is listed in
        ``unwritten`` by its path and the summary goes on (it is what the user asked for)."""
        try:
            self.files[name] = write()
        except io.WriteError as e:
            self.unwritten[path] = e.reason

    def unwritten_line(self) -> str | None:
        """One line naming the files that could not be written and why, or None."""
        if not self.unwritten:
            return None
        folders = {p.parent for p in self.unwritten}
        names = ", ".join(str(p) if len(folders) > 1 else p.name for p in self.unwritten)
        where = "" if len(folders) > 1 else f" in {next(iter(folders))}"
        return f"could not write {names}{where} ({'; '.join(dict.fromkeys(self.unwritten.values()))})"


def find_labeled(path: str | Path) -> tuple[Path | None, Path | None]:
    """The preferences and scores tables of a labeled folder (or of a single table given directly); those in a run
    iteration's side folders below it (anchor/, anchored/, future/, probe/) are other labelings'."""
    path = Path(path)
    if not path.exists():
        raise CreamError(f"{path}: no such file or folder")
    found: dict[str, list[Path]] = {}
    for kind, p in io.iter_table_paths(path):
        found.setdefault(kind, []).append(p)
    found = {kind: agreement_report.own_tables(path, ps) for kind, ps in found.items()}  # a run's iter-<t>/: its own
    for kind in ("preferences", "scores"):
        if len(found.get(kind, [])) > 1:
            listed = ", ".join(str(p) for p in found[kind][:4])
            raise CreamError(f"{path}: holds {len(found[kind])} {kind} tables ({listed}); "
                             f"point cream inspect at one labeled folder")
    prefs, scores = found.get("preferences", [None])[0], found.get("scores", [None])[0]
    if prefs is None and scores is None:
        kinds = ", ".join(sorted(found)) or "none"
        raise CreamError(f"{path}: no preferences or scores table found (tables here: {kinds}); "
                         f"expected the --out folder of `cream label`")
    return prefs, scores


def inspect_folder(path: str | Path, out: str | Path | None = None) -> InspectReport:
    """Summarise a labeled folder whose tables are of one labeling (:func:`_read_checked`); write summary.md,
    summary.json and PNG plots into ``out``, by default ``PATH/inspect`` (beside the file when PATH is a file).
    """
    path = Path(path)
    prefs_path, scores_path = find_labeled(path)
    got = _read_checked(path, prefs_path, scores_path)
    prefs, scores, human = (got[k].table if got[k] else None for k in ("preferences", "scores", "human"))
    out = Path(out) if out else (path if path.is_dir() else path.parent) / "inspect"
    summary: dict = {"folder": str(path)}
    report = InspectReport(summary)
    if prefs is not None:
        summary["preferences"] = {"path": str(prefs_path), **summarize_preferences(prefs, got["preferences"].manifest)}
    if scores is not None:
        summary["scores"] = {"path": str(scores_path), "groups": summarize_scores(scores)}
        summary["agreement"] = {"path": str(scores_path), "human_path": got["human"] and got["human"].where,
                                **agreement_report.folder_agreement(scores, human)}
    summary["premise"] = premise_report.folder_premise(prefs, scores,
                                                       got["preferences"] and got["preferences"].manifest)

    if prefs is not None and prefs.num_rows:
        report.keep("consistency", out / "consistency.png", lambda: plot_consistency(prefs, out / "consistency.png"))
        report.keep("margins", out / "margins.png", lambda: plot_margins(prefs, out / "margins.png"))
    groups = reward_groups(scores) if scores is not None and scores.num_rows else (
        preference_reward_groups(prefs) if prefs is not None and prefs.num_rows else {})
    if groups:
        report.keep("rewards", out / "rewards.png", lambda: plot_rewards(groups, out / "rewards.png"))
    summary["plots"] = {k: p.name for k, p in report.files.items()}
    md, js = out / "summary.md", out / "summary.json"
    plots = report.files
    report.files = {}
    report.keep("markdown", md, lambda: (io.atomic_write_bytes(md, to_markdown(summary).encode()), md)[1])
    report.keep("json", js, lambda: (io.atomic_write_json(js, summary), js)[1])
    report.files.update(plots)
    return report


def _read_checked(path: Path, prefs_path: Path | None, scores_path: Path | None) -> dict:
    """The folder's preferences, scores and human scores (:class:`~cream_data.tables.keys.Found`, None where absent;
    the columns the summary reads and those the checks compare), refused in one line unless they and the responses
    beside the preferences are of one labeling (:func:`cream_data.stages.label.check_labeled`)."""
    from cream_data.stages.label import check_labeled
    from cream_data.tables.keys import Found

    def read(p: Path | None, kind: str, columns: list[str] | None):
        if p is None or not p.exists():
            return None
        return Found(io.read_table(p, kind, columns=columns), str(p), io.read_manifest(p) if p.is_dir() else None)

    human_path = agreement_report.find_human(path, scores_path) if scores_path is not None else None
    found = {"preferences": read(prefs_path, "preferences", PREF_COLUMNS + ["prompt", "chosen", "rejected"]),
             "scores": read(scores_path, "scores", SCORE_COLUMNS),
             "human": read(human_path, "human_scores", agreement_report.HUMAN_COLUMNS),
             "responses": read(prefs_path.parent / "responses", "responses", None)
             if prefs_path is not None and prefs_path != path else None}
    check_labeled(found["preferences"], found["scores"], found["responses"], found["human"])
    return found


# ---------------------------------------------------------------------------- text
def fmt(x, digits: int = 4) -> str:
    """A number for people: None → '–', floats to ``digits`` significant decimals, ints as they are."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def preference_rows(s: dict) -> list[tuple[str, str]]:
    """(metric, value) rows of a preferences summary, shared by the Markdown and the terminal table."""
    c, tau, m = s["consistency"], s["kendall_tau"], s["margin"]
    skipped = ", ".join(f"{k}: {v}" for k, v in s["skipped"].items() if v) or (
        "none" if s["skipped"] else "none recorded")
    return [
        ("pairs", fmt(s["pairs"])),
        ("prompts", fmt(s["prompts"])),
        ("skipped (no pair)", f"{s['skipped_total']} ({skipped})"),
        ("iterations", ", ".join(map(str, s["iterations"])) or "–"),
        ("consistency method", ", ".join(s["consistency_methods"]) or "–"),
        ("model / previous model", f"{', '.join(s['models']) or '–'} / {', '.join(s['prev_models']) or '–'}"),
        ("C mean / median / std", f"{fmt(c['mean'])} / {fmt(c['median'])} / {fmt(c['std'])}"),
        ("weight mean", fmt(s["weight_mean"])),
        ("kendall tau mean ± std", f"{fmt(tau['mean'])} ± {fmt(tau['std'])} (n={tau['n']})"),
        ("scope", s.get("scope") or "–"),
        ("pairs with ties in current rewards", fmt(s["ties_current"])),
        ("pairs with ties in previous rewards", fmt(s["ties_previous"])),
        ("pairs with previous rewards", fmt(s["with_previous"])),
        ("previous argmax = chosen", fmt(s["agreement_chosen"])),
        ("previous argmin = rejected", fmt(s["agreement_rejected"])),
        ("margin mean / median", f"{fmt(m['mean'])} / {fmt(m['median'])}"),
    ]


SCORE_HEADER = ("scorer", "model", "reward kind", "rows", "null/non-finite", "mean", "std", "min", "max")


def score_rows(groups: list[dict]) -> list[tuple[str, ...]]:
    return [(g["scorer"], g["model"], g["reward_kind"], str(g["rows"]), str(g["null_or_nonfinite"]),
             fmt(g["mean"]), fmt(g["std"]), fmt(g["min"]), fmt(g["max"])) for g in groups]


def to_markdown(summary: dict) -> str:
    lines = [f"# Labeled folder `{summary['folder']}`", ""]
    if "preferences" in summary:
        lines += ["## Preferences", ""] + markdown.table(["metric", "value"], preference_rows(summary["preferences"]))
    if "scores" in summary:
        lines += ["## Rewards per scorer", ""] + markdown.table(SCORE_HEADER, score_rows(summary["scores"]["groups"]))
    lines += agreement_report.markdown(summary.get("agreement"))
    lines += premise_report.markdown(summary.get("premise"))
    if summary.get("plots"):
        lines += ["## Plots", ""] + [f"![{k}]({name})" for k, name in summary["plots"].items()] + [""]
    return "\n".join(lines)
