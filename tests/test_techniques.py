"Each technique against fastai's own version, and its behaviour, on tiny fake data"
import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy
from fastai.vision.models.xresnet import xresnet18
from PIL import Image
from torch import nn

from imagenette_course.data import get_dls
from imagenette_course.label_smoothing import LabelSmoothingCE, smooth_targets
from imagenette_course.mixup import MixUpFromScratch, compare_with_fastai, mix_inputs, mix_targets
from imagenette_course.normalization import channel_stats, export_roundtrip
from imagenette_course.progressive import EpochTimer, ProgressiveResize, seconds_per_epoch, size_schedule
from imagenette_course.training import xresnet_learner
from imagenette_course.tta import blend_tta, fastai_tta, flip_tta, predictions, tta, tta_matches_fastai


@pytest.fixture
def dls(fake_imagenette):
    return get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0)


def small_learner(dls, **kwargs):
    learn = xresnet_learner(dls, arch=xresnet18, **kwargs)
    learn.recorder.train_metrics = False
    return learn


def fit_quietly(learn, epochs, **kwargs):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-3, **kwargs)


# --- normalization ---

def test_streamed_channel_stats_equal_stacked_pixels(fake_imagenette):
    files = sorted((fake_imagenette/'train').rglob('*.JPEG'))[:7]
    px = np.concatenate([np.asarray(Image.open(f).convert('RGB'), dtype=np.float64).reshape(-1, 3) / 255 for f in files])
    for workers in (1, 3):
        mean, std = channel_stats(files, n_workers=workers)
        np.testing.assert_allclose(mean, px.mean(0), rtol=1e-10)
        np.testing.assert_allclose(std, px.std(0), rtol=1e-8)


def test_exported_learner_keeps_normalization_and_predictions(dls, tmp_path):
    learn = small_learner(dls)
    fit_quietly(learn, 1)
    preds, loaded_preds, loaded = export_roundtrip(learn, dls.valid_ds.items[:5], tmp_path/'m.pkl')
    assert torch.allclose(preds, loaded_preds)
    assert 'Normalize' in [type(t).__name__ for t in loaded.dls.after_batch.fs]


# --- progressive resizing ---

def test_size_schedule():
    assert size_schedule(3, 32, 64) == [32, 48, 64]
    sizes = size_schedule(10, 128, 224)
    assert sizes[0] == 128 and sizes[-1] == 224 and sizes == sorted(sizes) and all(s % 16 == 0 for s in sizes)
    assert size_schedule(1, 32, 64) == [64]


def test_progressive_resize_trains_each_epoch_at_its_size(dls):
    learn, timer = small_learner(dls), EpochTimer()
    learn.add_cb(timer)
    fit_quietly(learn, 3, cbs=ProgressiveResize([16, 24, 32]))
    assert [size for size, _ in timer.times] == [16, 24, 32]
    assert set(seconds_per_epoch(timer.times)) == {16, 24, 32}
    xb, _ = learn.dls.one_batch()
    assert xb.shape[-1] == 32  # the original size is back after the fit


def test_progressive_resize_needs_random_resized_crop(fake_imagenette):
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, Resize, parent_label, GrandparentSplitter, get_image_files
    dls = DataBlock((ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label, item_tfms=Resize(32),
                    splitter=GrandparentSplitter(valid_name='val')).dataloaders(fake_imagenette, bs=8, num_workers=0)
    with pytest.raises(ValueError, match='aug_transforms'): fit_quietly(small_learner(dls), 1, cbs=ProgressiveResize([16]))


# --- TTA ---

def test_tta_equals_fastai_on_the_same_batches(dls):
    learn = small_learner(dls)
    fit_quietly(learn, 1)
    for n, beta in [(4, 0.25), (2, 0.5), (3, 0.0)]:
        assert tta_matches_fastai(learn, n=n, beta=beta) < 1e-5


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


def test_blend_tta_weights():
    aug = [torch.full((2, 3), 1.), torch.full((2, 3), 3.)]
    assert torch.allclose(blend_tta(aug, torch.zeros(2, 3), beta=0.25), torch.full((2, 3), 1.5))
    assert torch.allclose(blend_tta(aug, torch.ones(2, 3), beta=1.0), torch.ones(2, 3))


def test_tta_and_flip_return_probabilities_for_every_valid_image(dls):
    learn = small_learner(dls)
    plain, targs = predictions(learn.model, learn.dls.valid.new(shuffled=False))
    for preds, t in (tta(learn, n=2), flip_tta(learn)):
        assert preds.shape == plain.shape == (len(dls.valid_ds), dls.c) and torch.equal(t, targs)
        assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)


def test_augmented_passes_differ_from_plain(dls):
    learn = small_learner(dls)
    dl = learn.dls.valid.new(shuffled=False)
    plain, _ = predictions(learn.model, dl)
    assert torch.equal(plain, predictions(learn.model, dl)[0])
    assert not torch.equal(plain, predictions(learn.model, dl, augment=True)[0])


