"""Datasets on the real sets in ../shared/data, plus corrupt images and malformed annotations made here."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from blazekit.registry import BuildError
from blazekit.data import (CocoFaces, ConcatDataset, DataError, ImageFolder, WiderFace, YoloFaces, build_dataset)

from tests.conftest import FIXTURES



def _count_wider_gt(path):
    """Images and faces as the official file states them (name, count, count lines; 0 -> one dummy line)."""
    lines = Path(path).read_text().split("\n")
    i, images, faces = 0, 0, 0
    while i < len(lines) and lines[i].strip():
        n = int(lines[i + 1])
        images += 1
        faces += n
        i += 2 + max(n, 1)
    return images, faces


def _write_image(path, h=100, w=120, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


# ---------------------------------------------------------------- WIDER FACE
def test_widerface_counts_equal_ground_truth(shared):
    root = shared("data", "widerface_mini")
    ds = WiderFace(root, split="val")
    images, faces = _count_wider_gt(root / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    assert (images, faces) == (153, 4034)
    s = ds.summary
    assert len(ds) == images
    assert s.faces + s.dropped_zero_area + s.dropped_inverted == faces
    assert sum(len(r["boxes"]) for r in ds.records) == s.faces
    # invalid faces are kept as ignored regions, attributes are per-face extras
    inv = np.concatenate([r["extras"]["invalid"] for r in ds.records])
    ign = np.concatenate([r["ignore"] for r in ds.records])
    assert inv.sum() > 0 and np.array_equal(inv.astype(bool), ign)
    sample = ds[0]
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (1388, 1024, 3)
    assert sample["image_id"] == "0--Parade/0_Parade_Parade_0_194"
    # first face of the file: 111 425 122 127 -> xyxy
    np.testing.assert_allclose(sample["boxes"][0], [111, 425, 233, 552])
    assert sample["labels"].dtype == np.int64 and sample["keypoints"].shape == (5, 6, 2)
    assert not sample["keypoints_visible"].any()
    assert set(sample["extras"]) == {"blur", "expression", "illumination", "invalid", "occlusion", "pose"}


def test_widerface_min_size_flags_ignore(shared):
    ds = WiderFace(shared("data", "widerface_mini"), split="val", min_size=10)
    small = sum(int((np.minimum(r["boxes"][:, 2] - r["boxes"][:, 0], r["boxes"][:, 3] - r["boxes"][:, 1]) < 10).sum())
                for r in ds.records)
    assert small > 100
    assert ds.summary.ignored >= small and ds.summary.faces == 4032


def _mini_wider(tmp_path, gt_text):
    root = tmp_path / "wider"
    (root / "wider_face_split").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text(gt_text)
    _write_image(root / "WIDER_val" / "images" / "0--x" / "a.jpg")
    _write_image(root / "WIDER_val" / "images" / "0--x" / "b.jpg")
    return root


def test_widerface_malformed_line_names_file_and_line(tmp_path):
    gt = "0--x/a.jpg\n2\n1 2 10 10 0 0 0 0 0 0 \n1 2 ten 10 0 0 0 0 0 0 \n0--x/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"
    root = _mini_wider(tmp_path, gt)
    with pytest.raises(DataError, match=r"wider_face_val_bbx_gt.txt:4: face 1 of '0--x/a.jpg'"):
        WiderFace(root, split="val")
    ds = WiderFace(root, split="val", on_bad_sample="skip")
    assert len(ds) == 2 and ds.summary.skipped_annotations == 1 and ds.summary.faces == 1


def test_widerface_clips_and_drops_with_summary(tmp_path):
    # image is 120x100: face 2 leaves the image (clipped), face 3 has w=0, face 4 is inverted (w<0)
    gt = ("0--x/a.jpg\n4\n1 2 10 10 0 0 0 0 0 0 \n100 90 50 50 0 0 0 0 0 0 \n5 5 0 10 0 0 0 0 0 0 \n"
          "30 30 -5 10 0 0 0 0 0 0 \n0--x/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    ds = WiderFace(_mini_wider(tmp_path, gt), split="val")
    s = ds.summary
    assert (s.images, s.faces, s.clipped, s.dropped_zero_area, s.dropped_inverted) == (2, 2, 1, 1, 1)
    np.testing.assert_allclose(ds.records[0]["boxes"], [[1, 2, 11, 12], [100, 90, 120, 100]])
    assert len(ds.records[1]["boxes"]) == 0
    assert "clipped 1" in str(s) and "1 inverted" in str(s)


def test_widerface_missing_and_corrupt_image(tmp_path):
    gt = "0--x/a.jpg\n1\n1 2 10 10 0 0 0 0 0 0 \n0--x/b.jpg\n1\n1 2 10 10 0 0 0 0 0 0 \n0--x/c.jpg\n1\n1 2 3 3 0 0 0 0 0 0 \n"
    root = _mini_wider(tmp_path, gt)
    (root / "WIDER_val" / "images" / "0--x" / "b.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"b\.jpg"):
        WiderFace(root, split="val")
    ds = WiderFace(root, split="val", on_bad_sample="skip")
    assert len(ds) == 1 and ds.summary.skipped_images == 2  # b corrupt, c missing
    assert "c.jpg" in " ".join(ds.summary.problems) or "b.jpg" in " ".join(ds.summary.problems)


def test_truncated_image_fails_at_load_with_file_name(tmp_path):
    """A file whose header is fine but whose pixels are cut off passes init and fails in __getitem__."""
    root = _mini_wider(tmp_path, "0--x/a.jpg\n1\n1 2 10 10 0 0 0 0 0 0 \n0--x/b.jpg\n1\n1 2 10 10 0 0 0 0 0 0 \n")
    img = root / "WIDER_val" / "images" / "0--x" / "a.jpg"
    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8))
    img.write_bytes(buf.tobytes()[:200])  # PNG header + a bit of data, saved as .jpg name: unreadable
    ds = WiderFace(root, split="val")
    with pytest.raises(DataError, match=r"cannot decode image .*a\.jpg"):
        ds[0]
    skip = WiderFace(root, split="val", on_bad_sample="skip")
    assert skip[0]["path"].endswith("b.jpg") and skip.summary.skipped_images == 1


def test_retinaface_label_txt_maps_5_points_to_6(tmp_path):
    root = tmp_path / "retina"
    shutil.copytree(FIXTURES / "retinaface", root)
    _write_image(root / "train" / "images" / "0--Parade" / "a.jpg")
    _write_image(root / "train" / "images" / "1--Handshaking" / "b.jpg")
    ds = WiderFace(root, split="train")
    assert ds.format == "retinaface" and len(ds) == 2
    r = ds.records[0]
    np.testing.assert_allclose(r["boxes"], [[10, 20, 50, 70], [60, 10, 80, 30]])
    np.testing.assert_allclose(r["keypoints"][0], [[20, 35], [40, 35], [30, 48], [30, 61], [0, 0], [0, 0]])
    assert r["keypoints_visible"][0].tolist() == [True, True, True, True, False, False]
    assert not r["keypoints_visible"][1].any()
    assert len(ds.records[1]["boxes"]) == 1
    # num_keypoints=5 keeps RetinaFace's own order (mouth corners last), the order the 5-point flip swaps
    r5 = WiderFace(root, split="train", num_keypoints=5).records[0]
    np.testing.assert_allclose(r5["keypoints"][0], [[20, 35], [40, 35], [30, 48], [22, 60], [38, 62]])
    assert r5["keypoints_visible"][0].all()
    from blazekit.data.transforms import DEFAULT_FLIP_PERMUTATIONS

    mirrored = r5["keypoints"][0].copy()
    mirrored[:, 0] = 100 - mirrored[:, 0]
    mirrored = mirrored[DEFAULT_FLIP_PERMUTATIONS[5]]
    assert mirrored[0, 0] < mirrored[1, 0] and mirrored[3, 0] < mirrored[4, 0]  # image-left first, as before


def test_concat_dataset_by_type_checks_its_arguments():
    with pytest.raises(BuildError, match="shufle"):
        build_dataset({"type": "ConcatDataset", "datasets": [], "shufle": True})


# ---------------------------------------------------------------- COCO
def test_coco_facemask_counts_and_extras(shared):
    ann = shared("data", "facemask", "annotations.json")
    ds = CocoFaces(ann, extra_fields=["mask"])
    data = json.loads(ann.read_text())
    assert len(ds) == len(data["images"]) == 853
    assert ds.summary.faces == len(data["annotations"]) == 4072
    assert ds.summary.clipped == 12  # the README's 12 boxes that end one pixel past the right border
    masks = np.concatenate([r["extras"]["mask"] for r in ds.records])
    assert (masks == "with_mask").sum() == 3232 and (masks == "mask_weared_incorrect").sum() == 123
    s = ds[0]
    assert s["orig_size"] == (366, 512) and s["image"].shape == (366, 512, 3)
    np.testing.assert_allclose(s["boxes"][0], [79, 105, 109, 142])
    assert s["labels"].tolist() == [0] * len(s["labels"])


def test_coco_fddb_counts(shared):
    ds = CocoFaces(shared("data", "fddb", "annotations.json"))
    assert (len(ds), ds.summary.faces, ds.summary.dropped_zero_area) == (1408, 2532, 0)
    assert ds[5]["image"].ndim == 3 and ds[5]["image"].shape[2] == 3  # FDDB has grayscale photos too


def test_coco_image_filter_selects_fddb_folds(shared):
    ann = shared("data", "fddb", "annotations.json")
    counts = {f: len(CocoFaces(ann, image_filter={"fold": f})) for f in range(1, 6)}
    assert counts == {1: 282, 2: 278, 3: 269, 4: 293, 5: 286}  # the fddb README's table
    train = CocoFaces(ann, image_filter={"fold": [1, 2, 3]})
    held_out = CocoFaces(ann, image_filter={"fold": [4, 5]})
    assert (len(train), train.summary.faces) == (829, 505 + 510 + 509)
    assert (len(held_out), held_out.summary.faces) == (579, 508 + 500)
    assert not {r["path"] for r in train.records} & {r["path"] for r in held_out.records}
    assert "fold in [1, 2, 3]" in train.describe()


def test_coco_image_filter_errors_and_split_shorthand(tmp_path):
    _write_image(tmp_path / "a.jpg")
    images = [{"id": i, "file_name": "a.jpg", "width": 120, "height": 100, "split": s, "fold": f}
              for i, (s, f) in enumerate([("train", 1), ("val", 1), ("val", 2)])]
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"images": images, "annotations": []}))
    assert [r["image_id"] for r in CocoFaces(p, split="val").records] == [1, 2]
    assert [r["image_id"] for r in CocoFaces(p, image_filter={"split": ["val"], "fold": [2]}).records] == [2]
    assert [r["image_id"] for r in CocoFaces(p, split="val", image_filter={"fold": 1}).records] == [1]
    with pytest.raises(DataError, match=r"ann\.json: image_filter\.folds: no image has a 'folds' field; "
                                        r"image fields are \[.*'fold'.*\]"):
        CocoFaces(p, image_filter={"folds": [1]})
    with pytest.raises(DataError, match="image_filter must be a mapping"):
        CocoFaces(p, image_filter=[1, 2])
    with pytest.raises(DataError, match=r"image_filter\.fold is an empty list"):
        CocoFaces(p, image_filter={"fold": []})


def test_coco_keypoints_visibility(shared):
    ds = CocoFaces(shared("data", "landmarks_mini", "annotations.json"))
    s = ds[0]
    np.testing.assert_allclose(s["keypoints"][0, :4], [[205.0, 105.67], [217.17, 105.67], [208.0, 114.0], [211.3, 120.4]])
    assert s["keypoints_visible"][0].tolist() == [True, True, True, True, False, False]


def _coco_file(tmp_path, annotations, categories=None):
    _write_image(tmp_path / "img" / "a.jpg")
    data = {"images": [{"id": 1, "file_name": "img/a.jpg", "width": 120, "height": 100}],
            "annotations": annotations,
            "categories": categories or [{"id": 1, "name": "face"}]}
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p


def test_coco_malformed_field_names_file_and_field(tmp_path):
    p = _coco_file(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
                              {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}])
    with pytest.raises(DataError, match=r"ann\.json: annotations\[1\] \(id 7\): 'bbox' must be 4 finite numbers"):
        CocoFaces(p)
    ds = CocoFaces(p, on_bad_sample="skip")
    assert ds.summary.faces == 1 and ds.summary.skipped_annotations == 1


def test_coco_category_filter_and_remap(tmp_path):
    cats = [{"id": 1, "name": "face"}, {"id": 2, "name": "person"}, {"id": 5, "name": "masked_face"}]
    anns = [{"id": i, "image_id": 1, "category_id": c, "bbox": [i * 10, 0, 5, 5]} for i, c in enumerate([1, 2, 5, 5])]
    p = _coco_file(tmp_path, anns, cats)
    assert CocoFaces(p).records[0]["labels"].tolist() == [0, 1, 2, 2]
    ds = CocoFaces(p, categories=["face", 5], label_map={"face": 0, "masked_face": 0})
    assert ds.records[0]["labels"].tolist() == [0, 0, 0]
    with pytest.raises(DataError, match="categories.*'cat'"):
        CocoFaces(p, categories=["cat"])


def test_coco_category_id_not_in_categories_is_a_bad_annotation(tmp_path):
    """A face labelled with a category the file does not list used to vanish (and train as background) while the
    summary said '0 bad annotations'; a category left out on purpose (``categories``) is still silent."""
    cats = [{"id": 1, "name": "face"}, {"id": 2, "name": "person"}]
    anns = [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [10, 0, 5, 5]},
            {"id": 12, "image_id": 1, "bbox": [20, 0, 5, 5]},  # no category_id: category 1
            {"id": 13, "image_id": 1, "category_id": 2, "bbox": [30, 0, 5, 5]}]
    p = _coco_file(tmp_path, anns, cats)
    with pytest.raises(DataError, match=r"ann\.json: annotations\[1\] \(id 11\): category_id 7 is not one of the "
                                        r"file's categories \(1: face, 2: person\)"):
        CocoFaces(p)
    ds = CocoFaces(p, on_bad_sample="skip", categories=["face"])
    assert (ds.summary.faces, ds.summary.skipped_annotations) == (2, 1)  # person filtered, category 7 counted
    assert "skipped 0 images and 1 bad annotations; e.g. " in str(ds.summary) and "category_id 7" in str(ds.summary)


def test_coco_missing_image_named(tmp_path):
    p = _coco_file(tmp_path, [])
    (tmp_path / "img" / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"image file not found: .*img/a\.jpg"):
        CocoFaces(p)


# ---------------------------------------------------------------- YOLO
def test_yolo_roboflow_counts_and_geometry(shared):
    yml = shared("data", "roboflow_faces", "data.yaml")
    root = yml.parent
    for split, folder, n_img, n_faces in [("valid", "valid", 358, 712), ("test", "test", 180, 294), ("train", "train", 10, 8)]:
        ds = YoloFaces(yml, split=split)
        assert (len(ds), ds.summary.faces) == (n_img, n_faces), split
    ds = YoloFaces(yml, split="test")
    i = next(i for i, r in enumerate(ds.records) if len(r["boxes"]))
    r = ds.records[i]
    label = (root / "test" / "labels" / (Path(r["path"]).stem + ".txt")).read_text().split("\n")[0].split()
    h, w = r["orig_size"]
    cx, cy, bw, bh = (float(v) for v in label[1:5])
    np.testing.assert_allclose(r["boxes"][0], [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h],
                               atol=1e-3)
    assert ds[i]["image"].shape[:2] == (h, w)


def test_yolo_malformed_line_and_class_filter(tmp_path):
    root = tmp_path / "yolo"
    _write_image(root / "train" / "images" / "a.jpg")
    _write_image(root / "train" / "images" / "b.jpg")
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")
    (root / "train" / "labels" / "b.txt").write_text("0 0.5 0.5 0.2\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../train/images\nnames: [face, hand]\n")
    with pytest.raises(DataError, match=r"b\.txt:1: expected 'class cx cy w h'"):
        YoloFaces(root / "data.yaml", split="train")
    ds = YoloFaces(root / "data.yaml", split="train", classes=["face"], on_bad_sample="skip")
    assert ds.summary.faces == 1 and ds.summary.skipped_annotations == 1
    np.testing.assert_allclose(ds.records[0]["boxes"], [[48, 40, 72, 60]])
    both = YoloFaces(root / "data.yaml", split="val", label_map={"face": 0, "hand": 3}, on_bad_sample="skip")
    assert both.records[0]["labels"].tolist() == [0, 3]


def test_yolo_class_outside_names_is_a_bad_label(tmp_path):
    """Class 2 with ``names: [face, hand]`` used to be dropped silently (the face trained as background)."""
    root = tmp_path / "yolo"
    _write_image(root / "train" / "images" / "a.jpg")
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n2 0.2 0.2 0.1 0.1\n1 0.8 0.8 0.1 0.1\n")
    (root / "data.yaml").write_text("train: train/images\nnames: {0: face, 1: hand}\n")
    with pytest.raises(DataError, match=r"a\.txt:2: class 2 is not one of the classes of .*data\.yaml "
                                        r"\(0: face, 1: hand\), got '2 0.2 0.2 0.1 0.1'"):
        YoloFaces(root / "data.yaml", split="train")
    ds = YoloFaces(root / "data.yaml", split="train", classes=["face"], on_bad_sample="skip")
    assert (ds.summary.faces, ds.summary.skipped_annotations) == (1, 1)  # hand filtered, class 2 counted
    assert "a.txt:2: class 2" in str(ds.summary)


# ---------------------------------------------------------------- Concat, ImageFolder, registry
def test_concat_of_real_sources(shared):
    cfg = [{"type": "CocoFaces", "ann_file": str(shared("data", "landmarks_mini", "annotations.json"))},
           {"type": "YoloFaces", "data_yaml": str(shared("data", "roboflow_faces", "data.yaml")), "split": "train"}]
    ds = build_dataset(cfg)
    assert isinstance(ds, ConcatDataset) and len(ds) == 12 + 10
    assert ds.summary.faces == 46 + 8
    assert ds[12]["path"].endswith(".jpg") and "roboflow" in ds[12]["path"]


def test_image_folder_images_and_video(tmp_path):
    _write_image(tmp_path / "a.jpg", 50, 60)
    _write_image(tmp_path / "sub" / "b.png", 40, 30)
    vw = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    for v in range(4):
        vw.write(np.full((24, 32, 3), v * 60, np.uint8))
    vw.release()
    ds = ImageFolder(tmp_path, video_stride=2)
    ids = [ds[i]["image_id"] for i in range(len(ds))]
    assert ids == ["a.jpg", "clip.avi#0", "clip.avi#2", "sub/b.png"]
    assert ds[3]["image"].shape == (40, 30, 3) and ds[0]["boxes"].shape == (0, 4)
    assert abs(int(ds[2]["image"].mean()) - 120) < 10
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images or videos found"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "missing")


def test_unknown_dataset_type_lists_close_matches():
    from blazekit.registry import RegistryError

    with pytest.raises(RegistryError, match="Did you mean 'WiderFace'"):
        build_dataset({"type": "WiderFaces", "root": "x"})


def test_bad_sample_policy_validated(tmp_path):
    with pytest.raises(DataError, match="on_bad_sample must be one of"):
        CocoFaces(_coco_file(tmp_path, []), on_bad_sample="ignore")


def test_select_labels_is_one_rule_for_every_format():
    from blazekit.data.datasets.base import select_labels

    names = {1: "face", 2: "mask", 7: "hand"}
    fail = lambda field, msg: DataError(f"file.json: {field}: {msg}")  # noqa: E731
    assert select_labels(names, None, None, fail) == {1: 0, 2: 1, 7: 2}
    assert select_labels(names, ["face", 2], None, fail) == {1: 0, 2: 1}  # ids or names
    assert select_labels(names, ["face", "mask"], {"face": 0, 2: 0}, fail) == {1: 0, 2: 0}
    with pytest.raises(DataError, match=r"file.json: categories: \['nose'\] not found; the file has"):
        select_labels(names, ["nose"], None, fail)
    with pytest.raises(DataError, match=r"label_map: class 'hand' \(id 7\) is kept but has no label"):
        select_labels(names, None, {"face": 0, "mask": 0}, fail)
