"""Shared fixtures: the ../shared data folder (BLAZEKIT_SHARED), skipped with a reason if absent."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parent.parent
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
