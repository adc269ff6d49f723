"""The `cream run` config: one YAML file for the whole loop, validated up front with every problem listed at once.

    model: smollm2-135m-instruct      # M0
    method: cream                     # cream | cream-avg | cream-no-rc | srlm | oracle | rm (the paper's rows) | cream-prompt | scir | temporal
    iterations: 2                     # T
    sft:     {data: …, lr: 2e-5, epochs: 1, weight_decay: 0.0, max_grad_norm: 1.0, …}
    prompts: {source: …, limit: …}    # split into T disjoint subsets, one per iteration
    # or a mix:  prompts: {sources: [{sft: true}, {source: x.jsonl, limit: 16}, {task: gsm8k, split: train}], …}
    sample:  {n: 5, temperature: 0.8, top_p: 0.95, max_new_tokens: 768, …}
    label:   {consistency: kendall, scope: dataset, clip_c: false, batch_size: 8, judge_mode: expected, …}
    train:   {beta: 0.1, lr: 1e-6, epochs: 1, weight_decay: 0.0, max_grad_norm: 1.0, long_pairs: drop, …}
    eval:    {tasks: [arc_easy, …], limit: 50, data_dir: …, models: all}

Each stage section is derived from the stage's own settings (cream_train/run/sections.py): every flag of `cream
sample/label/train/eval/prompts` is a key of its section, with the same default, except the settings the run fills
itself (models, seeds, iteration, paths: ``sections.OWNED``). Relative paths are resolved against the config file's
folder, every path-valued key by its kind (cream_train/run/config_paths.py). Unknown keys are errors (a typo must not
be ignored; the closest known key is suggested), and so are duplicate keys. TRL's names of the common settings are
aliases (``learning_rate`` for ``lr``: settings.ALIASES), and a float may be written ``1e-6`` (which YAML 1.1 reads
as a string). Each stage's settings are checked by building that stage's own config (the one place its rules
live), so `cream run --check` refuses what `cream train/sample/label/eval` would refuse, naming the key
(``train.lora_r: got 0, …``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, get_type_hints

from cream_data.config_yaml import kind_of, read_mapping
from cream_data.errors import CreamError
from cream_data.jsonfile import require_file
from cream_data.rewards.dpo import c_in_words
from cream_data.settings import (INT32_MAX, SettingsError, canonical_keys, coerce, field_problems, joined,
                                 plain, setting, shown, type_name)
from cream_data.vocab import EVAL_MODELS, METHOD_LABEL, RUN_METHODS as METHODS, TEMPORAL_REWARDS
from cream_train.run.config_paths import exists, looks_local, resolve_paths, too_long
from cream_train.run.prompt_sources import (count_prompts, data_dir_problems, entry_problems, named_sources,
                                            probe_problems, resolved_source, uses_sft_prompts)
from cream_train.run.sections import (LAUNCH, METHOD_DECIDES, NODES, OWNED_KEY, EvalSection, LabelSection,
                                      NodesSection, PromptsSection, SampleSection, SFTSection, Stages, TrainSection)


@dataclass(frozen=True)
class TemporalSection:
    """Method temporal (temporal self-rewarding, docs/REWARDS.md): the reward that scores the pools."""

    reward: Optional[str] = None  # judge (default, as the paper) | dpo | rm


@dataclass(frozen=True)
class RunConfig:
    model: str = setting("smollm2-135m-instruct", path="model", help="M0: a checkpoint folder, a Hub id or the alias.")
    method: str = "cream"
    iterations: int = 2
    seed: int = 0
    run_dir: str | None = setting(None, path="path", help="Default: runs/<config file stem> beside the config.")
    sft: SFTSection = field(default_factory=SFTSection)
    prompts: PromptsSection = field(default_factory=PromptsSection)
    sample: SampleSection = field(default_factory=SampleSection)
    label: LabelSection = field(default_factory=LabelSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    nodes: NodesSection = field(default_factory=NodesSection)
    temporal: TemporalSection = field(default_factory=TemporalSection)

    @property
    def reward(self) -> str:
        if self.method == "temporal" and self.temporal.reward:
            return self.temporal.reward
        return METHODS[self.method][0]

    @property
    def train_method(self) -> str:
        return METHODS[self.method][1]

    def label_pairing(self) -> dict:
        """The label settings a method may decide (METHOD_LABEL: consistency_between, pair_policy, scope): the
        section's, else the method's, else the label stage's own default."""
        method = METHOD_LABEL.get(self.method, {})
        stage = {f.name: f.default for f in fields(LabelSection.stage)}
        return {key: value if (value := getattr(self.label, key)) is not None else method.get(key, stage[key])
                for key in METHOD_DECIDES["label"]}

    def trained_c(self) -> str:
        """The C its DPO training weighs each pair by, in words (`cream run --plan` and `--check` say it)."""
        spec = Stages(self, Path(self.run_dir or ".")).label().pairing()
        return c_in_words(self.train_method, spec)

    def to_dict(self) -> dict:
        """Every setting as the run uses it (the label pairing settings resolved from the method's defaults)."""
        d = plain(dataclasses.asdict(self))
        d["label"].update(self.label_pairing())
        return d


