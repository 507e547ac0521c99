"""train.calibrate_bn: converted MediaPipe weights (BN folded, identity statistics) get real BatchNorm statistics,
eval outputs unchanged, so train-mode BatchNorm starts from the pretrained model instead of wrecking it."""
import copy

import torch
from tests.engine.train_support import REPO

from blazekit import build_detector
from blazekit.inference import load_image
from blazekit.models.batchnorm import calibrate_batchnorm
from blazekit.preprocess import letterbox, normalize


def _demo_batch(size: int = 128) -> torch.Tensor:
    paths = sorted((REPO / "blazekit/data/demo/images").glob("*.jpg"))
    return torch.stack([torch.from_numpy(normalize(letterbox(load_image(p), (size, size))[0], "minus_one_one"))
                        for p in paths]).float()


def test_calibration_keeps_eval_outputs_and_makes_train_mode_match_them():
    x = _demo_batch()
    det = build_detector(str(REPO / "configs/blazeface_front.yml"), weights="mediapipe_short_range").eval()
    with torch.no_grad():
        ref_reg, ref_logits = det.raw(x)
        folded = copy.deepcopy(det).train()
        bad_reg, bad_logits = folded.raw(x)  # train mode on identity statistics: features re-normalised
    # the first BN's input is the stem conv's output: its measured statistics become the running ones
    first_bn = next(m for m in det.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = {}
    hook = first_bn.register_forward_pre_hook(lambda module, args: seen.update(x=args[0].detach()))
    with torch.no_grad():
        det.raw(x)
    hook.remove()
    assert calibrate_batchnorm(det, [x[:5], x[5:]]) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in det.modules())
    assert not det.training
    c = seen["x"].transpose(0, 1).flatten(1)
    assert torch.allclose(first_bn.running_mean, c.mean(1), atol=1e-5)
    assert torch.allclose(first_bn.running_var, c.var(1), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        reg, logits = det.raw(x)
        train_reg, train_logits = copy.deepcopy(det).train().raw(x)
    # eval mode: the same function as MediaPipe's (float rounding only)
    assert torch.allclose(reg, ref_reg, rtol=1e-4, atol=2e-3) and torch.allclose(logits, ref_logits, atol=2e-3)
    # train mode on the calibration batch: scores within 1e-3 of eval mode; uncalibrated they are far off
    p_ref, p_train, p_bad = ref_logits.sigmoid(), train_logits.sigmoid(), bad_logits.sigmoid()
    assert float((p_train - p_ref).abs().max()) < 1e-3
    assert float((p_bad - p_ref).abs().max()) > 0.5
    assert float((train_reg - ref_reg).abs().max()) < 0.5 < 20 < float((bad_reg - ref_reg).abs().max())  # input px


def test_trainer_calibrates_before_training(tmp_path):
    from blazekit.engine.trainer import Trainer

    tr = Trainer(str(REPO / "configs/quickstart.yml"), work_dir=tmp_path / "run", overrides=[
        "train.norm_eval=false", "train.calibrate_bn=2", "train.epochs=1", "train.freeze=[]",
        "train.val_before_train=false", "train.val_interval=0", "train.progress_bar=false", "train.val_vis=0"])
    bns = [m for m in tr.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(float(m.running_var.sub(1).abs().max()) > 1e-3 for m in bns[:5])  # no longer identity statistics
    assert tr.ema is not None and torch.equal(bns[0].running_mean, [m for m in tr.ema.module.modules()
                                                                    if isinstance(m, torch.nn.BatchNorm2d)][0]
                                              .running_mean)
    assert "calibrated on 1 training batch\n" in (tmp_path / "run" / "train.log").read_text()
    # train-mode BN moves the statistics on; a resumed run takes them from its checkpoint, not measuring again
    calibrated = bns[0].running_mean.clone()
    tr.fit()
    trained = bns[0].running_mean.clone()
    assert not torch.equal(trained, calibrated)
    again = Trainer(str(REPO / "configs/quickstart.yml"), work_dir=tmp_path / "run", resume="auto", overrides=[
        "train.norm_eval=false", "train.calibrate_bn=2", "train.epochs=2", "train.freeze=[]",
        "train.val_before_train=false", "train.val_interval=0", "train.progress_bar=false", "train.val_vis=0"])
    assert (tmp_path / "run" / "train.log").read_text().count("calibrated on") == 1
    assert torch.equal(next(m for m in again.model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean,
                       trained)
