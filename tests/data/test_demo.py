"""The bundled demo set and the browse tool."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from blazekit.data import DEMO_ANNOTATIONS, DEMO_ROOT, CocoFaces

from tests.conftest import REPO


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


def test_browse_tool_writes_pngs_of_transformed_samples(tmp_path):
    cfg = tmp_path / "demo.yml"
    cfg.write_text(f"""
model: {{input_size: [128, 128], num_keypoints: 6, preprocess: {{normalize: minus_one_one, pad_value: 0}}}}
data:
  train:
    dataset: {{type: CocoFaces, ann_file: {DEMO_ANNOTATIONS}, split: train}}
    transforms: [{{type: RandomFaceCrop}}, {{type: HorizontalFlip, p: 0.5}}, {{type: Letterbox}}, {{type: Normalize}}]
""")
    out = tmp_path / "browse"
    res = subprocess.run([sys.executable, str(REPO / "tools" / "browse_dataset.py"), str(cfg), "--split", "train",
                          "--n", "4", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4
    import cv2

    img = cv2.imread(str(pngs[0]))
    assert img.shape == (384, 384, 3)  # 128 input zoomed x3
    b, g, r = (img[..., c].astype(int) for c in range(3))
    green = (g > 200) & (r < 60) & (b < 60)  # draw_detections' anti-aliased green (0, 255, 0) lines
    assert green.sum() > 50  # a box was drawn


def test_browse_tool_reports_config_mistakes_in_one_line(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bk_tools_browse", REPO / "tools" / "browse_dataset.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = tmp_path / "demo.yml"
    cfg.write_text(f"data: {{train: {{dataset: {{type: CocoFaces, ann_file: {DEMO_ANNOTATIONS}, split: train}}}}}}\n")
    assert tool.main([str(cfg), "--split", "vall", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "error: config has no data.vall with a 'dataset' (data has ['train'])" in err
    cfg.write_text("data: {train: {dataset: {type: CocoFace, ann_file: x.json}}}\n")
    assert tool.main([str(cfg), "--out", str(tmp_path / "b")]) == 2
    assert "Did you mean 'CocoFaces'" in capsys.readouterr().err
