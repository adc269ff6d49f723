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
from pathlib import Path
from typing import Callable

import pyarrow as pa

import schemas
from cream_data.tables import io
from cream_data.errors import CreamError, install_extra, missing_package
from cream_data.inputs.harness_tasks import HUB_TASKS, local_files, local_task
from cream_data.stages.evaluate import finished_tasks
from cream_data.stages.harness_config import HarnessConfig

CONFIG_FILE = "_harness_config.json"  # written before the first part: a rerun checks it resumes the same run
INSTALL = install_extra("harness")
Log = Callable[[str], None]


def require_lm_eval():
    """The ``lm_eval`` module, or the one-line error saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise missing_package("lm-eval", "cream eval --harness (lm-evaluation-harness)", INSTALL) from None
    return lm_eval


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
    """lm-eval's ``model_args`` for cream's model path, in the stage's dtype (auto: fp32 on CPU, bf16 on GPU, as
    cream loads models)."""
    from cream_data.engines.models import dtype_name, resolve_dtype

    args = {"pretrained": path, "dtype": dtype_name(resolve_dtype(cfg.dtype, device))}
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
    dtype: str = ""  # the dtype the model ran in (bf16, fp32, …)

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
    if ref.kind != "hub":  # what a policy needs (a causal LM, its tokenizer, its weights), before lm-eval is asked
        models.check_policy(ref, trust_remote_code=cfg.trust_remote_code, what="--model")
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
                             time.perf_counter() - t0, version, models.short_name(args["dtype"]))
    if todo or not writer.done():  # a manifest its parts do not bear out is written anew
        writer.finish({"summary": {"model": ref.name, "label": cfg.label, "metrics": summary.metrics()},
                       "label": cfg.label, "eval": record})
    return summary

