"""Standard benchmarks through EleutherAI's lm-evaluation-harness (``lm-eval``), one model at a time.

Where ``cream eval`` (without ``--harness``) follows the CREAM paper's protocol (greedy answers under the chat
template, extracted), this runs the harness's own definitions so the numbers sit beside published ones:

    multiple choice (arc_easy, arc_challenge, openbookqa, siqa): no chat template; the log-likelihood of each
        choice text after the prompt; acc = the argmax is the gold choice, acc_norm = the same with each
        log-likelihood divided by the choice's length in bytes (SIQA reports acc only)
    gsm8k: greedy generation until "Question:", 5 worked train examples before the question by default;
        exact_match after two filters: strict-match ("#### N") and flexible-extract (the last number)

Without ``--data-dir`` the harness's own tasks run (they download from the Hugging Face Hub; SIQA is its
``social_iqa``). With ``--data-dir DIR`` cream's local copies run instead (``cream_arc_easy`` …): the same
prompts, choices, targets, metrics, filters and versions, reading the files of a folder laid out like
../shared/data, reshaped by ``process_docs`` into the Hub's layout (SIQA's gold labels joined from
``dev-labels.lst``). Few-shot examples come from the task's train file, which must then be in DIR.

Output: an ``eval_summary`` table folder, one atomically written part per task (the unit of resume) and a
manifest written last; a rerun with the same model (by content) and settings skips the finished tasks.
lm-eval is imported only when a task is loaded or run.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

import schemas
from cream_data.tables import io
from cream_data.errors import CreamError, missing_package
from cream_data.stages.evaluate import finished_tasks
from cream_data.inputs.tasks import TASKS, task_problems  # one task list, one rule for it
from cream_data.vocab import ENGINES

HUB_TASKS = {"arc_easy": "arc_easy", "arc_challenge": "arc_challenge", "openbookqa": "openbookqa",
             "siqa": "social_iqa", "gsm8k": "gsm8k"}
LOCAL_PREFIX = "cream_"  # local copies never share a name with the harness's own tasks
CONFIG_FILE = "_harness_config.json"  # written before the first part: a rerun checks it resumes the same run
INSTALL = "pip install 'cream[harness]'"
Log = Callable[[str], None]

# task → (evaluated split, its file, the train file few-shot examples come from); SIQA's labels sit beside each
_FILES = {
    "arc_easy": ("test", "arc/ARC-Easy-Test.jsonl", "arc/ARC-Easy-Train.jsonl"),
    "arc_challenge": ("test", "arc/ARC-Challenge-Test.jsonl", "arc/ARC-Challenge-Train.jsonl"),
    "openbookqa": ("test", "openbookqa/test.jsonl", "openbookqa/train.jsonl"),
    "siqa": ("validation", "siqa/dev.jsonl", "siqa/train.jsonl"),
    "gsm8k": ("test", "gsm8k/test.jsonl", "gsm8k/train.jsonl"),
}
_DEFAULT_SHOTS = {"gsm8k": 5}  # the harness's defaults; every other task is zero-shot


def require_lm_eval():
    """The ``lm_eval`` module, or the one-line error saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise missing_package("lm-eval", "cream eval --harness (lm-evaluation-harness)", INSTALL) from None
    return lm_eval


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class HarnessConfig:
    """Settings of one harness evaluation; validated on construction (every problem reported at once)."""

    tasks: tuple[str, ...] = TASKS
    num_fewshot: int | None = None  # None: each task's default (0; 5 for gsm8k)
    limit: int | None = None  # the first K examples of each task, in file order
    data_dir: str | None = None  # a folder laid out like ../shared/data; None: the harness's Hub tasks
    batch_size: int = 8
    device: str | None = None  # None: cuda when available, else cpu
    engine: str = "hf"  # hf | vllm (GPU only)
    label: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        raw = self.tasks
        tasks = (raw,) if isinstance(raw, str) else tuple(raw) if isinstance(raw, (list, tuple)) else ()
        object.__setattr__(self, "tasks", tasks)
        if not isinstance(raw, (str, list, tuple)):
            problems = [f"tasks: got {raw!r}, expected a list of task names"]
        else:
            problems = task_problems(tasks)
        for name, low in (("num_fewshot", 0), ("limit", 1)):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
                problems.append(f"{name}: got {v!r}, expected an integer >= {low} or null")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            problems.append(f"batch_size: got {self.batch_size!r}, expected an integer >= 1")
        if self.engine not in ENGINES:
            problems.append(f"engine: got {self.engine!r}, expected one of {', '.join(ENGINES)}")
        if problems:
            raise _invalid(problems)

    @classmethod
    def from_mapping(cls, raw: Any, **run_wide) -> "HarnessConfig":
        """Build from a run config's ``eval.harness`` mapping; ``run_wide`` (data_dir, label) come from the run."""
        known = ", ".join(sorted(RUN_KEYS))
        problems = []
        if not isinstance(raw, dict):
            problems.append(f"got {raw!r}, expected a mapping of {known}")
            raw = {}
        problems += [f"{k}: unknown setting (known: {known})" for k in raw if k not in RUN_KEYS]
        try:
            cfg = cls(**{k: v for k, v in raw.items() if k in RUN_KEYS}, **run_wide)
        except CreamError as e:
            problems += e.problems
        if problems:
            raise _invalid(problems)
        return cfg

    def shots(self, task: str) -> int:
        return self.num_fewshot if self.num_fewshot is not None else _DEFAULT_SHOTS.get(task, 0)

    def identity(self, model_name: str, data_fingerprint: str, version: str) -> dict:
        """What decides the numbers: a rerun into the same folder must match it to resume."""
        return {"model": model_name, "tasks": list(self.tasks), "num_fewshot": self.num_fewshot,
                "limit": self.limit, "batch_size": self.batch_size, "engine": self.engine,
                "data": data_fingerprint, "harness_version": version}


