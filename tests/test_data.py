import shutil, urllib.error
from collections import Counter
from pathlib import Path

import pytest
import torch

import imagenette_course.data as data
from imagenette_course.data import (CLASS_NAMES, DataError, balanced_subset, check_imagenette, class_name,
                                    drop_unreadable, get_dls, get_mode, imagenette_items, resolve_data_path,
                                    run_config)
from conftest import write_jpeg


# --- where the data comes from ---

def test_path_argument_wins_over_environment(tmp_path, monkeypatch):
    (tmp_path/'a').mkdir(); (tmp_path/'b').mkdir()
    monkeypatch.setenv('IMAGENETTE_PATH', str(tmp_path/'b'))
    assert resolve_data_path(tmp_path/'a') == tmp_path/'a'
    assert resolve_data_path() == tmp_path/'b'


def test_missing_path_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv('IMAGENETTE_PATH', raising=False)
    with pytest.raises(DataError, match='nowhere'): resolve_data_path(tmp_path/'nowhere')
    monkeypatch.setenv('IMAGENETTE_PATH', str(tmp_path/'gone'))
    with pytest.raises(DataError, match='IMAGENETTE_PATH is .*gone'): resolve_data_path()


def test_offline_download_gives_one_clear_error(monkeypatch):
    monkeypatch.delenv('IMAGENETTE_PATH', raising=False)
    def offline(*args, **kwargs): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(data, 'untar_data', offline)
    with pytest.raises(DataError) as e: resolve_data_path()
    msg = str(e.value)
    assert 'untar_data failed' in msg and 'URLError' in msg and 'export IMAGENETTE_PATH=' in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_download_used_when_nothing_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv('IMAGENETTE_PATH', raising=False)
    monkeypatch.setattr(data, 'untar_data', lambda url: tmp_path)
    assert resolve_data_path() == tmp_path


# --- checking the folder ---

def test_complete_folder_passes(fake_imagenette):
    assert check_imagenette(fake_imagenette) == fake_imagenette


def test_missing_split_is_named(fake_imagenette):
    shutil.rmtree(fake_imagenette/'val')
    with pytest.raises(DataError, match=r'missing split folder .*val'): check_imagenette(fake_imagenette)


def test_missing_and_empty_classes_are_named(fake_imagenette):
    shutil.rmtree(fake_imagenette/'train'/'n03028079')
    for f in (fake_imagenette/'val'/'n01440764').iterdir(): f.unlink()
    (fake_imagenette/'val'/'n01440764'/'notes.txt').write_text('not an image')
    with pytest.raises(DataError) as e: check_imagenette(fake_imagenette)
    msg = str(e.value)
    assert 'missing class folder' in msg and 'train/n03028079 (church)' in msg
    assert 'empty class folder' in msg and 'val/n01440764 (tench)' in msg
    assert 'Fix:' in msg


def test_unreadable_images_are_named_and_dropped(tmp_path):
    good = write_jpeg(tmp_path/'c'/'good.JPEG')
    truncated = tmp_path/'c'/'truncated.JPEG'
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes())//2])
    fake = tmp_path/'c'/'page.JPEG'
    fake.write_text('<html>404 not found</html>')
    with pytest.warns(UserWarning) as w: kept = drop_unreadable([good, truncated, fake])
    assert kept == [good]
    msg = str(w[0].message)
    assert 'Skipping 2 unreadable' in msg and str(truncated) in msg and str(fake) in msg and 'truncated' in msg


def test_corrupt_file_never_crashes_an_epoch(fake_imagenette):
    "A truncated JPEG and a non-image file inside class folders: training still runs a full epoch"
    from fastai.vision.all import Learner, xresnet18, CrossEntropyLossFlat
    victim = fake_imagenette/'train'/'n03425413'/'n03425413_0.JPEG'
    victim.write_bytes(victim.read_bytes()[:200])
    (fake_imagenette/'train'/'n03425413'/'README.txt').write_text('hello')
    with pytest.warns(UserWarning, match='n03425413_0.JPEG'):
        dls = get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0)
    assert victim not in dls.train_ds.items and len(dls.train_ds) == 39 and len(dls.valid_ds) == 20
    learn = Learner(dls, xresnet18(n_out=10), loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert len(learn.recorder.losses) == len(dls.train)


# --- names, subsets and splits ---

def test_class_names_are_human():
    assert len(CLASS_NAMES) == 10
    assert class_name('x/train/n03888257/n03888257_1.JPEG') == 'parachute'


def test_balanced_subset_is_balanced_and_seeded(fake_imagenette):
    from fastai.data.transforms import get_image_files
    files = get_image_files(fake_imagenette/'train')
    sub = balanced_subset(files, 3, seed=1)
    assert Counter(Path(f).parent.name for f in sub) == {w: 3 for w in CLASS_NAMES}
    assert sub == balanced_subset(list(reversed(files)), 3, seed=1)
    assert any(balanced_subset(files, 3, seed=s) != sub for s in range(2, 10))
    assert len(balanced_subset(files, 100)) == len(files)


def test_official_split_uses_val_folder(fake_imagenette):
    dls = get_dls(bs=4, size=32, path=fake_imagenette, n_train=2, n_valid=1, num_workers=0)
    assert len(dls.train_ds) == 20 and len(dls.valid_ds) == 10
    assert {Path(f).parent.parent.name for f in dls.valid_ds.items} == {'val'}
    assert Counter(dls.vocab[y] for _, y in dls.valid_ds) == {c: 1 for c in CLASS_NAMES.values()}
    assert sorted(dls.vocab) == sorted(CLASS_NAMES.values())


def test_random_split_is_seeded_80_20(fake_imagenette):
    a = get_dls(bs=4, size=32, path=fake_imagenette, split='random', seed=3, num_workers=0)
    b = get_dls(bs=4, size=32, path=fake_imagenette, split='random', seed=3, num_workers=0)
    c = get_dls(bs=4, size=32, path=fake_imagenette, split='random', seed=4, num_workers=0)
    assert len(a.valid_ds) == 12 and len(a.train_ds) == 48
    assert a.valid_ds.items == b.valid_ds.items != c.valid_ds.items
    with pytest.raises(ValueError, match='unknown split'): imagenette_items(fake_imagenette, split='book')


def test_normalize_is_optional(fake_imagenette):
    tfms = lambda dls: [type(t).__name__ for t in dls.after_batch.fs]
    assert 'Normalize' in tfms(get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0))
    assert 'Normalize' not in tfms(get_dls(bs=4, size=32, path=fake_imagenette, normalize=False, num_workers=0))


# --- modes ---

def test_mode_switch(monkeypatch):
    monkeypatch.delenv('IMAGENETTE_MODE', raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert get_mode() == 'quick'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert get_mode() == 'full'
    monkeypatch.setenv('IMAGENETTE_MODE', 'quick')
    assert get_mode() == 'quick' and get_mode('full') == 'full'
    with pytest.raises(ValueError, match='unknown mode'): get_mode('fast')


def test_run_config_overrides_only_what_is_given():
    cfg = run_config('quick', epochs=7, size=None)
    assert (cfg.mode, cfg.epochs, cfg.size) == ('quick', 7, 64)
    full = run_config('full')
    assert (full.n_train, full.size, full.bs, full.epochs) == (None, 224, 64, 5)
    assert 'quick mode' in str(cfg) and '64 px' in str(cfg) and '7 epochs' in str(cfg)