def alias_table() -> str:
    """docs/CONFIG.md's table of TRL's names (settings.ALIASES, settings.SAME_AS_TRL): each name, cream's, its flags
    and where it is a key of a run config (tests/test_user_names.py checks the doc holds exactly this)."""
    from cream_data.settings import ALIASES, SAME_AS_TRL

    hints = get_type_hints(RunConfig)

    def keys(name: str) -> str:
        where = [f"`{name}` (top level)" for f in fields(RunConfig) if f.name == name]
        where += [f"`{f.name}`" for f in fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])
                  and name in {g.name for g in fields(hints[f.name])}]
        return ", ".join(where) or "none (the run fills it)"

    def forms(name: str) -> str:
        dashed = "--" + name.replace("_", "-")
        return f"`{dashed}`" + (f", `--{name}`" if "_" in name else "")

    rows = ["| TRL name | cream's name | flags | run config keys |", "| --- | --- | --- | --- |"]
    for alias, name in ALIASES.items():
        rows.append(f"| `{alias}` | `{name}` | {forms(alias)} for `--{name.replace('_', '-')}` | {keys(name)} |")
    for name in SAME_AS_TRL:
        rows.append(f"| `{name}` | the same | {forms(name)} | {keys(name)} |")
    return "\n".join(rows)