RUN_KEYS = frozenset({"tasks", "num_fewshot", "limit", "batch_size", "engine"})  # what `eval.harness` may set


def _invalid(problems: list[str]) -> CreamError:
    err = CreamError("harness config: " + "; ".join(problems))
    err.problems = problems  # each "field: got X, expected Y": `cream run --check` names the section
    return err


# ---------------------------------------------------------------------------- local task definitions
def _mc_docs(ds, stem: str):
    """ARC/OpenBookQA rows ``{id, question: {stem, choices: [{text, label}]}, answerKey}`` in the Hub layout."""

    def reshape(row):
        q = row["question"]
        return {"id": row["id"], stem: q["stem"], "answerKey": row["answerKey"].strip(),
                "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}

    return ds.map(reshape, remove_columns=ds.column_names)


def _siqa_docs(ds, labels: dict[str, str]):
    """SIQA rows with their gold label ("1".."3") from the split's line-aligned labels file."""
    path = labels[str(ds.split)]
    gold = Path(path).read_text().split()
    if len(gold) != ds.num_rows:
        raise CreamError(f"{path}: {len(gold)} labels for {ds.num_rows} questions; expected one per line")
    return ds.add_column("label", gold)


def _mc(task: str, text: str, docs, *, target: str = "{{choices.label.index(answerKey)}}",
        choice: str = "{{choices.text}}", norm: bool = True, version: float = 1.0) -> dict:
    """A multiple-choice task: the log-likelihood of each choice after the prompt and a space."""
    metrics = ["acc", "acc_norm"] if norm else ["acc"]
    return {"output_type": "multiple_choice", "process_docs": docs, "doc_to_text": text, "doc_to_target": target,
            "doc_to_choice": choice,
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics],
            "metadata": {"version": version, "mirrors": HUB_TASKS[task]}}


