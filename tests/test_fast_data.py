"The decoded-once data path (appendix 92a) where a notebook can't show it: a GPU's device, fastai's other loaders, which loaders share decoded images"
import json, random, re, threading
from functools import partial
from pathlib import Path

import pytest
import torch
import fastai.callback.progress  # noqa: F401 (`Learner.no_bar`)
from fastai.callback.core import Callback, CancelFitException
from fastai.data.core import TfmdDL
from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.torch_core import TensorCategory, TensorImage, set_seed
from fastai.vision.augment import (AffineCoordTfm, FlipItem, RandomResizedCropGPU, Resize, aug_transforms, rotate_mat,
                                   zoom_mat)
from fastai.vision.core import imagenet_stats
from fastai.vision.models.xresnet import xresnet18
from fasttransform import Pipeline

import imagenette_course.fast_data as fast_data
from imagenette_course.data import CLASS_NAMES, get_dls
from imagenette_course.fast_data import (DECODED, MAX_DECODED, DecodeOnce, LeanPipeline, StoreDL, changes_each_epoch,
                                         clear_decoded, decoded_images, lean_step, pixel_key, store_dl, store_dls,
                                         store_for)
from imagenette_course.tta import at_training_scale
from conftest import fake_dataset
from test_data import write_noisy_csv


def test_decoded_images_go_to_the_loaders_device_not_the_new_models(fake_imagenette, monkeypatch):
    "On a GPU the loaders are on it while a new model is still on the CPU: the stored images must follow the loaders"
    seen = []
    def record_device(dls, device=None, prefetch=False):
        seen.append(device)
        raise CancelFitException  # nothing to train: only where the images would go
    monkeypatch.setattr(fast_data, 'store_dls', record_device)
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    dls.device = torch.device('meta')  # stands for the GPU: any device but the model's
    learn = Learner(dls, xresnet18(n_out=dls.c), cbs=DecodeOnce())
    learn.fit(1)
    assert seen == [torch.device('meta')]


def test_other_item_transforms_get_fastais_own_loader(fake_imagenette):
    "`learn.tta(item_tfms=...)` asks for other per-item transforms: the stored images can't honour them"
    fast = store_dls(get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0))
    assert type(fast.valid.new(shuffle=False)) is StoreDL
    other = fast.valid.new(after_item=[Resize(48), *fast.valid.after_item.fs[1:]])
    assert type(other) is TfmdDL and other.new(after_batch=[]).one_batch()[0].shape[-1] == 48  # before the GPU crop


def test_a_loader_with_before_batch_transforms_is_refused(fake_imagenette):
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0, before_batch=[lambda b: b])
    with pytest.raises(ValueError, match='before_batch'): store_dls(dls)


# --- decoded once per process: which loaders share a store ---


@pytest.fixture(autouse=True)
def no_decoded_sets():
    "Every test starts from an empty cache of decoded images, and leaves none behind"
    clear_decoded()
    yield
    clear_decoded()


def tiny_dls(path, **kwargs): return get_dls(**{'bs': 4, 'size': 32, 'path': path, 'num_workers': 0, **kwargs})


def raw_images(dl):
    "The images of `dl` in order, before the batch transforms, as its loader makes them"
    return torch.cat([x for x, _ in dl.new(shuffle=False, drop_last=False, after_batch=[])])


def test_the_store_holds_the_book_loaders_pictures(tmp_path):
    "On photos that aren't square, where `Resize` crops: validation's pictures as the book's, training's centre crops"
    dls = tiny_dls(fake_dataset(tmp_path/'wide', CLASS_NAMES, size=(60, 40)))
    fast = store_dls(dls)
    assert torch.equal(raw_images(fast.valid), raw_images(dls.valid))
    with dls.train.dataset.set_split_idx(1): centre_crops = raw_images(dls.train)
    assert torch.equal(raw_images(fast.train), centre_crops)


def test_decoded_images_that_would_crowd_the_gpu_are_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(fast_data, 'free_memory', lambda device: 2000)
    batch = torch.zeros(2, 3, 10, 10, dtype=torch.uint8)  # 300 bytes an image
    with pytest.raises(fast_data.NoRoom, match=r'over 50% of .* Fix: --data-path book'): store_for(4, batch, 'cuda')
    assert store_for(4, batch, 'cpu').shape == (4, 3, 10, 10)


