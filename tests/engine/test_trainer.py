"""Trainer end to end on tiny synthetic data: outputs, loss goes down, robustness, init/freeze, CLI errors."""
import subprocess
import sys

import numpy as np
import cv2
import pytest
import torch
import yaml

from tests.engine.train_support import REPO, tiny_cfg

from blazekit.config import ConfigError
from blazekit.engine.logger import read_metrics
from blazekit.data.loader import DatasetNotFoundError, check_dataset_paths
from blazekit.engine.trainer import Trainer, TrainingError


def test_tiny_run_lowers_loss_and_writes_every_output(tmp_path):
    work = tmp_path / "run"
    summary = Trainer(str(tiny_cfg(tmp_path, epochs=4, lr_scheduler={"type": "Constant"})), work_dir=work,
                      seed=3).fit()
    assert summary["global_step"] == 16
    assert sorted(p.name for p in work.iterdir()) == ["config.yml", "curves.png", "last.pt", "metrics.jsonl",
                                                      "train.log"]
    resolved = yaml.safe_load((work / "config.yml").read_text())
    assert resolved["train"]["seed"] == 3 and resolved["train"]["epochs"] == 4
    recs = [r for r in read_metrics(work / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in recs] == list(range(1, 17))
    first = np.mean([r["loss"] for r in recs[:4]])
    last = np.mean([r["loss"] for r in recs[-4:]])
    assert last < 0.7 * first, (first, last)
    assert {"loss_cls", "loss_box", "loss_kpt", "lr", "images_per_s"} <= set(recs[-1])
    ckpt = torch.load(work / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["model_cfg"]["input_size"] == [128, 128]
    assert ckpt["train_state"]["epoch"] == 4 and ckpt["train_state"]["iter_in_epoch"] == 0
    assert set(ckpt["train_state"]) >= {"model", "optimizer", "scheduler", "scaler", "ema", "rng", "hooks"}
    # the eval hook keeps its own state (no val set here: nothing validated)
    assert ckpt["train_state"]["hooks"] == {"EvalHook": {"best_metric": None, "best_epoch": None, "history": []}}
    assert ckpt["train_state"]["scaler"] is None  # the grad scaler is enabled for fp16 on CUDA only
    assert "epoch 4/4" in (work / "train.log").read_text()


def test_nonfinite_loss_skips_step_then_stops(tmp_path):
    tr = Trainer(str(tiny_cfg(tmp_path, epochs=1, max_nonfinite_steps=3)), work_dir=tmp_path / "nan")
    real = tr.train_model
    calls = {"n": 0}

    def nan_first_two(images, targets):
        calls["n"] += 1
        out = real(images, targets)
        if calls["n"] <= 2:
            out = dict(out, loss=out["loss"] * float("nan"))
        return out

    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.train_model = nan_first_two
    images, targets = next(iter(tr.train_loader))
    assert tr.train_step(images, targets) is None and tr.nonfinite_in_row == 1
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items() if v.is_floating_point()
               and "running" not in k)  # weights untouched by the skipped step
    assert tr.train_step(images, targets) is None and tr.nonfinite_in_row == 2
    assert tr.train_step(images, targets)["loss"] > 0 and tr.nonfinite_in_row == 0  # recovers, counter resets
    assert "non-finite loss" in (tmp_path / "nan" / "train.log").read_text()
    tr.train_model = lambda im, tg: {"loss": torch.tensor(float("inf"), requires_grad=True)}
    with pytest.raises(TrainingError, match="3 non-finite losses in a row"):
        for _ in range(3):
            tr.train_step(images, targets)


def test_batch_without_faces_trains_the_negatives(tmp_path):
    tr = Trainer(str(tiny_cfg(tmp_path, dataset={"empty_every": 1})), work_dir=tmp_path / "neg")
    images, targets = next(iter(tr.train_loader))
    assert all(len(t["boxes"]) == 0 for t in targets)
    head = {k: v.clone() for k, v in tr.model.state_dict().items() if k.startswith("head")}
    out = tr.train_step(images, targets)
    assert out is not None and out["num_pos"] == 0 and out["loss_cls"] > 0 and out["loss_box"] == 0
    assert any(not torch.equal(head[k], tr.model.state_dict()[k]) for k in head)


def test_init_report_and_freeze(tmp_path):
    src = Trainer(str(tiny_cfg(tmp_path, epochs=1)), work_dir=tmp_path / "src")
    src.fit()
    cfg = tiny_cfg(tmp_path, epochs=1, freeze=["backbone"])
    tr = Trainer(str(cfg), work_dir=tmp_path / "ft", overrides=[f"model.init={tmp_path / 'src' / 'last.pt'}"])
    rep = tr.init_report
    assert len(rep["loaded"]) == len(tr.model.state_dict()) and not rep["missing"] and not rep["shape_mismatch"]
    assert "loaded 206/206 tensors" in (tmp_path / "ft" / "train.log").read_text()
    backbone = {k: v.clone() for k, v in tr.model.state_dict().items() if k.startswith("backbone")}
    head = {k: v.clone() for k, v in tr.model.state_dict().items() if k.startswith("head")}
    tr.fit()
    sd = tr.model.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in backbone.items())   # frozen, BN statistics included
    assert any(not torch.equal(v, sd[k]) for k, v in head.items())


