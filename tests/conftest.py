"""Shared test fixtures: repository paths and the real datasets.

``coco128`` lives only in ``../shared/data`` (non-commercial image licences, never copied into
the repository); tests that need it skip when it is absent. ``bccd`` is bundled in
``datasets/bccd``.
"""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
BCCD_ROOT = REPO_ROOT / "datasets" / "bccd"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Tests run on 2 CPU cores: keep intra-op threads bounded so parallel workers do not thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    return BCCD_ROOT


@pytest.fixture(scope="session")
def coco128_root() -> Path:
    root = SHARED_DATA / "coco128"
    if not root.is_dir():
        pytest.skip("../shared/data/coco128 is not available")
    return root


@pytest.fixture
def caplog(caplog):
    """pytest's ``caplog`` that also sees the ``common`` loggers once ``setup_logger`` has made
    them stop propagating (as ``default_setup`` does in every training test)."""
    import logging

    logger = logging.getLogger("common")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
