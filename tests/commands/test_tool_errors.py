"""Issue #21's cases through the real tools, each in a subprocess (``python -m blazekit ...``): a bad dataset,
option, output path, device or checkpoint is refused before any work with exit code 2 and one ``error:`` line
naming it, never a traceback after work has started; Ctrl-C is one ``interrupted:`` line and exit code 130; and
nothing written before is overwritten. README "What happens when ..." lists them.
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import cv2
import pytest
import torch

from tests.commands.test_no_silent_results import _refused as refused, _snapshot, _tool
from tests.commands.test_bad_inputs import DEMO, QUICKSTART, REPO, SHORT_RUN as SHORT

IMG = DEMO / "images" / "sample1.jpg"
W = "mediapipe_short_range"


def _env():
    """For the Popen runs: the test helpers importable (``imports: [tests.engine.train_support]``), output unbuffered."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("BLAZEKIT_DEBUG", None)
    return env


def blazekit(*args, cwd=REPO):
    """``python -m blazekit ARGS``, the completed process."""
    return _tool("-m", *args, cwd=cwd)


@pytest.fixture
def demo(tmp_path):
    """The demo set copied to ``tmp_path/faces``; ``config(val_extra)`` writes a quickstart config on it."""
    data = tmp_path / "faces"
    shutil.copytree(DEMO, data)

    def config(extra=""):
        ann = data / "annotations.json"
        cfg = tmp_path / "faces.yml"
        coco = f"{{_replace_: true, type: CocoFaces, ann_file: {ann}"
        cfg.write_text(f"_base_: [{QUICKSTART}]\ndata:\n  train:\n    dataset: {coco}, split: train}}\n"
                       f"  val:\n    dataset: {coco}, split: val{extra}}}\n")
        return cfg

    return data, config


# ------------------------------------------------------------------------------------------- 6. datasets
def test_repeated_image_id_is_refused_at_load_before_training_and_by_eval(demo, tmp_path):
    data, config = demo
    ann = json.loads((data / "annotations.json").read_text())
    ann["images"].append(dict(next(im for im in ann["images"] if im["split"] == "val")))  # id 2 again
    (data / "annotations.json").write_text(json.dumps(ann))
    cfg = config()
    line = "image id 2 is listed twice"
    work = tmp_path / "w"
    r = blazekit("train", cfg, "--work-dir", work, *SHORT)
    refused(r, f"CocoFaces({data / 'annotations.json'}, val)", line)
    assert "epoch 1/1" not in r.stdout and not work.exists()  # refused before training; no empty run left
    refused(blazekit("eval", cfg, "--weights", W, "--quiet"), str(data / "annotations.json"), line)


def test_undecodable_val_image_is_caught_at_load(demo, tmp_path):
    """A text file named .jpg: refused naming it by default; skipped at load (never stands in for another image,
    which evaluated twice crashed COCO eval after the first epoch) with on_bad_sample: skip."""
    data, config = demo
    bad = data / "images" / "sample4.jpg"  # a val image
    bad.write_text("not an image\n" * 50)
    refused(blazekit("eval", config(), "--weights", W, "--quiet"), f"cannot decode image {bad}",
            "not an image format OpenCV reads")
    work = tmp_path / "w"
    r = blazekit("train", config(", on_bad_sample: skip"), "--work-dir", work, *SHORT)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (work / "train.log").read_text()
    assert "val set CocoFaces" in log and "2 images" in log and "skipped 1 images" in log
    assert str(bad) in r.stderr  # the dataset's warning names the file


