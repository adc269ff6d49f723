"""The scorer-agreement tables of the run report and of ``cream inspect``: reading a labeled folder's ``scores``
and ``human`` tables, rendering the numbers of :mod:`cream_data.rewards.agreement` and
:mod:`cream_data.rewards.selfpref` as Markdown / terminal rows, and the one plot (``agreement.png``: mean Kendall
tau-b per scorer pair and iteration).

A labeled folder is the ``--out`` of ``cream label`` (``OUT/scores``, ``OUT/human``) or an iteration of a run
(``RUN/iter-<t>/scores``, ``RUN/iter-<t>/human``). A run with a probe set (``prompts.probe``) also has
``RUN/iter-<t>/probe/`` (M_t's samples of the same held-out prompts, their scores and human answers): its
self-preference rows make a table of their own, per iteration and role (:func:`run_probe`, :func:`probe_markdown`).
matplotlib is imported only when the plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from cream_data.rewards import agreement, selfpref
from cream_data.tables import io
from cream_data import markdown as md
from cream_data.errors import CreamError
from cream_data.reports.figures import new_figure, save_png

SCORE_COLUMNS = ["prompt_id", "response_idx", "scorer", "reward"]
# what the self-preference table's per-token rows need too (selfpref.summed_roles, selfpref.per_token)
LENGTH_COLUMNS = list(selfpref.LENGTH_COLUMNS)
HUMAN_COLUMNS = ["prompt_id", "scorer", "reward"] + LENGTH_COLUMNS
NOTES = {
    "matrix": "τ-b: Kendall's tau-b of the two scorers' raw rewards per prompt (ties kept), over the responses "
              "both scored with a finite reward, on prompts with ≥ 2 of them; mean ± std (ddof 0) over the n "
              "prompts where it is defined (undefined: one scorer gave all of them the same reward). Top pair: "
              "share of those n prompts where both pick the same chosen (first argmax) and rejected (first "
              "argmin) response.",
    "oracle": "Pair win rate: over prompts with a correct and a wrong response (by the oracle) rewarded by the "
              "scorer, the share whose chosen is correct and rejected is wrong [95% Wilson score interval]. AUC "
              "of the reward for correct vs wrong responses: P(a correct response's reward > a wrong one's, ties "
              "½), all responses pooled [2.5–97.5 percentiles over 1000 bootstrap resamples of the prompts].",
    "human": "The human-written answer among the prompt's k samples: rank = 1 + (samples rewarded strictly "
             "higher) + ½ (samples with an equal reward), of k + 1 (1 = best); normalised (rank − 1) / k (0 = "
             "best, 1 = worst); below all: rewarded strictly below every sample. Prompts with a finite human "
             "reward and ≥ 1 finite sample reward. Chance (the column after each measure): what an answer "
             "exchangeable with the samples (one more draw) would get on the same prompts: rank (k + 2) / 2, normalised ½, below all 1 / (k + 1) "
             "(an upper bound where rewards tie), averaged over the prompts; p: the exact probability of at least "
             "this many below-all prompts by chance (one-sided, Poisson-binomial). Per token: a DPO reward (a sum "
             "over the response's tokens, larger in magnitude for a longer answer) divided by the response's "
             "token count.",
}


# ---------------------------------------------------------------------------- numbers
def folder_agreement(scores: pa.Table | None, human: pa.Table | None = None) -> dict | None:
    """The three measures of one labeled folder: ``{"roles", "matrix", "oracle", "human"}`` (``oracle`` None
    without an oracle role, ``human`` None without a human table); None without a scores table."""
    if scores is None:
        return None
    m = agreement.agreement_matrix(scores)
    return {"roles": m["roles"], "matrix": m["pairs"], "oracle": agreement.oracle_agreement(scores),
            "human": selfpref.human_ranks(scores, human) if human is not None else None}


def _table_dir(path: Path) -> bool:
    return (path / io.MANIFEST).exists()


def read_folder(folder: Path) -> tuple[pa.Table | None, pa.Table | None]:
    """(scores, human) of a labeled folder (``FOLDER/scores``, ``FOLDER/human``), the columns the measures use;
    None for a table that is not there."""
    scores = io.read_table(folder / "scores", "scores", columns=SCORE_COLUMNS + LENGTH_COLUMNS) \
        if _table_dir(folder / "scores") else None
    human = io.read_table(folder / "human", "human_scores", columns=HUMAN_COLUMNS) if _table_dir(folder / "human") \
        else None
    return scores, human


def own_tables(path: Path, found: list[Path], *, fallback: bool = True) -> list[Path]:
    """Of the tables ``found`` under the labeled folder ``path``, those of its own labeling: a table in a side folder
    below it (a run iteration's anchor/, anchored/, future/ of method temporal, or probe/) is another's, unless
    (``fallback``) the side folders hold every one of them."""
    from cream_data.vocab import SIDE_FOLDERS

    def beside(p: Path) -> bool:
        return p != path and bool(set(p.relative_to(path).parts[:-1]) & set(SIDE_FOLDERS))

    own = [p for p in found if not beside(p)]
    return own or found if fallback else own


def find_human(path: Path, scores_path: Path | None) -> Path | None:
    """The ``human_scores`` table that goes with a labeled folder: the one under ``path`` (not in a side folder:
    :func:`own_tables`), or, when ``path`` is the scores table itself, its sibling ``human/``."""
    found = own_tables(path, [p for kind, p in io.iter_table_paths(path) if kind == "human_scores"], fallback=False)
    if len(found) > 1:
        raise CreamError(f"{path}: holds {len(found)} human_scores tables ({', '.join(str(p) for p in found[:4])}); "
                         f"point cream inspect at one labeled folder")
    if found:
        return found[0]
    if scores_path is not None and scores_path == path and _table_dir(path.parent / "human"):
        return path.parent / "human"
    return None


def run_agreement(read: dict[int, tuple[Path, pa.Table | None, pa.Table | None]]) -> list[dict]:
    """Per iteration (``{t: (RUN/iter-<t>, scores, human)}``, the tables as :func:`read_folder` reads them) with a
    scores table: ``{"iteration", "path", **folder_agreement}``."""
    rows = []
    for t, (folder, scores, human) in sorted(read.items()):
        entry = folder_agreement(scores, human)
        if entry is not None:
            rows.append({"iteration": t, "path": str(folder), **entry})
    return rows


def probe_folders(run: Path) -> dict[int, Path]:
    """iteration t -> ``RUN/iter-<t>/probe`` for each iteration whose probe has a scores and a human table."""
    from cream_data.tables.iterations import parse_iteration_dir
    from cream_data.vocab import PROBE_FOLDER

    found = {}
    for d in (p for p in run.iterdir() if p.is_dir()):
        t, folder = parse_iteration_dir(d.name), d / PROBE_FOLDER
        if t is not None and _table_dir(folder / "scores") and _table_dir(folder / "human"):
            found[t] = folder
    return dict(sorted(found.items()))


def run_probe(run: Path) -> list[dict]:
    """Per iteration with a probe (:func:`probe_folders`): ``{"iteration", "path", "prompts", "human"}``, the probe
    prompts that have a human row (sorted ids) and :func:`~cream_data.rewards.selfpref.human_ranks` of its tables."""
    rows = []
    for t, folder in probe_folders(run).items():
        scores, human = read_folder(folder)
        rows.append({"iteration": t, "path": str(folder), "prompts": sorted(set(human.column("prompt_id").to_pylist())),
                     "human": selfpref.human_ranks(scores, human)})
    return rows


# ---------------------------------------------------------------------------- text
def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _share(x, k: int | None = None, n: int | None = None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" + (f" ({k}/{n})" if k is not None else "")


def _interval(lo, hi, pct: bool) -> str:
    if lo is None or hi is None:
        return ""
    return f" [{100 * lo:.1f}, {100 * hi:.1f}]" if pct else f" [{lo:.3f}, {hi:.3f}]"


def _p_value(p) -> str:
    return "–" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _human_row(name: str, h: dict) -> list[str]:
    """One row of the self-preference table: each measure, then what chance gives on the same prompts."""
    of = "–" if not h["n"] else str(h["k_max"] + 1) if h["k_min"] == h["k_max"] else f"{h['k_min'] + 1}–{h['k_max'] + 1}"
    return [name, str(h["n"]), "–" if h["mean_rank"] is None else f"{h['mean_rank']:.2f} of {of}",
            _num(h.get("chance_mean_rank"), 2), _num(h["mean_normalised_rank"]),
            _num(h.get("chance_mean_normalised_rank")), _share(h["below_all_share"], h["below_all"], h["n"]),
            _share(h.get("chance_below_all_share")), _p_value(h.get("below_all_p_value"))]


def tables(entry: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """``(key, title, header, rows)`` of the tables of one folder's agreement (matrix; oracle and human where
    there are such numbers), shared by the Markdown and the terminal."""
    out = []
    if entry["matrix"]:
        rows = [[f"{p['a']} – {p['b']}", "–" if p["tau_mean"] is None else
                 f"{p['tau_mean']:.3f} ± {p['tau_std']:.3f}", str(p["n"]), str(p["undefined"]),
                 _share(p["top_pair"], p["top_pair_n"], p["n"])] for p in entry["matrix"]]
        out.append(("matrix", "Agreement between scorers",
                    ["scorers", "τ-b mean ± std", "n", "undefined", "top-pair agreement"], rows))
    if entry.get("oracle"):
        rows = [[o["scorer"], _share(o["win_rate"], o["wins"], o["prompts"])
                 + _interval(o["win_ci_low"], o["win_ci_high"], True),
                 _num(o["auc"]) + _interval(o["auc_ci_low"], o["auc_ci_high"], False),
                 f"{o['correct']}/{o['wrong']}"] for o in entry["oracle"]]
        out.append(("oracle", "Agreement with the oracle",
                    ["scorer", "pair win rate [95% CI]", "AUC [95% CI]", "correct/wrong"], rows))
    if entry.get("human"):
        rows = []
        for h in entry["human"]:
            rows.append(_human_row(h["scorer"], h))
            if h.get("per_token"):
                rows.append(_human_row(f"{h['scorer']} per token", h["per_token"]))
        out.append(("human", "Self-preference: the human-written answer among the samples",
                    ["scorer", "n", "mean rank", "chance", "normalised", "chance", "below all", "chance", "p"], rows))
    return out


def markdown(entry: dict | None, level: int = 2) -> list[str]:
    """Markdown lines of one folder's agreement tables, each under a heading of ``level``, with its definition."""
    if not entry:
        return []
    lines = []
    for key, title, header, rows in tables(entry):
        lines += ["#" * level + " " + title, ""] + md.table(header, rows) + [NOTES[key], ""]
    return lines