def _build(cls, raw: Any, where: str, problems: list[str]):
    """``cls`` from a mapping: an unknown key (with the closest known one), a setting given under two names (its own
    and TRL's, ``lr`` and ``learning_rate``) or a value of the wrong type is a problem named ``where`` + key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where.rstrip('.') or 'config'}: got {kind_of(raw)}, expected a mapping of settings")
        return cls()
    hints = get_type_hints(cls)
    raw, unknown = canonical_keys(raw, {f.name for f in fields(cls)}, where)  # TRL's names too (settings.ALIASES)
    problems += unknown
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        value, hint = raw[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, value, f"{where}{f.name}.", problems)
            continue
        try:
            kwargs[f.name] = coerce(value, hint)
        except TypeError:
            problems.append(f"{where}{f.name}: got {kind_of(value)}, expected {type_name(hint)}")
    return cls(**kwargs)


def _check_values(cfg: RunConfig, base: Path, problems: list[str]) -> None:
    """The run's own settings: those no stage config holds."""
    if cfg.method not in METHODS:  # noqa: SIM102
        problems.append(f"method: got {shown(cfg.method)}, expected one of {', '.join(METHODS)}")
    if cfg.temporal.reward is not None:
        if cfg.method != "temporal":
            problems.append(f"temporal.reward: only with method temporal (method {cfg.method} has its own reward)")
        elif cfg.temporal.reward not in TEMPORAL_REWARDS:
            problems.append(f"temporal.reward: got {shown(cfg.temporal.reward)}, expected one of "
                            f"{', '.join(TEMPORAL_REWARDS)}")
    if not 1 <= cfg.iterations <= INT32_MAX:  # iteration t is stored as an int32
        problems.append(f"iterations: got {shown(cfg.iterations)}, expected >= 1 and <= {INT32_MAX:,}")
    paths = [("sft.data", cfg.sft.data)]
    if cfg.prompts.sources is not None:
        if cfg.prompts.source:
            problems.append("prompts: give either source or sources, not both")
        if not cfg.prompts.sources:
            problems.append("prompts.sources: empty, expected a list of {source, layout, limit}")
        for i, entry in enumerate(cfg.prompts.sources):
            where = f"prompts.sources[{i}]"
            problems += entry_problems(entry, where)
            if isinstance(entry, dict) and not {"sft", "task"} & set(entry) and isinstance(entry.get("source"), str):
                paths.append((f"{where}.source", entry["source"]))
    else:
        paths.append(("prompts.source", cfg.prompts.source))
    problems += data_dir_problems(cfg.prompts)
    for where, path in paths:
        if not path:
            problems.append(f"{where}: missing, expected a file, folder or Hub id")
        elif looks_local(path) and not too_long(path) and not exists(base / path):
            problems.append(f"{where}: {base / path} does not exist")
    for name in ("sft", "train"):
        conf = getattr(cfg, name).accelerate_config
        if conf and not (base / Path(conf).expanduser()).is_file():
            problems.append(f"{name}.accelerate_config: {base / Path(conf).expanduser()} is not a file")
    if cfg.eval.data_dir and not (base / cfg.eval.data_dir).is_dir():
        problems.append(f"eval.data_dir: {base / cfg.eval.data_dir} is not a folder")
    if cfg.eval.models not in EVAL_MODELS:
        problems.append(f"eval.models: got {shown(cfg.eval.models)}, expected one of {', '.join(EVAL_MODELS)}")
    if cfg.sample.n == 1:  # n < 1 is the sample stage's to refuse
        problems.append(f"sample.n: got {cfg.sample.n}, expected >= 2 (a pair needs two responses)")
    for where, v in (("prompts.limit", cfg.prompts.limit), ("prompts.per_iteration", cfg.prompts.per_iteration)):
        if v is not None and v < 1:
            problems.append(f"{where}: got {v}, expected >= 1 or null")
    problems += probe_problems(cfg.prompts)


def _check_stages(cfg: RunConfig, run: Path, problems: list[str]) -> None:
    """Build every stage's config as the loop does for iteration 1 and collect what each refuses.

    A problem with one of the section's keys is named ``section.key``; one with a setting the run owns and passes
    to several stages (model, seed) by its run-level key, once.
    """
    if cfg.method not in METHODS:  # reported on its own; build the stages as for the default method
        cfg = dataclasses.replace(cfg, method="cream")
    stages = Stages(cfg, run)
    for name in ("sft", "prompts", "sample", "label", "train", "eval"):
        try:
            getattr(stages, name)()
        except SettingsError as err:
            section = getattr(cfg, name)
            keys = {f.name for f in fields(section)} - set(section.extras)
            said = [(k, t.replace(f"{{reward}} {cfg.reward}", _reward_said(cfg))) for k, t in err.keyed]
            err = SettingsError(err.what, said, err.names)
            for p in err.named(lambda k: f"{name}.{k}" if k in keys else OWNED_KEY.get(k, k)).problems:
                head = p.split(":")[0]
                if head.startswith(f"{name}.") or not any(q.split(":")[0].split(" ")[0] == head for q in problems):
                    problems.append(p)
    if cfg.eval.harness is not None:
        _check_harness(cfg.eval, problems)
    _check_launchers(stages, problems)


