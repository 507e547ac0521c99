"""Trainer robustness: divergence never overwrites good checkpoints, blown-up weights still validate,
strict model.init, resume refuses a changed config, leftover temp files are cleaned."""

import pytest
import torch
import yaml

from tests.engine.train_support import REPO, tiny_cfg

from blazekit.checkpoint import CheckpointError, load_checkpoint
from blazekit.engine.trainer import Trainer, TrainingError


def _finite(state):
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_nonfinite_weights_stop_training_and_keep_last_finite_checkpoint(tmp_path):
    work = tmp_path / "div"
    tr = Trainer(str(tiny_cfg(tmp_path, epochs=2, checkpoint_interval=1, ema={"decay": 0.9, "tau": 5})),
                 work_dir=work)
    def poison(optimizer, args, kwargs):  # the third update overflows one weight (as lr=1e30 does)
        if tr.global_step == 2:
            with torch.no_grad():
                tr.model.head.cls_convs[0].weight.fill_(float("inf"))

    tr.optimizer.register_step_post_hook(poison)
    with pytest.raises(TrainingError) as err:
        tr.fit()
    msg = str(err.value)
    assert "non-finite weights (head.cls_convs.0.weight" in msg
    assert "epoch 1/2 iteration 3/4 (global step 3)" in msg
    assert "train.optimizer.lr" in msg and "train.clip_grad_norm" in msg
    ckpt = load_checkpoint(work / "last.pt")
    assert ckpt["train_state"]["global_step"] == 2  # the last finite state, not overwritten
    assert _finite(ckpt["train_state"]["model"]) and _finite(ckpt["state_dict"])


def test_blown_up_finite_weights_still_validate(tmp_path):
    """Huge but finite weights (lr=1e6..1e30) give boxes beyond int32: drawing them must not crash validation."""
    cfg = yaml.safe_load(tiny_cfg(tmp_path).read_text())
    demo = str(REPO / "blazekit" / "data" / "demo" / "annotations.json")
    cfg["data"]["val"] = {"dataset": {"type": "CocoFaces", "ann_file": demo, "split": "val"}}
    cfg["train"].update(val_vis=2, val_metric="coco/AP50")
    p = tmp_path / "val.yml"
    p.write_text(yaml.safe_dump(cfg))
    tr = Trainer(str(p), work_dir=tmp_path / "v", overrides=["model.init=mediapipe_short_range"])
    with torch.no_grad():
        for w in (tr.model.head.reg_convs[0].weight, tr.model.head.cls_convs[0].weight):
            w.mul_(1e25)
    metrics = tr.validate()
    assert 0.0 <= metrics["coco/AP50"] < 0.5 and all(isinstance(v, float) for v in metrics.values())
    assert len(list((tmp_path / "v" / "vis").rglob("*.png"))) == 2  # drawn, huge boxes clipped
    tr.check_finite()  # huge is not non-finite: no error


def test_model_init_is_strict_unless_init_strict_false(tmp_path):
    back = str(REPO / "configs" / "_base_" / "models" / "blazeface_back.yml")
    src = Trainer(str(tiny_cfg(tmp_path)), work_dir=tmp_path / "src")
    src.save_checkpoint("last.pt")
    init = f"model.init={tmp_path / 'src' / 'last.pt'}"
    cfg = yaml.safe_load(tiny_cfg(tmp_path).read_text())
    cfg["_base_"] = back
    p = tmp_path / "back.yml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError) as err:
        Trainer(str(p), work_dir=tmp_path / "strict", overrides=[init])
    msg = str(err.value)
    assert "model.init" in msg and "last.pt" in msg and "model.backbone.type" in msg
    assert "shape mismatch" in msg and "train.init_strict: false" in msg
    tr = Trainer(str(p), work_dir=tmp_path / "loose", overrides=[init, "train.init_strict=false"])
    rep = tr.init_report
    assert rep["loaded"] and rep["shape_mismatch"]
    assert f"loaded {len(rep['loaded'])}/" in (tmp_path / "loose" / "train.log").read_text()


def test_hollance_pth_as_model_init_says_convert(tmp_path, shared):
    pth = shared("weights", "hollance", "blazeface.pth")
    with pytest.raises(CheckpointError, match=r"hollance .*convert it first: python tools/convert.py"):
        Trainer(str(tiny_cfg(tmp_path)), work_dir=tmp_path / "h", overrides=[f"model.init={pth}"])


def test_resume_refuses_changed_config_but_allows_safe_keys(tmp_path):
    cfg = tiny_cfg(tmp_path, epochs=1)
    Trainer(str(cfg), work_dir=tmp_path / "a").fit()
    with pytest.raises(TrainingError) as err:
        Trainer(str(cfg), work_dir=tmp_path / "a", resume="auto",
                overrides=["train.freeze=[backbone]", "train.optimizer.lr=0.5"])
    msg = str(err.value)
    assert "train.freeze" in msg and "train.optimizer.lr: checkpoint 0.01 vs config 0.5" in msg
    assert "train.epochs" in msg  # the list of keys that may change is part of the message
    tr = Trainer(str(cfg), work_dir=tmp_path / "a", resume="auto",
                 overrides=["train.epochs=2", "train.log_interval=5", "train.checkpoint_interval=3",
                            "train.progress_bar=true", "data.train.num_workers=1"])
    assert tr.global_step == 4 and tr.epochs == 2


