"""The dataset card of a published cream dataset: licence of the sources, lineage, statistics, README.md.

The card is a README.md whose YAML header the Hub reads (``configs`` with ``data_files``, ``dataset_info``
features and splits, ``license``, ``tags``…) followed by prose for people. Everything here is pure: tables
and dicts in, text out; :mod:`cream_data.publish.hub` does the files and the network.

Statistics of one split of the preferences table (one iteration), over its pairs i = 1…n:

    C_i       = consistency (Kendall: (tau_i + 1) / 2)        mean, median, std (population, ddof = 0)
    margin_i  = rewards_i[chosen_idx_i] - rewards_i[rejected_idx_i]   (>= 0: chosen = argmax, rejected = argmin)

"Skipped by reason" cannot be recovered from the pairs (a skipped prompt has no row): it comes from the
``summary`` the labeler writes into the preferences manifest, and the card says so when it is absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import schemas
from cream_data import markdown
from cream_data.publish import trl_usage

# --------------------------------------------------------------------------------------------- licences
# Licences of the prompt sources cream knows, as checked against ../shared/data/*/PROVENANCE.md and the
# licence files there (tests/test_publish.py re-checks each entry against those files). Order matters: the
# first pattern that matches a prompts-table ``source`` string wins (self-instruct before alpaca).
# ``None`` = no licence could be verified: the card says "unknown" rather than guess.
KNOWN_SOURCES: tuple[tuple[str, str, str | None, str], ...] = (
    ("self_instruct_seed", r"self[-_ ]?instruct|seed_tasks", "cc-by-nc-4.0",
     "Self-Instruct seed tasks as distributed in tatsu-lab/stanford_alpaca (DATA_LICENSE: CC BY-NC 4.0)"),
    ("alpaca_eval", r"alpaca[-_ ]?eval", "cc-by-nc-4.0",
     "AlpacaEval (tatsu-lab/alpaca_eval): data licence CC BY-NC 4.0 per its README; its code is Apache-2.0"),
    ("gsm8k", r"gsm8k|grade[-_ ]school[-_ ]math", "mit", "GSM8K (openai/grade-school-math LICENSE: MIT)"),
    ("openbookqa", r"openbook[-_ ]?qa", "apache-2.0",
     "OpenBookQA (licence of its home repository allenai/OpenBookQA: Apache-2.0)"),
    ("arc", r"\barc\b|ai2_arc|arc[-_ ](easy|challenge)", "cc-by-sa-4.0",
     "AI2 ARC (CC BY-SA 4.0 per AI2's dataset card; the data files carry no licence file)"),
    ("siqa", r"siqa|social[-_ ]?i[-_ ]?qa", None,
     "Social IQa (AI2): no licence file accompanies the distributed data, so its licence is not verified"),
    ("oasst", r"oasst", "apache-2.0", "OpenAssistant oasst1/oasst2 (Apache-2.0)"),
)
# From most to least restrictive, to say which terms bind a mixture.
_RESTRICTIVENESS = ["unknown", "cc-by-nc-4.0", "cc-by-sa-4.0", "cc-by-4.0", "apache-2.0", "mit"]


@dataclass(frozen=True)
class Licence:
    """The card's licence: the Hub ``license`` value, one line per source, and where the value came from."""

    value: str | list[str]
    lines: tuple[str, ...]
    overridden: bool = False


def identify_source(source: str) -> tuple[str, str | None, str] | None:
    """(known source name, licence or None, evidence) for a prompts-table ``source`` string, or None."""
    low = source.lower()
    for name, pattern, licence, evidence in KNOWN_SOURCES:
        if re.search(pattern, low):
            return name, licence, evidence
    return None


def licence_of(source_counts: dict[str | None, int], override: str | None = None) -> Licence:
    """The licence a dataset built from these prompt sources carries.

    ``source_counts`` maps a prompts-table ``source`` (None: a published prompt whose source was not found)
    to its number of prompts. Several licences → the Hub list of all of them, and prose naming the most
    restrictive terms; any source not verified → ``unknown`` is in the list, never a guess.
    """
    lines, found = [], []
    for source, n in sorted(source_counts.items(), key=lambda kv: (kv[0] is None, str(kv[0]))):
        if source is None:
            lines.append(f"{n} prompt(s) whose source is not recorded (no prompts table beside the data): licence unknown")
            found.append("unknown")
            continue
        known = identify_source(source)
        if known is None:
            lines.append(f"`{source}` ({n} prompts): not a source cream knows; licence unknown")
            found.append("unknown")
        else:
            name, lic, evidence = known
            lines.append(f"`{source}` ({n} prompts): {evidence} → `{lic or 'unknown'}`")
            found.append(lic or "unknown")
    if override:
        return Licence(override, tuple(lines), overridden=True)
    distinct = sorted(set(found), key=lambda x: _RESTRICTIVENESS.index(x) if x in _RESTRICTIVENESS else 0)
    if not distinct:
        return Licence("unknown", ("no prompts were found, so the licence of the sources is unknown",))
    return Licence(distinct[0] if len(distinct) == 1 else distinct, tuple(lines))


