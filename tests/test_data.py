import shutil, urllib.error
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import imagenette_course.data as data
from imagenette_course.data import (CLASS_NAMES, DataError, balanced_subset, check_imagenette, class_name,
                                    drop_unreadable, get_dls, get_mode, imagenette_items, resolve_data_path,
                                    run_config)
from conftest import fake_dataset, write_jpeg


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


def test_an_empty_path_is_refused_not_read_as_the_current_folder(monkeypatch):
    monkeypatch.setenv('IMAGENETTE_PATH', '')  # an empty variable is unset, as in the shell: the download is tried
    monkeypatch.setattr(data, 'untar_data', lambda url: Path.cwd()/'downloaded')
    assert resolve_data_path() == Path.cwd()/'downloaded'
    for empty in ('', '  '):
        with pytest.raises(DataError, match="path='.*': it is empty"): resolve_data_path(empty)


def test_offline_download_gives_one_clear_error(monkeypatch):
    monkeypatch.delenv('IMAGENETTE_PATH', raising=False)
    def offline(*args, **kwargs): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(data, 'untar_data', offline)
    with pytest.raises(DataError) as e: resolve_data_path()
    msg = str(e.value)
    assert 'untar_data failed' in msg and 'URLError' in msg and 'export IMAGENETTE_PATH=' in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_a_failed_download_ends_the_progress_bars_line_before_the_error(monkeypatch, capsys, tmp_path):
    "fastprogress's console bar writes '█\\r' and no line end: the error printed after it would share its line"
    monkeypatch.delenv('IMAGENETTE_PATH', raising=False)
    def offline(*args, **kwargs):
        print('█', end='\r')
        raise urllib.error.URLError('offline')
    monkeypatch.setattr(data, 'untar_data', offline)
    with pytest.raises(DataError): resolve_data_path()
    assert capsys.readouterr().out.endswith('\n')
    monkeypatch.setattr(data, 'untar_data', lambda url: tmp_path)
    resolve_data_path()
    assert capsys.readouterr().out == ''  # no blank line when the download works


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
    assert 'Fix: re-extract imagenette there' in msg  # the dataset is there, damaged


def test_a_split_folder_given_for_the_dataset_says_to_give_the_folder_above(fake_imagenette):
    with pytest.raises(DataError) as e: check_imagenette(fake_imagenette/'train')
    msg = str(e.value)
    assert f"{fake_imagenette} holds train/ and val/: did you mean that folder?" in msg
    assert msg.endswith(f"Fix: --data {fake_imagenette} (or IMAGENETTE_PATH={fake_imagenette})")
    assert 're-extract' not in msg  # the data is fine: only the path is wrong


def test_a_class_folder_given_for_the_dataset_says_to_give_the_folder_two_above(fake_imagenette):
    with pytest.raises(DataError) as e: check_imagenette(fake_imagenette/'train'/'n01440764')
    assert str(e.value).endswith(f"Fix: --data {fake_imagenette} (or IMAGENETTE_PATH={fake_imagenette})")


def test_a_class_folder_given_as_dot_says_to_give_the_folder_two_above(fake_imagenette, monkeypatch):
    "`--data .` from inside a class folder: the path has no name to go by until it is made absolute"
    monkeypatch.chdir(fake_imagenette/'train'/'n01440764')
    with pytest.raises(DataError) as e: check_imagenette('.')
    assert str(e.value).endswith(f"Fix: --data {fake_imagenette} (or IMAGENETTE_PATH={fake_imagenette})")


def test_split_folders_without_class_folders_say_what_they_hold_and_to_extract_again(tmp_path):
    "An extraction stopped before the class folders: its files are named, not called nothing, and extracting is the fix"
    (tmp_path/'x'/'train').mkdir(parents=True); (tmp_path/'x'/'val').mkdir()
    (tmp_path/'x'/'train'/'train.tar').write_bytes(b'')
    with pytest.raises(DataError) as e: check_imagenette(tmp_path/'x')
    msg = str(e.value)
    assert f"{tmp_path/'x'/'train'} holds none of imagenette's class folders: it holds 1 other file" in msg
    assert f"{tmp_path/'x'/'val'} holds none of imagenette's class folders: it holds nothing" in msg
    assert 'Fix: extract imagenette there again (its split folders hold no folder yet)' in msg


