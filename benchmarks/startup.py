"""Start-up time of every tool's ``--help`` (and of tools/wider_eval.py on a small folder) vs ``import torch``.

    python benchmarks/startup.py [--repeat 3]

Each command runs in a fresh interpreter; the median wall time of ``--repeat`` runs is printed as a ratio to
``python -c "import torch"`` measured the same way (target < 0.5: no tool imports torch before it needs it).
The wider_eval run uses the WIDER FACE mini ground truth (``$BLAZEKIT_SHARED/data/widerface_mini``, 153 images)
with its own boxes as predictions.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def wall(cmd, repeat: int) -> float:
    """Median seconds of ``cmd`` in a fresh process (it must exit with 0)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def small_prediction_folder(tmp: Path) -> tuple:
    """(pred dir, gt dir): the mini set's ground truth written as official prediction files."""
    import numpy as np

    from blazekit.evaluation.wider import load_wider_gt, write_predictions

    shared = Path(os.environ.get("BLAZEKIT_SHARED", REPO.parent / "shared"))
    gt_dir = shared / "data" / "widerface_mini" / "eval_tools" / "ground_truth"
    gt = load_wider_gt(gt_dir)
    preds = {k: np.concatenate([b, np.ones((len(b), 1))], 1) for k, b in zip(gt.keys, gt.boxes)}
    write_predictions(preds, tmp / "pred")
    return tmp / "pred", gt_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    py = sys.executable
    base = wall([py, "-c", "import torch"], args.repeat)
    print(f"python -c 'import torch': {base:.3f} s (= 1.00)")
    cmds = {f"tools/{t.name} --help": [py, str(t), "--help"] for t in sorted((REPO / "tools").glob("*.py"))}
    cmds["python -m blazekit --help"] = [py, "-m", "blazekit", "--help"]
    cmds["python -m blazekit eval --help"] = [py, "-m", "blazekit", "eval", "--help"]
    with tempfile.TemporaryDirectory() as tmp:
        pred, gt = small_prediction_folder(Path(tmp))
        cmds["tools/wider_eval.py (153 images)"] = [py, str(REPO / "tools" / "wider_eval.py"), "--pred", str(pred),
                                                     "--gt", str(gt), "--plot", str(Path(tmp) / "pr.png")]
        worst = 0.0
        for label, cmd in cmds.items():
            t = wall(cmd, args.repeat)
            worst = max(worst, t / base)
            print(f"{label:<40} {t:6.3f} s   {t / base:.2f}x import torch")
    print(f"worst ratio {worst:.2f} (target < 0.5)")


if __name__ == "__main__":
    main()
