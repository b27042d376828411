import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenette_course.data import CLASS_NAMES, DATASETS

SHARED = Path(__file__).resolve().parents[2]/'shared'/'data'/'imagenette'


def write_jpeg(fn, seed=0, size=40):
    "A random JPEG at `fn`; `size` is the side of a square, or (width, height)"
    fn.parent.mkdir(parents=True, exist_ok=True)
    w, h = (size, size) if isinstance(size, int) else size
    pixels = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(fn, quality=90)
    return fn


def fake_dataset(root, classes, size=40):
    "A tiny dataset folder with `classes` (WordNet ids): 4 train and 2 val random JPEGs each"
    for i, wnid in enumerate(classes):
        for split, n in (('train', 4), ('val', 2)):
            for j in range(n): write_jpeg(root/split/wnid/f'{wnid}_{j}.JPEG', seed=100*i + 10*j + len(split), size=size)
    return root


@pytest.fixture
def fake_imagenette(tmp_path):
    "A tiny Imagenette-shaped folder: 10 classes, 4 train and 2 val random JPEGs each"
    return fake_dataset(tmp_path/'imagenette', CLASS_NAMES)


@pytest.fixture
def fake_imagewoof(tmp_path):
    "A tiny Imagewoof-shaped folder: its 10 dog breeds, 4 train and 2 val random JPEGs each"
    return fake_dataset(tmp_path/'imagewoof', DATASETS['imagewoof'].classes)


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


@pytest.fixture(autouse=True)
def checkpoints(tmp_path, monkeypatch):
    "Never write or resume test runs in the user's real checkpoint folder (subprocesses inherit the setting)"
    path = tmp_path/'checkpoints'
    monkeypatch.setenv('IMAGENETTE_CHECKPOINTS', str(path))
    return path


@pytest.fixture(autouse=True)
def errors_without_traceback(monkeypatch):
    "Error messages as a user sees them, whatever the developer's own IMAGENETTE_DEBUG"
    monkeypatch.delenv('IMAGENETTE_DEBUG', raising=False)