# --------------------------------------------------------------------------------------------- statistics
def _summary(values: np.ndarray) -> dict:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {}
    return {"mean": float(values.mean()), "median": float(np.median(values)), "std": float(values.std(ddof=0)),
            "min": float(values.min()), "max": float(values.max())}


def reward_margins(table: pa.Table) -> np.ndarray:
    """rewards[chosen_idx] - rewards[rejected_idx] per row, vectorised over the flattened reward lists."""
    rewards = table.column("rewards").combine_chunks()
    flat = rewards.flatten().to_numpy(zero_copy_only=False).astype(float)
    start = rewards.offsets.to_numpy()[:-1]
    ci = table.column("chosen_idx").to_numpy().astype(np.int64)
    ri = table.column("rejected_idx").to_numpy().astype(np.int64)
    return flat[start + ci] - flat[start + ri]


def preference_stats(table: pa.Table, manifests: list[dict] | None = None) -> dict:
    """Statistics of one preferences split (see the module docstring for the definitions)."""
    def floats(name: str) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False).astype(float)  # nulls → nan

    stats = {
        "pairs": table.num_rows,
        "consistency": _summary(floats("consistency")),
        "kendall_tau": _summary(floats("kendall_tau")),
        "weight": _summary(floats("weight")),
        "reward_margin": _summary(reward_margins(table)) if table.num_rows else {},
        "consistency_method": sorted(set(table.column("consistency_method").to_pylist())),
        "n_responses": sorted(set(table.column("n_responses").to_pylist())),
    }
    skipped: dict[str, int] = {}
    for m in manifests or []:
        for reason, n in ((m.get("summary") or {}).get("skipped") or {}).items():
            skipped[reason] = skipped.get(reason, 0) + int(n)
    stats["skipped"] = skipped if any((m.get("summary") or {}).get("skipped") is not None
                                      for m in manifests or []) else None
    return stats


def distinct(table: pa.Table, column: str) -> list:
    if column not in table.column_names:
        return []
    return sorted(v for v in pc.unique(table.column(column)).to_pylist() if v is not None)


# --------------------------------------------------------------------------------------------- the card
@dataclass
class Split:
    """One published split: a table kind's rows for one iteration, and the files that hold them."""

    kind: str
    name: str
    iteration: int | None
    table: pa.Table
    files: list[str] = field(default_factory=list)     # paths in the repository
    manifests: list[dict] = field(default_factory=list)  # manifests of the source table folders
    sources: list[str] = field(default_factory=list)   # source table paths, relative to DIR


def size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "10M<n<100M"


def _fmt(s: dict) -> str:
    return (f"{s['mean']:.4f} / {s['median']:.4f} / {s['std']:.4f} (min {s['min']:.4f}, max {s['max']:.4f})"
            if s else "n/a")


def card_metadata(repo_id: str, splits: dict[str, list[Split]], licence: Licence, pretty_name: str):
    """The YAML header as a ``huggingface_hub.DatasetCardData``: configs, dataset_info, licence, tags."""
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    configs, infos = [], DatasetInfosDict()
    for kind, parts in splits.items():
        entry = {"config_name": kind, "data_files": [{"split": s.name, "path": list(s.files)} for s in parts]}
        if kind == "preferences":
            entry["default"] = True
        configs.append(entry)
        split_dict = SplitDict()
        for s in parts:
            split_dict.add(SplitInfo(name=s.name, num_bytes=int(s.table.nbytes), num_examples=s.table.num_rows))
        infos[kind] = DatasetInfo(features=Features.from_arrow_schema(parts[0].table.schema), splits=split_dict)
    pref_rows = sum(s.table.num_rows for s in splits.get("preferences", []))
    data = DatasetCardData(
        license=licence.value,
        pretty_name=pretty_name,
        tags=["cream", "dpo", "preference", "self-rewarding", "synthetic", "consistency"],
        task_categories=["text-generation"],
        size_categories=[size_category(pref_rows or max(s.table.num_rows for p in splits.values() for s in p))],
        configs=configs,
    )
    infos.to_dataset_card_data(data)
    return data


