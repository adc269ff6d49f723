"""Preference tables for training: read, check for a method, decide whether the stored reference log-probs hold.

The labeler stores ``chosen_logp``/``rejected_logp`` = log pi_{M_t}(y|x) summed over the response tokens (docs/
algorithm.md, section 2.1). They are the reference log-probs DPO needs when training ``M_{t+1}`` from ``M_t``
(reference ``M_t``; equal up to numerics: dtype, batching), *if* they were computed by the same model with the same
tokenisation as the trainer uses:

    response tokens = ids(template(prompt + [assistant: y]))[len(ids(template(prompt, add_generation_prompt))):]

which is what TRL 1.16's DPOTrainer trains on for conversational data (it tokenizes ``prompt`` with the
generation prompt and ``prompt + chosen`` without, and takes the suffix); for SmolLM2 the span is
``y`` + ``<|im_end|>`` + ``"\\n"``. :func:`stored_reference_problem` checks model name, template hash, token counts
and truncation (not the values, which are never recomputed), and returns why the stored values cannot be used (or
None). A pair longer than ``max_length`` is either dropped (the stored values of every kept pair still hold) or
truncated (they do not: they are of the full responses), see :func:`too_long`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import schemas
from cream_data.tables import io
from cream_data.errors import CreamError
from cream_data.rewards.dpo import pair_weights
from cream_data.tables.validate import check, check_finite, check_pair_sides
from cream_data.vocab import C_WEIGHTED

_BASE_COLUMNS = ("prompt", "chosen", "rejected")
SIDES = ("chosen", "rejected")


@dataclass(frozen=True)
class PreferenceSource:
    """The preferences a DPO run reads, and where they came from."""

    table: pa.Table
    path: Path | None  # the table file or folder read (fingerprint, label manifest); None for a published dataset
    note: str | None  # said in the log when the input was not the table itself


def load_preferences(source: str | Path, split: str | None = None) -> pa.Table:
    """The preferences table of any input :func:`resolve_preferences` accepts."""
    return resolve_preferences(source, split).table


def resolve_preferences(source: str | Path, split: str | None = None) -> PreferenceSource:
    """The preferences table from what the user passed to `cream train`:

    - a preferences table (Parquet file or table folder);
    - a `cream label --out` folder (or a run's ``iter-<t>/``): its ``preferences/`` table;
    - a dataset folder written by `cream publish` (``README.md`` + ``data/preferences/…``), and
    - a Hub dataset id (``owner/name``) of one, downloaded by :func:`cream_data.publish.hub.load_preferences`;
    - a standard preference dataset (TRL's layout, :mod:`cream_data.inputs.preference_datasets`): a data file, a
      Parquet or data-files folder, a ``save_to_disk`` folder or a Hub dataset id — C = 1 and no stored log-probs.

    ``split`` picks one split of a published dataset (default: all, concatenated in iteration order) or of a standard
    dataset (default: its only split, else ``train``, else an error listing them).
    """
    from cream_data.inputs import preference_datasets as standard
    from cream_data.publish import hub

    p = Path(source)
    if not p.exists():
        if _looks_local(str(source)):
            raise CreamError(f"{source}: no such file or folder")
        table = hub.load_preferences(str(source), split)
        return PreferenceSource(table, None, _note(source, "Hub dataset", table, split))
    if p.is_dir() and hub.is_publish_folder(p):
        table = hub.load_preferences(str(p), split)
        return PreferenceSource(table, None, _note(source, "a dataset folder written by `cream publish`", table, split))
    label_output = p.is_dir() and not _is_table_folder(p) and (p / "preferences").is_dir()
    if not label_output and not (p.is_dir() and _is_table_folder(p)) and standard.is_dataset_source(p):
        loaded = standard.read(p, split)
        # a file is fingerprinted by its bytes; a folder's split by the rows read (its files may hold other splits)
        return PreferenceSource(loaded.table, p if p.is_file() else None, loaded.note(str(source)))
    if split is not None:
        raise CreamError(f"--split {split}: only for a published dataset (a Hub id or a `cream publish` folder); "
                         f"{source} is a table or a label output, which has no splits")
    note = None
    if label_output:
        note = f"{source}: a `cream label` output; training on its preferences table {p / 'preferences'}"
        p = p / "preferences"
    # Validate ourselves: a table missing columns that this method does not need (e.g. `weight` for dpo) is fine.
    return PreferenceSource(io.read_table(p, "preferences", validate=False), p, note)


def _note(source, what: str, table: pa.Table, split: str | None) -> str:
    """The log line for a published or Hub dataset: cream's, or a standard one converted (its layout)."""
    from cream_data.inputs.preference_datasets import converted_note, layout_of

    if layout_of(table) is None:
        return f"{source}: {what}; {_splits(split)}"
    hub = "Hub dataset, " if what == "Hub dataset" else ""  # a local folder with a card: not cream's, not published
    return f"{source}: {hub}{converted_note(table)}"


def _splits(split: str | None) -> str:
    return f"config preferences, split {split}" if split else "config preferences, all splits in iteration order"


def _is_table_folder(p: Path) -> bool:
    """A cream table folder, complete or not (its part files carry cream's schema metadata)."""
    if (p / io.MANIFEST).exists() or any(p.glob("_manifest.shard-*.json")):
        return True
    return any(io.table_kind(part) for part in sorted(p.glob("part-*.parquet"))[:1])


def _looks_local(s: str) -> bool:
    """A path that is not there rather than a Hub id: ``./x``, ``/x``, ``~/x``, ``a/b/c``, or ``runs/x`` with a local
    ``runs/`` (a typo must not become a download attempt)."""
    return (s.startswith((".", "/", "~")) or s.count("/") != 1 or s.endswith((".parquet", ".json", ".jsonl"))
            or Path(s.split("/", 1)[0]).expanduser().is_dir())


def check_preferences(table: pa.Table, method: str, where: str) -> None:
    """One-line errors for what training cannot use: missing columns, no rows, a pair whose chosen and rejected are
    one response (:func:`~cream_data.tables.validate.check_pair_sides`), NaN/inf in any float column present, weights
    outside [0, 1]."""
    missing = [c for c in _BASE_COLUMNS if c not in table.column_names]
    if missing:
        raise CreamError(f"{where}: preferences table has no {', '.join(missing)} column(s)")
    if method in C_WEIGHTED and "weight" not in table.column_names:
        raise CreamError(f"{where}: preferences table has no 'weight' column; method {method} needs the per-pair "
                         "consistency weight C (label with consistency, or use --method dpo)")
    if table.num_rows == 0:
        raise CreamError(f"{where}: preferences table is empty; expected at least one pair")
    check_pair_sides(table, where)
    check_finite(table, "preferences", where)
    if method in C_WEIGHTED:
        w = table.column("weight").to_pylist()
        bad = [i for i, x in enumerate(w) if not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0]
        if bad:
            shown = ", ".join(f"row {i} = {w[i]}" for i in bad[:3])
            raise CreamError(f"{where}: column weight: {len(bad)} value(s) outside [0, 1] ({shown}); "
                             "expected the consistency C in [0, 1]")
    if all(c in table.column_names for c in schemas.get("preferences").column_names):
        check(table, "preferences", where)  # a complete table must also match its schema


def weights_for(table: pa.Table, method: str) -> list[float]:
    w = table.column("weight").to_pylist() if "weight" in table.column_names else None
    return pair_weights(method, w, table.num_rows)


def response_token_ids(tokenizer, prompt: list[dict], response: list[dict]) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) as the trainer splits them: the templated prompt with its generation prompt,
    then the rest of the templated ``prompt + response`` (the assistant text and the template's end-of-turn)."""
    p = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
    full = list(tokenizer.apply_chat_template(list(prompt) + list(response), tokenize=True, return_dict=False))
    n = 0  # common prefix, as TRL does when a template renders the prompt differently at the boundary
    while n < min(len(p), len(full)) and p[n] == full[n]:
        n += 1
    return full[:n], full[n:]


def token_lengths(table: pa.Table, tokenizer) -> list[dict[str, tuple[int, int]]]:
    """Each pair's (prompt tokens, response tokens) per side, split as the trainer splits them."""
    prompts = table.column("prompt").to_pylist()
    responses = {side: table.column(side).to_pylist() for side in SIDES}
    return [{side: tuple(len(ids) for ids in response_token_ids(tokenizer, p, responses[side][i])) for side in SIDES}
            for i, p in enumerate(prompts)]


def too_long(lengths: dict[str, tuple[int, int]], max_length: int | None) -> str | None:
    """The first side whose templated prompt + response is over ``max_length`` tokens (None: the pair fits)."""
    return next((side for side in SIDES if max_length is not None and sum(lengths[side]) > max_length), None)


def stored_reference_problem(table: pa.Table, model_name: str, tokenizer, lengths: list[dict[str, tuple[int, int]]],
                             max_length: int | None, model_ids: dict | None = None) -> str | None:
    """Why the stored ``chosen_logp``/``rejected_logp`` cannot serve as reference log-probs, or None if they can.

    ``lengths`` are :func:`token_lengths`; ``max_length`` is the length the trainer truncates at (None: none);
    ``model_ids`` are the content ids `cream label` recorded for the models it scored with (its manifest): the
    starting model must still be what computed the log-probs, not a checkpoint retrained at the same path."""
    from cream_data.engines.models import chat_template_hash, content_id, same_weights

    cols = table.column_names
    for c in ("chosen_logp", "rejected_logp"):
        if c not in cols:
            return f"the table has no {c} column"
        if table.column(c).null_count:
            return f"{table.column(c).null_count} row(s) have no {c}"
    if "model" not in cols:
        return "the table does not record which model computed them"
    models = set(table.column("model").to_pylist())
    if models != {model_name} and not (len(models) == 1 and same_weights(str(next(iter(models))), model_name)):
        return f"they were computed by {sorted(map(str, models))[:2]}, not the starting model {model_name}"
    recorded = (model_ids or {}).get(next(iter(models)))
    if recorded is not None and recorded != content_id(model_name):
        return (f"the model at {model_name} changed since they were computed (content id {recorded} -> "
                f"{content_id(model_name)}): retrained in place?")
    want = chat_template_hash(tokenizer)
    hashes = set(table.column("template_hash").to_pylist()) if "template_hash" in cols else {None}
    if hashes != {want}:
        return (f"template_hash {sorted(map(str, hashes))[:2]} does not match the starting model's tokenizer and "
                f"chat template ({want})")
    stored_n = {side: table.column(f"{side}_n_tokens").to_pylist() if f"{side}_n_tokens" in cols else None
                for side in SIDES}
    for i, row in enumerate(lengths):
        for side in SIDES:
            n = stored_n[side][i] if stored_n[side] is not None else None
            if n is not None and n != row[side][1]:
                return (f"row {i}: {side}_n_tokens is {n} but the trainer's tokenisation gives {row[side][1]} "
                        "response tokens")
        side = too_long(row, max_length)
        if side:
            return (f"row {i}: prompt + {side} is {sum(row[side])} tokens, over --max-length {max_length}, and a "
                    "truncated response no longer matches its stored log-prob (--long-pairs drop keeps them valid)")
    return None


def to_dataset(table: pa.Table, weights: list[float], stored_reference: bool):
    """A ``datasets.Dataset`` with TRL's conversational columns, ``weight``, ``prompt_id`` when the table has one (it
    names the rows of a failing batch), and the stored reference log-probs under the names TRL's DPOTrainer reads
    (``ref_chosen_logps``/``ref_rejected_logps``) when they are used."""
    import datasets

    cols = {c: table.column(c) for c in ("prompt_id", *_BASE_COLUMNS) if c in table.column_names}
    cols["weight"] = pa.array(weights, pa.float64())
    if stored_reference:
        cols["ref_chosen_logps"] = pc.cast(table.column("chosen_logp"), pa.float64())
        cols["ref_rejected_logps"] = pc.cast(table.column("rejected_logp"), pa.float64())
    return datasets.Dataset(pa.table(cols))
