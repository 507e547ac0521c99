"""DDP on CPU: ``torchrun --nproc_per_node 2`` with gloo trains a few steps and both ranks end identical."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.engine.train_support import REPO, tiny_cfg

from blazekit.engine.logger import read_metrics

RANK_SCRIPT = """
import hashlib, json, os, sys
from blazekit.engine.trainer import Trainer
cfg, work_dir, out = sys.argv[1:4]
t = Trainer(cfg, work_dir=work_dir, device="cpu")
init = {k: v.clone() for k, v in t.model.state_dict().items()}
t.fit()
params = dict(t.model.named_parameters())
digest = hashlib.sha256(b"".join(params[k].detach().numpy().tobytes() for k in sorted(params))).hexdigest()
changed = sum(not bool((params[k].detach() == init[k]).all()) for k in params)
json.dump({"rank": t.rank, "world": t.world_size, "params_sha256": digest, "changed": changed,
           "samples": sorted(i for i in t.sampler.indices())},
          open(os.path.join(out, f"rank{t.rank}.json"), "w"))
"""


def _torchrun():
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_two_process_gloo_ranks_hold_same_weights(tmp_path):
    cfg = tiny_cfg(tmp_path, epochs=1)  # 16 images, batch 4 per process -> 2 steps per rank
    script = tmp_path / "rank_main.py"
    script.write_text(RANK_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    work = tmp_path / "run"
    cmd = _torchrun() + ["--standalone", "--nproc_per_node", "2", str(script), str(cfg), str(work), str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # own process group: a hang is cleaned up, workers included
    try:
        log, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, log[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert r0["params_sha256"] == r1["params_sha256"]          # DDP kept the replicas identical
    assert r0["changed"] > 0                                    # and they did train
    assert set(r0["samples"]).isdisjoint(r1["samples"])         # distributed sampler: disjoint shards
    assert set(r0["samples"]) | set(r1["samples"]) == set(range(16))
    recs = [r for r in read_metrics(work / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in recs] == [1, 2]                  # only rank 0 wrote: one record per step
    assert all(r["loss"] > 0 for r in recs)
    assert sorted(p.name for p in work.iterdir()) == ["config.yml", "curves.png", "last.pt", "metrics.jsonl",
                                                      "train.log"]