def _check_launchers(stages: Stages, problems: list[str]) -> None:
    """Each section's launch keys (and ``nodes``) make a Launcher that can start its stage's command; the nodes
    section's own keys (its timeouts) keep their rules."""
    command = {"sft": "train", "train": "train", "sample": "sample", "label": "label"}
    node_key = {name: key for key, name in NODES.items()}  # a Launcher's name -> the nodes key (node_launcher)
    for name in LAUNCH:
        try:
            launcher = stages.launcher(name)
        except SettingsError as err:
            keys = set(LAUNCH[name])
            for p in err.named(lambda k: f"{name}.{k}" if k in keys else f"nodes.{node_key.get(k, k)}").problems:
                if p not in problems:
                    problems.append(p)
            continue
        problems += [f"{name}.{p}" for p in launcher.check_for(command[name])]
    # the nodes section's own rules (a Launcher rule of a nodes key has been reported by the launchers above)
    problems += [p for p in (f"nodes.{k}: {text}" for k, text in field_problems(stages.cfg.nodes)) if p not in problems]


def _reward_said(cfg: RunConfig) -> str:
    """The label stage's reward as the config chose it: ``method rm``, ``temporal.reward rm``, ``method cream
    (reward dpo)`` (a problem of the reward names the key the user wrote, not the method's reward)."""
    if cfg.method == "temporal" and cfg.temporal.reward:
        return f"temporal.reward {cfg.temporal.reward}"
    return f"method {cfg.method}" + ("" if cfg.method == cfg.reward else f" (reward {cfg.reward})")


def _check_harness(e: EvalSection, problems: list[str]) -> None:
    """``eval.harness`` is built as the loop builds it; lm-eval must be installed to run it."""
    from cream_data.stages.harness import require_lm_eval
    from cream_data.stages.harness_config import HarnessConfig

    try:
        HarnessConfig.from_mapping(e.harness, data_dir=e.data_dir, label="M0")
        require_lm_eval()
    except CreamError as err:
        for p in getattr(err, "problems", [str(err)]):
            problems.append(f"eval.harness.{p}" if p.split(":")[0].isidentifier() else f"eval.harness: {p}")


def _check_model(model: str, problems: list[str]) -> None:
    """M0 must name a checkpoint folder, a Hub id or the embedded alias (nothing is loaded or built here); a local
    one is checked as every stage checks a policy (its config and tokenizer are read, no weights)."""
    from cream_data.engines.models import EMBEDDED_ALIAS, check_policy_files, resolve

    if model.strip().lower() != EMBEDDED_ALIAS and not too_long(model):  # the alias: resolving it builds it
        try:
            ref = resolve(model)
            if ref.kind == "local":
                check_policy_files(ref)  # no transformers here: --check and --plan import no torch
        except CreamError as e:
            problems.append(str(e))


def _check_reward_model(lab: LabelSection, problems: list[str]) -> None:
    """``label.reward_model`` must name a checkpoint; a local one is checked as the label stage checks it (its
    config and tokenizer are read, nothing is loaded); a Hub one when the stage loads it."""
    if not lab.reward_model or too_long(lab.reward_model):  # (a name too long is refused by resolve_paths)
        return
    from cream_data.engines.models import reward_model_problem

    problem = reward_model_problem(lab.reward_model, trust_remote_code=lab.trust_remote_code)
    if problem:
        problems.append(problem)


def _check_run_dir(run: Path, problems: list[str]) -> None:
    """The run directory, or the nearest part of its path that exists, must be a folder."""
    for p in (run, *run.parents):
        if p.exists():
            if not p.is_dir():
                problems.append(f"run_dir: {p} is not a folder")
            return


def _check_sft(s: SFTSection, base: Path, problems: list[str]) -> None:
    """Read a local SFT source now, so a malformed row is reported before any work (Hub ids are read by the run)."""
    from cream_data.inputs.prompts import load_sft

    try:
        load_sft(resolved_source(base, s.data), layout=s.layout, limit=s.limit)
    except CreamError as e:
        problems.append(f"sft.data: {e}")