def test_with_no_room_the_kept_sets_go_and_decoding_is_tried_once_more(fake_imagenette, monkeypatch):
    store_dls(tiny_dls(fake_imagenette))
    seen, real = [], fast_data.store_for
    def full_the_first_time(n, x, device):
        seen.append(len(DECODED))
        if len(seen) == 1: raise fast_data.NoRoom('no room')
        return real(n, x, device)
    monkeypatch.setattr(fast_data, 'store_for', full_the_first_time)
    other = store_dls(tiny_dls(fake_imagenette, presize=48))
    assert seen[:2] == [1, 0] and list(DECODED.values()) == [(other.train.images, other.valid.images)]


def no_room(n, x, device): raise fast_data.NoRoom("the decoded images would crowd the GPU. Fix: --data-path book")


def test_loaders_whose_images_do_not_fit_are_used_as_the_books_and_not_tried_again(fake_imagenette, monkeypatch, capsys):
    tries = []
    def counted(n, x, device): tries.append(n); no_room(n, x, device)
    monkeypatch.setattr(fast_data, 'store_for', counted)
    dls = tiny_dls(fake_imagenette)
    learn = Learner(dls, xresnet18(n_out=dls.c), cbs=DecodeOnce())
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
        learn.validate()  # sends before_fit too
    assert learn.dls is dls and len(tries) == 1
    assert capsys.readouterr().out.count("Fix: --data-path book. Going on with the book's loaders.") == 1


def test_the_room_on_a_gpu_counts_what_pytorch_holds_but_does_not_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda device=None: (2000, 4000))
    monkeypatch.setattr(torch.cuda, 'memory_reserved', lambda device=None: 1500)  # kept by the caching allocator
    monkeypatch.setattr(torch.cuda, 'memory_allocated', lambda device=None: 500)
    assert fast_data.free_memory('cuda') == 2000 + 1500 - 500


def test_every_batch_lands_in_its_place(fake_imagenette):
    "Decoded a few at a time, the images fill the one tensor in the loader's order"
    dls = tiny_dls(fake_imagenette)
    images, labels = fast_data.decode_once(dls.valid, bs=3)  # 20 images: 7 batches, the last of 2
    assert torch.equal(images, raw_images(dls.valid)) and len(labels) == len(dls.valid_ds)


def test_the_same_items_and_item_transforms_share_one_store(fake_imagenette):
    "Baseline and normalized differ only in batch transforms (and here batch size): one decode, the same tensors"
    a, b = store_dls(tiny_dls(fake_imagenette)), store_dls(tiny_dls(fake_imagenette, bs=8, normalize=False))
    assert a.train.images is b.train.images and a.valid.images is b.valid.images
    assert len(DECODED) == 1
    assert b.train.bs == 8 and len(b.train.after_batch.fs) == len(a.train.after_batch.fs) - 1  # still their own loaders
    # another training size with the same presize: the same pixels
    assert store_dls(tiny_dls(fake_imagenette, size=24, presize=a.train.images.shape[-1])).train.images is a.train.images


def test_other_items_or_item_transforms_get_their_own_store(fake_imagenette):
    a = store_dls(tiny_dls(fake_imagenette))
    other_presize = store_dls(tiny_dls(fake_imagenette, presize=36))
    assert other_presize.train.images is not a.train.images and other_presize.train.images.shape[-1] == 36
    fewer = store_dls(tiny_dls(fake_imagenette, n_train=3))
    assert fewer.train.images is not a.train.images and len(fewer.train.images) == len(a.train.images) - 10


def test_a_transforms_parameters_are_part_of_the_key_not_only_its_class(fake_imagenette):
    "`Resize(40)` that pads is not `Resize(40)` that crops: a key of class names alone would mix them up"
    dl = tiny_dls(fake_imagenette, presize=40).valid
    padded = dl.new(after_item=[Resize(40, method='pad'), ToTensor()])
    assert pixel_key(padded) != pixel_key(dl)
    assert pixel_key(dl.new(after_item=[Resize(40), ToTensor()])) == pixel_key(dl)  # a new but equal transform: shared
    assert decoded_images([padded])[0] is not decoded_images([dl])[0]