def test_unknown_train_option_names_close_match(tmp_path):
    with pytest.raises(ConfigError, match="did you mean train.clip_grad_norm"):
        Trainer(str(tiny_cfg(tmp_path, clip_grad_nrom=1.0)), work_dir=tmp_path / "x")


def test_missing_widerface_says_where_and_how_to_get_it(tmp_path):
    cfg = {"data": {"train": {"dataset": {"type": "WiderFace", "root": str(tmp_path / "nowhere"), "split": "train"}}}}
    with pytest.raises(DatasetNotFoundError) as err:
        check_dataset_paths(cfg)
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "huggingface.co/datasets/wider_face" in msg
    assert "WIDER_train/images" in msg and "data.train.dataset.root" in msg
    # the CLI prints it as one error line, no traceback, exit code 2
    out = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "blazeface_front",
                          "--set", f"data.train.dataset.root={tmp_path / 'nowhere'}",
                          "--work-dir", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: data.train.dataset.root: WIDER FACE not found")


def _with_demo_val(cfg_path, **train):
    cfg = yaml.safe_load(cfg_path.read_text())
    demo = str(REPO / "blazekit" / "data" / "demo" / "annotations.json")
    cfg["data"]["val"] = {"dataset": {"type": "CocoFaces", "ann_file": demo, "split": "val"}}
    cfg["eval"] = {"score_thr": 0.02}
    cfg["train"].update(train)
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


#: the tiny config's SGD at lr 0.01 makes MediaPipe's weights diverge (outputs NaN by epoch 1: the trainer stops)
STABLE = ["train.optimizer.lr=1e-3", "train.clip_grad_norm=10"]


def test_validation_picks_best_and_reports_before(tmp_path):
    cfg = _with_demo_val(tiny_cfg(tmp_path, epochs=2), val_before_train=True, val_metric="coco/AP50",
                         val_interval=1)
    tr = Trainer(str(cfg), work_dir=tmp_path / "v", overrides=["model.init=mediapipe_short_range",
                                                                "train.norm_eval=true", *STABLE])
    summary = tr.fit()
    assert summary["before"]["coco/AP50"] > 0.3        # MediaPipe's weights find the demo faces
    vals = [r for r in read_metrics(tmp_path / "v" / "metrics.jsonl") if r["type"] == "val"]
    assert [r["epoch"] for r in vals] == [0, 1, 2]
    best = max(vals[1:], key=lambda r: r["coco/AP50"])
    assert summary["best_metric"] == pytest.approx(best["coco/AP50"]) and summary["best_epoch"] == best["epoch"]
    # every validation draws its first val images (GT green, detections red) into vis/epoch_NNN/
    for epoch in (0, 1, 2):
        pngs = sorted((tmp_path / "v" / "vis" / f"epoch_{epoch:03d}").rglob("*.png"))
        assert 1 <= len(pngs) <= 4, (epoch, pngs)
        imgs = [cv2.imread(str(p)) for p in pngs]
        assert all(im is not None and im.ndim == 3 for im in imgs)
        # lossless PNGs keep the exact drawing colours (BGR): ground truth (0, 220, 0), detections (40, 40, 255)
        assert sum(int((im == (0, 220, 0)).all(-1).sum()) for im in imgs) > 50
        if epoch == 0:  # MediaPipe's weights before training find the faces (the tiny run's later epochs do not)
            assert sum(int((im == (40, 40, 255)).all(-1).sum()) for im in imgs) > 50
    ckpt = torch.load(tmp_path / "v" / "best.pt", map_location="cpu", weights_only=False)
    assert ckpt["meta"]["epoch"] == best["epoch"]
    assert ckpt["meta"]["metrics"]["coco/AP50"] == pytest.approx(best["coco/AP50"])
    with pytest.raises(TrainingError, match="not among the evaluator's metrics: .*coco/AP50"):
        Trainer(str(cfg), work_dir=tmp_path / "w", overrides=["train.val_metric=AP51"]).validate()