def check_reuse_from(path: str | Path, run_dir: str | Path | None = None) -> Path:
    """``--reuse-from PATH`` resolved, or a one-line error: it must be another run's directory (a manifest.json
    that parses), not ``run_dir`` itself."""
    r = Path(path).resolve()
    manifest = r / "manifest.json"
    if not manifest.is_file():
        raise CreamError(f"--reuse-from {r}: not a run directory (no manifest.json)")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError:
        raise CreamError(f"--reuse-from {r}: manifest.json is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
        raise CreamError(f"--reuse-from {r}: manifest.json is not a run manifest (expected an object of stages)")
    if run_dir is not None and r == Path(run_dir).resolve():
        raise CreamError(f"--reuse-from {r}: is this run's own directory")
    return r


# The `cream run` flags that override a key of the config (cli/run.py): a problem with a value given so names the flag.
OVERRIDE_FLAGS = {"method": "--method", "seed": "--seed", "run_dir": "--out", "nodes.machine_rank": "--machine-rank",
                  "nodes.main_process_ip": "--main-process-ip"}


def load_run_config(path: str | Path, overrides: dict | None = None, reuse_from: list[Path] | None = None, *,
                    machine_checks: str | None = "check", mapping: dict | None = None) -> tuple[RunConfig, Path, Any]:
    """Read, resolve and validate a run config (and any ``--reuse-from`` folders) without writing anything;
    raises one CreamError listing every problem. ``overrides``: the command line's (:data:`OVERRIDE_FLAGS`);
    ``machine_checks``: also what this machine must have to run it (its GPUs), for ``"check"`` (`--check`) or
    ``"start"`` (the run itself); None for ``--plan``. ``mapping``: the config's settings given as a mapping (the
    Python API) instead of read from ``path``, which then only stands for the file: relative paths are against its
    folder, the default run_dir is named after its stem, and problems are prefixed with it."""
    problems: list[str] = []
    if mapping is None:
        path = require_file(path, "a YAML run config", missing="config file not found")
        raw = read_mapping(path, problems, str(path), "a mapping of settings (model, method, …)")
    else:
        path, raw = Path(path), plain(dict(mapping))  # a copy (tuples as lists, as YAML holds them)
    for key, value in (overrides or {}).items():  # a mapping (nodes: {machine_rank}) merges into the section
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    cfg = _build(RunConfig, raw, "", problems)
    base = path.resolve().parent
    # every path-valued key against the config's folder, so the config means the same from any folder
    cfg = resolve_paths(cfg, base, problems)
    run = Path(cfg.run_dir) if cfg.run_dir else (base / "runs" / path.stem).resolve()
    _check_values(cfg, base, problems)
    _check_model(cfg.model, problems)
    _check_reward_model(cfg.label, problems)
    _check_run_dir(run, problems)
    _check_stages(cfg, run, problems)
    if machine_checks and cfg.method in METHODS:
        from cream_train.run.gpus import shard_gpu_problems

        problems += shard_gpu_problems(Stages(cfg, run), starting=machine_checks == "start")
    for r in reuse_from or []:
        try:
            check_reuse_from(r, run)
        except CreamError as e:
            problems.append(str(e))
    table, sft_problems = None, []
    if cfg.sft.data and looks_local(cfg.sft.data) and exists(base / cfg.sft.data) \
            and not any(m.startswith("sft.") for m in problems):
        _check_sft(cfg.sft, base, sft_problems)
    if all(src and (not looks_local(src) or exists(base / src)) for src in named_sources(cfg)) \
            and not any(m.startswith("prompts") for m in problems) and not (sft_problems and uses_sft_prompts(cfg)):
        table = count_prompts(cfg, base, problems)  # T vs prompt count, reported with everything else
    problems += sft_problems
    if problems:
        problems = _flagged(problems, overrides or {})
        raise CreamError(f"{path}: {len(problems)} problem(s): " + joined(problems))
    return dataclasses.replace(cfg, run_dir=str(run)), base, table


def _flagged(problems: list[str], overrides: dict) -> list[str]:
    """A problem about a value given by a `cream run` flag names the flag (``--machine-rank: got 2, …``), not the
    config key the flag overrides."""
    given = {f"{k}.{n}" if isinstance(v, dict) else k: OVERRIDE_FLAGS.get(f"{k}.{n}" if isinstance(v, dict) else k)
             for k, v in overrides.items() for n in (v if isinstance(v, dict) else [None])}
    out = []
    for p in problems:
        head, sep, text = p.partition(": ")
        out.append(f"{given[head]}{sep}{text}" if given.get(head) else p)
    return out