def run_markdown(rows: list[dict]) -> list[str]:
    """The run report's section: per iteration, its tables; each definition once, at the end."""
    if not rows:
        return []
    lines = ["## Agreement between scorers, with the oracle, and on human answers (per iteration)", ""]
    used = []
    for r in rows:
        found = tables(r)
        if not found:
            continue
        lines += [f"### Iteration {r['iteration']}", ""]
        for key, title, header, body in found:
            lines += [f"{title}:", ""] + md.table(header, body)
            used.append(key)
    for k in (k for k in NOTES if k in used):
        lines += [NOTES[k], ""]
    return lines


PROBE_TITLE = "Self-preference on the probe set: the same human answers at every iteration"
PROBE_HEADER = ["iteration", "scorer", "n", "mean rank", "chance", "normalised", "chance", "below all", "chance", "p"]
PROBE_NOTE = ("The probe set (prompts.probe): prompts held out of D_U before the split, never sampled for pairs. "
              "Iteration t's row ranks each probe prompt's human answer among M_t's own samples of it, every reward "
              "given by iteration t's scorer role, so the rows of one scorer compare the same human answers across "
              "iterations (the per-iteration self-preference table, where there is one, compares each iteration's own, "
              "disjoint, prompts).")


def probe_rows(rows: list[dict]) -> list[list[str]]:
    """The probe table's rows (:func:`run_probe`'s entries): per scorer role (then its per-token row), one row per
    iteration, each as the self-preference table renders it."""
    by_name: dict[str, list[list[str]]] = {}
    for r in rows:
        for h in r["human"]:
            by_name.setdefault(h["scorer"], []).append([str(r["iteration"]), *_human_row(h["scorer"], h)])
            if h.get("per_token"):
                name = f"{h['scorer']} per token"
                by_name.setdefault(name, []).append([str(r["iteration"]), *_human_row(name, h["per_token"])])
    return [row for found in by_name.values() for row in found]