def test_another_datasets_folder_gets_a_line_per_split_and_the_path_as_fix(tmp_path):
    other = fake_dataset(tmp_path/'pets', ['cats', 'dogs'])
    with pytest.raises(DataError) as e: check_imagenette(other)
    msg = str(e.value)
    assert f"{other/'train'} holds none of imagenette's class folders: it holds cats/, dogs/" in msg
    assert msg.count('\n') == 3  # the heading, a line per split, the fix: not 20 missing and 4 unexpected folders
    assert 'Fix: point --data (or IMAGENETTE_PATH) at the imagenette folder' in msg
    assert 're-extract' not in msg  # nothing of imagenette there to repair


def test_the_folder_checks_take_a_path_as_text(tmp_path):
    "`check_imagenette` makes a `Path` of its argument; the helpers it calls, which are public, must too"
    (tmp_path/'train'/'cats').mkdir(parents=True); (tmp_path/'val').mkdir()
    assert not data.splits_without_folders(str(tmp_path))
    line, renames = data.foreign_split(str(tmp_path/'train'), data.dataset_info())
    assert 'holds cats/' in line and renames == {}


def test_class_folders_named_as_people_do_are_to_be_renamed_to_wordnet_ids(tmp_path):
    named = fake_dataset(tmp_path/'named', ['tench', 'English_springer'])
    with pytest.raises(DataError) as e: check_imagenette(named)
    msg = str(e.value)
    assert 'names its class folders as people do (English_springer, tench)' in msg
    assert msg.endswith('Fix: rename each class folder to its WordNet id: English_springer → n02102040, tench → n01440764')


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
    assert msg.count(str(fake)) == 1  # PIL's message names the file again: left out


def test_a_damaged_extraction_names_a_few_unreadable_files_and_counts_the_rest(tmp_path):
    bad = [tmp_path/f'{i}.JPEG' for i in range(12)]
    for f in bad: f.write_text('<html>404 not found</html>')
    with pytest.warns(UserWarning) as w: assert drop_unreadable(bad) == []
    lines = str(w[0].message).splitlines()
    named = [f"  {f} (UnidentifiedImageError: cannot identify image file)" for f in bad[:5]]
    assert lines[0].startswith('Skipping 12 unreadable') and lines[1:] == [*named, '  and 7 more']


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


def test_random_split_is_the_same_whatever_order_the_file_system_lists(fake_imagenette, monkeypatch):
    "The split is drawn from the file list, and file systems list folders in their own order"
    listed = data.get_image_files
    first = get_dls(bs=4, size=32, path=fake_imagenette, split='random', num_workers=0)
    monkeypatch.setattr(data, 'get_image_files', lambda *a, **kw: listed(*a, **kw)[::-1])
    again = get_dls(bs=4, size=32, path=fake_imagenette, split='random', num_workers=0)
    assert first.valid_ds.items == again.valid_ds.items and first.train_ds.items == again.train_ds.items


@pytest.mark.parametrize('kwargs, problem', [(dict(split='book'), 'unknown split'),
                                             (dict(split='random', n_train=3), 'needs both n_train and n_valid'),
                                             (dict(noise=3), 'noise must be one of'),
                                             (dict(noise=5, split='random'), 'official split')])
def test_bad_choices_stop_before_the_data_is_looked_for(tmp_path, kwargs, problem):
    "A folder that isn't there would be a `DataError`: the choice is named first, before any download or decoding"
    with pytest.raises(ValueError, match=problem): get_dls(bs=4, size=32, path=tmp_path/'nowhere', **kwargs)


def test_normalize_is_optional(fake_imagenette):
    tfms = lambda dls: [type(t).__name__ for t in dls.after_batch.fs]
    assert 'Normalize' in tfms(get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0))
    assert 'Normalize' not in tfms(get_dls(bs=4, size=32, path=fake_imagenette, normalize=False, num_workers=0))


# --- modes ---

