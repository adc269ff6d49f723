"""Command lines of the stages, for starting each one as its own process (`cream run`, issue #14).

A stage's settings object becomes the argv of its own console command (:func:`stage_argv`: ``["sample", PROMPTS,
"--out", DIR, "--n", "4", …]``), which parses back to an equal settings object; a :class:`Launcher` turns that argv
into the processes to start (:func:`launch_commands`): the command itself, or ``data_parallel`` shard processes
(``--shard i/k``, each pinned to its own GPUs), or one ``accelerate launch`` / ``torchrun`` of ``cream train``; with
``nodes.launcher: srun``, a stage that spans machines is one Slurm job step whose tasks fill in their shard or machine
rank from Slurm's variables (:mod:`cream_train.run.slurm_task`). :func:`shell_line` writes one of them as a line to paste
into a shell (``cream run --plan``).

Pure: the standard library and :mod:`cream_data.settings`; no torch, no typer (a plan is written without either).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import MISSING, dataclass, is_dataclass, replace
from typing import Sequence

from cream_data.errors import CreamError
from cream_data.settings import (Settings, SettingsError, at_least, default_of, flag_decl, keyed, setting,
                                 user_fields, within)
from cream_data.vocab import LAUNCHERS, NODE_LAUNCHERS

SHARDED = ("sample", "label")  # the commands that take --shard i/k
DISTRIBUTED = "train"  # the command accelerate and torchrun start
CLI_MODULE = "cli.main"  # `python -m cli.main` is the `cream` console script
DEFAULT_PORT = 29500  # accelerate's and torchrun's own default
# A Slurm job step (nodes.launcher srun): every task runs `python -m cream_train.run.slurm_task …`, which fills these
# fields in from the task's own Slurm variables, then runs the rest of the line.
TASK_MODULE = "cream_train.run.slurm_task"
TASK_SHARD = "{SLURM_PROCID}/{SLURM_NTASKS}"  # shard i/k: the task's index among the step's tasks
TASK_NODE = "{SLURM_NODEID}"  # the machine rank of a training launcher: the task's node in the step
FIRST_NODE = "{first_node}"  # the step's first node (task 0's): where accelerate and torchrun meet


# ---------------------------------------------------------------------------- settings -> argv
def stage_argv(command: str, cfg: Settings, *, positional: Sequence[str] = (),
               extra: dict[str, str | None] | None = None, skip: Sequence[str] = (), full: bool = False) -> list[str]:
    """The argv after the program name that makes ``cream COMMAND`` build a config equal to ``cfg``.

    ``command``, then ``positional`` (the command's arguments), then ``extra`` (the command's own options, e.g.
    ``{"--out": DIR}``; a None value is a bare flag such as ``--overwrite``), then one option per setting of ``cfg``
    but ``skip`` (the fields the caller passed positionally or in ``extra``). A setting is written only where the
    command would not arrive at the same value without it, so the line stays short; ``full`` writes every one.
    ValueError for a value no command line can express (None where the option has a default, a list item with a
    comma, a positional argument that reads as an option)."""
    if not (is_dataclass(cfg) and isinstance(cfg, Settings)):
        raise TypeError(f"expected a settings dataclass, got {type(cfg).__name__}")
    settings = [f for f in user_fields(type(cfg)) if f.name not in skip]
    unknown = sorted(set(skip) - {f.name for f in user_fields(type(cfg))})
    if unknown:
        raise ValueError(f"skip names no setting of {type(cfg).__name__}: {', '.join(unknown)}")
    argv = [command, *(_positional(str(p)) for p in positional)]
    taken = {flag for f in settings for flag in flag_decl(f).split("/")}
    for flag, value in (extra or {}).items():
        if not flag.startswith("--") or flag in taken:
            raise ValueError(f"extra option {flag!r}: expected a --flag that is not a setting's (or name it in skip)")
        argv += [flag] if value is None else [flag, str(value)]
    for f in settings:
        if full or not _implied(cfg, f):
            argv += _tokens(f, getattr(cfg, f.name))
    return argv


def _positional(text: str) -> str:
    """A positional argument, refused where the command would read it as an option."""
    if text.startswith("-"):
        raise ValueError(f"positional argument {text!r} starts with '-': the command would read it as an option")
    return text


def _implied(cfg: Settings, f) -> bool:
    """Whether the command arrives at ``cfg``'s value of ``f`` without its flag: the field's default, or what the
    settings resolve the default to from the other fields (sample's batch_size from its engine)."""
    default, value = default_of(f), getattr(cfg, f.name)
    if default is MISSING:
        return False
    if type(value) is type(default) and value == default:
        return True
    try:
        return getattr(replace(cfg, **{f.name: default}), f.name) == value
    except SettingsError:
        return False


def _tokens(f, value) -> list[str]:
    """One setting's tokens: ``--flag VALUE``, ``--x``/``--no-x`` for a bool, nothing for the option's default."""
    on, _, off = flag_decl(f).partition("/")
    default = default_of(f)
    if value is None:
        if default is None:
            return []  # the option's default is None too
        raise ValueError(f"{on}: None cannot be written on the command line (leaving the flag out gives {default!r})")
    if isinstance(value, bool):
        if value or off:
            return [on if value else off]
        if default is not True:
            return []  # a flag without --no- form: absent is False
        raise ValueError(f"{on}: False cannot be written on the command line (it has no --no- form)")
    if isinstance(value, (tuple, list)):
        return [on, _joined(on, value)]
    return [on, repr(value) if isinstance(value, float) else str(value)]


def _joined(flag: str, items) -> str:
    """A list setting as the command reads it: comma-separated, each item stripped, empty items dropped."""
    for item in items:
        if not isinstance(item, str) or not item.strip() or "," in item or item != item.strip():
            raise ValueError(f"{flag}: {item!r} cannot be an item of a comma-separated list")
    return ",".join(items)


# ---------------------------------------------------------------------------- how the processes start
@dataclass(frozen=True)
class Launcher(Settings):
    """How a stage's command is started: as itself (``none``, optionally as ``data_parallel`` shard processes) or,
    for train, under ``accelerate launch`` or ``torchrun``; on one machine or several. Validated on construction
    (every problem at once); :meth:`check_for` adds the rules that depend on the stage."""

    what = "launch settings"

    launcher: str = setting("none", choices=LAUNCHERS, help="none: the stage's command itself (data_parallel shard "
                            "processes for sample and label) | accelerate | torchrun (train only).")
    num_processes: int = setting(1, check=at_least(1), help="accelerate/torchrun: training processes per machine "
                                 "(one per GPU).")
    accelerate_config: str | None = setting(None, metavar="PATH", help="accelerate: its config file "
                                            "(`accelerate launch --config_file`; DeepSpeed, FSDP).")
    data_parallel: int = setting(1, check=at_least(1), help="none: shard processes per machine for sample and label, "
                                 "each taking `--shard i/k` of the prompts.")
    gpus_per_process: int = setting(1, check=at_least(0), help="GPUs each shard process sees (CUDA_VISIBLE_DEVICES; "
                                    "e.g. vllm's tensor_parallel_size); 0: CPU, no pinning.")
    num_machines: int = setting(1, check=at_least(1), help="Machines running the stage (sample and label shards, "
                                "accelerate/torchrun training).")
    machine_rank: int = setting(0, check=at_least(0), help="This machine's index, 0 … num_machines-1 (followers: each "
                                "machine's own `cream run --machine-rank`).")
    main_process_ip: str | None = setting(None, help="Address of machine 0 (followers: needed with num_machines > 1; "
                                          "srun: default the job step's first node).")
    main_process_port: int = setting(DEFAULT_PORT, check=within(1, 65535, closed="[]"),
                                     help="Port of machine 0's rendezvous (accelerate/torchrun).")
    node_launcher: str = setting("followers", choices=NODE_LAUNCHERS, help="How a stage reaches the other machines "
                                 "(the run config's nodes.launcher): followers: every machine runs its own `cream run` "
                                 "with its machine_rank | srun: one `cream run` inside a Slurm allocation starts the "
                                 "stage as one job step over num_machines nodes.")

    def _problems(self) -> list[tuple[str, str]]:
        n, k, g, m, r = (self.num_processes, self.data_parallel, self.gpus_per_process, self.num_machines,
                         self.machine_rank)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, k, g, m, r)):
            return []  # the field checks name what is wrong
        problems = []
        srun = self.node_launcher == "srun"
        if m >= 1 and r >= m:
            problems.append(("machine_rank", f"got {r}, expected < {{num_machines}} ({m})"))
        elif srun and r > 0:
            problems.append(("machine_rank", (f"got {r} with {{node_launcher}} srun, which runs one `cream run` "
                                              "and no followers (leave it 0: no --machine-rank)")))
        if m > 1 and not srun and not (self.main_process_ip or "").strip():
            problems.append(("main_process_ip", f"missing; {{num_machines}} {m} needs the address of machine 0"))
        if self.launcher == "none" and n > 1:
            problems.append(("num_processes", f"got {n} with {{launcher}} none, which starts {{data_parallel}} "
                             "shard processes instead"))
        if self.launcher in ("accelerate", "torchrun"):
            problems += self._distributed_problems(n * m, k, g)
        if self.accelerate_config is not None and self.launcher != "accelerate":
            problems.append(("accelerate_config", "only with {launcher} accelerate"))
        return problems

    def _distributed_problems(self, world: int, k: int, g: int) -> list[tuple[str, str]]:
        """Rules of accelerate and torchrun: one training over num_processes, one GPU (or CPU) per process."""
        problems = []
        if k > 1:
            problems.append(("data_parallel", f"got {k} with {{launcher}} {self.launcher}; shard processes are "
                             "started by {launcher} none (set {num_processes} for training processes)"))
        if g > 1:
            problems.append(("gpus_per_process", f"got {g}; {self.launcher} gives each training process one GPU "
                             "(raise {num_processes})"))
        if g == 0 and world > 1 and self.launcher == "accelerate":
            problems.append(("gpus_per_process", "0 (CPU) with accelerate starts one process only (several CPU "
                             "processes need MPI); use {launcher} torchrun"))
        return problems

    def check_for(self, stage: str) -> list[str]:
        """What is wrong with starting ``stage`` (a command name) this way, each as ``"field: text"``:
        accelerate and torchrun start train only; shard processes (data_parallel, or several machines under
        launcher none) only the commands that take ``--shard``."""
        problems = []
        if self.launcher != "none" and stage != DISTRIBUTED:
            problems.append(f"launcher: {self.launcher} starts {DISTRIBUTED} only, not {stage} (use launcher none, "
                            "with data_parallel for shard processes)")
        if self.launcher == "none" and stage not in SHARDED:
            for name in ("data_parallel", "num_machines"):
                if getattr(self, name) > 1:
                    problems.append(f"{name}: {stage} takes no --shard; only {' and '.join(SHARDED)} run as shard "
                                    "processes")
        return problems