def test_after_an_epoch_the_random_state_of_item_transforms_does_not_change_the_key(fake_imagenette):
    dls = tiny_dls(fake_imagenette)
    before = pixel_key(dls.train)
    for _ in dls.train: pass  # `Resize` draws its crop position for every training item
    assert pixel_key(dls.train) == before


def test_the_device_is_part_of_the_key(fake_imagenette):
    dls = tiny_dls(fake_imagenette)
    on_meta, on_cpu = decoded_images(dls.loaders, torch.device('meta')), decoded_images(dls.loaders, 'cpu')
    assert on_meta[0].device.type == 'meta' and on_cpu[0].device.type == 'cpu' and len(DECODED) == 2


def test_noisy_labels_share_the_images_but_keep_their_own_labels(fake_imagenette):
    write_noisy_csv(fake_imagenette, {'n01440764_0.JPEG': 'n03888257', 'n01440764_1.JPEG': 'n03888257'})
    clean_book, noisy_book = tiny_dls(fake_imagenette), tiny_dls(fake_imagenette, noise=25)
    clean, noisy = store_dls(clean_book), store_dls(noisy_book)
    assert noisy.train.images is clean.train.images
    for book, ours in ((clean_book, clean), (noisy_book, noisy)):
        for ds, dl in ((book.train_ds, ours.train), (book.valid_ds, ours.valid)):
            assert torch.equal(dl.labels, torch.stack([y for _, y in ds]))  # the book loader's labels, item by item
    assert int((noisy.train.labels != clean.train.labels).sum()) == 2
    # and the other way round: noisy first, then clean from the cache
    clear_decoded()
    noisy, clean = store_dls(noisy_book), store_dls(clean_book)
    assert clean.train.images is noisy.train.images and int((noisy.train.labels != clean.train.labels).sum()) == 2
    # and the batches carry them, with the images
    x, y = next(iter(noisy.train.new(shuffle=False, after_batch=[])))
    assert torch.equal(y, noisy.train.labels[:len(y)]) and torch.equal(x, noisy.train.images[:len(x)])


def test_at_most_two_sets_are_kept_the_least_recently_used_dropped(fake_imagenette):
    assert MAX_DECODED == 2
    a, b, c = (tiny_dls(fake_imagenette, presize=p) for p in (32, 36, 40))
    first_a, first_b = store_dls(a).train.images, store_dls(b).train.images
    assert store_dls(a).train.images is first_a  # a used again: b is now the least recently used
    store_dls(c)
    assert len(DECODED) == 2
    assert store_dls(a).train.images is first_a      # kept (first in, but used last)
    assert store_dls(b).train.images is not first_b  # dropped: decoded again


def test_clear_decoded_forgets_every_set(fake_imagenette):
    dls = tiny_dls(fake_imagenette)
    first = store_dls(dls).train.images
    clear_decoded()
    assert len(DECODED) == 0 and store_dls(dls).train.images is not first


def test_store_dl_alone_uses_the_cache_too(fake_imagenette):
    one, other = store_dl(tiny_dls(fake_imagenette).valid), store_dl(tiny_dls(fake_imagenette, normalize=False).valid)
    assert one.images is other.images and len(DECODED) == 1


# --- batches made ahead, in a background thread (`prefetch=True`; off by default: lean batches were faster in turn) ---


class StopAfterBatches(Callback):
    "Cancel the fit after `n` training batches, as an interrupted run is; note the threads alive during each step"
    def __init__(self, n): self.n, self.threads = n, []
    def after_batch(self):
        self.threads.append({t.name for t in threading.enumerate()})
        if self.training and self.iter + 1 >= self.n: raise CancelFitException


def test_a_learner_trains_validates_and_runs_tta_on_batches_made_ahead(fake_imagenette):
    dls = store_dls(tiny_dls(fake_imagenette), prefetch=True)
    learn = Learner(dls, xresnet18(n_out=dls.c), metrics=accuracy)
    threads = threading.active_count()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)
        preds, targs = learn.tta(n=2)
        loss, acc = learn.validate()
    assert learn.dls.train.prefetch and len(targs) == len(dls.valid_ds) and 0 <= acc <= 1
    assert threading.active_count() == threads  # every epoch's thread has ended