def test_image_corrupt_past_its_header_is_left_out_of_evaluation_not_replaced(demo, tmp_path):
    """A PNG whose header is intact but whose pixel data is not: only decoding finds it; evaluation leaves it out
    (2 of 3 images scored) instead of scoring a neighbour twice."""
    data, config = demo
    bad = data / "images" / "sample4.jpg"
    png = bytearray(cv2.imencode(".png", cv2.imread(str(bad)))[1].tobytes())
    png[200:-100] = bytes(len(png) - 300)  # the signature and size survive, the IDAT data does not
    bad.write_bytes(bytes(png))
    out = tmp_path / "r.json"
    r = blazekit("eval", config(", on_bad_sample: skip"), "--weights", W, "--quiet", "--backend", "torch",
                 "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipping unreadable sample" in r.stderr and str(bad) in r.stderr
    ann = json.loads((data / "annotations.json").read_text())
    kept = {im["id"] for im in ann["images"] if im["split"] == "val" and im["file_name"] != "images/sample4.jpg"}
    faces = sum(1 for a in ann["annotations"] if a["image_id"] in kept)
    assert json.loads(out.read_text())["nme/faces"] == faces  # the two readable images' faces, once each


# ------------------------------------------------------------------------------------------- 7. options
@pytest.mark.parametrize("tool, override, message", [
    ("predict", "model.postprocess.iou_thr=-1", "model.postprocess.iou_thr = -1: expected a number >= 0 and <= 1"),
    ("predict", "model.postprocess.max_det=0", "model.postprocess.max_det = 0: expected null or an integer >= 1"),
    ("train", "model.matcher.pos_iou=2", "model.matcher.pos_iou = 2: expected a number >= 0 and <= 1"),
    ("train", "model.loss.neg_pos_ratio=-3", "model.loss.neg_pos_ratio = -3: expected a number >= 0"),
])
def test_model_options_out_of_range_are_refused_when_the_config_loads(tmp_path, tool, override, message):
    out = tmp_path / "out"
    args = (["predict", QUICKSTART, "--weights", W, IMG, "--out", out] if tool == "predict"
            else ["train", QUICKSTART, "--work-dir", out, *SHORT])
    refused(blazekit(*args, "--set", override), str(QUICKSTART), message)
    assert not out.exists()


@pytest.mark.parametrize("tool", ["predict", "export"])
def test_input_size_the_network_cannot_tile_says_which_sizes_fit(tmp_path, tool):
    out = tmp_path / ("p" if tool == "predict" else "m.onnx")
    args = [IMG] if tool == "predict" else []
    r = blazekit(tool, QUICKSTART, "--weights", W, *args, "--out", out, "--input-size", "100", "100")
    refused(r, "--input-size 100 100: expected H and W divisible by 16", "near: 96, 112",
            "the model's own size: 128 128")
    assert not out.exists()


def test_input_size_check_counts_the_backbone_stride_of_the_full_range_model():
    from blazekit.models.build import build_detector
    from blazekit.models.detector import InputSizeError

    det = build_detector(REPO / "configs" / "blazeface_full_range.yml")
    with pytest.raises(InputSizeError, match="expected H and W divisible by 32.*near: 96, 128"):
        det.check_input_size((100, 100))  # its head level has stride 4, its backbone 32
    det.check_input_size((160, 160))


def test_non_utf8_config_and_unknown_opset_are_one_line(tmp_path):
    cfg = tmp_path / "latin1.yml"
    cfg.write_bytes("# caf\xe9\n_base_: [quickstart.yml]\n".encode("latin-1"))
    refused(blazekit("eval", cfg, "--weights", W, "--quiet"), str(cfg), "not UTF-8 text (byte 0xe9 at offset 5)")
    out = tmp_path / "m.onnx"
    refused(blazekit("export", QUICKSTART, "--weights", W, "--out", out, "--opset", "99"),
            "--opset 99: this torch's ONNX exporter writes opsets 11..")
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--n", "-1"], "--n -1: expected the number of samples to draw, >= 1"),
    (["--zoom", "0"], "--zoom 0: expected an enlarge factor > 0 and <= 16"),
    (["--zoom", "1000"], "--zoom 1000: expected an enlarge factor > 0 and <= 16"),  # was a 49 GB allocation
])
def test_browse_refuses_counts_and_zooms_out_of_range(tmp_path, flags, message):
    refused(blazekit("browse", QUICKSTART, "--out", tmp_path / "b", *flags), message)
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------- 8. output paths
@pytest.fixture
def places(tmp_path):
    """A file where a folder is expected and a folder where a file is expected, each with content to keep."""
    (tmp_path / "afile").write_text("keep me\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "old.txt").write_text("keep me too\n")
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["train", QUICKSTART, "--work-dir", "{afile}", *SHORT], "work dir {afile}: is a file; expected a folder"),
    (["train", QUICKSTART, "--work-dir", "{afile}/w", *SHORT], "work dir {afile}/w: {afile} is a file, so no folder"),
    (["predict", QUICKSTART, "--weights", W, IMG, "--out", "{afile}"], "--out {afile}: is a file; expected a folder"),
    (["export", QUICKSTART, "--weights", W, "--out", "{adir}"],
     "--out {adir}: is a folder; expected a file path (e.g. {adir}/model.onnx)"),
    (["export", QUICKSTART, "--weights", W, "--out", "{afile}/m.onnx"], "{afile} is a file, so no file can be created"),
    (["eval", QUICKSTART, "--weights", W, "--out", "{adir}"], "--out {adir}: is a folder; expected a file path"),
    (["eval", QUICKSTART, "--weights", W, "--out", "{afile}/r.json"], "{afile} is a file, so no file can be created"),
    (["eval", QUICKSTART, "--weights", W, "--save-preds", "{afile}"], "--save-preds {afile}: is a file"),
    (["convert", DEMO / "missing.tflite", "{adir}"], "OUT {adir}: is a folder; expected a file path"),
    (["browse", QUICKSTART, "--out", "{afile}"], "--out {afile}: is a file; expected a folder"),
], ids=["train-file", "train-under-file", "predict-file", "export-dir", "export-under-file", "eval-dir",
        "eval-under-file", "eval-preds-file", "convert-dir", "browse-file"])
