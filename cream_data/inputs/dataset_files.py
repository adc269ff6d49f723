"""The splits of a dataset folder: which data files hold which split, and which split to read.

A folder of data files (a Parquet folder, or a Hub dataset repository as ``datasets`` writes it) is split the way
``datasets`` splits one, in this order:

1. ``README.md`` with a YAML ``configs`` block: the default config's ``data_files`` (``[{split, path}]`` entries, or
   one pattern or list of patterns for a lone ``train`` split); the config marked ``default: true``, else the one
   named ``default``, else the only one;
2. sharded names ``data/<split>-00000-of-00001.<ext>`` (what ``Dataset.push_to_hub`` writes): any split name;
3. a split keyword in a folder or file name, between separators (``-``, ``_``, ``.``, digits, ``/``): ``train``/
   ``training`` → train, ``validation``/``valid``/``val``/``dev`` → validation, ``test``/``testing``/``eval``/
   ``evaluation`` → test;
4. otherwise every data file is the one split ``train``.

A ``datasets`` ``save_to_disk`` folder names its splits in ``dataset_dict.json``. Which split is read
(:func:`pick_split`): the one ``--split`` names (else a one-line error listing them); without ``--split``, the only
split, else ``train`` when there is one, else a one-line error listing them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from cream_data.errors import CreamError, missing_package
from cream_data.inputs.layouts import Record
from cream_data.inputs.records import EXTENSIONS

SAVED_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
_METADATA = (*SAVED_MARKERS, "dataset_infos.json")  # JSON files beside the data that are not data
_SHARDED = re.compile(r"data/(?P<split>[\w.-]+?)-\d{5}-of-\d{5}[^/]*$")
_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev"),
             "test": ("test", "testing", "eval", "evaluation")}
_SEP = r"[-_.\d /]"


def data_files(folder: Path) -> list[Path]:
    """The data files under ``folder`` (sorted; hidden entries, the card and cream's manifests left out)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and not p.name.startswith("_manifest") and p.name not in _METADATA)


def is_saved_dataset(folder: Path) -> bool:
    return any((folder / m).is_file() for m in SAVED_MARKERS)


def is_dataset_folder(folder: Path) -> bool:
    """A folder of data files or a ``save_to_disk`` folder that holds no cream table (no ``_manifest*.json``)."""
    if any(folder.rglob("_manifest*.json")):
        return False
    return is_saved_dataset(folder) or bool(data_files(folder))


def pick_split(names: list[str], split: str | None, label: str) -> str:
    """The split to read among ``names`` (see the module doc)."""
    listed = ", ".join(names) or "none"
    if split is not None:
        if split not in names:
            raise CreamError(f"{label}: no split '{split}' (splits: {listed}); name one with --split")
        return split
    if len(names) == 1:
        return names[0]
    if "train" in names:
        return "train"
    raise CreamError(f"{label}: {len(names)} splits ({listed}) and none is 'train'; choose one with --split")


# ---------------------------------------------------------------------------- a folder of data files
def card_configs(folder: Path) -> list[dict] | None:
    """The ``configs`` block of the folder's README.md YAML header (None: no card, or no such block)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub import DatasetCard

    try:
        configs = DatasetCard.load(readme).data.to_dict().get("configs")
    except Exception as e:  # a card whose YAML header does not parse
        raise CreamError(f"{readme}: the YAML header does not parse ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:120]})") from None
    return configs if isinstance(configs, list) and configs else None


def card_splits(configs: list[dict], label: str) -> dict[str, list[str]]:
    """{split: its data file patterns} of the default config of a card's ``configs`` block."""
    default = [c for c in configs if isinstance(c, dict) and c.get("default")]
    named = [c for c in configs if isinstance(c, dict) and c.get("config_name") == "default"]
    config = (default or named or (configs if len(configs) == 1 else [None]))[0]
    if not isinstance(config, dict):
        names = ", ".join(str(c.get("config_name")) for c in configs if isinstance(c, dict))
        raise CreamError(f"{label}: the card lists {len(configs)} configs ({names}) and none is the default; "
                         "cream train reads the default config")
    entries = config.get("data_files")
    if isinstance(entries, (str, list)) and not (entries and isinstance(entries[0], dict)):
        entries = [{"split": "train", "path": entries}]
    if not isinstance(entries, list) or not entries:
        raise CreamError(f"{label}: config {config.get('config_name')!r} of the card lists no data_files")
    splits: dict[str, list[str]] = {}
    for e in entries:
        if not isinstance(e, dict) or "path" not in e:
            raise CreamError(f"{label}: a data_files entry of the card is not {{split, path}}: {str(e)[:80]}")
        paths = [e["path"]] if isinstance(e["path"], str) else list(e["path"])
        splits.setdefault(str(e.get("split", "train")), []).extend(map(str, paths))
    return splits


def _split_of(rel: str) -> str | None:
    """The split a file's path names by a keyword (rule 3), or None."""
    for split, words in _KEYWORDS.items():
        for w in words:
            if re.search(rf"(^|{_SEP}){w}({_SEP}|$)", rel.rsplit(".", 1)[0]):
                return split
    return None


def file_splits(folder: Path) -> dict[str, list[Path]]:
    """{split: files} of a folder of data files (rules 1-4 of the module doc)."""
    configs = card_configs(folder)
    if configs is not None:
        return {s: sorted({p for pat in pats for p in folder.glob(pat) if p.is_file()})
                for s, pats in card_splits(configs, str(folder)).items()}
    files = data_files(folder)
    rels = {f: f.relative_to(folder).as_posix() for f in files}
    sharded = {f: m.group("split") for f, rel in rels.items() if (m := _SHARDED.match(rel))}
    named = sharded or {f: s for f, rel in rels.items() if (s := _split_of(rel)) is not None}
    if not named:
        return {"train": files} if files else {}
    splits: dict[str, list[Path]] = {}
    for f, s in named.items():
        splits.setdefault(s, []).append(f)
    return splits


def split_files(folder: Path, split: str | None, label: str) -> tuple[str, list[Path]]:
    """(the split read, its files) of a folder of data files."""
    splits = file_splits(folder)
    if not splits:
        raise CreamError(f"{label}: no data files ({', '.join(EXTENSIONS)}) found")
    name = pick_split(list(splits), split, label)
    return name, splits[name]


def download_patterns(folder: Path, split: str | None, label: str) -> list[str]:
    """The file patterns to download for ``split`` of a Hub dataset whose ``README.md`` alone is in ``folder``: the
    card and the split's data files (an unknown split is refused before anything else is fetched); without a
    ``configs`` block the splits are known only from the files, so every data file is fetched."""
    configs = card_configs(folder)
    if configs is None:
        return ["README.md", *(f"*{ext}" for ext in EXTENSIONS)]
    splits = card_splits(configs, label)
    return ["README.md", *splits[pick_split(list(splits), split, label)]]


# ---------------------------------------------------------------------------- a save_to_disk folder
def saved_dataset_records(folder: Path, split: str | None, label: str, keep: tuple[str, ...]
                          ) -> tuple[Iterator[Record], list[str], str | None]:
    """(rows, column names, the split read) of a ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` folder; the
    rows hold only the columns of ``keep`` that it has. The split is None for a single Dataset (it has none)."""
    try:
        import datasets
    except ImportError:
        raise missing_package("datasets", "reading a datasets save_to_disk folder") from None
    try:
        ds = datasets.load_from_disk(str(folder))
    except Exception as e:
        raise CreamError(f"{label}: not a readable datasets folder ({type(e).__name__}: {str(e)[:150]})") from None
    if isinstance(ds, datasets.DatasetDict):
        split = pick_split(list(ds), split, label)
        ds = ds[split]
    elif split is not None:
        raise CreamError(f"--split {split}: {label} is one saved Dataset, which has no splits")
    columns = list(ds.column_names)
    ds = ds.select_columns([c for c in keep if c in columns])
    return ((f"row {i}", r) for i, r in enumerate(ds, 1)), columns, split
