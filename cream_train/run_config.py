"""The `cream run` config: one YAML file for the whole loop, validated up front with every problem listed at once.

    model: smollm2-135m-instruct      # M0
    method: cream                     # cream | cream-avg | cream-no-rc | srlm | oracle (the paper's rows)
    iterations: 2                     # T
    sft:     {data: …, lr: 2e-5, epochs: 1, …}
    prompts: {source: …, limit: …}    # split into T disjoint subsets, one per iteration
    # or a mix:  prompts: {sources: [{source: gsm8k/train.jsonl, limit: 16}, {source: …, layout: arc}], suffix: …}
    sample:  {n: 4, temperature: 0.8, top_p: 0.95, max_new_tokens: 768, …}
    label:   {consistency: kendall, scope: sample, batch_size: 8, …}
    train:   {beta: 0.1, lr: 1e-6, epochs: 1, …}
    eval:    {tasks: [arc_easy, …], limit: 50, data_dir: …, models: all}

Relative paths are resolved against the config file's folder. Unknown keys are errors (a typo must not be ignored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, get_args, get_origin, get_type_hints

from cream_data.errors import CreamError

# method -> (reward used to pick the pair, trainer method): CREAM.md "Methods to compare"
METHODS = {
    "cream": ("dpo", "cream"),
    "cream-avg": ("dpo", "cream-avg"),
    "cream-no-rc": ("dpo", "dpo"),
    "srlm": ("judge", "dpo"),
    "oracle": ("oracle", "dpo"),
}
EVAL_TASKS = ("arc_easy", "arc_challenge", "openbookqa", "siqa", "gsm8k")


@dataclass(frozen=True)
class SFTSection:
    data: str = ""                     # SFT conversations: any source `cream prompts --sft` reads
    layout: Optional[str] = None
    limit: Optional[int] = None
    lr: float = 2e-5
    epochs: float = 1.0
    max_steps: Optional[int] = None
    batch_size: int = 4
    grad_accum: int = 1
    max_length: Optional[int] = 1024


@dataclass(frozen=True)
class PromptsSection:
    source: str = ""                   # unlabeled prompts D_U: a file, a datasets folder, a Hub id, a benchmark file
    sources: Optional[list] = None     # or a mix: [{source, layout?, limit?}, …] concatenated in order
    layout: Optional[str] = None
    limit: Optional[int] = None        # use the first K prompts of the source
    per_iteration: Optional[int] = None  # prompts per subset D_U^t (default: all, split evenly)
    suffix: Optional[str] = None


@dataclass(frozen=True)
class SampleSection:
    n: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 768
    batch_size: Optional[int] = None
    engine: str = "hf"


@dataclass(frozen=True)
class LabelSection:
    consistency: str = "kendall"
    scope: str = "sample"
    batch_size: int = 8
    engine: str = "hf"
    judge_max_new_tokens: int = 256


@dataclass(frozen=True)
class TrainSection:
    beta: float = 0.1
    lr: float = 1e-6
    epochs: float = 1.0
    max_steps: Optional[int] = None
    batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    max_length: Optional[int] = 1024
    lora: bool = False


@dataclass(frozen=True)
class EvalSection:
    tasks: list = field(default_factory=lambda: list(EVAL_TASKS))
    limit: Optional[int] = None
    data_dir: Optional[str] = None      # local copy laid out like shared/data; None: the Hub
    max_new_tokens: int = 512
    batch_size: int = 8
    models: str = "all"                 # all | last | none


@dataclass(frozen=True)
class RunConfig:
    model: str = "smollm2-135m-instruct"
    method: str = "cream"
    iterations: int = 2
    seed: int = 0
    run_dir: Optional[str] = None       # default: runs/<config file stem> beside the config
    sft: SFTSection = field(default_factory=SFTSection)
    prompts: PromptsSection = field(default_factory=PromptsSection)
    sample: SampleSection = field(default_factory=SampleSection)
    label: LabelSection = field(default_factory=LabelSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)

    @property
    def reward(self) -> str:
        return METHODS[self.method][0]

    @property
    def train_method(self) -> str:
        return METHODS[self.method][1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _type_ok(value: Any, hint) -> bool:
    if get_origin(hint) is Optional or (get_origin(hint) is not None and type(None) in get_args(hint)):
        if value is None:
            return True
        hint = [a for a in get_args(hint) if a is not type(None)][0]
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is bool:
        return isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is list or get_origin(hint) is list:
        return isinstance(value, list)
    return True


def _type_name(hint) -> str:
    args = [a for a in get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    name = getattr(base, "__name__", str(base))
    return f"{name} or null" if args else name


def _build(cls, raw: Any, where: str, problems: list[str]):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where or 'config'}: got {type(raw).__name__}, expected a mapping")
        return cls()
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            problems.append(f"{where}{key}: unknown setting (known: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        value, hint = raw[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, value, f"{where}{f.name}.", problems)
        elif not _type_ok(value, hint):
            problems.append(f"{where}{f.name}: got {value!r} ({type(value).__name__}), expected {_type_name(hint)}")
        else:
            kwargs[f.name] = float(value) if hint is float and isinstance(value, int) else value
    return cls(**kwargs)


def _check_values(cfg: RunConfig, base: Path, problems: list[str]) -> None:
    from cream_data.label import CONSISTENCY, SCOPES

    if cfg.method not in METHODS:  # noqa: SIM102
        problems.append(f"method: got {cfg.method!r}, expected one of {', '.join(METHODS)}")
    if cfg.iterations < 1:
        problems.append(f"iterations: got {cfg.iterations}, expected >= 1")
    paths = [("sft.data", cfg.sft.data)]
    if cfg.prompts.sources is not None:
        if cfg.prompts.source:
            problems.append("prompts: give either source or sources, not both")
        if not cfg.prompts.sources:
            problems.append("prompts.sources: empty, expected a list of {source, layout, limit}")
        for i, entry in enumerate(cfg.prompts.sources):
            where = f"prompts.sources[{i}]"
            if not isinstance(entry, dict):
                problems.append(f"{where}: got {entry!r}, expected a mapping {{source, layout, limit}}")
                continue
            extra = sorted(set(entry) - {"source", "layout", "limit"})
            if extra:
                problems.append(f"{where}: unknown setting(s) {', '.join(extra)} (known: layout, limit, source)")
            if not isinstance(entry.get("source"), str):
                problems.append(f"{where}.source: missing, expected a file, folder or Hub id")
                continue
            lim = entry.get("limit")
            if lim is not None and (not isinstance(lim, int) or isinstance(lim, bool) or lim < 1):
                problems.append(f"{where}.limit: got {lim!r}, expected an integer >= 1 or null")
            paths.append((f"{where}.source", entry["source"]))
    else:
        paths.append(("prompts.source", cfg.prompts.source))
    for where, path in paths:
        if not path:
            problems.append(f"{where}: missing, expected a file, folder or Hub id")
        elif _looks_local(path) and not (base / path).exists():
            problems.append(f"{where}: {base / path} does not exist")
    if cfg.eval.data_dir and not (base / cfg.eval.data_dir).is_dir():
        problems.append(f"eval.data_dir: {base / cfg.eval.data_dir} is not a folder")
    unknown = [t for t in cfg.eval.tasks if t not in EVAL_TASKS]
    if unknown:
        problems.append(f"eval.tasks: unknown {unknown}, expected some of {', '.join(EVAL_TASKS)}")
    if cfg.eval.models not in ("all", "last", "none"):
        problems.append(f"eval.models: got {cfg.eval.models!r}, expected all, last or none")
    if cfg.label.consistency not in CONSISTENCY:
        problems.append(f"label.consistency: got {cfg.label.consistency!r}, expected one of {', '.join(CONSISTENCY)}")
    if cfg.label.scope not in SCOPES:
        problems.append(f"label.scope: got {cfg.label.scope!r}, expected one of {', '.join(SCOPES)}")
    for where, v in (("sample.n", cfg.sample.n), ("label.batch_size", cfg.label.batch_size),
                     ("train.batch_size", cfg.train.batch_size), ("sft.batch_size", cfg.sft.batch_size),
                     ("sample.max_new_tokens", cfg.sample.max_new_tokens)):
        if isinstance(v, int) and v < 1:
            problems.append(f"{where}: got {v}, expected >= 1")
    if cfg.sample.n < 2:
        problems.append(f"sample.n: got {cfg.sample.n}, expected >= 2 (a pair needs two responses)")
    for where, v in (("prompts.limit", cfg.prompts.limit), ("prompts.per_iteration", cfg.prompts.per_iteration),
                     ("eval.limit", cfg.eval.limit), ("sft.limit", cfg.sft.limit)):
        if v is not None and v < 1:
            problems.append(f"{where}: got {v}, expected >= 1 or null")


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).suffix != "" or path.count("/") != 1


def count_prompts(cfg: RunConfig, base: Path, problems: list[str]):
    """Load the prompt source(s) once (so T vs the number of prompts is checked before any work)."""
    try:
        table = load_prompt_sources(cfg.prompts, base)
    except CreamError as e:
        problems.append(f"prompts.source{'s' if cfg.prompts.sources else ''}: {e}")
        return None
    need = cfg.iterations * (cfg.prompts.per_iteration or 1)
    if table.num_rows < need:
        problems.append(f"iterations: {cfg.iterations} disjoint subsets of {cfg.prompts.per_iteration or 1}+ prompts "
                        f"need {need} prompts, but prompts.source has {table.num_rows}")
    if cfg.method == "oracle" and table.num_rows and table["reference_answer"].null_count == table.num_rows:
        problems.append("method oracle: prompts.source has no reference answers (oracle needs them)")
    return table


def load_prompt_sources(p: PromptsSection, base: Path):
    """The prompts table D_U: one source, or several concatenated in order (each with its own layout and limit).

    A prompt id found in two sources is an error naming both; ``limit`` then keeps the first K of the whole.
    """
    import pyarrow as pa

    from cream_data.prompts import load_prompts

    if p.sources is None:
        return load_prompts(_resolve(base, p.source), layout=p.layout, limit=p.limit, suffix=p.suffix)
    tables, seen = [], {}
    for i, entry in enumerate(p.sources):
        src = _resolve(base, entry["source"])
        t = load_prompts(src, layout=entry.get("layout") or p.layout, limit=entry.get("limit"), suffix=p.suffix)
        for pid in t.column("prompt_id").to_pylist():
            if pid in seen:
                raise CreamError(f"{src}: prompt_id '{pid}' also comes from {seen[pid]} (sources must not overlap)")
            seen[pid] = src
        tables.append(t)
    table = pa.concat_tables(tables)
    return table.slice(0, p.limit) if p.limit else table


def _resolve(base: Path, path: str) -> str:
    return str((base / path).resolve()) if _looks_local(path) else path


def load_run_config(path: str | Path, overrides: dict | None = None) -> tuple[RunConfig, Path, Any]:
    """Read, resolve and validate a run config; raises one CreamError listing every problem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CreamError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CreamError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise CreamError(f"{path}: not UTF-8 text") from None
    raw = raw or {}
    for k, v in (overrides or {}).items():
        raw[k] = v
    problems: list[str] = []
    cfg = _build(RunConfig, raw, "", problems)
    base = path.resolve().parent
    _check_values(cfg, base, problems)
    srcs = [e["source"] for e in cfg.prompts.sources if isinstance(e, dict) and isinstance(e.get("source"), str)] \
        if cfg.prompts.sources else [cfg.prompts.source]
    table = None
    if all(src and (not _looks_local(src) or (base / src).exists()) for src in srcs) \
            and not any(m.startswith("prompts") for m in problems):
        table = count_prompts(cfg, base, problems)  # T vs prompt count, reported with everything else
    if problems:
        raise CreamError(f"{path}: {len(problems)} problem(s): " + "; ".join(problems))
    # resolve paths against the config's folder, so the saved config is runnable from anywhere
    cfg = dataclasses.replace(
        cfg,
        run_dir=str((base / cfg.run_dir).resolve()) if cfg.run_dir else str((base / "runs" / path.stem).resolve()),
        sft=dataclasses.replace(cfg.sft, data=_resolve(base, cfg.sft.data)),
        prompts=dataclasses.replace(
            cfg.prompts, source=_resolve(base, cfg.prompts.source) if cfg.prompts.source else "",
            sources=[{**e, "source": _resolve(base, e["source"])} for e in cfg.prompts.sources]
            if cfg.prompts.sources else None),
        eval=dataclasses.replace(cfg.eval, data_dir=str((base / cfg.eval.data_dir).resolve()) if cfg.eval.data_dir else None),
    )
    return cfg, base, table
