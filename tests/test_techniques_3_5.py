"Chapters 3-5 (normalization, progressive resizing, TTA): behaviour the notebooks can't show, on tiny fake data"
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from fastai.callback.core import Callback
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.transforms import GrandparentSplitter, get_image_files, parent_label
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy
from fastai.metrics import accuracy
from fastai.vision.augment import Resize
from fastai.vision.data import ImageBlock
from fastai.vision.models.xresnet import xresnet18

from imagenette_course.data import NoFullBatch, get_dls, run_config
from imagenette_course.normalization import channel_stats
from imagenette_course.progressive import EpochTimer, ProgressiveResize, SMALL_STAGE, progressive, size_schedule
from imagenette_course.tta import (blend_tta, compare_tta, fastai_tta, flip_tta, learner_precision,
                                   model_on_data_device, predictions, tta)


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


def test_channel_stats_of_a_constant_image_is_a_std_of_0_not_nan(tmp_path):
    "Σx²/n − mean² cancels to just below 0 for a channel of one value: its square root would be NaN"
    fn = tmp_path/'flat.png'
    Image.fromarray(np.full((40, 40, 3), 1, dtype=np.uint8)).save(fn)
    mean, std = channel_stats([fn])
    np.testing.assert_allclose(mean, 1/255)
    assert (std == 0).all()


def test_channel_stats_of_no_files_says_so():
    with pytest.raises(ValueError, match='no image files to measure'): channel_stats([])


# --- progressive resizing ---

def test_size_schedule_edges():
    assert size_schedule(1, 32, 64) == [64]
    assert size_schedule(3, 8, 16) == [8, 16, 16]  # never a 0-px epoch from rounding to 16 px
    assert size_schedule(4, 32, 64, final_epochs=2) == [32, 48, 64, 64]
    sizes = size_schedule(10, 128, 224)
    assert sizes == sorted(sizes) and all(s % 16 == 0 for s in sizes)
    with pytest.raises(ValueError, match='start=64 is larger than end=32: the sizes ramp up'): size_schedule(4, 64, 32)


@pytest.mark.parametrize('args, kwargs, bad', [
    ((0, 64, 128), {}, 'epochs=0'), ((-3, 64, 128), {}, 'epochs=-3'), ((5, 0, 128), {}, 'start=0'),
    ((5, -32, 128), {}, 'start=-32'), ((5, 64.5, 128), {}, 'start=64.5'), ((5, 64, 128.0), {}, 'end=128.0'),
    ((4, 32, 64), dict(final_epochs=0), 'final_epochs=0'), ((5, 64, 128), dict(multiple=0), 'multiple=0')])
def test_size_schedule_refuses_counts_that_are_not_whole_numbers_of_at_least_1(args, kwargs, bad):
    "An empty schedule, a 0-px or fractional size, or a division by 0 would only fail, or not, once training"
    with pytest.raises(ValueError, match=rf'^{re.escape(bad)}: it must be a whole number, at least 1$'):
        size_schedule(*args, **kwargs)


@pytest.mark.parametrize('sizes, bad', [([], 'len(sizes)=0'), ([0], 'sizes[0]=0'), ([32, 20.5], 'sizes[1]=20.5'),
                                        ([16, -16], 'sizes[1]=-16')])
def test_progressive_resize_refuses_no_sizes_or_sizes_that_are_not_whole_numbers_of_at_least_1(sizes, bad):
    "Else an IndexError, torch's 'non-zero, positive output size' or fastai's TypeError, at the fit's first batch"
    message = f'{bad}: it must be a whole number, at least 1. Fix: sizes=size_schedule('
    with pytest.raises(ValueError, match=re.escape(message)): ProgressiveResize(sizes)


