"""Shared fixtures: the ../shared data folder (BLAZEKIT_SHARED), skipped with a reason if absent."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Tests run many tiny ops: one intra-op thread is 10-20x faster than two on a 2-core machine with anything
# else running (measured: overfit test 10 s vs 200 s). Set here so tool subprocesses inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SHARED = Path(os.environ.get("BLAZEKIT_SHARED", REPO.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path:
    """Path under the shared data folder, or skip the test saying what is missing and how to provide it."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not found: set BLAZEKIT_SHARED to the folder holding data/ and weights/ "
                    f"(default ../shared beside the checkout)")
    return p


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state, so a failure reproduces (weights come from Kaiming init)."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
