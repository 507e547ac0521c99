"""collate, build_dataloader (seeding, workers) and the custom-dataset example from README.md."""
import re
import sys

import cv2
import numpy as np
import pytest
import torch

from blazekit import config as bk_config
from blazekit.data import DEMO_ANNOTATIONS, build_dataloader, collate
from blazekit.preprocess import LetterboxInfo

from tests.conftest import REPO

DEMO_TRAIN = {"type": "CocoFaces", "ann_file": str(DEMO_ANNOTATIONS), "split": "train"}
TRAIN_TFMS = [{"type": "RandomFaceCrop"}, {"type": "HorizontalFlip", "p": 0.5}, {"type": "PhotometricJitter"},
              {"type": "Letterbox"}, {"type": "Normalize"}]
MODEL = {"input_size": [128, 128], "num_keypoints": 6, "preprocess": {"normalize": "minus_one_one", "pad_value": 0}}


def test_collate_stacks_images_and_lists_targets():
    samples = []
    for n in (2, 0):
        samples.append({"image": torch.zeros(3, 8, 8), "boxes": np.ones((n, 4), np.float32),
                        "labels": np.zeros(n, np.int64), "keypoints": np.zeros((n, 6, 2), np.float32),
                        "keypoints_visible": np.ones((n, 6), bool), "image_id": n, "path": f"{n}.jpg",
                        "orig_size": (8, 8), "letterbox": LetterboxInfo(1.0, 0, 0, 8, 8)})
    images, targets = collate(samples)
    assert images.shape == (2, 3, 8, 8) and len(targets) == 2
    t0, t1 = targets
    assert t0["boxes"].dtype == torch.float32 and t0["boxes"].shape == (2, 4)
    assert t0["labels"].dtype == torch.int64 and t0["keypoints_visible"].dtype == torch.bool
    assert t0["ignore"].tolist() == [False, False]  # filled in when a dataset has no ignore field
    assert t1["boxes"].shape == (0, 4) and t1["keypoints"].shape == (0, 6, 2)
    assert t0["image_id"] == 2 and isinstance(t0["letterbox"], LetterboxInfo)


def test_collate_explains_missing_normalize():
    s = {"image": np.zeros((8, 8, 3), np.uint8), "boxes": np.zeros((0, 4)), "path": "a.jpg"}
    with pytest.raises(TypeError, match="a.jpg.*end the transforms with Letterbox .* and Normalize"):
        collate([s])


def test_dataloader_on_demo_set_gives_network_input():
    loader = build_dataloader({"dataset": DEMO_TRAIN, "transforms": TRAIN_TFMS, "batch_size": 4}, MODEL, seed=0)
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 128, 128) and images.dtype == torch.float32
    assert -1.0 <= images.min() and images.max() <= 1.0
    for t in targets:
        b = t["boxes"]
        assert ((b >= 0) & (b <= 128)).all() and (b[:, 2] > b[:, 0]).all()
        k, v = t["keypoints"], t["keypoints_visible"]
        assert (k[v] >= 0).all() and (k[v] < 128).all()
    assert len(loader.dataset) == 7


def _epoch(loader):
    return [(images.clone(), [t["boxes"].clone() for t in targets]) for images, targets in loader]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and all(torch.equal(p, q) for p, q in zip(x[1], y[1]))
                                    for x, y in zip(a, b))


def test_dataloader_is_reproducible_by_seed():
    cfg = {"dataset": DEMO_TRAIN, "transforms": TRAIN_TFMS, "batch_size": 3, "num_workers": 0}
    a = _epoch(build_dataloader(cfg, MODEL, seed=1))
    b = _epoch(build_dataloader(cfg, MODEL, seed=1))
    c = _epoch(build_dataloader(cfg, MODEL, seed=2))
    assert _same(a, b) and not _same(a, c)


def test_dataloader_workers_reproducible_and_persistent():
    cfg = {"dataset": DEMO_TRAIN, "transforms": TRAIN_TFMS, "batch_size": 3, "num_workers": 2}
    la, lb = build_dataloader(cfg, MODEL, seed=5), build_dataloader(cfg, MODEL, seed=5)
    assert la.persistent_workers and la.num_workers == 2
    a1, b1 = _epoch(la), _epoch(lb)
    assert _same(a1, b1)
    a2 = _epoch(la)
    assert not _same(a1, a2)  # a new epoch draws new augmentations


def test_dataloader_rejects_unknown_keys_and_keypoint_mismatch():
    with pytest.raises(ValueError, match=r"unknown keys \['batchsize'\]"):
        build_dataloader({"dataset": DEMO_TRAIN, "batchsize": 2}, MODEL)
    with pytest.raises(ValueError, match="dataset gives 6 keypoints but model.num_keypoints is 5"):
        build_dataloader({"dataset": DEMO_TRAIN}, {**MODEL, "num_keypoints": 5})


def _doc_blocks():
    text = (REPO / "README.md").read_text()
    python = re.search(r"```python\n(# my_faces.py.*?)```", text, re.S).group(1)
    yml = re.search(r"```yaml\n(_base_: \[_base_/models/blazeface_front.yml, .*?)```", text, re.S).group(1)
    return python, yml


