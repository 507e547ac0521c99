"""Run logging: a human-readable log, JSON-lines metrics, optional TensorBoard and a curve PNG.

One object, written only by rank 0, so the trainer calls ``log.scalars(...)`` without caring where the
numbers go. ``metrics.jsonl`` is append-only (one JSON object per line) so a resumed run continues the
same file and any tool (pandas, jq) can read a run that is still going.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

LOGGER_NAME = "blazekit.train"
#: validation metrics drawn in curves.png by default (by the last part of the key: coco/AP50, fddb/coco/AP, ...);
#: counts such as nme/faces and pycocotools' -1 "undefined" would squash the 0..1 curves into a flat line
HEADLINE_METRICS = ("AP", "AP50", "AP75", "AR", "easy", "medium", "hard", "nme")


class TqdmStreamHandler(logging.StreamHandler):
    """Console lines through ``tqdm.write``: a running progress bar is cleared and redrawn below the line
    instead of the two being glued together on one line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must never raise
            self.handleError(record)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


class RunLogger:
    """Writes ``train.log``, ``metrics.jsonl``, TensorBoard events (if installed) and ``curves.png``."""

    def __init__(self, work_dir: Path, enabled: bool = True, tensorboard: bool = True, console: bool = True) -> None:
        self.work_dir = Path(work_dir)
        self.enabled = enabled
        self.log = get_logger()
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        for h in list(self.log.handlers):  # a second Trainer in the same process gets fresh files
            self.log.removeHandler(h)
            h.close()
        self._tb = None
        if not enabled:
            self.log.addHandler(logging.NullHandler())
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        fh = logging.FileHandler(self.work_dir / "train.log", encoding="utf-8")
        fh.setFormatter(fmt)
        self.log.addHandler(fh)
        if console:
            ch = TqdmStreamHandler(sys.stdout)
            ch.setFormatter(logging.Formatter("%(message)s"))
            self.log.addHandler(ch)
        self.metrics_path = self.work_dir / "metrics.jsonl"
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

                self._tb = SummaryWriter(str(self.work_dir / "tensorboard"))
            except Exception:  # not installed: the JSONL and PNG carry the same numbers
                self._tb = None

    def info(self, msg: str, *args: Any) -> None:
        self.log.info(msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.log.warning(msg, *args)

    def scalars(self, kind: str, step: int, values: Mapping[str, Any], **extra: Any) -> None:
        """Append one record ``{"type": kind, "step": step, **extra, **values}`` and mirror it to TensorBoard."""
        if not self.enabled:
            return
        rec: Dict[str, Any] = {"type": kind, "step": int(step)}
        rec.update(extra)
        rec.update({k: _jsonable(v) for k, v in values.items()})
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self._tb.add_scalar(f"{kind}/{k}", float(v), step)

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (left by a killed run) so a resumed run's file has no duplicates."""
        if not self.enabled or not self.metrics_path.exists():
            return
        keep = [ln for ln in read_metrics(self.metrics_path) if ln.get("step", 0) <= step]
        with open(self.metrics_path, "w", encoding="utf-8") as f:
            for rec in keep:
                f.write(json.dumps(rec) + "\n")

    def plot(self, metric_keys: Optional[List[str]] = None) -> Optional[Path]:
        """Write ``curves.png`` from metrics.jsonl: losses and LR per iteration, validation per epoch."""
        if not self.enabled or not self.metrics_path.exists():
            return None
        return plot_curves(self.metrics_path, self.work_dir / "curves.png", metric_keys)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        for h in list(self.log.handlers):
            self.log.removeHandler(h)
            h.close()


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(path: Path) -> List[Dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (killed mid-write) is ignored."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def headline_metric_keys(val_records: List[Mapping[str, Any]]) -> List[str]:
    """The validation keys worth a curve: AP/AR/WIDER/NME-like keys with at least one defined (>= 0) value."""
    keys = {k for r in val_records for k, v in r.items()
            if k.rsplit("/", 1)[-1] in HEADLINE_METRICS and isinstance(v, (int, float)) and v >= 0}
    return sorted(keys)


def plot_curves(metrics_path: Path, out_path: Path, metric_keys: Optional[List[str]] = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(metrics_path)
    train = [r for r in recs if r.get("type") == "train"]
    val = [r for r in recs if r.get("type") == "val"]
    loss_keys = sorted({k for r in train for k in r if k.startswith("loss") and isinstance(r[k], (int, float))})
    if metric_keys is None:
        metric_keys = headline_metric_keys(val)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for k in loss_keys:
        axes[0].plot([r["step"] for r in train if k in r], [r[k] for r in train if k in r], label=k)
    axes[0].set_title("training loss")
    axes[0].set_xlabel("iteration")
    axes[1].plot([r["step"] for r in train if "lr" in r], [r["lr"] for r in train if "lr" in r])
    axes[1].set_title("learning rate")
    axes[1].set_xlabel("iteration")
    for k in metric_keys:
        pts = [(r.get("epoch", 0), r[k]) for r in val if isinstance(r.get(k), (int, float))]
        if pts:
            axes[2].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
    axes[2].set_title("validation")
    axes[2].set_xlabel("epoch")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_path)
    return out_path


def scalar_floats(losses: Mapping[str, Any]) -> Dict[str, float]:
    """The scalar entries as floats; the tensors are read in one transfer (one device sync, not one each)."""
    tensors = {k: v for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1}
    read = dict(zip(tensors, torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist())
                ) if tensors else {}
    out = {}
    for k, v in losses.items():
        if k in read:
            out[k] = read[k]
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def fmt_metrics(d: Mapping[str, Any]) -> str:
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())
