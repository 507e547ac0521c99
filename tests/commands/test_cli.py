"""Start-up: tools and the ``blazekit`` command answer --help without torch; wider_eval never needs torch;
the registries still hold every built-in when first used; ``python -m blazekit`` dispatches to the tools."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

TOOLS = sorted(p.name for p in (REPO / "tools").glob("*.py"))
HEAVY = ("torch", "torchvision", "albumentations", "cv2", "pycocotools")


def _run_py(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


# runs a script as __main__ with the given argv, then prints which heavy modules it imported (as JSON)
RUN_AND_REPORT = f"""
import json, runpy, sys
script, argv = sys.argv[1], sys.argv[2:]
sys.argv = [script, *argv]
code = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as e:
    code = e.code or 0
print("MODULES=" + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
sys.exit(code)
"""


def _heavy_after(script: str, *argv: str):
    r = _run_py(RUN_AND_REPORT, script, *argv)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("MODULES=")]
    assert line, r.stdout + r.stderr
    return r, json.loads(line[-1][len("MODULES="):])


def test_expected_tools_exist():
    assert TOOLS == ["browse_dataset.py", "convert.py", "eval.py", "export.py", "predict.py", "train.py",
                     "wider_eval.py"]


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_help_does_not_import_torch(tool):
    r, heavy = _heavy_after(str(REPO / "tools" / tool), "--help")
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout
    assert heavy == [], f"tools/{tool} --help imported {heavy}"


def test_import_blazekit_is_light_and_registries_fill_on_first_use():
    r = _run_py("import sys, json, blazekit\n"
                "from blazekit import registry, config\n"
                "light = [m for m in ('torch', 'cv2', 'albumentations') if m in sys.modules]\n"
                "from blazekit.registry import DATASETS, BACKBONES, OPTIMIZERS\n"
                "ds = DATASETS.build({'type': 'ImageFolder', 'root': 'blazekit/data/demo/images'})\n"
                "print(json.dumps([light, len(ds) > 0, 'BlazeFaceFrontBackbone' in BACKBONES, "
                "'AdamW' in OPTIMIZERS.names(), 'torch' in sys.modules]))")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [[], True, True, True, True]


def test_public_names_load_lazily():
    import blazekit
    from blazekit import (BlazeFace, Trainer, build_dataloader, build_dataset, build_detector, config,  # noqa: F401
                          evaluate, registry)

    assert "BlazeFace" in blazekit.registry.DETECTORS and BlazeFace.__module__ == "blazekit.models.detector"
    assert callable(build_detector) and callable(evaluate) and Trainer.__name__ == "Trainer"
    assert blazekit.deploy.__name__ == "blazekit.deploy"  # submodules too
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        blazekit.nope  # noqa: B018


def test_wider_eval_runs_without_torch(shared, tmp_path):
    """The whole evaluation (read .mat, read predictions, AP, PR plot) on numpy/scipy/matplotlib only."""
    from blazekit.evaluation.wider import load_wider_gt, write_predictions

    gt_dir = shared("data", "widerface_mini", "eval_tools", "ground_truth")
    gt = load_wider_gt(gt_dir)
    rng = np.random.default_rng(0)
    preds = {k: np.concatenate([b + rng.normal(0, 1, b.shape), rng.random((len(b), 1))], 1)
             for k, b in zip(gt.keys, gt.boxes)}
    write_predictions(preds, tmp_path / "pred")
    r, heavy = _heavy_after(str(REPO / "tools" / "wider_eval.py"), "--pred", str(tmp_path / "pred"),
                            "--gt", str(gt_dir), "--out", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert heavy == [], f"tools/wider_eval.py imported {heavy}"
    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res) == {"easy", "medium", "hard"} and all(0.5 < v < 1.0 for v in res.values())
    # a user error on the light path is still one line and exit code 2, without importing torch for it
    r, heavy = _heavy_after(str(REPO / "tools" / "wider_eval.py"), "--pred", str(tmp_path), "--gt",
                            str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.startswith("error: WIDER ground truth incomplete") and heavy == []


def test_python_m_blazekit_help_and_dispatch(shared, tmp_path):
    r = _run_py(RUN_AND_REPORT.replace('runpy.run_path(script, run_name="__main__")',
                                       'runpy.run_module("blazekit", run_name="__main__", alter_sys=True)'),
                "blazekit", "--help")
    assert r.returncode == 0 and "wider-eval" in r.stdout and "MODULES=[]" in r.stdout
    r = _run_py(RUN_AND_REPORT.replace('runpy.run_path(script, run_name="__main__")',
                                       'runpy.run_module("blazekit", run_name="__main__", alter_sys=True)'),
                "blazekit", "eval", "--help")
    assert r.returncode == 0 and "usage: blazekit eval" in r.stdout and "--backend" in r.stdout
    assert "MODULES=[]" in r.stdout
    r = subprocess.run([sys.executable, "-m", "blazekit", "evl"], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "did you mean 'eval'" in r.stderr


def test_entry_point_function_runs_a_command(shared, tmp_path, capsys):
    """blazekit.cli.main is what setup.cfg's console script calls: same tool, same flags, same exit codes."""
    from blazekit.cli import COMMANDS, main
    from blazekit.evaluation.wider import load_wider_gt, write_predictions

    assert set(COMMANDS) == {"train", "eval", "predict", "export", "convert", "wider-eval", "browse"}
    gt_dir = shared("data", "widerface_mini", "eval_tools", "ground_truth")
    gt = load_wider_gt(gt_dir)
    write_predictions({k: np.concatenate([b, np.ones((len(b), 1))], 1) for k, b in zip(gt.keys, gt.boxes)},
                      tmp_path / "pred")
    with pytest.warns(UserWarning, match="prediction scores are equal"):  # all 1: the warning wider_eval.m lacks
        assert main(["wider-eval", "--pred", str(tmp_path / "pred"), "--gt", str(gt_dir),
                     "--out", str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())  # the ground truth itself: all but degenerate faces found
    assert set(res) == {"easy", "medium", "hard"} and all(v > 0.99 for v in res.values())
    assert f"Easy    AP: {res['easy']:.4f}" in capsys.readouterr().out
    assert main(["eval", str(REPO / "configs" / "quickstart.yml"), "--split", "test"]) == 2
    assert "no data.test section" in capsys.readouterr().err
    assert main([]) == 0 and "commands:" in capsys.readouterr().out
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["options.entry_points"]["console_scripts"].split() == ["blazekit", "=", "blazekit.cli:main"]


@pytest.mark.parametrize("tool", ["train", "eval", "predict", "export", "convert", "browse"])
def test_the_set_example_of_every_help_is_a_real_key(tool, capsys):
    """``--help`` said ``--set ... data.batch_size=16``, which every tool refused."""
    import re

    from blazekit import config

    mod = __import__(f"blazekit.commands.{tool}", fromlist=["main"])
    with pytest.raises(SystemExit):
        (mod.parse_args if hasattr(mod, "parse_args") else mod.main)(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    example = re.search(r"e\.g\. --set ((?:[\w.]+=\S+ ?)+)", help_text).group(1).split()
    assert example == ["train.epochs=10", "data.train.batch_size=16"]
    cfg = config.load(REPO / "configs" / "quickstart.yml", overrides=example)
    assert cfg["train"]["epochs"] == 10 and cfg["data"]["train"]["batch_size"] == 16