def _definition(task: str) -> dict:
    """The task's prompt, choices, target, metrics and filters (its files are set by :func:`local_task`)."""
    if task in ("arc_easy", "arc_challenge"):
        return _mc(task, "Question: {{question}}\nAnswer:", partial(_mc_docs, stem="question"))
    if task == "openbookqa":
        return _mc(task, "{{question_stem}}", partial(_mc_docs, stem="question_stem"))
    if task == "siqa":
        return _mc(task, "Q: {{context}} {{question}}\nA:", None, target="{{(label|int) - 1}}",
                   choice="{{[answerA, answerB, answerC]}}", norm=False, version=0.0)
    return {  # gsm8k
        "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}", "num_fewshot": _DEFAULT_SHOTS["gsm8k"],
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}],
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                     "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                    {"function": "take_first"}]}],
        "metadata": {"version": 3.0, "mirrors": HUB_TASKS["gsm8k"]},
    }


def data_root(data_dir: str | Path) -> Path:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "no such folder"
        raise CreamError(f"--data-dir {data_dir}: {what}; expected a folder laid out like ../shared/data")
    return root.resolve()


def local_files(task: str, data_dir: str | Path, shots: int) -> dict[str, Path]:
    """Role → file of the local task: the evaluated split, and the train split when it is there (required when
    few-shot examples are asked for); SIQA's label files beside them."""
    root = data_root(data_dir)
    split, test, train = _FILES[task]
    files = {split: root / test, "train": root / train}
    if task == "siqa":
        files.update(labels=root / "siqa/dev-labels.lst", train_labels=root / "siqa/train-labels.lst")
    if not all(files[k].is_file() for k in files if k.startswith("train")):
        if shots:
            missing = next(p for k, p in files.items() if k.startswith("train") and not p.is_file())
            raise CreamError(f"--data-dir {data_dir}: no {missing.relative_to(root)} for task {task} ({shots}-shot "
                             "examples come from the train split); expected a folder laid out like ../shared/data")
        files = {k: p for k, p in files.items() if not k.startswith("train")}
    for path in files.values():
        if not path.is_file():
            raise CreamError(f"--data-dir {data_dir}: no {path.relative_to(root)} for task {task}; "
                             "expected a folder laid out like ../shared/data")
    return files


def local_task(task: str, data_dir: str | Path, shots: int = 0) -> dict:
    """The lm-eval task config (an inline dict) of cream's local copy of ``task`` over ``data_dir``."""
    files = local_files(task, data_dir, shots)
    split = _FILES[task][0]
    cfg = {"task": LOCAL_PREFIX + task, "dataset_path": "json", **_definition(task),
           "dataset_kwargs": {"data_files": {s: str(files[s]) for s in (split, "train") if s in files}},
           f"{split}_split": split}
    if "train" in files:
        cfg.update(training_split="train", fewshot_split="train")
    if task == "siqa":
        labels = {split: files["labels"], "train": files.get("train_labels")}
        cfg["process_docs"] = partial(_siqa_docs, labels={s: str(p) for s, p in labels.items() if p})
    return cfg


def task_spec(task: str, cfg: HarnessConfig) -> tuple[str | dict, str]:
    """(what lm-eval loads, source): cream's local copy under ``cfg.data_dir``, else the harness's Hub task."""
    if cfg.data_dir is None:
        return HUB_TASKS[task], "hub"
    return local_task(task, cfg.data_dir, cfg.shots(task)), "local"