@dataclass(frozen=True)
class Process:
    """One process to start: its whole argv, the environment variables to set on top of the parent's, and a name
    for logs and plans."""

    argv: list[str]
    env: dict[str, str]
    name: str
    tasks: int = 0  # > 0: a Slurm job step (srun) of that many tasks


def launch_commands(argv: list[str], launcher: Launcher, *, python: str = sys.executable,
                    cream: list[str] | None = None, devices: Sequence[str] | str | None = None) -> list[Process]:
    """The processes that run the stage command ``argv`` (from :func:`stage_argv`) on this machine.

    ``cream``: how to start the cream command under launcher none (default ``python -m cli.main``; accelerate and
    torchrun always start ``-m cli.main``). ``devices``: the GPU ids this machine may hand out, in order (default
    0, 1, …; pass the parent's CUDA_VISIBLE_DEVICES so the shard processes share only those). Under node_launcher
    srun: one ``srun`` over every machine instead (:func:`_srun`).
    SettingsError where :meth:`Launcher.check_for` refuses the stage."""
    problems = launcher.check_for(argv[0])
    if problems:
        raise SettingsError(launcher.what, [keyed(p) for p in problems])
    if launcher.node_launcher == "srun":
        return [_srun(argv, launcher, python, list(cream or [python, "-m", CLI_MODULE]))]
    if launcher.launcher == "accelerate":
        return [_accelerate(argv, launcher, python)]
    if launcher.launcher == "torchrun":
        return [_torchrun(argv, launcher, python)]
    return _shards(argv, launcher, list(cream or [python, "-m", CLI_MODULE]), devices)