def test_unwritable_output_paths_are_refused_naming_the_path(places, args, message):
    before = _snapshot(places)
    paths = {"afile": places / "afile", "adir": places / "adir"}
    r = blazekit(*[str(a).format(**paths) for a in args])
    refused(r, message.format(**paths))
    assert _snapshot(places) == before  # nothing created, nothing overwritten


def test_a_folder_where_a_run_file_should_be_is_refused_before_training(tmp_path):
    work = tmp_path / "w"
    (work / "last.pt").mkdir(parents=True)  # a folder named like the checkpoint the first epoch would write
    (work / "notes.txt").write_text("mine\n")
    r = blazekit("train", QUICKSTART, "--work-dir", work, *SHORT)
    refused(r, f"work dir file {work / 'last.pt'}: is a folder; expected a file path")
    assert "epoch 1/1" not in r.stdout and (work / "notes.txt").read_text() == "mine\n"


def test_read_only_output_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only folder does not stop root (the OSError net is tested below)")
        refused(blazekit("export", QUICKSTART, "--weights", W, "--out", ro / "m.onnx"),
                f"--out {ro / 'm.onnx'}: {ro} is not writable (permission denied)")
    finally:
        ro.chmod(0o755)


def test_an_os_refusal_during_a_run_is_one_line_naming_the_path(capsys):
    """What the up-front checks cannot see (a file system that refuses even root, a disk that fills up)."""
    from blazekit.engine.cli import run_tool

    def denied(argv=None):
        raise PermissionError(1, "Operation not permitted", "/sys/blazekit_out")

    assert run_tool(denied) == 2
    assert capsys.readouterr().err == "error: /sys/blazekit_out: Operation not permitted\n"

    def bug(argv=None):
        raise OSError("an OSError without a path is not about an output: its traceback stays")

    with pytest.raises(OSError):
        run_tool(bug)