def test_leftover_temp_files_are_removed_at_start(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    for name in (".last.pt.k2j3.tmp", ".best.pt.tmp", ".best.pt.a1.tmp"):
        (work / name).write_bytes(b"half a checkpoint")
    Trainer(str(tiny_cfg(tmp_path)), work_dir=work)
    assert not [p for p in work.iterdir() if p.name.endswith("tmp")]
    assert "removed 3 partial checkpoint file(s)" in (work / "train.log").read_text()


def test_hooks_run_in_order_and_train_set_summary_is_logged(tmp_path):
    """A user hook sees every step and epoch end; the dataset summary (images, faces, clipped...) is in train.log."""
    from blazekit.engine.hooks import HookBase

    cfg = yaml.safe_load(tiny_cfg(tmp_path, epochs=2).read_text())
    demo = str(REPO / "blazekit" / "data" / "demo" / "annotations.json")
    cfg["data"]["train"]["dataset"] = {"type": "CocoFaces", "ann_file": demo, "split": "train"}
    cfg["data"]["train"]["batch_size"] = 3
    p = tmp_path / "demo.yml"
    p.write_text(yaml.safe_dump(cfg))
    tr = Trainer(str(p), work_dir=tmp_path / "h")
    calls, records = [], []

    class Recorder(HookBase):
        def after_step(self, out):
            calls.append(("step", self.trainer.global_step, out["losses"] is not None))
            records.append(out)

        def after_epoch(self):
            calls.append(("epoch", self.trainer.epoch, (tmp_path / "h" / "last.pt").exists()))

    rec = Recorder()
    rec.trainer = tr
    tr.hooks.append(rec)  # after the built-in hooks: last.pt of the epoch is already written
    tr.fit()
    assert calls == [("step", 1, True), ("step", 2, True), ("epoch", 1, True),
                     ("step", 3, True), ("step", 4, True), ("epoch", 2, True)]
    # the step record carries the lr the step used and its batch size (7 images, batch 3: 3 + 3, the 7th dropped)
    assert [r["batch_size"] for r in records] == [3, 3, 3, 3]
    from blazekit.engine.logger import read_metrics

    logged = [r["lr"] for r in read_metrics(tmp_path / "h" / "metrics.jsonl") if r["type"] == "train"]
    assert [r["lr"] for r in records] == logged and len(set(logged)) > 1  # warmup: the lr moves
    assert all(r["losses"]["loss"] > 0 for r in records)
    assert [type(h).__name__ for h in tr.hooks[:4]] == ["EMAHook", "LoggingHook", "PeriodicCheckpointHook", "EvalHook"]
    log = (tmp_path / "h" / "train.log").read_text()
    assert "train set " in log and "7 images" in log and "faces" in log and "clipped" in log


def test_seeded_loader_batches_do_not_depend_on_workers(tmp_path):
    """build_dataloader(seeded=True) is the trainer's loader: same batches with 0 or 2 workers, resumable mid-epoch."""
    from blazekit.data.loader import build_dataloader
    from blazekit.data.sampler import EpochSampler

    cfg = yaml.safe_load(tiny_cfg(tmp_path).read_text())
    split = dict(cfg["data"]["train"], dataset=dict(cfg["data"]["train"]["dataset"], type="SyntheticFaces"))
    model_cfg = {"input_size": [128, 128], "num_keypoints": 6}

    def batches(workers, skip=0):
        loader = build_dataloader(dict(split, num_workers=workers), model_cfg, seed=5, seeded=True)
        assert isinstance(loader.sampler, EpochSampler) and loader.drop_last
        loader.sampler.set_epoch(1, skip_samples=skip)
        return [im for im, _ in loader]

    a, b = batches(0), batches(2)
    assert len(a) == 4 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(a[2:], batches(0, skip=8)))


def test_a_refused_run_says_why_in_its_train_log(tmp_path):
    """A user error (here: --resume after changing train.freeze) is the last line of train.log too, so a log
    read later does not end without a reason."""
    from blazekit.engine.cli import run_tool

    cfg = tiny_cfg(tmp_path, epochs=1)
    Trainer(str(cfg), work_dir=tmp_path / "a").fit()

    def refused(_argv=None) -> int:
        Trainer(str(cfg), work_dir=tmp_path / "a", resume="auto", overrides=["train.freeze=[backbone]"])
        return 0

    assert run_tool(refused) == 2
    log = (tmp_path / "a" / "train.log").read_text()
    error = log[log.rindex("error: "):]
    assert "train.freeze" in error and error.rstrip().endswith("start a new run from it with model.init.")