def _shards(argv: list[str], launcher: Launcher, cream: list[str], devices) -> list[Process]:
    """Launcher none: the command itself, or one process per shard of this machine, each pinned to its GPUs.
    Machine r of M runs shards r*k … r*k+k-1 of k*M; process i sees GPUs i*g … i*g+g-1 of ``devices``. A lone
    process is not pinned: it sees every GPU its parent sees."""
    k, g = launcher.data_parallel, launcher.gpus_per_process
    total = k * launcher.num_machines
    if total == 1:
        return [Process([*cream, *argv], {}, argv[0])]
    if any(a == "--shard" or a.startswith("--shard=") for a in argv):
        raise ValueError("argv already has --shard; the launcher adds each process's own")
    ids = device_ids(devices, k * g) if k > 1 and g > 0 else None
    processes = []
    for i in range(k):
        shard = f"{launcher.machine_rank * k + i}/{total}"
        env = {"CUDA_VISIBLE_DEVICES": ",".join(ids[i * g:(i + 1) * g])} if ids else {}
        processes.append(Process([*cream, *argv, "--shard", shard], env, f"{argv[0]} shard {shard}"))
    return processes


def device_ids(devices, needed: int) -> list[str]:
    """The first ``needed`` GPU ids of ``devices`` (a list or a CUDA_VISIBLE_DEVICES string; default 0, 1, …)."""
    if devices is None:
        return [str(i) for i in range(needed)]
    ids = [d.strip() for d in (devices.split(",") if isinstance(devices, str) else map(str, devices)) if d.strip()]
    if len(ids) < needed:
        raise CreamError(f"data_parallel x gpus_per_process needs {needed} GPUs; {len(ids)} are available "
                         f"({','.join(ids) or 'none'})")
    return ids[:needed]


