"""The stage sections of a `cream run` config, derived from the stages' own settings, and the stage configs the loop
builds from them.

Each section holds every setting of its stage (same key, type, default and rule as the stage's flag) except the
ones the run fills itself — listed in :data:`OWNED`, the one place that says which — plus a few run-level keys of
its own (:data:`EXTRAS`). :class:`Stages` builds a stage's config from its section and the run's values (models,
seeds, iteration, and paths of the run's :class:`cream_train.run.layout.RunLayout`), for the stage list
(cream_train/run/stage_defs.py) and for ``cream run --check`` alike, so a setting reaches its stage without being copied by hand.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import field, fields, make_dataclass
from pathlib import Path
from typing import Any, Optional, get_type_hints

from cream_data.inputs.prompts_config import PromptsConfig
from cream_data.config_sections import section
from cream_data.settings import Check, default_of, finite_above, setting
from cream_data.stages.eval_config import EvalConfig
from cream_data.stages.label_config import LabelConfig
from cream_data.stages.sample_config import SampleConfig
from cream_data.vocab import EVAL_MODELS, METHOD_LABEL
from cream_train.config import DPOTrainConfig, SFTTrainConfig
from cream_train.run.launch import Launcher
from cream_train.run.layout import RunLayout

# The stage settings the run fills itself (models, references, seeds, iteration, input and output paths), per section.
OWNED = {
    "sft": ("data", "model", "out", "seed", "overwrite"),
    "prompts": ("split_into", "sft", "seed", "completion_field"),  # D_U is split into T subsets, never SFT
    "sample": ("model", "seed", "iteration"),
    "label": ("model", "ref", "prev_model", "prev_ref", "reward", "iteration", "prompts", "chosen_from",
              "rejected_from"),
    "train": ("data", "model", "out", "seed", "overwrite", "method", "split"),
    "eval": ("label",),
}
# Where a problem with an owned setting comes from in the run config (the others are paths the run makes).
OWNED_KEY = {"model": "model", "seed": "seed", "reward": "method", "method": "method"}
# Run-level keys of a section that are not its stage's settings.
EXTRAS = {
    "sft": [
        ("data", str, setting("", help="SFT conversations: any source `cream prompts --sft` reads.", path="data")),
        ("layout", Optional[str], setting(None, help="The SFT source's layout (detected if omitted).")),
    ],
    "prompts": [
        ("source", str, setting("", help="Unlabeled prompts D_U: a file, a datasets folder, a Hub id, a benchmark "
                                "file.", path="data")),
        ("sources", Optional[list], setting(None, help="Or a mix: [{source, layout?, limit?}, …] concatenated in "
                                            "order; {sft: true, limit?} is the prompts of sft.data; {task, split, "
                                            "limit?} a benchmark task's train split.", path="sources")),
        ("data_dir", Optional[str], setting(None, help="The task entries' data: a folder laid out like "
                                            "../shared/data (default: the Hub).", path="path")),
        ("per_iteration", Optional[int], setting(None, help="Prompts per subset D_U^t (default: all, split "
                                                 "evenly).")),
        ("probe", int, setting(0, help="Hold out this many prompts with a human answer before the split: every "
                               "M_t samples them and scores their human answers (a self-preference diagnostic on "
                               "the same prompts every iteration; 0: none).")),
    ],
    "eval": [
        ("models", str, setting("all", choices=EVAL_MODELS, help="Which models to evaluate: all, last or none.")),
        ("harness", Any, setting(None, help="lm-evaluation-harness too: a mapping of the "
                                 "settings of `cream eval --harness` (tasks, num_fewshot, limit, batch_size, engine, "
                                 "device, trust_remote_code; data_dir and label come from the run).")),
    ],
}
# How a stage's processes start (cream_train/run/launch.py's Launcher settings), per section; `nodes` at the top level.
# Not inputs of a stage: its outputs are the same however it is launched, so no fingerprint includes them.
LAUNCH = {
    "sample": ("data_parallel", "gpus_per_process"),
    "label": ("data_parallel", "gpus_per_process"),
    "sft": ("launcher", "num_processes", "accelerate_config", "gpus_per_process"),
    "train": ("launcher", "num_processes", "accelerate_config", "gpus_per_process"),
}
# The path kind of a stage setting whose own definition does not say it (settings.PATH_KINDS): resolved against the
# run config's folder like every other path (cream_train/run/config_paths.py).
PATHS = {"label": {"reward_model": "model"}}
# The nodes section's keys that are Launcher settings, key -> the Launcher's name (nodes.launcher says how a stage
# reaches the machines, not which program starts it: that is each section's own launcher).
NODES = {"launcher": "node_launcher", "num_machines": "num_machines", "machine_rank": "machine_rank",
         "main_process_ip": "main_process_ip", "main_process_port": "main_process_port"}
# … and its keys of its own: how long a machine waits for another's heartbeat (followers;
# cream_train/run/heartbeat.py).
LIVENESS = [
    ("start_timeout", float, setting(60.0, check=finite_above(0), help="Followers: seconds machine r > 0 waits at "
                                     "start for machine 0's heartbeat in the run directory before it stops (machine "
                                     "0 absent, or the run directory not shared).")),
    ("alive_timeout", float, setting(60.0, check=finite_above(0), help="Followers: seconds a machine's heartbeat may "
                                     "stay unchanged before a machine waiting on it stops (machine r on machine 0, "
                                     "machine 0 on the other machines' shards).")),
]
SHARD_GPUS_HELP = ("GPUs each shard process sees (CUDA_VISIBLE_DEVICES); default: the stage's tensor_parallel_size "
                   "with engine vllm, else 1; 0: CPU, no pinning.")


def _launch_fields(names) -> list:
    """The Launcher settings ``names`` as section fields (same type, default, rule and help)."""
    hints, own = get_type_hints(Launcher), {f.name: f for f in fields(Launcher)}
    specs = []
    for name in names:
        f = own[name]
        if name == "gpus_per_process" and "launcher" not in names:  # shard processes: default from the engine
            specs.append((name, Optional[int], field(default=None, metadata={**f.metadata, "help": SHARD_GPUS_HELP})))
        else:
            specs.append((name, hints[name], field(default=f.default, metadata=f.metadata)))
    return specs


for _name, _keys in LAUNCH.items():
    EXTRAS[_name] = [*EXTRAS.get(_name, []), *_launch_fields(_keys)]


def host_address() -> Check:
    """A host name (RFC 1123 labels) or an IPv4/IPv6 address: where another machine is reached."""
    return Check(_is_host, "a host name or an IP address (e.g. node-0 or 10.0.0.1)")


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _is_host(value) -> bool:
    if not isinstance(value, str) or not value or len(value) > 253:
        return False
    try:
        ipaddress.ip_address(value[1:-1] if value.startswith("[") and value.endswith("]") else value)
        return True
    except ValueError:
        pass
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    return all(_HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


# Rules of the nodes section that the Launcher leaves to the run config (checked by `cream run --check` and start).
NODE_CHECKS = {"main_process_ip": host_address()}


def _node_field(key: str, spec: tuple) -> tuple:
    """A nodes key as a section field: the Launcher setting's, with the run config's own rule where it has one."""
    _, hint, f = spec
    if key in NODE_CHECKS:
        f = field(default=f.default, metadata={**f.metadata, "check": NODE_CHECKS[key]})
    return key, hint, f


NodesSection = make_dataclass(
    "NodesSection", [_node_field(key, spec) for key, spec in zip(NODES, _launch_fields(NODES.values()))] + LIVENESS,
    frozen=True)
NodesSection.__module__ = __name__
NodesSection.__doc__ = ("Several machines (cream_train/run/machines.py): followers — each runs the same `cream run` "
                        "with its own machine_rank on a run_dir on a shared file system — or srun — one `cream run` "
                        "in a Slurm allocation starts each stage that spans machines as a job step.")

# Method temporal's extra sampling stages draw with seeds of their own (seed + offset + t): other draws than M_t's.
ANCHOR_SEED, FUTURE_SEED = 1000, 2000

# The label section leaves consistency_between and pair_policy unset: the method decides (METHOD_LABEL).
METHOD_DECIDES = {"label": {key: None for key in {k for v in METHOD_LABEL.values() for k in v}}}

STAGES = {"sft": SFTTrainConfig, "prompts": PromptsConfig, "sample": SampleConfig, "label": LabelConfig,
          "train": DPOTrainConfig, "eval": EvalConfig}


def _section(name: str, stage: type) -> type:
    return section(f"{name.capitalize()}Section" if name != "sft" else "SFTSection", stage, owned=OWNED[name],
                   extras=EXTRAS.get(name, ()), defaults=METHOD_DECIDES.get(name), paths=PATHS.get(name))


SFTSection = _section("sft", SFTTrainConfig)
PromptsSection = _section("prompts", PromptsConfig)
SampleSection = _section("sample", SampleConfig)
LabelSection = _section("label", LabelConfig)
TrainSection = _section("train", DPOTrainConfig)
EvalSection = _section("eval", EvalConfig)
for _cls in (SFTSection, PromptsSection, SampleSection, LabelSection, TrainSection, EvalSection):
    _cls.__module__ = __name__


class Stages:
    """The stage configs of a run: each section's settings and the values the run owns (``cfg`` a RunConfig,
    ``run`` its directory). The loop passes the models of each iteration; ``cream run --check`` the defaults
    (every model M0), so both build the same configs."""

    def __init__(self, cfg, run: Path):
        self.cfg, self.layout = cfg, RunLayout(run)

    def prompts(self) -> PromptsConfig:
        return self.cfg.prompts.build(split_into=self.cfg.iterations, sft=False, seed=self.cfg.seed,
                                      completion_field=None)

    def sft(self, model: str | None = None) -> SFTTrainConfig:
        return self.cfg.sft.build(data=str(self.layout.sft_data), model=model or self.cfg.model,
                                  out=str(self.layout.model(1)), seed=self.cfg.seed, overwrite=True)

    def sample(self, t: int = 1, model: str | None = None) -> SampleConfig:
        return self.cfg.sample.build(model=model or self.cfg.model, seed=self.cfg.seed + t, iteration=t)

    def label(self, t: int = 1, model: str | None = None, ref: str | None = None,
              prev_ref: str | None = None, chosen_from=(), rejected_from=(), probe: bool = False) -> LabelConfig:
        """M_t labels; M_{t-1} (``ref``) is the reference of its reward and the previous scorer, M_{t-2} its ref;
        ``chosen_from``/``rejected_from``: response pools (method temporal). ``probe``: M_t's samples of the probe
        prompts instead, their human answers scored too (``prompts.probe``)."""
        ref = ref or self.cfg.model
        prompts = self.layout.probe_prompts if probe else self.layout.prompts_subset(t)
        return self.cfg.label.build(model=model or self.cfg.model, ref=ref, prev_model=ref, prev_ref=prev_ref,
                                    reward=self.cfg.reward, iteration=t, prompts=str(prompts),
                                    chosen_from=tuple(chosen_from), rejected_from=tuple(rejected_from),
                                    **({"human_answers": True} if probe else {}), **self.cfg.label_pairing())

    def anchor(self, t: int, model: str) -> SampleConfig:
        """Method temporal: the initial model M1 (``model``) samples iteration t's prompts, the past that rejected
        responses are anchored to; its own seed, and iteration 1 (the model that sampled)."""
        return self.cfg.sample.build(model=model, seed=self.cfg.seed + ANCHOR_SEED + t, iteration=1)

    def future_train(self, t: int, model: str) -> DPOTrainConfig:
        """Method temporal: the temporary future model, DPO from M_t on iteration t's anchored pairs, with the train
        section's settings."""
        return self.cfg.train.build(data=str(self.layout.preferences(t, "anchored")), model=model,
                                    out=str(self.layout.future_model(t)), method=self.cfg.train_method,
                                    seed=self.cfg.seed, overwrite=True, split=None)

    def future_sample(self, t: int, model: str) -> SampleConfig:
        """Method temporal: the future model samples iteration t's prompts (its own seed)."""
        return self.cfg.sample.build(model=model, seed=self.cfg.seed + FUTURE_SEED + t, iteration=t)

    def train(self, t: int = 1, model: str | None = None) -> DPOTrainConfig:
        return self.cfg.train.build(data=str(self.layout.preferences(t)), model=model or self.cfg.model,
                                    out=str(self.layout.model(t + 1)), method=self.cfg.train_method,
                                    seed=self.cfg.seed, overwrite=True, split=None)

    def eval(self, k: int = 0) -> EvalConfig:
        return self.cfg.eval.build(label=f"M{k}")

    def launcher(self, section: str, stage=None) -> Launcher:
        """How ``section``'s processes start (``stage``: its built config, whose tensor_parallel_size is the default
        GPUs per shard process with engine vllm); every other stage (eval) runs as one process. Shard processes
        and accelerate/torchrun span every machine (``nodes``); a stage that does neither runs on machine 0 only."""
        keys = {k: getattr(getattr(self.cfg, section), k) for k in LAUNCH.get(section, ())}
        if keys.get("gpus_per_process", 1) is None:
            vllm = getattr(stage, "engine", None) == "vllm"
            keys["gpus_per_process"] = getattr(stage, "tensor_parallel_size", 1) if vllm else 1
        if self.spans_machines(section):
            keys.update({name: getattr(self.cfg.nodes, key) for key, name in NODES.items()})
        return Launcher(**keys)

    def spans_machines(self, section: str) -> bool:
        """Whether ``section``'s stage runs on every machine (sample and label shards; accelerate/torchrun
        training) rather than on machine 0 alone."""
        return section in ("sample", "label") or getattr(getattr(self.cfg, section), "launcher", "none") != "none"


def fingerprinted(section) -> dict:
    """A section's settings that are inputs of its stage (all but the launch keys; one declared ``input_when_set``
    only when it is set: not at its default, None or False), for its fingerprint."""
    return {f.name: getattr(section, f.name) for f in fields(section) if f.name not in _LAUNCH_KEYS
            and not (f.metadata.get("input_when_set") and getattr(section, f.name) == default_of(f))}


_LAUNCH_KEYS = {k for keys in LAUNCH.values() for k in keys}
