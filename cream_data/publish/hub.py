"""Publish cream tables as a Hugging Face Hub dataset, and read published preferences back.

Repository layout (what ``cream publish`` builds, then uploads)::

    README.md                                         the card (cream_data.publish.card): YAML header + prose
    data/<config>/<split>-00000-of-00001.parquet      one config per table kind, one split per iteration

Configs are ``preferences`` (default), ``scores`` and ``responses``. Splits are ``iter_<t>`` when the data
spans several iterations and ``train`` when it holds one (the split name TRL scripts default to). The
iteration of a table comes from an ``iter-<t>`` folder on its path below the published folder (the run
directory of ``cream run``; any spelling :mod:`cream_data.tables.iterations` accepts, as ``cream sql`` does), or
else from its ``iteration`` column. The Parquet files keep cream's schema metadata, so
``cream_data.tables.io.read_table`` reads them as well as ``datasets`` does.

One split is one table: when two tables of a kind would land in the same split — two label outputs of one
iteration, such as ``cream label … --out lab`` and a re-pairing ``--out lab-spearman`` — nothing is built and the
error names both folders; ``exclude`` (``--exclude lab-spearman``) leaves out all but the one to publish.

The upload (:mod:`cream_data.publish.hub_upload`) is huggingface_hub's; a rerun of a failed one resumes it, since the
rebuilt folder is byte-identical.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cream_data.publish import card, checks, trl_usage
from cream_data.publish.hub_upload import get_token, upload
from cream_data.publish.run_state import check_finished
from cream_data.errors import CreamError
from cream_data.hub_ids import check_repo_id, is_repo_id
from cream_data.tables.io import COMPRESSION, iter_table_paths, read_manifest, read_table, staging_folder
from cream_data.vocab import SIDE_FOLDERS
from cream_data.tables.iterations import iteration_from_path

CONFIG_KINDS = ("preferences", "scores", "responses")
MAX_SHARD_BYTES = 500 * 2**20  # keeps each Parquet file well under the Hub viewer's limits
_SECRET_KEY = re.compile(r"token|secret|password|api[-_]?key", re.I)


# --------------------------------------------------------------------------------------------- inputs
def _inside_publish_folder(path: Path, root: Path) -> bool:
    return any(is_publish_folder(a) for a in path.parents if a != root and root in a.parents)


def collect(root: str | Path, exclude=(), *, pick_with_exclude: bool = True
            ) -> tuple[dict[str, list[card.Split]], list[pa.Table]]:
    """The splits to publish per config (in iteration order) and any prompts tables found under ``root``.

    Tables at or below a path of ``exclude`` (relative to ``root``) are left out. Two tables that would fill one
    split (two label folders of one iteration) are refused; the error says how to choose (``--exclude`` when
    ``pick_with_exclude``, else the tables' own paths).
    """
    root = Path(root)
    if not root.exists():
        raise CreamError(f"{root}: no such file or folder")
    skip = checks.excluded_paths(root, exclude)
    groups: dict[tuple[str, int | None], list[tuple[pa.Table, dict | None, str]]] = defaultdict(list)
    prompts = []
    tables = list(iter_table_paths(root))
    checks.refuse_incomplete(root, skip, {path for _, path in tables})
    for kind, path in tables:
        if skip and any(x == path.resolve() or x in path.resolve().parents for x in skip):
            continue
        if _inside_publish_folder(path, root):  # an earlier `--out` inside DIR: its files are copies
            continue
        if path.parent.name in SIDE_FOLDERS:  # method temporal's pools and interim pairs, the probe's diagnostic:
            continue                          # the final pairs, scores and M_t's samples are the iteration's dataset
        if kind == "prompts":
            prompts.append(read_table(path, "prompts"))
        if kind not in CONFIG_KINDS:
            continue
        table = read_table(path, kind)
        manifest = read_manifest(path) if path.is_dir() else {}
        rel = str(path.relative_to(root)) if path != root else path.name
        it = iteration_from_path(path, root=root)
        values = card.distinct(table, "iteration")
        if it is None and len(values) > 1:  # one table holding several iterations: one split each
            for v in values:  # the manifest's summary is for the whole table, so it is not attached
                groups[(kind, v)].append((table.filter(pc.equal(table.column("iteration"), v)), None, rel))
        else:
            groups[(kind, it if it is not None else (values[0] if values else None))].append((table, manifest, rel))
    if not groups:
        raise CreamError(f"{root}: no preferences, scores or responses tables found (expected a cream run "
                         "directory or a labeled folder with preferences/ and scores/)")
    multi = len({it for _, it in groups if it is not None}) > 1
    name_of = {key: f"iter_{key[1]}" if multi and key[1] is not None else "train" for key in groups}
    by_split: dict[tuple[str, str], list[tuple[int | None, str]]] = defaultdict(list)
    for (kind, it), found in groups.items():
        by_split[(kind, name_of[(kind, it)])] += [(it, r) for _, _, r in found]
    for (kind, name), members in by_split.items():
        rels = list(dict.fromkeys(r for _, r in members))  # one table split by its iteration column counts once
        if len(rels) > 1:
            raise checks.split_clash(root, kind, name, {it for it, _ in members}, rels, pick_with_exclude)
    splits: dict[str, list[card.Split]] = {}
    for kind in CONFIG_KINDS:
        keys = sorted((k for k in groups if k[0] == kind), key=lambda k: (k[1] is not None, k[1] or 0))
        for _, it in keys:
            found = groups[(kind, it)]
            table = pa.concat_tables([t for t, _, _ in found], promote_options="permissive")
            splits.setdefault(kind, []).append(card.Split(
                kind, name_of[(kind, it)], it, table, manifests=[m for _, m, _ in found if m],
                sources=[r for _, _, r in found]))
    return splits, prompts


def prompt_sources(splits: dict[str, list[card.Split]], prompts: list[pa.Table]) -> dict[str | None, int]:
    """Published prompts counted by their prompts-table ``source`` (None: not found in any prompts table)."""
    ids = set()
    for parts in splits.values():
        for s in parts:
            ids.update(s.table.column("prompt_id").to_pylist())
    source_of = {}
    for t in prompts:
        source_of.update(zip(t.column("prompt_id").to_pylist(), t.column("source").to_pylist()))
    counts: dict[str | None, int] = defaultdict(int)
    for pid in ids:
        counts[source_of.get(pid)] += 1
    return dict(counts)


def _run_files(root: Path) -> tuple[dict | None, dict | None]:
    """The run's saved config (bounded YAML: cream_data.config_yaml) and manifest, each None when absent."""
    from cream_data import jsonfile
    from cream_data.config_yaml import read_saved_config

    config = read_saved_config(root / "config.yaml")
    manifest = None
    if (root / "manifest.json").exists():
        manifest = jsonfile.read_json_object(root / "manifest.json", what="run manifest",
                                             fix="rerun the run to rewrite it")
    return _without_secrets(config) if isinstance(config, dict) else None, manifest


def _without_secrets(obj):
    """The config as published: keys that look like credentials are dropped, not redacted."""
    if isinstance(obj, dict):
        return {k: _without_secrets(v) for k, v in obj.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(obj, list):
        return [_without_secrets(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------- the folder
def _write_split(folder: Path, split: card.Split) -> list[str]:
    """Write one split as ``data/<kind>/<split>-<i>-of-<n>.parquet`` shards; returns their repo paths."""
    table = split.table
    n = max(1, math.ceil(table.nbytes / MAX_SHARD_BYTES))
    rows = math.ceil(table.num_rows / n) if table.num_rows else 0
    names = []
    for i in range(n):
        name = f"data/{split.kind}/{split.name}-{i:05d}-of-{n:05d}.parquet"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(i * rows, rows) if n > 1 else table, folder / name, compression=COMPRESSION)
        names.append(name)
    return names


def is_publish_folder(path: Path) -> bool:
    """A folder `cream publish` built: the card and ``data/``."""
    return (path / "README.md").is_file() and (path / "data").is_dir()


def _install(staging: Path, out: Path) -> None:
    """Rename the finished folder into place; an earlier publish folder there is replaced whole."""
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif out.is_dir() and is_publish_folder(out):
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
            return
        else:
            raise CreamError(f"--out {out}: exists and is not a folder written by `cream publish`; "
                             "choose another path or remove it")
    os.replace(staging, out)


def build(root: str | Path, out: str | Path, repo_id: str, *, license: str | None = None, exclude=()) -> Path:
    """Build the repository folder at ``out`` (atomically: a temp sibling renamed at the end), leaving out the
    tables under ``exclude`` (see :func:`collect`), once each split's tables are known to be of one labeling
    (:func:`checks.check_splits`)."""
    root, out = Path(root), Path(out)
    check_repo_id(repo_id)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_publish_folder(out))):
        raise CreamError(f"--out {out}: exists and is not a folder written by `cream publish`; "
                         "choose another path or remove it")
    if license is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", license):
        raise CreamError(f"--license {license!r}: expected a Hub licence id such as mit, apache-2.0, cc-by-4.0")
    splits, prompts = collect(root, exclude)
    checks.check_splits(root, splits)
    trl_usage.add_trl_reference(splits.get("preferences", []))  # TRL's names for the stored log-probs, beside ours
    run_config, run_manifest = _run_files(root if root.is_dir() else root.parent)
    licence = card.licence_of(prompt_sources(splits, prompts), override=license)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(out)
    try:
        for parts in splits.values():
            for s in parts:
                s.files = _write_split(staging, s)
        text = card.render(repo_id, splits, licence, run_config=run_config, run_manifest=run_manifest)
        (staging / "README.md").write_text(text, encoding="utf-8")
        _install(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def listing(folder: str | Path) -> list[tuple[str, int]]:
    """(path in the repository, size in bytes) of every file the upload sends, sorted: all files but hidden ones
    (what :data:`UPLOAD_IGNORE` leaves out of ``upload_folder``)."""
    folder = Path(folder)
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


@dataclass(frozen=True)
class Published:
    folder: Path | None   # None when the folder was temporary (a real upload without --out)
    files: list[tuple[str, int]]
    url: str | None       # None for a dry run
    warning: str | None = None  # an unfinished run published anyway (allow_unfinished)


def publish(root: str | Path, repo_id: str, *, dry_run: bool = False, private: bool = False,
            out: str | Path | None = None, license: str | None = None, exclude=(),
            allow_unfinished: bool = False) -> Published:
    """`cream publish`: build the repository folder, then (unless ``dry_run``) upload it. An ``out`` inside (or
    around) ``root`` is refused (:func:`checks.check_out`), and so is an unfinished run directory unless
    ``allow_unfinished`` (run_state.check_finished)."""
    root = Path(root)
    check_repo_id(repo_id)
    checks.check_out(root, out)
    warning = check_finished(root, allow_unfinished)
    if dry_run:
        stem = root.name if root.is_dir() else root.stem
        out = Path(out) if out else root.parent / f"{stem}.hub-{uuid.uuid4().hex[:8]}"
        build(root, out, repo_id, license=license, exclude=exclude)
        return Published(out, listing(out), None, warning)
    token = get_token()
    if out:
        folder = build(root, out, repo_id, license=license, exclude=exclude)
        return Published(folder, listing(folder), upload(folder, repo_id, token=token, private=private), warning)
    with tempfile.TemporaryDirectory(prefix="cream-publish-") as tmp:
        folder = build(root, Path(tmp) / "repo", repo_id, license=license, exclude=exclude)
        return Published(None, listing(folder), upload(folder, repo_id, token=token, private=private), warning)


# --------------------------------------------------------------------------------------------- reading back
def _card_files(folder: Path, config: str) -> list[tuple[str, list[Path]]] | None:
    """(split, files) of one config as the card's YAML lists them; None without a card."""
    from huggingface_hub import DatasetCard

    readme = folder / "README.md"
    if not readme.is_file():
        return None
    configs = DatasetCard.load(readme).data.to_dict().get("configs") or []
    for c in configs:
        if c.get("config_name") == config:
            entries = c.get("data_files") or []
            if isinstance(entries, (str, list)) and not (entries and isinstance(entries[0], dict)):
                entries = [{"split": "train", "path": entries}]
            result = []
            for e in entries:
                patterns = [e["path"]] if isinstance(e["path"], str) else e["path"]
                result.append((e["split"], sorted(p for pat in patterns for p in folder.glob(pat))))
            return result
    return None


def load_preferences(source: str, split: str | None = None) -> pa.Table:
    """The preferences table from a Hub dataset id, a published folder, or a cream run/labeled folder.

    All splits are concatenated in the card's order (iteration order) unless ``split`` names one. A dataset that is
    not cream's (no ``preferences`` config: a standard preference dataset, TRL's layout) is read by
    :func:`cream_data.inputs.preference_datasets.read`, one split (``split``, else its only one or ``train``); for a
    Hub id only that split's data files are downloaded.
    """
    from cream_data.inputs import dataset_files, preference_datasets

    path = Path(source)
    if not path.exists():
        if not is_repo_id(source):
            raise CreamError(f"{source}: neither a local path nor a Hub dataset id (owner/name)")
        path = _download(source)
        if _card_files(path, "preferences") is None:  # not cream's: the card (downloaded) names the split's files
            path = _download(source, dataset_files.download_patterns(path, split, source))
    if path.is_dir() and _card_files(path, "preferences") is None and dataset_files.is_dataset_folder(path):
        return preference_datasets.read(path, split, label=source).table
    if path.is_dir() and (files := _card_files(path, "preferences")) is not None:
        chosen = [(s, fs) for s, fs in files if split in (None, s)]
        if not chosen:
            raise CreamError(f"{source}: no split {split!r} in config 'preferences' "
                             f"(splits: {', '.join(s for s, _ in files)})")
        tables = [read_table(f, "preferences") for _, fs in chosen for f in fs]
    else:
        splits, _ = collect(path, pick_with_exclude=False)
        chosen = [s for s in splits.get("preferences", []) if split in (None, s.name)]
        if not chosen:
            raise CreamError(f"{source}: no preferences table{f' for split {split!r}' if split else ''} found")
        tables = [s.table for s in chosen]
    if not tables:
        raise CreamError(f"{source}: the preferences config lists no data files")
    return trl_usage.without_trl_reference(pa.concat_tables(tables, promote_options="permissive"))


def _download(repo_id: str, patterns: list[str] | None = None) -> Path:
    """The local snapshot of a Hub dataset with the files of ``patterns`` (default: the card and cream's
    ``preferences`` config)."""
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, repo_type="dataset",
                                      allow_patterns=patterns or ["README.md", "data/preferences/*"]))
    except Exception as e:
        if constants.HF_HUB_OFFLINE:
            raise CreamError(f"{repo_id}: could not download the dataset from the Hub: HF_HUB_OFFLINE is set and it "
                             "is not in the local Hugging Face cache (unset HF_HUB_OFFLINE, or pass a folder written "
                             "by `cream publish`)") from None
        first = (str(e).splitlines() or [""])[0][:160]
        raise CreamError(f"{repo_id}: could not download the dataset from the Hub ({type(e).__name__}: {first})") \
            from None
