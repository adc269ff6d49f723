"""Scale-out: the training entry under `accelerate launch --cpu --num_processes 2` (DDP over gloo).

Both ranks must finish with identical parameters (DDP keeps replicas in sync) that differ from the start,
log the same losses, and rank 0 must publish one checkpoint folder with lineage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import REPO
from tests.support.training import make_preferences

ENTRY = textwrap.dedent('''
    import json, os, sys
    import torch
    from cream_train.config import DPOTrainConfig
    import cream_train.train as tr

    built, build = [], tr.build_dpo_trainer  # a spy on the builder: the trainer this rank's run used
    tr.build_dpo_trainer = lambda *a, **k: built.append(build(*a, **k)) or built[-1]
    data, model, out, report = sys.argv[1:5]
    res = tr.train(DPOTrainConfig(data=data, model=model, out=out, batch_size=2, max_steps=2, lr=1e-3,
                                  warmup_ratio=0.0, seed=3))
    (trainer,) = built
    model = trainer.accelerator.unwrap_model(trainer.model)
    checksum = sum(p.detach().double().sum().item() * (i + 1) for i, p in enumerate(model.parameters()))
    rank = int(os.environ.get("RANK", "0"))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    with open(os.path.join(report, f"rank{rank}.json"), "w") as f:
        json.dump({"world": int(os.environ.get("WORLD_SIZE", "1")), "checksum": checksum, "losses": losses,
                   "reference": res.reference, "dist": str(trainer.accelerator.distributed_type),
                   "ref_model_none": trainer.ref_model is None}, f)
''')


def test_two_process_ddp_run_agrees(tiny_model, tmp_path):
    prefs = make_preferences(tmp_path / "prefs", tiny_model)
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    report = tmp_path / "report"
    report.mkdir()
    out = tmp_path / "m1"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    # `accelerate launch --cpu` starts several processes only through mpirun (--mpirun_hostfile); --multi_gpu
    # starts them with torchrun, and on a machine without GPUs the trainer runs them as DDP over gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(entry), str(prefs), str(tiny_model), str(out),
           str(report)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0, r1 = (json.loads((report / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["dist"] == r1["dist"] == "DistributedType.MULTI_CPU"
    assert r0["checksum"] == pytest.approx(r1["checksum"], rel=0, abs=1e-9)  # replicas in sync
    assert r0["losses"] == pytest.approx(r1["losses"], abs=1e-7) and len(r0["losses"]) == 2
    assert r0["reference"] == r1["reference"] == "stored" and r0["ref_model_none"] and r1["ref_model_none"]

    import torch
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)

    def checksum(m):  # the same position-weighted sum as the entry script
        return sum(p.detach().double().sum().item() * (i + 1) for i, p in enumerate(m.parameters()))

    assert checksum(saved) == pytest.approx(r0["checksum"], abs=1e-6)  # rank 0 saved the trained weights
    assert checksum(start) != pytest.approx(r0["checksum"], abs=1e-6)
    lineage = json.loads((out / "cream_lineage.json").read_text())
    assert lineage["metrics"]["global_step"] == 2
    assert not list(tmp_path.glob(".m1.tmp-*"))
