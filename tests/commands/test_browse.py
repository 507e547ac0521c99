"""The browse tool on the bundled demo set: PNGs of transformed samples, config mistakes in one line."""
import subprocess
import sys

from blazekit.data import DEMO_ANNOTATIONS

from tests.conftest import REPO


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
