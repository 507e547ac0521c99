"""Keypoint self-distillation in training: faces without keypoint labels learn the frozen starting model's keypoints
(the teacher's targets themselves: tests/models/test_teacher.py)."""
import torch

from blazekit import build_detector

from tests.conftest import REPO


def _raw_keypoint_drift(model, teacher, images) -> float:
    """Mean |keypoint output - starting model's| (input px) over the anchors the starting model calls a face."""
    model.eval()
    with torch.no_grad():
        reg, _ = model.raw(images)
        ref, logits = teacher.raw(images)
    confident = logits[..., 0].sigmoid() > 0.5
    return float((reg[..., 4:] - ref[..., 4:]).abs()[confident].mean())


def test_short_box_only_run_keeps_keypoints_with_distillation_and_drifts_without(tmp_path):
    """Fine-tune on the demo photos with their keypoint labels removed: with train.distill the keypoint outputs
    stay close to MediaPipe's, without it they drift (the regression this feature exists for)."""
    import json

    from blazekit.data import build_dataset, build_transforms
    from blazekit.engine.trainer import Trainer

    ann = json.loads((REPO / "blazekit/data/demo/annotations.json").read_text())
    for a in ann["annotations"]:
        a.pop("keypoints", None)
        a.pop("num_keypoints", None)
    box_only = tmp_path / "box_only.json"
    box_only.write_text(json.dumps(ann))
    teacher = build_detector(str(REPO / "configs/blazeface_front.yml"), weights="mediapipe_short_range")
    val = build_dataset({"type": "CocoFaces", "ann_file": str(REPO / "blazekit/data/demo/annotations.json")},
                        transforms=build_transforms([{"type": "Letterbox"}, {"type": "Normalize"}]))
    images = torch.stack([torch.as_tensor(val[i]["image"]) for i in range(len(val))])
    drift = {}
    for distill in ("null", "{weight: 10}"):
        tr = Trainer(str(REPO / "configs/quickstart.yml"), work_dir=tmp_path / f"run_{len(drift)}", overrides=[
            f"data.train.dataset.ann_file={box_only}", f"+data.train.dataset.image_root={REPO}/blazekit/data/demo",
            "train.freeze=[]", "train.epochs=6", "train.val_interval=0", "train.val_before_train=false",
            "train.ema=null", "train.progress_bar=false", "train.val_vis=0", "train.clip_grad_norm=10",
            f"train.distill={distill}"])
        tr.fit()
        drift[distill] = _raw_keypoint_drift(tr.model, teacher, images)
    assert drift["{weight: 10}"] < 0.6 * drift["null"], drift