def lineage(splits: dict[str, list[Split]], run_config: dict | None, run_manifest: dict | None) -> list[str]:
    """Markdown lines: iterations, models, method, consistency, sampling settings, the resolved config."""
    lines = []
    iterations = sorted({s.iteration for parts in splits.values() for s in parts if s.iteration is not None})
    lines.append(f"- iterations: {', '.join(map(str, iterations)) or 'not recorded'}")
    method = (run_config or {}).get("method")
    for s in splits.get("preferences", []):
        method = method or ((s.manifests[0].get("config") or {}).get("method") if s.manifests else None)
    lines.append(f"- method: {method or 'not recorded'}")
    for s in splits.get("preferences", []):
        t = s.table
        cfg = (s.manifests[0].get("config") or {}) if s.manifests else {}
        lines.append(
            f"- `{s.name}`: policy M_t = {', '.join(distinct(t, 'model')) or '?'}; reference M_t-1 = "
            f"{', '.join(distinct(t, 'ref_model')) or 'none'}; previous (M_t-1, M_t-2) = "
            f"{', '.join(distinct(t, 'prev_model')) or 'none'} / {', '.join(distinct(t, 'prev_ref_model')) or 'none'}; "
            f"consistency {', '.join(distinct(t, 'consistency_method'))}"
            + (f", scope {cfg['scope']}" if cfg.get("scope") else "")
            + (f", reward {cfg['reward']}" if cfg.get("reward") else "")
            + f"; template hash {', '.join(distinct(t, 'template_hash')) or 'none'}"
        )
    for s in splits.get("responses", []):
        t = s.table
        n = (int(pc.max(t.column("response_idx")).as_py()) + 1) if t.num_rows else 0
        lines.append(
            f"- `{s.name}` sampling: {', '.join(distinct(t, 'model'))}, N = {n}, temperature "
            f"{', '.join(f'{v:g}' for v in distinct(t, 'temperature'))}, top-p {', '.join(f'{v:g}' for v in distinct(t, 'top_p'))}, "
            f"max new tokens {', '.join(map(str, distinct(t, 'max_new_tokens')))}"
        )
    for s in splits.get("scores", []):
        t = s.table
        pairs = sorted({(r["scorer"], r["reward_kind"], r["model"]) for r in
                        t.select(["scorer", "reward_kind", "model"]).group_by(["scorer", "reward_kind", "model"])
                        .aggregate([]).to_pylist()})
        lines.append(f"- `{s.name}` scorers: " + "; ".join(f"{a} = {b} reward of {c}" for a, b, c in pairs))
    if run_manifest:
        version = run_manifest.get("cream_version") or (run_manifest.get("versions") or {}).get("cream")
        if version:
            lines.append(f"- cream version: {version}")
    return lines


def train_usage(repo_id: str, prefs: list[Split]) -> list[str]:
    """Markdown lines: the `cream train` command that trains on the newest split (nothing without preferences)."""
    if not prefs:
        return []
    return ["`cream train` takes the dataset id directly (or this repository downloaded to a folder):", "",
            "```bash", f"cream train {repo_id} --split {prefs[-1].name} --model MODEL --out OUT", "```", "",
            "`MODEL` is the model to train. When it is the model that labeled the split (the `model` column), the "
            "stored `chosen_logp` / `rejected_logp` are the DPO reference and no reference model is loaded; "
            "otherwise the reference is computed. Without `--split` every split is used, in iteration order.", ""]


def trl_section(repo_id: str, prefs: list[Split]) -> list[str]:
    """Markdown lines: what plain TRL does with the newest split, and the lines that train it with C
    (:func:`cream_data.publish.trl_usage.card_lines`)."""
    if not prefs:
        return []
    newest = prefs[-1].table
    models = distinct(newest, "model")
    stored = set(trl_usage.TRL_REFERENCE.values()) <= set(newest.column_names)
    return trl_usage.card_lines(repo_id, prefs[-1].name, models[0] if len(models) == 1 else None, stored)