def test_progressive_resize_needs_random_resized_crop(fake_imagenette):
    dls = DataBlock((ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label, item_tfms=Resize(32),
                    splitter=GrandparentSplitter(valid_name='val')).dataloaders(fake_imagenette, bs=8, num_workers=0)
    with pytest.raises(ValueError, match='aug_transforms'):
        fit_quietly(small_learner(dls), 1, cbs=ProgressiveResize([16]))


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


def test_progressive_resize_given_to_the_learner_predicts_at_full_size_after_the_fit(dls):
    "`get_preds`, `validate` and `tta` send `before_fit` and `before_epoch` at epoch 0: they must not shrink the images"
    class Sizes(Callback):
        def before_batch(self): seen.append(self.x.shape[-1])
    learn, seen = small_learner(dls, cbs=[ProgressiveResize([16, 32]), Sizes()]), []
    fit_quietly(learn, 2)
    assert seen[0] == 16 and seen[-1] == 32  # the fit itself ramped up
    seen.clear()
    with learn.no_bar(): learn.get_preds(); learn.validate(); learn.tta(n=1)
    assert seen and set(seen) == {32}


def test_progressive_takes_another_loss_and_callbacks(fake_imagenette):
    "It hands another loss and callbacks to its `Learner`, as `progressive_schedule` does for chapter 8's recipe"
    cfg = run_config('quick', path=fake_imagenette, size=48, bs=4, epochs=1)
    timer = EpochTimer()
    learn = progressive(cfg, loss_func=LabelSmoothingCrossEntropy(), cbs=timer)
    assert isinstance(learn.loss_func, LabelSmoothingCrossEntropy) and timer in learn.cbs
    small_size, small_epochs = SMALL_STAGE['quick']
    assert [size for size, _ in timer.times] == [small_size] * small_epochs + [cfg.size] * (1 + cfg.epochs)
    assert learn.dls.bs == cfg.bs



def test_progressive_says_its_small_stage_doubles_the_batch_it_cant_fill(fake_imagenette):
    "bs 32 fills a batch of the 40 training images; the small stage's 64 doesn't, and the user never gave 64"
    cfg = run_config('quick', path=fake_imagenette, size=48, bs=32, epochs=1)
    with pytest.raises(NoFullBatch, match=re.escape("the small stage trains at twice the run's bs=32: bs=64: nothing")):
        progressive(cfg)

# --- TTA ---

def test_compare_tta_predicts_every_way_with_cudnns_autotuning_then_puts_it_back(dls, monkeypatch):
    "compare_tta turns cuDNN's autotuning on itself, every way alike: appendix 92's callback leaves `fastai_tta` alone"
    from imagenette_course.distributed import CudnnAutotune
    learn, flags = small_learner(dls, cbs=CudnnAutotune()), []
    learn.model.register_forward_hook(lambda *_: flags.append(torch.backends.cudnn.benchmark))
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    compare_tta(learn, n=1)
    # untimed warm-up, centre crop, fastai's (1 + plain), ours (1 + plain), flip (2), training-scale crop
    passes = 1 + 1 + 2 + 2 + 2 + 1
    assert len(flags) == passes * len(dls.valid.new(shuffle=False, drop_last=False)) and all(flags)
    assert torch.backends.cudnn.benchmark is False


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
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # without a GPU, torch warns that it disables an autocast made for one
            ctx = learner_precision(learner([MixedPrecision(amp_mode=amp)], 'cuda'))
        assert (ctx.device, ctx.fast_dtype) == ('cuda', dtype)
    plain = [learner([], 'cuda'), learner([MixedPrecision(amp_mode='bf16')], 'cpu')]  # float32, or a CPU's
    assert all(not isinstance(learner_precision(l), torch.autocast) for l in plain)


def test_blend_tta_extremes():
    aug = [torch.full((2, 3), 1.), torch.full((2, 3), 3.)]
    assert torch.allclose(blend_tta(aug, torch.ones(2, 3), beta=1.0), torch.ones(2, 3))
    assert torch.allclose(blend_tta(aug, torch.zeros(2, 3), beta=0.0), torch.full((2, 3), 2.))


def test_blend_tta_refuses_no_augmented_pass_and_a_beta_outside_0_to_1():
    "A beta outside [0, 1] extrapolates (beta=-1: weights -1 and 2); no pass was torch's 'non-empty TensorList' error"
    aug, plain = [torch.zeros(2, 3)], torch.ones(2, 3)
    for beta in (-1, 1.5, None, '0.2'):  # None is fastai's unblended passes: not a blend's weight
        with pytest.raises(ValueError, match=re.escape(f"beta={beta!r}: it is the plain pass's weight")):
            blend_tta(aug, plain, beta=beta)
    with pytest.raises(ValueError, match=re.escape('aug_preds=[]: no augmented pass to average. Fix:')):
        blend_tta([], plain)


def test_tta_ways_refuse_a_bad_n_or_beta_before_any_pass(dls):
    "Not torch's errors after the passes (or, in compare_tta, after the untimed warm-up and the first ways)"
    learn, passes = small_learner(dls), []
    learn.model.register_forward_hook(lambda *_: passes.append(1))
    ways = dict(tta=lambda **kw: tta(learn, **kw), compare_tta=lambda **kw: compare_tta(learn, **kw),
                fastai_tta=lambda **kw: fastai_tta(learn, **kw))
    for name, predict in ways.items():
        for n in (0, -1, 2.5):
            with pytest.raises(ValueError, match=re.escape(f'n={n}: it must be a whole number, at least 1')):
                predict(n=n)
        if name != 'fastai_tta':  # fastai's own `beta` (None: the two predictions apart) is its business
            with pytest.raises(ValueError, match=re.escape("beta=-1: it is the plain pass's weight")):
                predict(n=1, beta=-1)
    assert not passes


def test_our_passes_move_the_model_to_the_datas_device_before_predicting(dls):
    "As `learn.tta` does: only fastai's `before_fit` moves the model, so an unused learner's stays on the CPU"
    for predict in (lambda learn: tta(learn, n=1), flip_tta, lambda learn: compare_tta(learn, n=1)):
        learn, moved_to, unmoved_forwards = small_learner(dls), [], []
        to = learn.model.to
        # a CPU has no second device to move to: record the moves instead
        learn.model.to = lambda device: moved_to.append(torch.device(device)) or to(device)
        learn.model.register_forward_pre_hook(lambda *_: None if moved_to else unmoved_forwards.append(1))
        predict(learn)
        assert moved_to and set(moved_to) == {dls.device} and not unmoved_forwards


def test_tta_and_flip_return_probabilities_for_every_valid_image(dls):
    learn = small_learner(dls)
    plain, targs = predictions(model_on_data_device(learn), learn.dls.valid.new(shuffle=False))
    for preds, t in (tta(learn, n=2), flip_tta(learn)):
        assert preds.shape == plain.shape == (len(dls.valid_ds), dls.c) and torch.equal(t, targs)
        assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)


