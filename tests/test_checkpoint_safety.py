"""Checkpoints are data: a crafted pickle never runs on load, in the library or through any tool; atomic
writes leave no temp files behind and give last.pt / best.pt a normal file mode."""
import os
import subprocess
import sys

import pytest
import torch

from tests.engine.train_support import REPO, tiny_cfg

from blazekit.checkpoint import (CheckpointError, copy_checkpoint, load_checkpoint, remove_partial_writes,
                                 save_checkpoint)

SAFETY_MSG = "not a blazekit checkpoint or it holds Python objects that are not loaded for safety"


class Payload:
    """Unpickling this touches ``marker``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "meta": {"payload": Payload(marker)}}, path)
    return path, marker


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _assert_refused(out, path, marker):
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and SAFETY_MSG in errors[0], out.stderr[-2000:]
    assert not marker.exists()


def test_payload_really_runs_when_unpickled(tmp_path):
    """The test's bait works: a full unpickle does create the marker (so its absence below means something)."""
    path, marker = _malicious(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    path, marker = _malicious(tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"{path}: {SAFETY_MSG}"
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="junk.pt: not a blazekit checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_save_refuses_what_a_safe_load_would_refuse(tmp_path):
    import numpy as np

    with pytest.raises(TypeError, match=r"checkpoint.meta.rng is a ndarray"):
        save_checkpoint(tmp_path / "x.pt", {"meta": {"rng": np.zeros(3)}})
    with pytest.raises(TypeError, match="TorchVersion"):  # a str subclass: torch refuses it on a weights-only load
        save_checkpoint(tmp_path / "x.pt", {"meta": {"torch": torch.__version__}})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("how", ["resume", "init"])
def test_train_tool_refuses_malicious_checkpoint(tmp_path, how):
    path, marker = _malicious(tmp_path)
    args = ["--resume", str(path)] if how == "resume" else ["--set", f"model.init={path}"]
    out = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(tiny_cfg(tmp_path)),
                          "--work-dir", str(tmp_path / "w"), *args],
                         env=_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    _assert_refused(out, path, marker)


@pytest.mark.parametrize("tool", ["eval", "predict", "export"])
def test_other_tools_refuse_malicious_weights(tmp_path, tool):
    path, marker = _malicious(tmp_path)
    cfg = str(REPO / "configs" / "quickstart.yml")  # the bundled demo set: eval has data to read
    demo = str(REPO / "blazekit" / "data" / "demo" / "images" / "sample1.jpg")
    extra = {"eval": [], "predict": [demo, "--out", str(tmp_path / "p")],
             "export": ["--out", str(tmp_path / "m.onnx")]}[tool]
    out = subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), cfg, "--weights", str(path), *extra],
                         env=_env(), capture_output=True, text=True, timeout=120, cwd=REPO)
    _assert_refused(out, path, marker)


def test_hollance_pth_says_convert_first(tmp_path):
    sd = {"backbone1.0.weight": torch.zeros(24, 3, 5, 5), "backbone1.0.bias": torch.zeros(24),
          "classifier_8.weight": torch.zeros(2, 88, 1, 1), "regressor_16.bias": torch.zeros(96)}
    torch.save(sd, tmp_path / "blazeface.pth")
    with pytest.raises(CheckpointError, match=r"hollance .*python tools/convert.py .*blazeface.pth"):
        load_checkpoint(tmp_path / "blazeface.pth")


def test_atomic_writes_mode_and_leftover_cleanup(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"state_dict": {"w": torch.ones(2)}})
    copy_checkpoint(tmp_path / "last.pt", tmp_path / "best.pt")
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"last.pt": 0o666 & ~mask, "best.pt": 0o666 & ~mask}
    for name in (".last.pt.abc123.tmp", ".best.pt.x9.tmp", ".best.pt.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / "keep.tmp").write_bytes(b"not ours")
    assert remove_partial_writes(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "keep.tmp", "last.pt"]


def test_pack_sparse_round_trip_is_bit_exact_and_damage_is_one_error(tmp_path):
    import torch

    from blazekit.checkpoint import CheckpointError, load_checkpoint, pack_sparse

    g = torch.Generator().manual_seed(0)
    pruned = torch.randn(64, 32, generator=g) * (torch.rand(64, 32, generator=g) > 0.7)   # fp32 values, 70 % zeros
    halfy = (torch.randn(16, 16, generator=g).half().float()) * (torch.rand(16, 16, generator=g) > 0.5)
    state = {"pruned": pruned, "halfy": halfy, "dense": torch.randn(128, generator=g), "small": torch.zeros(3),
             "steps": torch.tensor([0, 0, 5])}
    packed = pack_sparse({"state_dict": state, "meta": {"k": 1}})
    assert set(packed["packed"]) == {"pruned", "halfy"}
    assert packed["packed"]["halfy"]["values"].dtype == torch.float16        # exact in fp16: stored as fp16
    assert packed["packed"]["pruned"]["values"].dtype == torch.float32
    torch.save(packed, tmp_path / "p.pt")
    back = load_checkpoint(tmp_path / "p.pt")
    assert back["meta"] == {"k": 1} and "packed" not in back
    for k, v in state.items():
        assert back["state_dict"][k].dtype == v.dtype and torch.equal(back["state_dict"][k], v), k
    packed["packed"]["pruned"]["mask"] = packed["packed"]["pruned"]["mask"][:3]   # truncated mask
    torch.save(packed, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="damaged packed weights"):
        load_checkpoint(tmp_path / "bad.pt")