def render(repo_id: str, splits: dict[str, list[Split]], licence: Licence, *, run_config: dict | None = None,
           run_manifest: dict | None = None) -> str:
    """README.md: YAML header + prose (how to load, lineage, statistics, licence, columns)."""
    import yaml

    name = repo_id.split("/")[-1]
    pretty = f"CREAM preference data: {name}"
    data = card_metadata(repo_id, splits, licence, pretty)
    first = splits.get("preferences", [None])[0]
    split_hint = f', split="{first.name}"' if first else ""
    out = [f"---\n{data.to_yaml()}\n---", f"# {pretty}", "",
           "Preference pairs labeled by a model's own rewards with ranking consistency, made with cream, "
           "an implementation of [CREAM](https://arxiv.org/abs/2410.12735) (Consistency Regularized "
           "Self-Rewarding Language Models, ICLR 2025). The `preferences` config is in TRL's conversational "
           "format; its `weight` column is the consistency C that CREAM's loss uses, which plain TRL ignores (see "
           "Training with TRL).", "",
           "```python", "from datasets import load_dataset",
           f'pairs = load_dataset("{repo_id}", "preferences"{split_hint})', "```", "",
           *train_usage(repo_id, splits.get("preferences", [])),
           "One split per iteration (`iter_<t>`); a single iteration is published as `train`.", "",
           *trl_section(repo_id, splits.get("preferences", [])),
           "## Configs and splits", "",
           *markdown.table(["config", "split", "rows", "files"],
                           [[kind, s.name, s.table.num_rows, ", ".join(f"`{f}`" for f in s.files)]
                            for kind, parts in splits.items() for s in parts])]
    out += ["## Lineage", "", *lineage(splits, run_config, run_manifest), ""]
    if run_config:
        shown = yaml.safe_dump(run_config, sort_keys=True, allow_unicode=True).rstrip()
        out += ["Resolved run configuration:", "", "```yaml", shown,
                "```", ""]
    out += ["## Statistics", "",
            "Per iteration; mean / median / std (population) of the pairs. Reward margin = reward(chosen) − "
            "reward(rejected) under the current model's reward.", "",
            ]
    out += statistics_table(splits.get("preferences", []))
    out += ["## Licence", "", licence_intro(licence)]
    out += [f"- {line}" for line in licence.lines]
    out += ["", "Responses were generated by the models named above; their licences may add terms.", "",
            "## Columns (`preferences`)", ""]
    out += [f"- `{c.name}` ({c.type}{', nullable' if c.nullable else ''}){': ' + c.doc if c.doc else ''}"
            for c in schemas.get("preferences").columns]
    if first is not None and set(trl_usage.TRL_REFERENCE.values()) <= set(first.table.column_names):
        out += [f"- `{theirs}` (float64): `{ours}` under the name TRL's DPOTrainer reads (see Training with TRL)"
                for ours, theirs in trl_usage.TRL_REFERENCE.items()]
    return "\n".join(out) + "\n"


def statistics_table(splits: list[Split]) -> list[str]:
    """The card's per-iteration statistics of the preference pairs, as Markdown lines."""
    rows = []
    for s in splits:
        st = preference_stats(s.table, s.manifests)
        if st["skipped"] is None:
            skipped = "not recorded"
        else:
            nonzero = {k: v for k, v in sorted(st["skipped"].items()) if v}
            skipped = f"{sum(nonzero.values())}" + (f" ({', '.join(f'{k}: {v}' for k, v in nonzero.items())})"
                                                    if nonzero else "")
        rows.append([s.name, st["pairs"], skipped, _fmt(st["consistency"]), _fmt(st["kendall_tau"]),
                     _fmt(st["weight"]), _fmt(st["reward_margin"])])
    return markdown.table(["split", "pairs", "skipped (by reason)", "C", "Kendall tau", "weight", "reward margin"],
                          rows)


def licence_intro(licence: Licence) -> str:
    """The sentence before the licence's source list."""
    if licence.overridden:
        return f"Set by the publisher: `{licence.value}`. The prompt sources found were:"
    if licence.value == "unknown":
        return ("The licence is **unknown**: the sources of the prompts could not be verified. Check them before "
                "reuse. Sources:")
    if isinstance(licence.value, list):
        return ("The prompts come from sources under different licences: each prompt keeps its source's terms, and "
                f"the most restrictive of them (`{licence.value[0]}`) is the one to check before reusing the dataset "
                "as a whole:")
    return f"`{licence.value}`, the licence of the prompt source(s):"