def test_tta_and_flip_predict_on_a_test_set_without_labels(dls, fake_imagenette):
    "A batch job's images have no labels: `learn.tta` gives targets None, and so do ours"
    learn = small_learner(dls)
    test_dl = dls.test_dl(sorted((fake_imagenette/'val').rglob('*.JPEG')))
    for preds, targs in (tta(learn, test_dl, n=1), flip_tta(learn, test_dl),
                         predictions(model_on_data_device(learn), test_dl)):
        assert preds.shape == (len(test_dl.dataset), dls.c) and targs is None


def test_from_scratch_tta_all_on_the_plain_pass_predicts_as_fastais(dls):
    "Our `tta` makes its own plain pass: with all the weight on it (`beta=1`) it gives `learn.tta`'s, targets in order"
    learn = small_learner(dls)
    preds, targs = tta(learn, n=1, beta=1)
    fastai_preds, fastai_targs = fastai_tta(learn, n=1, beta=1)
    assert torch.allclose(preds, fastai_preds, atol=1e-5) and torch.equal(targs, fastai_targs)


def test_augmented_passes_differ_from_plain(dls):
    model, dl = model_on_data_device(small_learner(dls)), dls.valid.new(shuffle=False)
    plain, _ = predictions(model, dl)
    assert torch.equal(plain, predictions(model, dl)[0])
    assert not torch.equal(plain, predictions(model, dl, augment=True)[0])


