import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenette_course.data import CLASS_NAMES

SHARED = Path(__file__).resolve().parents[2]/'shared'/'data'/'imagenette'


def write_jpeg(fn, seed=0, size=40):
    fn.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(fn, quality=90)
    return fn


@pytest.fixture
def fake_imagenette(tmp_path):
    "A tiny Imagenette-shaped folder: 10 classes, 4 train and 2 val random JPEGs each"
    root = tmp_path/'imagenette'
    for i, wnid in enumerate(CLASS_NAMES):
        for split, n in (('train', 4), ('val', 2)):
            for j in range(n): write_jpeg(root/split/wnid/f'{wnid}_{j}.JPEG', seed=100*i + 10*j + len(split))
    return root


@pytest.fixture
def shared_data():
    "The real offline Imagenette copy beside the project (or $IMAGENETTE_PATH)"
    path = Path(os.environ.get('IMAGENETTE_PATH') or SHARED)
    if not (path/'train').is_dir(): pytest.skip(f"real Imagenette not found at {path}: set IMAGENETTE_PATH")
    return path


@pytest.fixture(autouse=True)
def isolated_ledger(tmp_path, monkeypatch):
    "Never write test runs into the user's real ledger"
    ledger = tmp_path/'ledger.jsonl'
    monkeypatch.setenv('IMAGENETTE_LEDGER', str(ledger))
    return ledger
