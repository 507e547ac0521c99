"""Issue #21's silent wrong results, run through the real tools in a subprocess: each is refused with exit code 2 and
one ``error`` line, and nothing an earlier run wrote is touched.

1. eval / predict / export with a config that names no weights (random weights found 0 faces, exit 0);
3. a new training run into a work dir holding an earlier one (replaced best.pt/last.pt), two runs in one work dir;
4. a COCO category_id / YOLO class the file does not list (the face trained as background, "0 bad annotations");
5. ``model.postprocess.score_thr=1.5``, ``imports: xy`` (imported x and y), ``--device banana`` (trained on the
   CPU), ``eval --max-images 0`` (AP -1.0).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.commands.test_bad_inputs import DEMO, QUICKSTART, REPO, SHORT_RUN

IMAGE = str(DEMO / "images" / "sample1.jpg")


def _tool(tool, *args, cwd=REPO):
    """``python tools/<tool>.py ARGS`` (``tool`` ``-m`` runs ``python -m blazekit``); the completed process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "blazekit"] if tool == "-m" else [sys.executable, str(REPO / "tools" / f"{tool}.py")]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _refused(r, *names):
    """Exit code 2, no traceback, exactly one ``error:`` line (argparse's ``tool.py: error:`` too) naming ``names``."""
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:") or ": error: " in ln]
    assert len(lines) == 1 and all(n in lines[0] for n in names), r.stderr[-2000:]
    return lines[0]


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------- 1. no weights
@pytest.mark.parametrize("tool", ["predict", "eval", "export"])
def test_a_config_without_weights_is_refused_naming_the_weights_to_give(tool, tmp_path):
    """blazeface_front.yml has no model.init: the tools ran Kaiming-initialised weights (0 faces, exit 0)."""
    extra = {"predict": [IMAGE, "--out", tmp_path / "out"], "eval": ["--out", tmp_path / "out" / "r.json"],
             "export": ["--out", tmp_path / "out" / "m.onnx"]}[tool]
    r = _tool(tool, "blazeface_front", *extra)
    _refused(r, str(REPO / "configs" / "blazeface_front.yml"), "no weights to run",
             "neither --weights nor model.init is set", "--weights mediapipe_short_range",
             "work_dirs/blazeface_front/best.pt")
    assert not (tmp_path / "out").exists()


def test_the_weights_named_fit_the_config_architecture():
    from blazekit import config
    from blazekit.models.build import inference_weights, shipped_weights_for

    cfgs = {n: config.load(n) for n in ("blazeface_front", "blazeface_full_range", "blazeface_back", "quickstart")}
    assert shipped_weights_for(cfgs["blazeface_front"]["model"]) == ["mediapipe_short_range"]
    assert shipped_weights_for(cfgs["blazeface_full_range"]["model"]) == ["mediapipe_full_range"]
    with pytest.raises(config.ConfigError, match="give --weights mediapipe_full_range"):
        inference_weights(cfgs["blazeface_full_range"])
    with pytest.raises(config.ConfigError, match=r"best\.pt\); the shipped weights are other architectures$"):
        inference_weights(cfgs["blazeface_back"])
    # --weights wins, model.init is the default: both as before
    assert inference_weights(cfgs["blazeface_back"], "my.pt") == "my.pt"
    assert inference_weights(cfgs["quickstart"]) == "mediapipe_short_range"