def test_at_training_scale_validates_on_the_centred_crop_of_the_training_crops_mean_side(dls):
    "The view chapter 5 compares with TTA: each validation image's centred square, `training_crop_side` of its side"
    from fastai.vision.augment import RandomResizedCropGPU
    from imagenette_course.tta import at_training_scale, training_crop_side
    side = training_crop_side(dls.valid)
    # get_dls's min_scale=0.75: the mean of sqrt(U(0.75, 1))
    assert side == pytest.approx(2 / 3 * (1 - 0.75**1.5) / 0.25)
    crop = next(t for t in at_training_scale(dls.valid).after_batch.fs if isinstance(t, RandomResizedCropGPU))
    crop.before_call(torch.zeros(2, 3, 100, 100), split_idx=1)
    assert crop.cp_size == (int(100 * side),) * 2 and crop.tl == ((100 - int(100 * side)) // 2,) * 2
    plain = next(t for t in dls.valid.after_batch.fs if isinstance(t, RandomResizedCropGPU))
    plain.before_call(torch.zeros(2, 3, 100, 100), split_idx=1)
    assert plain.cp_size == (100, 100)  # the loaders it was made from keep validating on the whole image


# --- normalization: comparing two models on the same images ---

def test_paired_accuracy_gap_is_the_closed_form_and_what_a_bootstrap_gives():
    from imagenette_course.normalization import paired_accuracy_gap
    g = torch.Generator().manual_seed(0)
    a = torch.rand(400, generator=g) < 0.6
    b = torch.where(torch.rand(400, generator=g) < 0.7, a, ~a)  # agrees with a on about 70% of the images
    gap, se = paired_accuracy_gap(a, b)
    n, only_a, only_b = len(a), int((a & ~b).sum()), int((b & ~a).sum())
    assert gap == pytest.approx((only_b - only_a) / n)
    assert se == pytest.approx((only_a + only_b - (only_b - only_a) ** 2 / n) ** .5 / n)
    idx = torch.randint(0, n, (4000, n), generator=g)  # resampled images, the same for both models
    boot = b[idx].float().mean(1) - a[idx].float().mean(1)
    assert se == pytest.approx(boot.std().item(), rel=0.1)
    # as if the two had been scored on different images: wider than the paired error, since they agree so often
    unpaired = (a.float().var(unbiased=False) / n + b.float().var(unbiased=False) / n).sqrt().item()
    assert se < unpaired


def test_paired_accuracy_gap_takes_lists_and_rejects_scores_of_different_images():
    from imagenette_course.normalization import paired_accuracy_gap
    assert paired_accuracy_gap([1, 0, 1, 1], [1, 1, 1, 1]) == pytest.approx((0.25, (0.25 * 0.75 / 4) ** .5))
    assert paired_accuracy_gap([True, False], [True, False]) == (0., 0.)
    for a, b in [([1, 0, 1], [1, 0]), ([1], [[1]]), ([], [])]:
        with pytest.raises(ValueError, match='same images'): paired_accuracy_gap(a, b)


def test_right_per_image_scores_every_validation_image_as_validate_does(dls):
    from imagenette_course.normalization import right_per_image
    learn = small_learner(dls)
    right = right_per_image(learn)
    assert right.dtype == torch.bool and len(right) == len(dls.valid_ds)
    with learn.no_bar(): assert right.float().mean().item() == pytest.approx(learn.validate()[1])


def test_training_crop_side_refuses_crops_that_are_not_square(dls):
    "Its mean of a square root holds for square crops only (aug_transforms'): fastai's default ratio is refused"
    from fastai.vision.augment import RandomResizedCropGPU
    from imagenette_course.tta import training_crop_side
    def crop_side(**kwargs): return training_crop_side(dls.valid.new(after_batch=[RandomResizedCropGPU(32, **kwargs)]))
    with pytest.raises(ValueError, match=r'square crops.*ratio=\(0\.75, 1\.33'): crop_side(min_scale=0.5)
    assert crop_side(min_scale=0.5, ratio=(1, 1)) == pytest.approx(2 / 3 * (1 - 0.5**1.5) / 0.5)


def test_paired_accuracy_gap_refuses_scores_that_are_not_right_or_wrong():
    "Scores or probabilities would give a 'gap' beyond ±1: [0.3, 5] against [1, 1] gave -1.65"
    from imagenette_course.normalization import paired_accuracy_gap
    for a in ([0.3, 5], [1, 2], [0.5, 1], [float('nan'), 1]):
        with pytest.raises(ValueError, match=r'a score of .*: each says whether a model is right.*preds.argmax\(1\)'):
            paired_accuracy_gap(a, [1, 1])
    with pytest.raises(ValueError, match='a score of -1'): paired_accuracy_gap([1, 1], [-1, 0])
    assert paired_accuracy_gap(torch.tensor([1., 0.]), torch.tensor([True, True])) == pytest.approx((.5, .5 / 2**.5))