def test_a_fit_cancelled_mid_epoch_leaves_no_thread_making_batches(fake_imagenette):
    dls = store_dls(tiny_dls(fake_imagenette), prefetch=True)
    stop = StopAfterBatches(1)
    learn = Learner(dls, xresnet18(n_out=dls.c), cbs=stop)
    threads = threading.active_count()
    with learn.no_bar(), learn.no_logging(): learn.fit(2)
    assert learn.train_iter == 1 and 'ahead' in stop.threads[0]  # a batch was being made while the first one trained
    assert threading.active_count() == threads


def test_an_error_in_a_batch_transform_is_raised_where_the_batches_are_used(fake_imagenette):
    made_in = []
    def broken(b):
        made_in.append(threading.current_thread().name)
        raise RuntimeError("this batch transform is broken")
    dl = store_dls(tiny_dls(fake_imagenette), prefetch=True).train.new(after_batch=[broken])
    with pytest.raises(RuntimeError, match="this batch transform is broken"): next(iter(dl))
    assert made_in == ['ahead']  # raised in the background thread, seen in this one


def test_a_shuffled_epoch_pairs_every_image_with_its_own_label_once(fake_imagenette):
    "Each training image of an epoch comes with its item's label, each item at most once, not in the items' order"
    dls = tiny_dls(fake_imagenette)
    fast = store_dls(dls)
    store, labels = fast.train.images, [int(y) for _, y in dls.train_ds]  # item i's picture and its label, the book's
    seen = []
    for x, y in fast.train.new(after_batch=[]):  # the pictures as gathered, before the random batch transforms
        for image, label in zip(x, y):
            item = [i for i in range(len(store)) if torch.equal(store[i], image)]
            assert len(item) == 1 and int(label) == labels[item[0]]
            seen.append(item[0])
    assert len(seen) == len(set(seen)) == len(store) // dls.bs * dls.bs  # drop_last: only the incomplete batch left out
    assert seen != sorted(seen)  # shuffled


def test_a_batch_of_either_path_has_the_same_types_shapes_and_range(fake_imagenette):
    "The training step can't tell the loaders apart: tensor types, dtypes, shapes, pixel range, and validation's values"
    dls = tiny_dls(fake_imagenette)
    fast = store_dls(dls)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in imagenet_stats)
    for book_dl, fast_dl in zip(dls.loaders, fast.loaders):
        book, ours = book_dl.one_batch(), fast_dl.one_batch()
        assert [(type(t), t.dtype, t.shape) for t in ours] == [(type(t), t.dtype, t.shape) for t in book]
        for x in (book[0], ours[0]):  # `Normalize` undone: pixels in [0, 1], spread over most of it, on either path
            pixels = x.as_subclass(torch.Tensor) * std + mean
            assert -1e-4 <= pixels.min() < 0.25 and 0.75 < pixels.max() <= 1 + 1e-4
    # validation draws nothing at random: the same batch, value for value
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fast.valid.one_batch(), dls.valid.one_batch()))


# --- the same learning problem as the book's loaders ---


def test_the_same_seed_gives_the_same_batches_whether_the_images_were_decoded_now_or_before(fake_imagenette):
    "Decoding draws from the global generators as it makes and runs its loader: a cache hit draws nothing"
    dls = tiny_dls(fake_imagenette)
    def first_batch():
        set_seed(0)
        return store_dls(dls).train.one_batch()
    decoded_now = first_batch()
    assert len(DECODED) == 1  # so the second is a cache hit
    assert all(torch.equal(a, b) for a, b in zip(decoded_now, first_batch()))


def test_decode_once_keeps_the_book_loaders_where_resize_would_crop_at_random(tmp_path, capsys):
    "Photos that aren't square: the book's `Resize` draws a crop place per epoch, a store can't; square: the store"
    def fitted(dls):
        learn = Learner(dls, xresnet18(n_out=dls.c), cbs=DecodeOnce())
        with learn.no_bar(), learn.no_logging():
            learn.fit(1)
            learn.validate()  # sends before_fit too
        return learn
    wide = tiny_dls(fake_dataset(tmp_path/'wide', CLASS_NAMES, size=(60, 40)))
    assert fitted(wide).dls is wide and len(DECODED) == 0
    out = capsys.readouterr().out
    assert out.count("is 60×40 px, not of the shape of `Resize`") == 1 and "Going on with the book's loaders" in out
    assert type(fitted(tiny_dls(fake_dataset(tmp_path/'square', CLASS_NAMES, size=40))).dls.train) is StoreDL