# --- mixup ---

def test_mixup_equals_fastai_for_same_lambda_and_permutation(dls):
    learn = small_learner(dls)
    x, y = dls.one_batch()
    for seed in range(3):
        torch.manual_seed(seed)
        (x_ours, loss_ours), (x_fastai, loss_fastai), lam, perm = compare_with_fastai(learn, x, y)
        assert torch.allclose(x_ours, x_fastai, atol=1e-6) and torch.allclose(loss_ours, loss_fastai, atol=1e-6)
        assert (lam >= 0.5).all() and sorted(perm.tolist()) == list(range(len(y)))


def test_mixed_loss_is_the_loss_on_blended_targets():
    torch.manual_seed(0)
    pred, y, partner = torch.randn(6, 10), torch.randint(0, 10, (6,)), torch.randint(0, 10, (6,))
    lam = torch.rand(6)
    soft = mix_targets(y, lam, partner, 10)
    by_targets = -(soft * pred.log_softmax(-1)).sum(-1)
    by_losses = lam * nn.functional.cross_entropy(pred, y, reduction='none') + \
                (1 - lam) * nn.functional.cross_entropy(pred, partner, reduction='none')
    assert torch.allclose(by_targets, by_losses, atol=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(6))


def test_mix_inputs():
    x, perm = torch.arange(4.).view(4, 1, 1, 1), torch.tensor([1, 0, 3, 2])
    assert mix_inputs(x, torch.full((4,), 0.75), perm).flatten().tolist() == [0.25, 0.75, 2.25, 2.75]


def test_mixup_trains_but_never_mixes_validation(dls):
    learn = small_learner(dls, cbs=MixUpFromScratch(0.4))
    seen = []
    class Spy(Callback):  # sees the batches after mixup
        order = 99
        def before_batch(self): seen.append((self.training, self.x.clone()))
    fit_quietly(learn, 1, cbs=Spy())
    assert isinstance(learn.loss_func, CrossEntropyLossFlat)  # restored after training
    valid_x = [x for training, x in seen if not training]
    plain = [x for x, _ in learn.dls.valid]
    assert len(valid_x) == len(plain) and all(torch.allclose(a, b) for a, b in zip(valid_x, plain))


def test_mixup_refuses_a_loss_without_integer_targets(dls):
    learn = small_learner(dls, loss_func=nn.MSELoss(), cbs=MixUpFromScratch())
    with pytest.raises(ValueError, match='y_int'): fit_quietly(learn, 1)


# --- label smoothing ---

def test_smoothed_target_for_class_3():
    t = smooth_targets(torch.tensor([3]), 10, eps=0.1)[0]
    assert torch.allclose(t[3], torch.tensor(0.91)) and torch.allclose(t[torch.arange(10) != 3], torch.tensor(0.01))
    assert torch.allclose(t.sum(), torch.tensor(1.))


@pytest.mark.parametrize('shape', [(1, 2), (8, 10), (33, 7), (4, 1000)])
@pytest.mark.parametrize('eps', [0.0, 0.05, 0.1, 0.3, 1.0])
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_label_smoothing_equals_fastai_and_torch(shape, eps, reduction):
    torch.manual_seed(hash((shape, eps, reduction)) % 2**31)
    logits, y = torch.randn(*shape) * 4, torch.randint(0, shape[1], shape[:1])
    ours = LabelSmoothingCE(eps, reduction)(logits, y)
    fastai = LabelSmoothingCrossEntropy(eps, reduction=reduction)(logits, y)
    torch_ = nn.CrossEntropyLoss(label_smoothing=eps, reduction=reduction)(logits, y)
    assert ours.shape == fastai.shape == torch_.shape
    assert torch.allclose(ours, fastai, atol=1e-5, rtol=1e-5) and torch.allclose(ours, torch_, atol=1e-5, rtol=1e-5)


def test_label_smoothing_gradients_match_torch():
    logits = torch.randn(5, 10, requires_grad=True)
    y = torch.randint(0, 10, (5,))
    g1, = torch.autograd.grad(LabelSmoothingCE(0.1)(logits, y), logits)
    g2, = torch.autograd.grad(nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y), logits)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_label_smoothing_trains_with_mixup(dls):
    learn = small_learner(dls, loss_func=LabelSmoothingCE(0.1), cbs=MixUpFromScratch(0.4))
    fit_quietly(learn, 1)
    assert isinstance(learn.loss_func, LabelSmoothingCE) and learn.loss_func.reduction == 'mean'
    losses = [float(l) for l in learn.recorder.losses]
    assert len(losses) == len(learn.dls.train) and all(np.isfinite(losses))
    preds, targs = learn.get_preds()
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)  # activation: softmax
