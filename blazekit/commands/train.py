"""Train a BlazeFace detector from a config.

    python tools/train.py configs/blazeface_front.yml [--set a.b=c ...] [--work-dir DIR]
        [--resume [CKPT|auto] | --overwrite] [--import MODULE] [--device cpu|cuda] [--seed N]

Multi-GPU / multi-process: ``torchrun --nproc_per_node N tools/train.py CONFIG`` (DDP; NCCL on GPUs,
gloo on CPU). A work dir holding a previous run's checkpoints is refused unless --resume (continue it) or
--overwrite (replace it); one in use by a running run (its train.lock) is refused.
Everything happens in :class:`blazekit.engine.trainer.Trainer`; this file only parses args.
Exit code 0 when training finished, 2 when refused (one ``error:`` line), 130 on Ctrl-C (one ``interrupted:``
line saying what ``last.pt`` holds and the command that resumes).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Optional, Sequence

from .common import check_run_flags


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    from ..config import add_common_args

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config (a path, or a shipped name such as blazeface_front)")
    add_common_args(p)
    p.add_argument("--work-dir", default=None, help="output folder (default: train.work_dir or work_dirs/<config>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT|auto",
                   help="resume from a checkpoint; 'auto' or no value: WORK_DIR/last.pt if it exists")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the previous run in the work dir (by default a work dir holding last.pt/best.pt is "
                        "refused: --resume continues it, --work-dir picks another folder)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    args = p.parse_args(argv)
    check_run_flags(p, args)
    return args


def resume_command(argv: Optional[Sequence[str]], prog: Optional[str]) -> str:
    """The command line that continues this run: the same arguments with ``--resume`` (its ``last.pt``) instead of
    ``--resume CKPT`` or ``--overwrite``."""
    given = list(sys.argv[1:] if argv is None else argv)
    kept, i = [], 0
    while i < len(given):
        if given[i] == "--resume":  # with its value, if one follows
            i += 2 if i + 1 < len(given) and not given[i + 1].startswith("-") else 1
            continue
        if not given[i].startswith("--resume=") and given[i] != "--overwrite":
            kept.append(given[i])
        i += 1
    return f"{prog or 'python tools/train.py'} {shlex.join(kept + ['--resume'])}"


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    args = parse_args(argv, prog)
    from ..engine import distributed as dist_utils
    from ..engine.cli import INTERRUPTED_EXIT, check_device, note_in_log, run_tool
    from ..engine.trainer import Trainer

    summary = {}

    def train(_argv=None) -> int:
        check_device(args.device)
        trainer = Trainer(args.config, work_dir=args.work_dir, device=args.device, resume=args.resume,
                          seed=args.seed, overrides=args.overrides, imports=args.imports, overwrite=args.overwrite)
        summary.update(trainer.fit(), rank=dist_utils.get_rank())  # the rank is gone after cleanup()
        return 0

    try:
        rc = run_tool(train)  # a bad config, missing dataset or incompatible checkpoint: one error line, exit 2
    except KeyboardInterrupt as exc:  # Ctrl-C: one line saying what is saved and how to go on, not a traceback
        if getattr(exc, "rank", 0) == 0:
            note = str(exc) or "stopped before training started; nothing was written"
            way = (f"resume with: {resume_command(argv, prog)}" if getattr(exc, "saved", False)
                   else "start again with the same command")
            print(f"interrupted: {note}; {way}", file=sys.stderr)
            note_in_log(f"interrupted: {note}; {way}")
        return INTERRUPTED_EXIT
    finally:
        dist_utils.cleanup()
    if rc:
        return rc
    if summary.get("rank") == 0 and summary.get("best_metric") is not None:
        print(f"best {summary['val_metric']} = {summary['best_metric']:.4f} (epoch {summary['best_epoch']}); "
              f"checkpoints in {summary['work_dir']}")
    return 0