# ------------------------------------------------------------------------------------------- 9. devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
@pytest.mark.parametrize("tool", ["train", "predict", "eval"])
def test_cuda_without_a_gpu_is_one_line(tmp_path, tool):
    args = {"train": ["--work-dir", tmp_path / "w", *SHORT], "predict": ["--weights", W, IMG, "--out", tmp_path / "p"],
            "eval": ["--weights", W]}[tool]
    refused(blazekit(tool, QUICKSTART, "--device", "cuda", *args), "--device cuda: CUDA is not available here",
            "use --device cpu")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, tools, message", [
    (["--device", "banana"], ("eval", "predict", "train"),
     "--device 'banana': expected cpu, cuda, cuda:N (N = 0, 1, ...) or mps"),
    (["--backend", "onnxruntime", "--device", "cuda"], ("eval", "predict"),
     "--backend onnxruntime runs on the CPU; drop --device cuda or use --backend torch"),
    (["--backend", "onnxruntime"], ("eval", "predict"),
     "--backend onnxruntime needs onnx and onnxruntime (pip install -e .[export]); or use --backend torch"),
])
def test_tools_refuse_the_same_device_and_backend_with_the_same_line(flags, tools, message, capsys, monkeypatch,
                                                                    tmp_path):
    """One check (commands.common.check_run_flags) for every tool: the same flags give the same error line."""
    import importlib

    from blazekit.deploy import backends

    monkeypatch.setattr(backends, "onnxruntime_installed", lambda: False)  # the third case; the others fail earlier
    extra = {"eval": [], "predict": [str(IMG), "--out", str(tmp_path)], "train": []}
    for tool in tools:
        with pytest.raises(SystemExit) as exc:
            importlib.import_module(f"blazekit.commands.{tool}").parse_args([str(QUICKSTART), *extra[tool], *flags],
                                                                            prog=f"blazekit {tool}")
        assert exc.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"blazekit {tool}: error: {message}"


def test_check_device_names_what_is_wrong():
    from blazekit.engine.cli import UsageError, check_device

    assert check_device(None) is None and check_device("cpu") == "cpu"
    with pytest.raises(UsageError, match=r"--device 'banana': expected cpu, cuda, cuda:N \(N = 0, 1, ...\) or mps"):
        check_device("banana")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(UsageError, match=f"--device cuda:{n + 3}: "):
        check_device(f"cuda:{n + 3}")


# ------------------------------------------------------------------------------------------- 10. diverged weights
@pytest.fixture
def diverged(tmp_path):
    """The shipped weights with one NaN, and with finite weights (3e38) whose outputs overflow to Inf/NaN."""
    from blazekit.checkpoint import load_checkpoint, save_checkpoint
    from blazekit.weights import resolve_weights

    ckpt = load_checkpoint(resolve_weights(W))
    nan, huge = ({**ckpt, "state_dict": dict(ckpt["state_dict"])} for _ in range(2))
    nan["state_dict"]["head.cls_convs.0.weight"] = ckpt["state_dict"]["head.cls_convs.0.weight"].clone()
    nan["state_dict"]["head.cls_convs.0.weight"].view(-1)[0] = float("nan")
    huge["state_dict"]["head.reg_convs.1.weight"] = torch.full_like(ckpt["state_dict"]["head.reg_convs.1.weight"], 3e38)
    return save_checkpoint(tmp_path / "nan.pt", nan), save_checkpoint(tmp_path / "huge.pt", huge)