def _data_fingerprint(cfg: HarnessConfig) -> str:
    h = hashlib.sha256()
    for task in cfg.tasks:
        if cfg.data_dir is None:
            h.update(f"hub:{HUB_TASKS[task]}\x00".encode())
            continue
        for key, path in sorted(local_files(task, cfg.data_dir, cfg.shots(task)).items()):
            h.update(f"{task}:{key}\x00".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- running lm-eval
def model_args(path: str, cfg: HarnessConfig, device: str) -> dict:
    """lm-eval's ``model_args`` for cream's model path: fp32 on CPU, bf16 on GPU (as cream loads models)."""
    args = {"pretrained": path, "dtype": "bfloat16" if device.startswith("cuda") else "float32"}
    if cfg.trust_remote_code:
        args["trust_remote_code"] = True
    return args


def load_lm(args: dict, cfg: HarnessConfig, device: str, name: str):
    """The harness's model object (``hf`` or ``vllm``) for ``model_args``, loaded once for every task."""
    from lm_eval.api.registry import get_model

    try:
        return get_model(cfg.engine).create_from_arg_obj(args, {"batch_size": cfg.batch_size, "device": device})
    except OSError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CreamError(f"model {name}: cannot load ({first})") from None


def task_manager(source: str):
    """Local tasks are inline configs, so the harness's 14k task files need not be indexed for them."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=source == "hub")


def load_task(task: str, spec: str | dict, manager):
    """lm-eval's Task for ``spec`` with its data read now, so data that cannot be had is one line before any model
    is loaded."""
    from datasets.exceptions import DatasetsError

    try:
        (obj,) = manager.load([spec])["tasks"].values()
    except (OSError, ValueError, DatasetsError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        if isinstance(spec, str):
            raise CreamError(f"task {task}: the harness's {spec} reads its data from the Hugging Face Hub, which "
                             f"failed ({why}); pass --data-dir DIR to read a local copy laid out like "
                             "../shared/data") from None
        files = ", ".join(spec["dataset_kwargs"]["data_files"].values())
        raise CreamError(f"task {task}: cannot read {files} ({why})") from None
    return obj


def run_task(lm, task, cfg: HarnessConfig, manager) -> dict:
    """``lm_eval.simple_evaluate`` on one loaded task; its raw results dict."""
    import lm_eval

    return lm_eval.simple_evaluate(model=lm, tasks=[task], num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                                   task_manager=manager, log_samples=False)


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def metric_rows(results: dict, task: str, harness_task: str, source: str, model: str, label: str | None,
                version: str) -> list[dict]:
    """One row per (metric, filter) the task reported, in the ``eval_summary`` layout."""
    found = results["results"][harness_task]
    n = int(results["n-samples"][harness_task]["effective"])
    shots = int(results["n-shot"][harness_task])
    rows = []
    for key, value in found.items():
        metric, sep, filt = key.partition(",")
        if not sep or metric.endswith("_stderr") or _number(value) is None:
            continue
        rows.append({"model": model, "label": label, "task": task, "harness_task": harness_task, "metric": metric,
                     "filter": filt, "value": _number(value), "stderr": _number(found.get(f"{metric}_stderr,{filt}")),
                     "n": n, "num_fewshot": shots, "source": source, "harness_version": version})
    return rows


# ---------------------------------------------------------------------------- the output folder and the stage
@dataclass(frozen=True)
class HarnessSummary:
    """The rows of every task (``cfg.tasks`` order) and what this call did."""

    out: Path
    model: str
    label: str | None
    rows: list[dict]
    tasks_run: tuple[str, ...] = ()
    tasks_skipped: tuple[str, ...] = ()
    seconds: float = 0.0
    version: str = ""

    def metrics(self) -> dict[str, dict[str, float]]:
        """task → {metric (with its filter when not none): value}: the short form a run manifest keeps."""
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            key = r["metric"] if r["filter"] == "none" else f"{r['metric']},{r['filter']}"
            out.setdefault(r["task"], {})[key] = r["value"]
        return out


def is_harness_output(path: Path) -> bool:
    """What `cream eval --harness` writes: an eval_summary table folder (finished or being written)."""
    from cream_data.tables.outputs import has_table

    return path.is_dir() and ((path / CONFIG_FILE).is_file() or has_table(path, ("eval_summary",)))


def _check_out(out: Path, record: dict, overwrite: bool) -> None:
    """An existing folder must hold this very evaluation (same model, tasks, settings, data and harness)."""
    from cream_data.tables.outputs import check_resume

    check_resume(out, CONFIG_FILE, record["identity"], overwrite, what="a harness evaluation",
                 command="cream eval --harness")


def evaluate_harness(model: str, cfg: HarnessConfig, out: str | Path, *, overwrite: bool = False,
                     log: Log | None = None) -> HarnessSummary:
    """Run lm-evaluation-harness on ``model`` for ``cfg.tasks`` into the eval_summary folder ``out``.

    Every user mistake (lm-eval missing, unknown model path, device, missing data, a folder of another run or of
    other files) is found before anything is written or loaded.
    """
    from cream_data.tables.outputs import guard, locked

    lm_eval = require_lm_eval()
    out = guard(out, "eval", is_harness_output, overwrite=overwrite, what="harness eval table")
    with locked(out):
        return _evaluate_locked(model, cfg, out, overwrite, log or (lambda _m: None), lm_eval.__version__)


def _evaluate_locked(model: str, cfg: HarnessConfig, out: Path, overwrite: bool, log: Log,
                     version: str) -> HarnessSummary:
    from cream_data.engines import models

    t0 = time.perf_counter()
    ref = models.resolve(model)
    specs = {t: task_spec(t, cfg) for t in cfg.tasks}  # missing files are found here
    models.check_device(cfg.device)
    device = cfg.device or models.default_device()
    if cfg.engine == "vllm" and not device.startswith("cuda"):
        raise CreamError(f"engine vllm: needs a CUDA GPU (device {device}); use the hf engine on a CPU")
    args = model_args(ref.path, cfg, device)
    identity = {**cfg.identity(ref.name, _data_fingerprint(cfg), version), "model_id": models.content_id(ref),
                "dtype": args["dtype"]}
    record = {"stage": "eval-harness", "identity": identity, "config": asdict(cfg), "model_path": ref.path}
    _check_out(out, record, overwrite)

    done = finished_tasks(out, "eval_summary", overwrite)
    todo = [t for t in cfg.tasks if t not in done]
    managers = {source: task_manager(source) for source in {specs[t][1] for t in todo}}
    loaded = {t: load_task(t, specs[t][0], managers[specs[t][1]]) for t in todo}  # data problems: before the model
    lm = None
    if todo:
        log(f"harness: loading {ref.name} ({cfg.engine}, {device}, {args['dtype']}, lm-eval {version})")
        lm = load_lm(args, cfg, device, ref.name)

    if overwrite and out.is_dir():  # all checks are behind us: clear the old table only now
        for p in list(out.glob("part-*.parquet")) + list(out.glob("_manifest*.json")):
            p.unlink()
    writer = io.PartWriter(out, "eval_summary")
    if todo or not (out / CONFIG_FILE).is_file():  # a finished folder is left untouched
        io.atomic_write_json(out / CONFIG_FILE, record)
    for i, task in enumerate(todo, 1):
        source, name = specs[task][1], loaded[task].task_name
        log(f"harness {i}/{len(todo)}: {task} as {name} ({source}, {cfg.shots(task)}-shot"
            f"{f', first {cfg.limit}' if cfg.limit else ''})")
        t_task = time.perf_counter()
        results = run_task(lm, loaded[task], cfg, managers[source])
        rows = metric_rows(results, task, name, source, ref.name, cfg.label, version)
        writer.write(pa.Table.from_pylist(rows, schema=schemas.get("eval_summary").arrow))
        shown = ", ".join(f"{r['metric']}{'' if r['filter'] == 'none' else '/' + r['filter']} {r['value']:.3f}"
                          for r in rows)
        log(f"harness {i}/{len(todo)}: {task}: {shown} (n={rows[0]['n'] if rows else 0}, "
            f"{time.perf_counter() - t_task:.0f} s)")

    table = writer.existing()
    rows = table.to_pylist() if table is not None else []
    order = {t: i for i, t in enumerate(cfg.tasks)}
    rows.sort(key=lambda r: (order.get(r["task"], len(order)), r["metric"], r["filter"]))
    summary = HarnessSummary(out, ref.name, cfg.label, rows, tuple(todo), tuple(t for t in cfg.tasks if t in done),
                             time.perf_counter() - t0, version)
    if todo or not writer.done():
        writer.finish({"summary": {"model": ref.name, "label": cfg.label, "metrics": summary.metrics()},
                       "label": cfg.label, "eval": record})
    return summary