# ------------------------------------------------------------------------------------------- 3. work dirs
@pytest.mark.slow  # five tool runs, three of them training (~35 s on 2 busy cores)
def test_a_work_dir_holding_a_run_is_never_replaced_silently_and_is_locked_while_used(tmp_path):
    work = tmp_path / "w"
    assert _tool("train", QUICKSTART, "--work-dir", work, *SHORT_RUN).returncode == 0
    first = _snapshot(work)
    assert {"best.pt", "last.pt", "train.log", "metrics.jsonl"} <= set(first) and "train.lock" not in first

    # the same command with other settings: refused, the first run byte for byte as it was
    r = _tool("train", QUICKSTART, "--work-dir", work, *SHORT_RUN, "--set", "train.optimizer.lr=1.0")
    _refused(r, f"{work} holds a previous run (last.pt, best.pt of ", "continue it with --resume",
             "train into another folder with --work-dir DIR", "replace it with --overwrite")
    assert _snapshot(work) == first

    # a live process holds the work dir (this test's own pid): refused, even with --resume
    lock = work / "train.lock"
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")
    r = _tool("train", QUICKSTART, "--work-dir", work, *SHORT_RUN, "--resume")
    _refused(r, f"{work} is in use by another training run (pid {os.getpid()}, started ", "--work-dir DIR")
    assert _snapshot(work) == {**first, "train.lock": lock.read_bytes()}

    # the way out the refusal names: --resume continues the run; a lock whose process is gone is taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")
    r = _tool("train", QUICKSTART, "--work-dir", work, *SHORT_RUN, "--set", "train.epochs=2", "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    log = (work / "train.log").read_text()
    assert f"took over {lock} from pid {dead.pid}, which is no longer running" in log and "resumed from" in log
    assert not lock.exists()  # released at the end
    import torch

    assert torch.load(work / "last.pt", weights_only=True)["train_state"]["epoch"] == 2

    # --overwrite replaces it: a new run from epoch 0, with a log and metrics of its own
    r = _tool("-m", "train", QUICKSTART, "--work-dir", work, *SHORT_RUN, "--overwrite")
    assert r.returncode == 0, r.stderr[-2000:]
    log = (work / "train.log").read_text()
    assert log.count("work dir ") == 1 and "--overwrite: removed the previous run (last.pt, best.pt)" in log
    assert torch.load(work / "last.pt", weights_only=True)["train_state"]["epoch"] == 1
    steps = [json.loads(ln)["step"] for ln in (work / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # one run's records, not two runs' interleaved


def test_a_trainer_dropped_without_fit_does_not_block_the_next_in_the_same_process(tmp_path):
    """Notebooks re-run cells: the old Trainer's lock is taken over, and releasing it later keeps the new one's."""
    from blazekit.engine import workdir

    old = workdir.claim(tmp_path, resume=False, overwrite=False)
    new = workdir.claim(tmp_path, resume=False, overwrite=False)
    assert new.took_over is None and (tmp_path / "train.lock").read_text() == new.text != old.text
    old.release()  # e.g. the old Trainer garbage-collected
    assert (tmp_path / "train.lock").read_text() == new.text
    new.release()
    assert not (tmp_path / "train.lock").exists()


# ------------------------------------------------------------------------------------------- 4. labels
def test_coco_category_not_in_categories_stops_the_train_tool(tmp_path):
    data = tmp_path / "faces"
    shutil.copytree(DEMO, data)
    ann = json.loads((data / "annotations.json").read_text())
    bad = next(i for i, a in enumerate(ann["annotations"])
               if next(im for im in ann["images"] if im["id"] == a["image_id"]).get("split") == "train")
    ann["annotations"][bad]["category_id"] = 7
    (data / "annotations.json").write_text(json.dumps(ann))
    cfg = tmp_path / "bad.yml"
    cfg.write_text(f"_base_: [{QUICKSTART}]\ndata:\n  train:\n    dataset: {{_replace_: true, type: CocoFaces, "
                   f"ann_file: {data / 'annotations.json'}, split: train}}\n")
    r = _tool("train", cfg, "--work-dir", tmp_path / "w", *SHORT_RUN)
    _refused(r, f"{data / 'annotations.json'}: annotations[{bad}] (id {ann['annotations'][bad]['id']}): "
                "category_id 7 is not one of the file's categories (1: face)")
    assert not list((tmp_path / "w").glob("*.pt"))


def test_yolo_class_outside_names_stops_the_eval_tool(tmp_path):
    root = tmp_path / "yolo"
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir()
    shutil.copy(DEMO / "images" / "sample1.jpg", root / "val" / "images")
    (root / "val" / "labels" / "sample1.txt").write_text("0 0.5 0.5 0.2 0.2\n3 0.3 0.3 0.1 0.1\n")
    (root / "data.yaml").write_text("val: val/images\nnames: [face]\n")
    r = _tool("eval", QUICKSTART, "--set", "data.val.dataset={type: YoloFaces, data_yaml: "
              f"{root / 'data.yaml'}, split: val}}", "--out", tmp_path / "out" / "r.json")
    _refused(r, f"{root / 'val' / 'labels' / 'sample1.txt'}:2: class 3 is not one of the classes of "
                f"{root / 'data.yaml'} (0: face)")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- 5. values
def test_postprocess_score_thr_out_of_range_is_refused(tmp_path):
    r = _tool("predict", QUICKSTART, IMAGE, "--out", tmp_path / "out", "--set", "model.postprocess.score_thr=1.5")
    _refused(r, f"{QUICKSTART}: model.postprocess.score_thr = 1.5: expected a number >= 0 and <= 1")
    r = _tool("export", QUICKSTART, "--with-postprocess", "--score-thr", "1.5", "--out", tmp_path / "out" / "m.onnx")
    _refused(r, "--score-thr must be in [0, 1], got 1.5")
    assert not (tmp_path / "out").exists()


def test_imports_given_as_one_name_imports_that_module(tmp_path):
    """``imports: xy`` imported ``x`` and ``y`` (the string iterated letter by letter)."""
    (tmp_path / "xy.py").write_text("from pathlib import Path\nPath(__file__).with_name('xy_imported').touch()\n")
    cfg = tmp_path / "one.yml"
    cfg.write_text(f"_base_: [{QUICKSTART}]\nimports: xy\n")
    r = _tool("predict", cfg, IMAGE, "--out", tmp_path / "out", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "xy_imported").exists() and (tmp_path / "out" / "sample1.json").exists()


@pytest.mark.parametrize("tool", ["train", "eval", "predict"])
def test_an_unknown_device_is_refused_listing_the_devices(tool, tmp_path):
    """``train --device banana`` trained on the CPU; eval/predict ended in torch's traceback."""
    extra = {"train": ["--work-dir", tmp_path / "w"], "eval": [], "predict": [IMAGE, "--out", tmp_path / "out"]}[tool]
    r = _tool(tool, QUICKSTART, *extra, "--device", "banana")
    _refused(r, "--device 'banana': expected cpu, cuda, cuda:N (N = 0, 1, ...) or mps")
    assert list(tmp_path.iterdir()) == []


def test_eval_max_images_zero_is_refused(tmp_path):
    """It evaluated nothing and reported AP -1.0 with exit code 0."""
    r = _tool("eval", QUICKSTART, "--max-images", "0", "--out", tmp_path / "r.json")
    _refused(r, "--max-images must be >= 1", "got 0")
    assert list(tmp_path.iterdir()) == []