def probe_markdown(rows: list[dict]) -> list[str]:
    """The run report's probe section (nothing without a probe): the table, what it compares, and whether every
    iteration's probe holds the same prompts."""
    body = probe_rows(rows)
    if not body:
        return []
    sets = {tuple(r["prompts"]) for r in rows}
    same = (f"Every iteration's probe holds the same {len(rows[0]['prompts'])} prompts." if len(sets) == 1 else
            "Warning: the iterations' probe tables hold different prompts (" +
            ", ".join(f"iteration {r['iteration']}: {len(r['prompts'])}" for r in rows) + "); rows of different "
            "iterations do not compare the same answers.")
    return [f"## {PROBE_TITLE}", ""] + md.table(PROBE_HEADER, body) + [f"{PROBE_NOTE} {same}", "", NOTES["human"], ""]


# ---------------------------------------------------------------------------- plot
def plot_agreement(rows: list[dict], path: Path) -> Path | None:
    """Heatmap of the mean Kendall tau-b per scorer pair (rows) and iteration (columns), the value and n in each
    cell; None (nothing written) when no pair has a defined tau-b anywhere."""
    its = [r["iteration"] for r in rows]
    names: list[str] = []
    for r in rows:
        names += [f"{p['a']} – {p['b']}" for p in r["matrix"] if f"{p['a']} – {p['b']}" not in names]
    vals = np.full((len(names), len(its)), np.nan)
    ns = np.zeros((len(names), len(its)), dtype=int)
    for j, r in enumerate(rows):
        for p in r["matrix"]:
            i = names.index(f"{p['a']} – {p['b']}")
            vals[i, j] = np.nan if p["tau_mean"] is None else p["tau_mean"]
            ns[i, j] = p["n"]
    if not np.isfinite(vals).any():
        return None
    fig, (ax,) = new_figure(max(2.4, 0.45 * len(names) + 1.4))
    import matplotlib

    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#DDDDDD")  # grey: no defined tau-b
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
    for i in range(len(names)):
        for j in range(len(its)):
            text = "–" if not np.isfinite(vals[i, j]) else f"{vals[i, j]:.2f}\nn={ns[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(vals[i, j]) and abs(vals[i, j]) > 0.6 else "black")
    ax.set_xticks(range(len(its)), [f"iter {t}" for t in its])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title("Mean Kendall τ-b between scorers, per iteration", fontsize=10)
    fig.colorbar(im, ax=ax, label="mean τ-b")
    return save_png(fig, path)