def test_custom_dataset_example_from_readme_runs_with_two_workers(tmp_path, monkeypatch):
    python, yml = _doc_blocks()
    assert len(python.strip().splitlines()) <= 25  # the README promises a ~20-line example
    (tmp_path / "my_faces.py").write_text(python)
    (tmp_path / "my.yml").write_text(yml)
    rows = ["image,x1,y1,x2,y2"]
    for i in range(4):
        img = np.zeros((100, 140, 3), np.uint8)
        img[20:60, 30 + 10 * i:70 + 10 * i] = 200
        cv2.imwrite(str(tmp_path / f"im{i}.jpg"), img)
        rows.append(f"im{i}.jpg,{30 + 10 * i},20,{70 + 10 * i},60")
        rows.append(f"im{i}.jpg,1,1,4,4")  # a face below min_size: flagged ignore
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = bk_config.load(tmp_path / "my.yml")
    assert "my_faces" in sys.modules
    loader = build_dataloader(cfg["data"]["train"], cfg.get("model"), seed=0)
    assert loader.num_workers == 2
    ds = loader.dataset
    assert type(ds).__name__ == "CsvFaces" and len(ds) == 4
    assert ds.summary.faces == 8 and ds.summary.ignored == 4
    batches = list(loader)
    assert sum(len(t) for _, t in batches) == 4
    images, targets = batches[0]
    assert images.shape == (cfg["data"]["train"]["batch_size"], 3, 128, 128)
    assert all(t["ignore"].dtype == torch.bool for t in targets)
    assert sum(int((~t["ignore"]).sum()) for _, ts in batches for t in ts) == 4


def test_pin_memory_and_persistence_follow_the_config():
    cfg = {"dataset": DEMO_TRAIN, "batch_size": 2, "num_workers": 1, "pin_memory": True, "persistent_workers": False}
    loader = build_dataloader(cfg, MODEL)
    assert loader.pin_memory is True and loader.persistent_workers is False and loader.num_workers == 1
    assert build_dataloader({"dataset": DEMO_TRAIN}, MODEL).pin_memory == torch.cuda.is_available()


def test_environment_variables_in_dataset_paths(monkeypatch):
    """``${VAR}`` in a dataset path resolves in every builder (configs point at ${BLAZEKIT_SHARED}/data)."""
    from blazekit.config import ConfigError
    from blazekit.data import build_dataset

    monkeypatch.setenv("BK_TEST_DEMO", str(DEMO_ANNOTATIONS.parent))
    cfg = {"type": "CocoFaces", "ann_file": "${BK_TEST_DEMO}/annotations.json", "split": "train"}
    assert len(build_dataset(cfg)) == 7
    assert len(build_dataset([cfg, {**cfg, "split": "val"}])) == 10  # ConcatDataset parts too
    loader = build_dataloader({"dataset": cfg, "batch_size": 7}, MODEL)
    assert len(loader.dataset) == 7
    monkeypatch.delenv("BK_TEST_DEMO")
    with pytest.raises(ConfigError, match="BK_TEST_DEMO"):
        build_dataset(cfg)


def _wider(tmp_path, gt_text):
    root = tmp_path / "wider"
    (root / "wider_face_split").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text(gt_text)
    (root / "WIDER_val" / "images" / "0--x").mkdir(parents=True)
    cv2.imwrite(str(root / "WIDER_val" / "images" / "0--x" / "a.jpg"), np.full((100, 120, 3), 128, np.uint8))
    return root


def test_empty_annotation_file_is_an_error_not_an_empty_dataset(tmp_path):
    from blazekit.data import DataError, FaceDataset, WiderFace

    with pytest.raises(DataError, match=r"wider_face_val_bbx_gt\.txt.*no usable images: the annotations list no images"):
        WiderFace(_wider(tmp_path, ""), split="val")

    class Nothing(FaceDataset):
        def load_records(self):
            return []

    with pytest.raises(DataError, match="Nothing: no usable images"):
        Nothing()
    # every image unreadable under on_bad_sample=skip: the error says so instead of an empty loader
    gt = "0--x/missing.jpg\n1\n1 2 10 10 0 0 0 0 0 0\n"
    with pytest.raises(DataError, match=r"all 1 were skipped as unreadable \(image file not found: .*missing\.jpg"):
        WiderFace(_wider(tmp_path / "b", gt), split="val", on_bad_sample="skip")


def test_truncated_wider_file_names_file_and_line(tmp_path):
    from blazekit.data import DataError, WiderFace

    gt = "0--x/a.jpg\n1\n1 2 10 10 0 0 0 0 0 0\n0--x/a.jpg\n3\n5 5 20 20 0 0 0 0 0 0\n"  # 3 faces announced, 1 given
    root = _wider(tmp_path, gt)
    with pytest.raises(DataError, match=r"wider_face_val_bbx_gt\.txt:7: file ends after 1 of the 3 faces of '0--x/a\.jpg'"):
        WiderFace(root, split="val")
    ds = WiderFace(root, split="val", on_bad_sample="skip")
    assert (len(ds), ds.summary.faces, ds.summary.skipped_annotations) == (1, 1, 1)
    # an image whose every face line is malformed is counted as a skipped image, never kept as background
    gt = "0--x/a.jpg\n1\n1 2 10 10 0 0 0 0 0 0\n0--x/a.jpg\n1\nx y w h\n"
    ds = WiderFace(_wider(tmp_path / "c", gt), split="val", on_bad_sample="skip")
    assert (len(ds), ds.summary.skipped_images, ds.summary.skipped_annotations) == (1, 1, 1)
