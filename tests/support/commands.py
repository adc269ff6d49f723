"""Stage command lines parsed back: the real `cream` app's parse of a command into the config it would build, and a
`cream run --plan` listing into its stages and commands."""

from __future__ import annotations

import os
import shlex

import typer.main

from cli.main import app
from cli.options import Options, _given, _specs
from cream_data.inputs.prompts_config import PromptsConfig
from cream_data.stages.eval_config import EvalConfig
from cream_data.stages.harness_config import HarnessConfig
from cream_data.stages.label_config import LabelConfig
from cream_data.stages.sample_config import SampleConfig
from cream_train.config import DPOTrainConfig, SFTTrainConfig

# Each command's settings classes and skipped fields, as its @with_settings declares them (cli/*.py).
COMMAND_SETTINGS = {"sample": ((SampleConfig,), ()), "label": ((LabelConfig,), ()),
                    "eval": ((EvalConfig, HarnessConfig), ()), "train": ((DPOTrainConfig, SFTTrainConfig), ("out",)),
                    "prompts": ((PromptsConfig,), ())}


def parse(argv: list[str]):
    """The real `cream` app's parse of ``argv`` (routing included): the sub-command's click context. Nothing runs."""
    group = typer.main.get_command(app)
    ctx = group.make_context("cream", list(argv))
    name, command, rest = group.resolve_command(ctx, list(argv))
    assert name == argv[0]
    return command.make_context(name, rest, parent=ctx)


def rebuild(argv: list[str]):
    """The config the command of ``argv`` would build: the parsed options turned into :class:`Options` as
    ``with_settings`` does, then built with the values the command owns, as its body does."""
    sub = parse(argv)
    p, command = sub.params, argv[0]
    classes, skip = COMMAND_SETTINGS[command]
    specs = _specs(classes, skip)
    assert set(specs) <= set(p), f"{command}: options missing from the app: {set(specs) - set(p)}"
    opts = Options({n: specs[n].value(p[n]) for n in specs}, {n for n in specs if _given(sub, n)}, specs,
                   lambda c: c.__name__)
    if command == "label":
        return opts.build(LabelConfig, model=p["model"] or "")
    if command == "train":
        cls = DPOTrainConfig if p["stage"] == "dpo" else SFTTrainConfig
        return opts.build(cls, data=p["data"], model=p["model"], out=p["out_dir"])
    return opts.build(classes[0])


def absolute(argv: list[str]) -> list[str]:
    """A plan's command words with the paths it wrote beside the current folder (``../x``, cream_train/run/plan.py)
    made absolute again: a checkout in /tmp writes the tests' /tmp/pytest-of-… folders that way."""
    return [os.path.abspath(a) if a.startswith("../") else a for a in argv]


def parse_plan(text: str) -> dict[str, tuple[str, list[list[str]]]]:
    """stage -> (status, command argvs without the program name) from the plan's text."""
    stages, current = {}, None
    for line in text.splitlines():
        if line.startswith("    "):
            cmd = line.strip()
            if cmd.startswith("cream "):
                stages[current][1].append(shlex.split(cmd)[1:])
        elif line and not line[0].isdigit():
            status, rest = (line[:7].strip(), line[8:].split())
            current = rest[0]
            stages[current] = (status, [])
    return stages