def test_norm_eval_keeps_folded_bn_of_pretrained_weights(tmp_path):
    # MediaPipe weights come with BN folded (mean 0, var 1); BN in train mode would re-normalise them
    cfg = tiny_cfg(tmp_path, epochs=1)
    warn = Trainer(str(cfg), work_dir=tmp_path / "a", overrides=["model.init=mediapipe_short_range"])
    assert "folded statistics" in (tmp_path / "a" / "train.log").read_text()
    tr = Trainer(str(cfg), work_dir=tmp_path / "b", overrides=["model.init=mediapipe_short_range",
                                                                "train.norm_eval=true", *STABLE])
    images, targets = next(iter(tr.train_loader))
    tr._set_train_mode()
    with torch.no_grad():
        train_mode = float(tr.model(images, targets)["loss"])
        tr.model.eval()
        eval_mode = float(tr.model(images, targets)["loss"])
    assert train_mode == pytest.approx(eval_mode, rel=1e-5)
    tr.fit()
    bn = [m for m in tr.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((m.running_var == 1).all()) for m in bn)
    del warn


def test_cuda_oom_names_the_batch_size_to_lower(tmp_path):
    tr = Trainer(str(tiny_cfg(tmp_path)), work_dir=tmp_path / "oom")

    def oom(images, targets):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    tr.train_model = oom
    images, targets = next(iter(tr.train_loader))
    with pytest.raises(TrainingError, match=r"batch size 4 per process.*--set data.train.batch_size=2"):
        tr.train_step(images, targets)


@pytest.mark.slow
def test_quickstart_config_learns_without_hurting_ap(tmp_path, monkeypatch):
    """configs/quickstart.yml as shipped (README step 1): AP before/after, and fine-tuning moves the model."""
    monkeypatch.chdir(REPO)
    tr = Trainer(REPO / "configs" / "quickstart.yml", work_dir=tmp_path, overrides=["train.progress_bar=false"])
    summary = tr.fit()
    tr.logger.close()
    before, after = summary["before"]["coco/AP"], summary["last"]["coco/AP"]
    assert before == pytest.approx(0.7956, abs=2e-3)  # MediaPipe's own weights at 256x256 on the 3 val photos
    assert after >= before and summary["best_metric"] >= before  # fine-tuning the head does not hurt
    assert summary["last"]["nme"] != summary["before"]["nme"]  # and it does learn something
    assert summary["time_s"] < 120
    assert "coco/AP before training" in (tmp_path / "train.log").read_text()


def test_train_loader_refuses_a_misspelt_key(tmp_path):
    """The trainer's loader runs the same checks as build_dataloader (a typo used to be ignored silently)."""
    cfg = yaml.safe_load(tiny_cfg(tmp_path).read_text())
    cfg["data"]["train"]["batchsize"] = 4
    p = tmp_path / "typo.yml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"data.train: unknown keys \['batchsize'\] \('batchsize': did you mean 'batch_size'\?\)"):
        Trainer(str(p), work_dir=tmp_path / "t")


def test_eval_hook_is_built_with_its_settings_and_keeps_its_state():
    """Best value, its epoch and the history live in the eval hook and travel through its state_dict."""
    from blazekit.engine.hooks import EvalHook

    hook = EvalHook(interval=2, metric="nme", mode="min", num_vis=3)
    assert (hook.interval, hook.metric, hook.mode, hook.num_vis) == (2, "nme", "min", 3)
    assert not hook._is_better(float("nan")) and hook._best_note() == "no finite nme yet"  # NaN first: no crash
    assert hook._is_better(0.3)
    hook.best_metric, hook.best_epoch, hook.history = 0.3, 2, [{"epoch": 2, "nme": 0.3}]
    assert hook._is_better(0.2) and not hook._is_better(0.4)  # mode min
    again = EvalHook(metric="nme", mode="min")
    again.load_state_dict(hook.state_dict())
    assert again.summary() == {"best_metric": 0.3, "best_epoch": 2, "val_metric": "nme", "before": None,
                               "last": {"epoch": 2, "nme": 0.3}}
    assert again._best_note() == "best nme=0.3000 at epoch 2"
