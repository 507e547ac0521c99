"""Resume after SIGKILL: a run killed mid-epoch and resumed ends with the same weights as an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tests.engine.train_support import REPO, tiny_cfg

from blazekit.engine.logger import read_metrics

TRAIN = [sys.executable, str(REPO / "tools" / "train.py")]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _cfg(tmp_path):
    # 16 images / batch 4 = 4 iterations per epoch, 2 epochs; last.pt every iteration; EMA + momentum + clipping
    return tiny_cfg(tmp_path, dataset={"delay": 0.03}, epochs=2, checkpoint_interval=1,
                    ema={"decay": 0.9, "tau": 5}, clip_grad_norm=5.0)


def _train_state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    cfg = _cfg(tmp_path)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(TRAIN + [str(cfg), "--work-dir", str(ref_dir)], env=_env(), check=True, timeout=120,
                   capture_output=True)

    proc = subprocess.Popen(TRAIN + [str(cfg), "--work-dir", str(run_dir)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            last = run_dir / "last.pt"
            if last.exists():
                st = _train_state(last)["train_state"]
                # mid-epoch of the second epoch: resume must restore a partly consumed epoch
                if st["epoch"] == 1 and st["iter_in_epoch"] >= 1:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = (st["epoch"], st["iter_in_epoch"])
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_at is not None, "the run finished before it could be killed mid-epoch"
    assert proc.returncode == -signal.SIGKILL
    assert _train_state(run_dir / "last.pt")["train_state"]["global_step"] < 8  # really unfinished

    out = subprocess.run(TRAIN + [str(cfg), "--work-dir", str(run_dir), "--resume", "auto"], env=_env(),
                         timeout=120, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resumed from" in (run_dir / "train.log").read_text()

    ref, res = _train_state(ref_dir / "last.pt"), _train_state(run_dir / "last.pt")
    assert res["train_state"]["global_step"] == ref["train_state"]["global_step"] == 8
    for key in ("model",):
        a, b = ref["train_state"][key], res["train_state"][key]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{key}.{k} differs after resume"
    for k, v in ref["state_dict"].items():  # the EMA (deploy) weights too
        assert torch.equal(v, res["state_dict"][k]), f"EMA {k} differs after resume"
    ma = ref["train_state"]["optimizer"]["state"]
    mb = res["train_state"]["optimizer"]["state"]
    assert all(torch.equal(ma[i]["momentum_buffer"], mb[i]["momentum_buffer"]) for i in ma)
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 8  # no duplicated records after the resume


def test_resume_refuses_other_architecture(tmp_path):
    from blazekit.engine.trainer import Trainer, TrainingError

    cfg = tiny_cfg(tmp_path, epochs=1)
    Trainer(str(cfg), work_dir=tmp_path / "a").fit()
    with pytest.raises(TrainingError, match="model.anchors.min_scale"):
        Trainer(str(cfg), work_dir=tmp_path / "a", resume="auto", overrides=["model.anchors.min_scale=0.2"])
    with pytest.raises(TrainingError, match="no such checkpoint"):
        Trainer(str(cfg), work_dir=tmp_path / "b", resume=str(tmp_path / "missing.pt"))


def test_checkpoint_in_the_layout_before_hook_states_still_resumes(tmp_path):
    """Checkpoints written before hooks kept their own state hold best_metric, best_epoch and history beside the
    counters (no ``hooks``): resumed, the eval hook gets them back and the run ends as an uninterrupted one."""
    from blazekit.engine.hooks import HookBase
    from blazekit.engine.trainer import Trainer

    cfg = yaml.safe_load(tiny_cfg(tmp_path, epochs=2, val_interval=1, val_vis=0, val_metric="nme",
                                  val_mode="min", norm_eval=True, clip_grad_norm=10.0).read_text())
    demo = str(REPO / "blazekit" / "data" / "demo" / "annotations.json")
    cfg["data"]["val"] = {"dataset": {"type": "CocoFaces", "ann_file": demo, "split": "val"}}
    cfg["model"] = {"init": "mediapipe_short_range"}  # finds the demo faces: every metric is finite
    cfg["train"]["optimizer"]["lr"] = 1e-3
    path = tmp_path / "val.yml"
    path.write_text(yaml.safe_dump(cfg))
    ref = Trainer(str(path), work_dir=tmp_path / "ref").fit()

    class StopAfterFirstEpoch(HookBase):  # after the eval hook: last.pt of epoch 1 is written
        def after_epoch(self):
            raise KeyboardInterrupt

    tr = Trainer(str(path), work_dir=tmp_path / "old")
    stop = StopAfterFirstEpoch()
    stop.trainer = tr
    tr.hooks.append(stop)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    last = tmp_path / "old" / "last.pt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    st = ckpt["train_state"]
    st.update(st.pop("hooks")["EvalHook"])  # the layout engine/trainer.py wrote before (COUNTERS held these)
    assert st["best_epoch"] == 1 and len(st["history"]) == 1 and "hooks" not in st
    torch.save(ckpt, last)

    resumed = Trainer(str(path), work_dir=tmp_path / "old", resume="auto")
    assert resumed.eval_hook.best_epoch == 1 and resumed.eval_hook.history == st["history"]
    res = resumed.fit()
    assert (res["best_metric"], res["best_epoch"], res["last"]) == (ref["best_metric"], ref["best_epoch"], ref["last"])
    a, b = _train_state(tmp_path / "ref" / "last.pt"), _train_state(last)
    assert b["train_state"]["hooks"] == a["train_state"]["hooks"]  # written in the new layout from then on
    assert len(a["train_state"]["hooks"]["EvalHook"]["history"]) == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"{k} differs after resuming the old layout"