def test_mode_switch(monkeypatch):
    monkeypatch.delenv('IMAGENETTE_MODE', raising=False)
    monkeypatch.delenv('IN_TEST', raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert get_mode() == 'quick'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert get_mode() == 'full'
    monkeypatch.setenv('IN_TEST', '1')  # nbdev-test's, on a GPU machine: still quick
    assert get_mode() == 'quick'
    monkeypatch.setenv('IMAGENETTE_MODE', 'quick')
    assert get_mode() == 'quick' and get_mode('full') == 'full'
    with pytest.raises(ValueError, match='unknown mode'): get_mode('fast')


def test_run_config_overrides_only_what_is_given():
    cfg = run_config('quick', epochs=7, size=None)
    assert (cfg.mode, cfg.epochs, cfg.size) == ('quick', 7, 64)
    full = run_config('full')
    assert (full.n_train, full.size, full.bs, full.epochs) == (None, 224, 64, 5)
    assert 'quick mode' in str(cfg) and '64 px' in str(cfg) and '7 epochs' in str(cfg)
    assert ', 1 epoch,' in str(run_config('quick', epochs=1))  # not "1 epochs"


@pytest.mark.parametrize('setting, problem', [
    (dict(lr=-1), 'lr=-1: it must be a number above 0'), (dict(lr=0), 'lr=0: it must'),
    (dict(lr='3e-3'), "lr='3e-3': it must"), (dict(lr=float('nan')), 'lr=nan: it must'), (dict(lr=True), 'lr=True'),
    (dict(seed=1.5), 'seed=1.5: it must be a whole number from 0 to 4294967295'), (dict(seed=-1), 'seed=-1: it must'),
    (dict(seed=2**32), 'seed=4294967296'), (dict(seed=True), 'seed=True')])
def test_a_run_config_refuses_a_bad_learning_rate_or_seed(setting, problem):
    "A negative rate trains by gradient ascent, silently; text fails deep inside fastai; the CLI's seeds are 0..2**32-1"
    with pytest.raises(ValueError, match=problem): run_config('quick', **setting)


def test_a_run_config_takes_the_learning_rates_and_seeds_it_should():
    cfg = run_config('quick', lr=1e-2, seed=0)
    assert (cfg.lr, cfg.seed, run_config('quick', lr=1, seed=2**32 - 1).seed) == (1e-2, 0, 2**32 - 1)


def test_a_random_splits_description_says_how_its_images_are_drawn():
    "It draws n_train + n_valid images a class from both folders, then splits them 80/20: not n_train and n_valid each"
    assert ', 30/class images, random split 80/20, 64 px,' in str(run_config('quick', split='random'))
    assert ', all images, random split 80/20, 224 px,' in str(run_config('full', split='random'))
    assert ', 20/class train, 10/class valid images, 64 px,' in str(run_config('quick'))


# --- problems found before the first batch ---

def test_a_class_whose_files_are_all_unreadable_stops_before_training(fake_imagenette):
    for f in (fake_imagenette/'val'/'n03888257').iterdir(): f.write_bytes(b'not a jpeg')
    with pytest.warns(UserWarning, match='unreadable'), pytest.raises(DataError) as e:
        get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    msg = str(e.value)
    assert 'no readable image left for' in msg and str(fake_imagenette/'val'/'n03888257') in msg and '(parachute)' in msg
    assert 'Fix:' in msg


def test_a_class_whose_files_are_all_unreadable_in_both_folders_stops_a_random_split(fake_imagenette):
    "The random split draws from train/ and val/ together: the class is named once, without a split folder"
    for f in fake_imagenette.glob('*/n03888257/*'): f.write_bytes(b'not a jpeg')
    with pytest.warns(UserWarning, match='unreadable'), pytest.raises(DataError) as e:
        get_dls(bs=4, size=32, path=fake_imagenette, split='random', num_workers=0)
    assert str(e.value).startswith("no readable image left for n03888257 (parachute): the files chosen there don't")


def test_a_readable_class_in_one_folder_is_enough_for_a_random_split(fake_imagenette):
    for f in (fake_imagenette/'val'/'n03888257').iterdir(): f.write_bytes(b'not a jpeg')
    with pytest.warns(UserWarning, match='unreadable'):
        dls = get_dls(bs=4, size=32, path=fake_imagenette, split='random', num_workers=0)
    assert 'parachute' in dls.vocab


def test_an_extra_class_folder_is_named_with_the_expected_classes(fake_imagenette):
    write_jpeg(fake_imagenette/'train'/'n99999999'/'x.JPEG')
    (fake_imagenette/'train'/'.ipynb_checkpoints').mkdir()  # a folder without images is no class: ignored
    with pytest.raises(DataError) as e: check_imagenette(fake_imagenette)
    msg = str(e.value)
    assert f"unexpected folder {fake_imagenette/'train'/'n99999999'}" in msg and 'n01440764' in msg and 'Fix:' in msg
    assert '.ipynb_checkpoints' not in msg


def test_image_files_outside_the_class_folders_are_named_before_training(fake_imagenette):
    "They have no label: `--split random` would crash on them in the middle of an epoch, the official split drop them"
    write_jpeg(fake_imagenette/'train'/'stray.JPEG')
    write_jpeg(fake_imagenette/'val'/'n01440764'/'extra'/'x.JPEG')
    with pytest.raises(DataError) as e: get_dls(bs=4, size=32, path=fake_imagenette, split='random', num_workers=0)
    msg = str(e.value)
    assert f"unexpected image file {fake_imagenette/'train'/'stray.JPEG'} outside the class folders" in msg
    assert f"unexpected folder {fake_imagenette/'val'/'n01440764'/'extra'} with images inside class folder" in msg


def test_a_batch_larger_than_the_training_set_stops_get_dls(fake_imagenette):
    "fastai drops the last partial batch: with none full, a fit would train nothing and record NaN losses"
    with pytest.raises(DataError, match=r'bs=64: nothing to train on, 40 training images make no full batch of 64'):
        get_dls(bs=64, size=32, path=fake_imagenette, num_workers=0)
    assert len(get_dls(bs=40, size=32, path=fake_imagenette, num_workers=0).train) == 1  # one full batch is enough


def test_a_presize_smaller_than_the_size_is_refused(fake_imagenette):
    with pytest.raises(ValueError, match='presize=16 is smaller than size=32'):
        get_dls(bs=4, size=32, presize=16, path=fake_imagenette, num_workers=0)


def test_a_run_config_refuses_a_presize_smaller_than_its_size_before_anything_trains():
    "Progressive resizing would train its small stage first, and fail only at the full size's `get_dls`"
    with pytest.raises(ValueError, match=r'presize=48 is smaller than size=64: .* Fix: presize=64 or more'):
        run_config('quick', presize=48)
    with pytest.raises(ValueError, match='presize=64 is smaller than size=128'):
        replace(run_config('quick', presize=64), size=128)
    cfg = run_config('quick', presize=64)  # as large as the size, or left to the default, is fine
    assert (cfg.presize, replace(cfg, size=32, presize=None).presize) == (64, None)


# --- presizing: the book's, on any copy ---

def presize_of(dls): return [t.size for t in dls.train.after_item.fs if type(t).__name__ == 'Resize'][0]


def test_every_copy_gets_the_books_presize_scaled_to_the_size(tmp_path):
    "Photos of Imagenette's usual size and a copy smaller than the training size alike: Resize(460) for 224 px"
    photos = fake_dataset(tmp_path/'photos', CLASS_NAMES, size=(500, 375))
    dls = get_dls(bs=4, size=224, path=photos, n_train=1, n_valid=1, num_workers=0)
    assert presize_of(dls) == (460, 460) and dls.one_batch()[0].shape[-2:] == (224, 224)
    small = fake_dataset(tmp_path/'small', CLASS_NAMES, size=(300, 200))  # capped at 200, training would have no room
    assert presize_of(get_dls(bs=4, size=224, path=small, n_train=1, n_valid=1, num_workers=0)) == (460, 460)
    assert presize_of(get_dls(bs=4, size=64, path=small, n_train=1, n_valid=1, num_workers=0)) == (131, 131)


# --- Imagewoof ---

def test_imagewoof_trains_with_its_own_classes_and_variable(fake_imagewoof, monkeypatch):
    monkeypatch.setenv('IMAGEWOOF_PATH', str(fake_imagewoof))
    dls = get_dls(bs=4, size=32, dataset='imagewoof', num_workers=0)
    assert 'Samoyed' in dls.vocab and len(dls.vocab) == 10 and len(dls.train_ds) == 40


def test_a_folder_of_the_other_dataset_says_which_it_looks_like(fake_imagewoof, fake_imagenette):
    with pytest.raises(DataError) as e: check_imagenette(fake_imagewoof)
    assert str(e.value).startswith(f"{fake_imagewoof} holds imagewoof, not imagenette") and e.value.args[0].count('\n') == 0
    # one line, not every class folder it lacks; the fix for the command line and for Python, each in its own terms
    assert "Fix: pass --dataset imagewoof on the command line (dataset='imagewoof' in Python)" in str(e.value)
    with pytest.raises(DataError) as e: check_imagenette(fake_imagenette, dataset='imagewoof')
    assert 'holds imagenette, not imagewoof' in str(e.value) and "--dataset imagenette" in str(e.value)
    with pytest.raises(ValueError, match='unknown dataset'): resolve_data_path(dataset='imagewolf')


def test_each_dataset_has_its_own_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv('IMAGENETTE_PATH', str(tmp_path))
    monkeypatch.delenv('IMAGEWOOF_PATH', raising=False)
    monkeypatch.setattr(data, 'untar_data', lambda url: (_ for _ in ()).throw(OSError('offline')))
    with pytest.raises(DataError, match='IMAGEWOOF_PATH is not set'): resolve_data_path(dataset='imagewoof')


# --- noisy labels ---

def write_noisy_csv(root, flip):
    "The dataset's noisy-label CSV: `flip` maps a training file's name to its label at 25% noise"
    rows = ['path,noisy_labels_0,noisy_labels_1,noisy_labels_5,noisy_labels_25,noisy_labels_50,is_valid']
    for f in sorted(root.rglob('*.JPEG')):
        rel, wnid = f.relative_to(root).as_posix(), f.parent.name
        rows.append(f"{rel},{wnid},{wnid},{wnid},{flip.get(f.name, wnid)},{wnid},{rel.startswith('val/')}")
    (root/'noisy_imagenette.csv').write_text('\n'.join(rows) + '\n')


def test_noisy_labels_change_training_labels_only(fake_imagenette):
    write_noisy_csv(fake_imagenette, {'n01440764_0.JPEG': 'n03888257', 'n01440764_1.JPEG': 'n03888257'})
    clean = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    noisy = get_dls(bs=4, size=32, path=fake_imagenette, noise=25, num_workers=0)
    labels = lambda dls, ds: {Path(f).name: dls.vocab[y] for f, (_, y) in zip(ds.items, ds)}
    train_clean, train_noisy = labels(clean, clean.train_ds), labels(noisy, noisy.train_ds)
    assert {n for n in train_clean if train_clean[n] != train_noisy[n]} == {'n01440764_0.JPEG', 'n01440764_1.JPEG'}
    assert train_noisy['n01440764_0.JPEG'] == 'parachute'
    assert labels(clean, clean.valid_ds) == labels(noisy, noisy.valid_ds)


def test_noise_needs_the_csv_and_the_official_split(fake_imagenette):
    with pytest.raises(DataError, match='noisy_imagenette.csv is missing'):
        get_dls(bs=4, size=32, path=fake_imagenette, noise=5, num_workers=0)
    write_noisy_csv(fake_imagenette, {})
    with pytest.raises(ValueError, match='official split'):
        get_dls(bs=4, size=32, path=fake_imagenette, noise=5, split='random', num_workers=0)
    with pytest.raises(ValueError, match='noise must be one of'):
        get_dls(bs=4, size=32, path=fake_imagenette, noise=10, num_workers=0)


def test_reading_a_missing_noisy_label_file_is_a_data_error(tmp_path):
    "As its docstring says, and not pandas' FileNotFoundError, for a caller that reads the file without `NoisyLabel`"
    with pytest.raises(DataError, match=r'noisy_imagenette.csv is missing: .* Fix: copy'):
        data.read_noisy_labels(tmp_path/'noisy_imagenette.csv', 'noisy_labels_5', data.dataset_info())


@pytest.mark.parametrize('noise', [5.0, True, '5', 10])
def test_a_noise_level_must_be_one_of_the_whole_numbers(noise):
    "5.0 and True (== 1) are `in` NOISE_LEVELS, and would fail later as a column the CSV lacks"
    with pytest.raises(ValueError, match=r'noise must be one of \(0, 1, 5, 25, 50\)'): data.check_noise(noise)


@pytest.mark.parametrize('content, problem', [('hello,world\n', 'has no column noisy_labels_5, path'),
                                              ('', "can't be read as a CSV"),
                                              ('path,noisy_labels_5\ntrain/n01440764/a.JPEG,n99999999\n',
                                               'labels images with n99999999'),
                                              ('path,noisy_labels_5\n,n01440764\n',
                                               'has 1 of its 1 rows without a path')])
def test_a_noisy_label_file_that_is_not_one_is_named_with_the_fix(fake_imagenette, content, problem):
    (fake_imagenette/'noisy_imagenette.csv').write_text(content)
    with pytest.raises(DataError, match=problem) as e:
        get_dls(bs=4, size=32, path=fake_imagenette, noise=5, num_workers=0)
    assert 'Fix: restore noisy_imagenette.csv' in str(e.value)


def test_a_noisy_label_file_missing_rows_is_refused_rather_than_leaving_labels_clean(fake_imagenette):
    write_noisy_csv(fake_imagenette, {})
    csv = fake_imagenette/'noisy_imagenette.csv'
    csv.write_text(''.join(csv.read_text().splitlines(keepends=True)[:20]))  # cut short: 19 of 60 images
    with pytest.raises(DataError, match='has no row for 21 of the training images') as e:
        get_dls(bs=4, size=32, path=fake_imagenette, noise=5, num_workers=0)
    assert 'Fix: restore noisy_imagenette.csv' in str(e.value)


def test_a_runs_two_sizes_do_not_replay_each_others_shuffles(fake_imagenette):
    "Progressive resizing's second `get_dls` would otherwise reseed to the first one's state and repeat its order"
    order = lambda bs, size: get_dls(bs, size, path=fake_imagenette, num_workers=0).train.get_idxs()
    assert order(8, 32) == order(8, 32) and order(16, 16) != order(8, 32)