def _accelerate(argv: list[str], launcher: Launcher, python: str) -> Process:
    """One ``accelerate launch`` of every training process of this machine. Its --num_processes counts all
    machines' processes; --multi_gpu is said rather than guessed from the GPUs accelerate finds (without a config
    file, which decides itself), --cpu for gpus_per_process 0."""
    world = launcher.num_processes * launcher.num_machines
    cmd = [python, "-m", "accelerate.commands.launch", "--num_processes", str(world)]
    if launcher.accelerate_config is not None:
        cmd += ["--config_file", launcher.accelerate_config]
    if launcher.gpus_per_process == 0:
        cmd.append("--cpu")
    elif launcher.accelerate_config is None and world > 1:
        cmd.append("--multi_gpu")
    cmd += _rendezvous(launcher, ("--num_machines", "--machine_rank", "--main_process_ip", "--main_process_port"))
    return Process([*cmd, "-m", CLI_MODULE, *argv], {}, f"{argv[0]} (accelerate, {world} processes)")


def _torchrun(argv: list[str], launcher: Launcher, python: str) -> Process:
    """One ``torchrun`` (``python -m torch.distributed.run``) of this machine's training processes."""
    cmd = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(launcher.num_processes)]
    cmd += _rendezvous(launcher, ("--nnodes", "--node_rank", "--master_addr", "--master_port"))
    world = launcher.num_processes * launcher.num_machines
    return Process([*cmd, "-m", CLI_MODULE, *argv], {}, f"{argv[0]} (torchrun, {world} processes)")


def _rendezvous(launcher: Launcher, flags: tuple[str, str, str, str]) -> list[str]:
    """The multi-machine options under the launcher's names (machines, rank, address, port); on one machine only
    a port other than the default. In a Slurm job step the rank is the task's node and the address, unless given,
    the step's first node (filled in by each task)."""
    machines, rank, address, port = flags
    if launcher.num_machines > 1:
        srun = launcher.node_launcher == "srun"
        node = TASK_NODE if srun else str(launcher.machine_rank)
        host = (launcher.main_process_ip or FIRST_NODE) if srun else str(launcher.main_process_ip)
        return [machines, str(launcher.num_machines), rank, node, address, host, port, str(launcher.main_process_port)]
    return [port, str(launcher.main_process_port)] if launcher.main_process_port != DEFAULT_PORT else []


def _srun(argv: list[str], launcher: Launcher, python: str, cream: list[str]) -> Process:
    """Node_launcher srun: the stage as one Slurm job step over ``num_machines`` nodes, each task the
    :mod:`cream_train.run.slurm_task` of one process: under launcher none ``data_parallel`` tasks per node, task i shard
    ``{SLURM_PROCID}/{SLURM_NTASKS}`` pinned to GPUs ``SLURM_LOCALID × gpus_per_process …`` of its node (as one
    machine's shard processes); under accelerate or torchrun one task per node, its launcher with machine rank
    ``{SLURM_NODEID}``. ``--kill-on-bad-exit`` ends every task when one fails; ``--label`` prefixes each output line
    with its task's number."""
    m, k, g = launcher.num_machines, launcher.data_parallel, launcher.gpus_per_process
    if launcher.launcher == "none":
        if any(a == "--shard" or a.startswith("--shard=") for a in argv):
            raise ValueError("argv already has --shard; the launcher adds each task's own")
        pin = ["--pin-gpus", str(g)] if k > 1 and g > 0 else []
        task, per_node = [*pin, *cream, *argv, *(["--shard", TASK_SHARD] if k * m > 1 else [])], k
    else:
        start = _accelerate if launcher.launcher == "accelerate" else _torchrun
        task, per_node = start(argv, launcher, python).argv, 1
    step = ["srun", "--nodes", str(m), "--ntasks-per-node", str(per_node), "--kill-on-bad-exit=1", "--label"]
    return Process([*step, python, "-m", TASK_MODULE, *task], {},
                   f"{argv[0]} (srun: {m} nodes x {per_node} tasks)", tasks=m * per_node)


def shell_line(proc: Process) -> str:
    """``proc`` as one line to paste into a shell: ``NAME=value … argv``, every value and token quoted."""
    bad = [k for k in proc.env if not k.isidentifier()]
    if bad:
        raise ValueError(f"environment variable names a shell cannot set: {', '.join(bad)}")
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in proc.env.items()), *map(shlex.quote, proc.argv)])