@pytest.mark.parametrize("tool", ["eval", "predict", "export"])
def test_diverged_weights_are_refused_at_load_naming_a_tensor(tmp_path, diverged, tool):
    """What a run with lr=1e6 left: finite weights whose outputs overflow (the 'atol ... nan' traceback); and NaN
    weights (one tool: the same load_checkpoint check serves all)."""
    nan, huge = diverged
    extra = {"eval": ["--quiet"], "predict": [IMG, "--out", tmp_path / "p"], "export": ["--out", tmp_path / "m.onnx"]}
    refused(blazekit(tool, QUICKSTART, "--weights", huge, *extra[tool]),
            f"({huge}): the network's outputs are NaN/Inf (first at head.reg_convs.1", "weights up to 3e+38")
    if tool == "eval":
        refused(blazekit(tool, QUICKSTART, "--weights", nan, *extra[tool]),
                f"{nan}: non-finite weights (NaN/Inf) in head.cls_convs.0.weight", "Use an earlier checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.pt", "nan.pt"]


def test_training_stops_when_finite_weights_give_non_finite_outputs(tmp_path):
    from tests.engine.train_support import tiny_cfg

    from blazekit.engine.trainer import Trainer, TrainingError

    tr = Trainer(str(tiny_cfg(tmp_path)), work_dir=tmp_path / "w")
    with torch.no_grad():
        tr.model.head.cls_convs[0].weight.fill_(3e38)
    with pytest.raises(TrainingError, match=r"finite weights but non-finite outputs \(from head.cls_convs.0"):
        tr.check_finite()
    assert not (tmp_path / "w" / "last.pt").exists()