def test_only_random_item_transforms_that_change_a_picture_keep_the_book_loaders(fake_imagenette):
    dls = tiny_dls(fake_imagenette)
    assert [changes_each_epoch(dl) for dl in dls.loaders] == [None, None]  # square photos, square presize
    squish = dls.train.new(after_item=[Resize((32, 48), method='squish'), ToTensor()])
    assert changes_each_epoch(squish) is None  # the whole photo, stretched: nothing drawn
    crop = dls.train.new(after_item=[Resize((32, 48)), ToTensor()])
    assert 'not of the shape of `Resize` to 48×32' in changes_each_epoch(crop)
    assert changes_each_epoch(dls.valid.new(after_item=[Resize((32, 48)), ToTensor()])) is None  # the centre
    flips = dls.train.new(after_item=[*dls.train.after_item.fs, FlipItem()])
    assert 'FlipItem draws at random' in changes_each_epoch(flips)


def test_the_appendix_prints_its_timings_and_checks_none_of_them():
    "Under the tests the notebooks share the CPU cores: a speed is printed there, and claimed only by bench/ scripts"
    nb = json.loads((Path(__file__).resolve().parents[1]/'nbs'/'92a_fast_data.ipynb').read_text())
    code = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    timed = [s for s in code if 'perf_counter' in s]
    assert len(timed) >= 2 and all('print(' in s for s in timed)  # loaders' images/s, and batches made ahead
    assert not [s for s in timed if re.search(r'^\s*(assert|test_\w+\()', s, re.M)]


# --- the book's batch transforms, lean ---


BATCH_TFMS = {  # batch transforms as `get_dls` makes them, and with each part of `aug_transforms` changed in turn
    'book': lambda size: aug_transforms(size=size, min_scale=0.75),
    'no warp, no flip': lambda size: aug_transforms(size=size, min_scale=0.75, max_warp=0, do_flip=False),
    'always affine and lighting': lambda size: aug_transforms(size=size, min_scale=0.75, p_affine=1., p_lighting=1.),
    'no lighting': lambda size: aug_transforms(size=size, min_scale=0.75, max_lighting=0),
    'affine transforms resizing (min_scale 1)': lambda size: aug_transforms(size=size),
    'zooming out too': lambda size: aug_transforms(size=size, min_zoom=0.8, max_zoom=1.2, min_scale=0.75),
    "TTA's crop at the training scale": lambda size: [RandomResizedCropGPU(size, min_scale=0.75, ratio=(1, 1),
                                                                           valid_scale=0.9)],
}


def made_from_seed(pipeline, b, split, seed):
    "What `pipeline` makes of batch `b` as split `split` after seeding, and the generators' states after it"
    random.seed(seed); torch.manual_seed(seed)
    pipeline.split_idx = split
    return pipeline(b), torch.get_rng_state(), random.getstate()


@pytest.mark.parametrize('tfms', BATCH_TFMS)
@pytest.mark.parametrize('shape, size', [((131, 131), 64),  # crops shrunk over 2x, or not: both sides of the area rule
                                          ((99, 131), 48),   # not square
                                          ((40, 40), 32)])
def test_lean_transforms_make_fastais_pixels_from_the_same_draws(tfms, shape, size):
    b = TensorImage(torch.randint(0, 256, (8, 3, *shape), dtype=torch.uint8)), TensorCategory(torch.arange(8))
    fs = [IntToFloatTensor(), *BATCH_TFMS[tfms](size), Normalize.from_stats(*imagenet_stats, cuda=False)]
    assert all(lean_step(t) for t in fs)
    for split in (0, 1, None):
        for seed in range(4):
            (book, y), *book_states = made_from_seed(Pipeline(fs), b, split, seed)
            (lean, lean_y), *lean_states = made_from_seed(LeanPipeline(fs), b, split, seed)
            assert type(lean) is TensorImage and lean_y is b[1]
            assert torch.equal(lean, book) and book.shape[-2:] == (size, size)
            assert torch.equal(lean_states[0], book_states[0]) and lean_states[1] == book_states[1]


