"""The bundled demo set (the browse tool on it: tests/commands/test_browse.py)."""
import json
from pathlib import Path

import numpy as np

from blazekit.data import DEMO_ANNOTATIONS, DEMO_ROOT, CocoFaces


def test_demo_set_is_small_complete_and_attributed():
    files = [p for p in DEMO_ROOT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5 * 2**20
    data = json.loads(DEMO_ANNOTATIONS.read_text())
    names = {Path(i["file_name"]).name for i in data["images"]}
    attribution = (DEMO_ROOT / "ATTRIBUTION.md").read_text()
    for n in names:
        assert n.split(".")[0].startswith("sample") or n in attribution, n
    assert len(data["images"]) >= 10 and len(data["annotations"]) >= 30
    assert {i["split"] for i in data["images"]} == {"train", "val"}


def test_demo_splits_load_with_keypoints():
    train, val = CocoFaces(DEMO_ANNOTATIONS, split="train"), CocoFaces(DEMO_ANNOTATIONS, split="val")
    assert (len(train), train.summary.faces, len(val), val.summary.faces) == (7, 22, 3, 9)
    assert train.summary.dropped_zero_area == train.summary.clipped == 0
    vis = np.concatenate([r["keypoints_visible"] for r in train.records + val.records])
    assert vis[:, :4].mean() > 0.95  # eyes, nose and mouth are annotated on (nearly) every face
    # right eye is on the image left of the left eye for every visible frontal pair
    for r in train.records + val.records:
        both = r["keypoints_visible"][:, 0] & r["keypoints_visible"][:, 1]
        assert (r["keypoints"][both, 0, 0] < r["keypoints"][both, 1, 0]).all()
        k = r["keypoints"][r["keypoints_visible"]]
        assert len(k) > 0
    # keypoints fall inside their face box (with a margin for ears)
    for r in train.records:
        for b, k, v in zip(r["boxes"], r["keypoints"], r["keypoints_visible"]):
            m = 0.35 * (b[2] - b[0])
            inner = k[:4][v[:4]]
            assert ((inner[:, 0] > b[0] - m) & (inner[:, 0] < b[2] + m) & (inner[:, 1] > b[1] - m) & (inner[:, 1] < b[3] + m)).all()