# ------------------------------------------------------------------------------------------- 11. Ctrl-C
def _interruptible(cmd):
    """The tool as a child whose Ctrl-C works: a shell's background job (``pytest ... &``) inherits SIGINT ignored,
    and Python keeps an ignored SIGINT ignored, so the child gets the default action back before it starts."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt_when(proc, ready, deadline_s=120):
    """Send SIGINT once ``ready()`` holds; the process must still be running then (else the test proves nothing)."""
    deadline = time.time() + deadline_s
    while not ready():
        assert proc.poll() is None and time.time() < deadline, "finished before it could be interrupted"
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return out, err


def _interrupted(err):
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_ctrl_c_in_train_says_what_is_saved_and_how_to_resume(tmp_path):
    from tests.engine.train_support import tiny_cfg

    cfg = tiny_cfg(tmp_path, dataset={"delay": 0.03}, epochs=3)  # 4 iterations of 4 slow samples per epoch
    work = tmp_path / "w"
    cmd = [sys.executable, "-m", "blazekit", "train", str(cfg), "--work-dir", str(work)]
    proc = _interruptible(cmd)
    seen = []

    def in_epoch_2():  # last.pt of epoch 1 is written before epoch 2's first step is logged
        seen.append(proc.stdout.readline())
        return seen[-1].startswith("epoch 2/3 iter 1/4")

    _, err = _interrupt_when(proc, in_epoch_2)
    assert proc.returncode == 130, err[-3000:]
    line = _interrupted(err)
    assert f"{work / 'last.pt'} holds epoch 1/3 iteration 4/4 (global step 4)" in line
    assert "; resume with: blazekit train " in line and line.endswith("--resume")
    assert torch.load(work / "last.pt", weights_only=True)["train_state"]["global_step"] == 4
    assert line in (work / "train.log").read_text()
    # the printed command resumes and finishes the run
    resume = shlex.split(line.split("resume with: ", 1)[1])
    assert resume[:2] == ["blazekit", "train"]
    r = subprocess.run([sys.executable, "-m", "blazekit", *resume[1:]], capture_output=True, text=True, env=_env(),
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(work / "last.pt", weights_only=True)["train_state"]["global_step"] == 12


def test_ctrl_c_in_predict_says_how_many_results_are_written(tmp_path):
    src, out = tmp_path / "imgs", tmp_path / "out"
    src.mkdir()
    img = cv2.imread(str(IMG))
    small = cv2.resize(img, (96, 96 * img.shape[0] // img.shape[1]))
    for i in range(150):
        cv2.imwrite(str(src / f"{i:03d}.png"), small)
    cmd = [sys.executable, "-m", "blazekit", "predict", str(QUICKSTART), "--weights", W, str(src), "--out", str(out),
           "--batch-size", "1", "--quiet"]
    proc = _interruptible(cmd)
    _, err = _interrupt_when(proc, lambda: any(out.glob("*.json")))
    assert proc.returncode == 130, err[-3000:]
    line = _interrupted(err)
    done = len(list(out.glob("*.json")))
    assert 0 < done < 150 and f"interrupted: {done} of 150 image(s)" in line and str(out) in line
    assert "run the same command again" in line


# ------------------------------------------------------------------------------------------- newcomer friction
def test_shipped_config_runs_from_another_folder(tmp_path):
    """``blazekit eval quickstart`` from outside the checkout: the demo set is found inside the package."""
    r = blazekit("eval", "quickstart", "--weights", W, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "val of quickstart with mediapipe_short_range" in r.stdout and "nme/faces            9.0000" in r.stdout


def test_a_refused_run_leaves_no_empty_work_dir_and_keeps_an_earlier_run(tmp_path, capsys):
    from blazekit.commands import train

    bad = ["--set", "model.init=mediapipe_full_range"]  # refused after the work dir and its log were opened
    new = tmp_path / "runs" / "new"
    assert train.main([str(QUICKSTART), "--work-dir", str(new), *SHORT, *bad]) == 2
    assert not (tmp_path / "runs").exists()  # no empty run folder (and no parent folder) left behind
    old = tmp_path / "old"  # a folder of yours (no checkpoints: a run's would be refused before anything else)
    old.mkdir()
    (old / "train.log").write_text("an earlier attempt\n")
    (old / "notes.txt").write_text("mine\n")
    assert train.main([str(QUICKSTART), "--work-dir", str(old), *SHORT, *bad]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 2 and "does not fit the model" in err[1]
    assert (old / "notes.txt").read_text() == "mine\n"
    log = (old / "train.log").read_text()
    assert log.startswith("an earlier attempt\n") and log.rstrip().endswith(err[1])  # the earlier log, plus why
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt", "train.log"]  # no lock or config left


def test_resume_refuses_a_training_set_whose_content_changed(demo, tmp_path):
    from blazekit.checkpoint import load_checkpoint
    from blazekit.engine.trainer import Trainer, TrainingError

    data, config = demo
    cfg, work = str(config()), tmp_path / "w"
    opts = ["train.epochs=1", "train.val_before_train=false", "train.val_vis=0", "train.progress_bar=false",
            "train.tensorboard=false"]
    Trainer(cfg, work_dir=work, overrides=opts).fit()
    fingerprint = load_checkpoint(work / "last.pt")["meta"]["data"]["train"]
    assert fingerprint["images"] == 7 and len(fingerprint["sha1"]) == 40
    more = [*opts[1:], "train.epochs=2"]
    Trainer(cfg, work_dir=work, resume="auto", overrides=more)  # same data: resumes
    ann_file = data / "annotations.json"
    original = ann_file.read_text()
    ann = json.loads(original)
    train_ids = {im["id"] for im in ann["images"] if im["split"] == "train"}
    next(a for a in ann["annotations"] if a["image_id"] in train_ids)["bbox"][0] += 5  # one box moved by 5 px
    ann_file.write_text(json.dumps(ann))
    with pytest.raises(TrainingError, match=r"data.train changed since it was written \(the same 7 images but other "
                                            r"annotations or image sizes; fingerprint .*--set model.init="):
        Trainer(cfg, work_dir=work, resume="auto", overrides=more)
    ann = json.loads(original)
    ann["images"] = [im for im in ann["images"] if im["file_name"] != "images/sample1.jpg"]
    ann_file.write_text(json.dumps(ann))
    with pytest.raises(TrainingError, match=r"data.train changed since it was written \(7 -> 6 images"):
        Trainer(cfg, work_dir=work, resume="auto", overrides=more)
