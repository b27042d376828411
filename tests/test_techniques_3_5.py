"Chapters 3-5 (normalization, progressive resizing, TTA): behaviour the notebooks can't show, on tiny fake data"
import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.transforms import GrandparentSplitter, get_image_files, parent_label
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy
from fastai.metrics import accuracy
from fastai.vision.augment import Resize
from fastai.vision.data import ImageBlock
from fastai.vision.models.xresnet import xresnet18

from imagenette_course.data import get_dls, run_config
from imagenette_course.normalization import channel_stats
from imagenette_course.progressive import EpochTimer, ProgressiveResize, SMALL_STAGE, progressive, size_schedule
from imagenette_course.tta import blend_tta, fastai_tta, flip_tta, learner_precision, predictions, tta


@pytest.fixture
def dls(fake_imagenette):
    return get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0)


def small_learner(dls, **kwargs):
    return Learner(dls, xresnet18(n_out=dls.c), loss_func=CrossEntropyLossFlat(), metrics=accuracy, **kwargs)


def fit_quietly(learn, epochs, **kwargs):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-3, **kwargs)


# --- normalization ---

def test_channel_stats_with_more_workers_than_files(fake_imagenette):
    files = sorted((fake_imagenette/'train').rglob('*.JPEG'))[:2]
    for a, b in zip(channel_stats(files, n_workers=5), channel_stats(files, n_workers=1)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# --- progressive resizing ---

def test_size_schedule_edges():
    assert size_schedule(1, 32, 64) == [64]
    assert size_schedule(3, 8, 16) == [8, 16, 16]  # never a 0-px epoch from rounding to 16 px
    assert size_schedule(4, 32, 64, final_epochs=2) == [32, 48, 64, 64]
    sizes = size_schedule(10, 128, 224)
    assert sizes == sorted(sizes) and all(s % 16 == 0 for s in sizes)


def test_progressive_resize_needs_random_resized_crop(fake_imagenette):
    dls = DataBlock((ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label, item_tfms=Resize(32),
                    splitter=GrandparentSplitter(valid_name='val')).dataloaders(fake_imagenette, bs=8, num_workers=0)
    with pytest.raises(ValueError, match='aug_transforms'): fit_quietly(small_learner(dls), 1, cbs=ProgressiveResize([16]))


class StopOnFirstBatch(Callback):
    "Ctrl-C, as pressed in the middle of an epoch"
    def after_batch(self): raise KeyboardInterrupt


def test_progressive_resize_restores_the_size_when_ctrl_c_stops_the_fit(dls):
    learn = small_learner(dls)
    with pytest.raises(KeyboardInterrupt):
        fit_quietly(learn, 2, cbs=[ProgressiveResize([16, 32]), StopOnFirstBatch()])
    assert learn.dls.valid.one_batch()[0].shape[-1] == 32  # validated at full size, not the interrupted epoch's 16 px


def test_progressive_resize_given_to_the_learner_restores_the_size_at_the_next_fit(dls):
    "Not detached after a Ctrl-C, it must not take the interrupted epoch's size for the full size"
    learn = small_learner(dls, cbs=ProgressiveResize([16, 32]))
    with pytest.raises(KeyboardInterrupt): fit_quietly(learn, 2, cbs=StopOnFirstBatch())
    fit_quietly(learn, 1)
    assert learn.dls.valid.one_batch()[0].shape[-1] == 32


def test_progressive_takes_another_loss_and_callbacks(fake_imagenette):
    "Chapter 8 calls `progressive(cfg, loss_func=LabelSmoothingCrossEntropy(), cbs=MixUp())`"
    cfg = run_config('quick', path=fake_imagenette, size=48, bs=4, epochs=1)
    timer = EpochTimer()
    learn = progressive(cfg, loss_func=LabelSmoothingCrossEntropy(), cbs=timer)
    assert isinstance(learn.loss_func, LabelSmoothingCrossEntropy) and timer in learn.cbs
    small_size, small_epochs = SMALL_STAGE['quick']
    assert [size for size, _ in timer.times] == [small_size] * small_epochs + [cfg.size] * (1 + cfg.epochs)
    assert learn.dls.bs == cfg.bs


# --- TTA ---

def test_compare_tta_predicts_every_way_with_cudnns_autotuning_then_puts_it_back(dls, monkeypatch):
    "On a GPU `learn.tta` runs as a fit, with appendix 92's autotuning on: the other ways must use the same algorithms"
    import imagenette_course.tta as tta_module
    flags, real = [], tta_module.predictions
    def spy(*args, **kwargs):
        flags.append(torch.backends.cudnn.benchmark)
        return real(*args, **kwargs)
    monkeypatch.setattr(tta_module, 'predictions', spy)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    tta_module.compare_tta(small_learner(dls), n=1)
    assert len(flags) >= 4 and all(flags) and torch.backends.cudnn.benchmark is False


def test_fastai_tta_draws_no_progress_bar_and_keeps_the_callback(dls, monkeypatch):
    import fastai.learner
    bars = []
    class CountingBar(fastai.learner.master_bar):
        def __init__(self, *args, **kwargs):
            bars.append(self)
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(fastai.learner, 'master_bar', CountingBar)
    learn = small_learner(dls)
    learn.tta(n=1)
    assert len(bars) == 1
    preds, targs = fastai_tta(learn, n=1)
    assert len(bars) == 1 and preds.shape == (len(dls.valid_ds), dls.c) and len(targs) == len(dls.valid_ds)
    assert hasattr(learn, 'progress')


def test_our_passes_predict_under_the_learners_own_mixed_precision():
    from types import SimpleNamespace
    from fastai.callback.fp16 import MixedPrecision
    def learner(cbs, device): return SimpleNamespace(cbs=cbs, dls=SimpleNamespace(device=torch.device(device)))
    for amp, dtype in (('bf16', torch.bfloat16), ('fp16', torch.float16)):
        with pytest.warns(UserWarning):  # this CPU has no CUDA: the autocast made for one is disabled here
            ctx = learner_precision(learner([MixedPrecision(amp_mode=amp)], 'cuda'))
        assert (ctx.device, ctx.fast_dtype) == ('cuda', dtype)
    plain = [learner([], 'cuda'), learner([MixedPrecision(amp_mode='bf16')], 'cpu')]  # float32, or a CPU's
    assert all(not isinstance(learner_precision(l), torch.autocast) for l in plain)


def test_blend_tta_extremes():
    aug = [torch.full((2, 3), 1.), torch.full((2, 3), 3.)]
    assert torch.allclose(blend_tta(aug, torch.ones(2, 3), beta=1.0), torch.ones(2, 3))
    assert torch.allclose(blend_tta(aug, torch.zeros(2, 3), beta=0.0), torch.full((2, 3), 2.))


def test_tta_and_flip_return_probabilities_for_every_valid_image(dls):
    learn = small_learner(dls)
    plain, targs = predictions(learn.model, learn.dls.valid.new(shuffle=False))
    for preds, t in (tta(learn, n=2), flip_tta(learn)):
        assert preds.shape == plain.shape == (len(dls.valid_ds), dls.c) and torch.equal(t, targs)
        assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)


def test_augmented_passes_differ_from_plain(dls):
    learn = small_learner(dls)
    dl = learn.dls.valid.new(shuffle=False)
    plain, _ = predictions(learn.model, dl)
    assert torch.equal(plain, predictions(learn.model, dl)[0])
    assert not torch.equal(plain, predictions(learn.model, dl, augment=True)[0])