def test_matrix_makers_left_to_fastais_defaults_run_lean_with_those_defaults():
    "`partial(rotate_mat, p=1.)` or `partial(zoom_mat)`: the lean step gets every argument fastai's would use"
    fs = [IntToFloatTensor(), AffineCoordTfm(aff_fs=[partial(rotate_mat, p=1.), partial(zoom_mat)])]
    assert all(map(lean_step, fs))
    assert lean_step(AffineCoordTfm(aff_fs=partial(rotate_mat, 30))) is None  # fastai itself would take 30 for the batch
    b = TensorImage(torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)), TensorCategory(torch.arange(4))
    assert torch.equal(made_from_seed(LeanPipeline(fs), b, 0, 0)[0][0], made_from_seed(Pipeline(fs), b, 0, 0)[0][0])


def test_a_before_call_given_to_a_transform_runs_the_batch_through_fastais():
    "fastai's `RandTransform(before_call=...)` draws its own way, which the lean steps don't know"
    crop = RandomResizedCropGPU(32, min_scale=0.75)
    crop.before_call = lambda b, split_idx: RandomResizedCropGPU.before_call(crop, b, split_idx)
    assert lean_step(crop) is None and lean_step(RandomResizedCropGPU(32, min_scale=0.75)) is not None


def test_a_transform_the_lean_pipeline_does_not_know_runs_the_batch_through_fastais(monkeypatch):
    "`Dihedral` (`flip_vert=True`), say: every transform of that batch is fastai's, and the result is fastai's"
    fs = [IntToFloatTensor(), *aug_transforms(size=32, flip_vert=True, min_scale=0.75)]
    assert [lean_step(t) is None for t in fs] == [False, True, False, False]  # the affine transforms hold `Dihedral`
    monkeypatch.setattr(fast_data, '_int_to_float', lambda *a: pytest.fail("a lean step ran"))
    b = TensorImage(torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)), TensorCategory(torch.arange(4))
    assert torch.equal(made_from_seed(LeanPipeline(fs), b, 0, 0)[0][0], made_from_seed(Pipeline(fs), b, 0, 0)[0][0])


def test_stored_loaders_run_lean_unless_told_and_keep_it_in_new_loaders(fake_imagenette):
    dls = tiny_dls(fake_imagenette)
    fast, plain = store_dls(dls), store_dls(dls, lean=False)
    assert type(fast.train.after_batch) is LeanPipeline and type(plain.train.after_batch) is Pipeline
    assert type(fast.valid.new(shuffle=True).after_batch) is LeanPipeline
    assert type(plain.valid.new(shuffle=True).after_batch) is Pipeline
    # the same transform objects: what changes them (a size schedule, TTA's crop) changes the lean batches too
    assert list(fast.train.after_batch.fs) == list(dls.train.after_batch.fs)
    crop = next(t for t in fast.train.after_batch.fs if isinstance(t, RandomResizedCropGPU))
    crop.size = (16, 16)
    assert fast.train.one_batch()[0].shape[-2:] == (16, 16)
    at_scale = at_training_scale(fast.valid)
    assert type(at_scale) is StoreDL and type(at_scale.after_batch) is LeanPipeline
    assert all(map(lean_step, at_scale.after_batch.fs))


def test_decode_once_makes_batches_in_turn_unless_asked(fake_imagenette, monkeypatch):
    "Lean batch transforms were faster made in turn than ahead on the GPU (appendix 92a): full mode makes them in turn"
    seen = []
    def record(dls, device=None, prefetch=False):
        seen.append(prefetch)
        raise CancelFitException  # nothing to train: only how the batches would be made
    monkeypatch.setattr(fast_data, 'store_dls', record)
    dls = tiny_dls(fake_imagenette)
    for cb in (DecodeOnce(), DecodeOnce(prefetch=True)): Learner(dls, xresnet18(n_out=dls.c), cbs=cb).fit(1)
    assert seen == [False, True]
