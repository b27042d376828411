"Chapters 6-8 (mixup, label smoothing, the combined recipe): behaviour the notebooks can't show, on tiny fake data"
import re

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback, CancelEpochException, CancelFitException, CancelTrainException
from fastai.callback.mixup import MixUp
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy
from fastai.metrics import accuracy
from fastai.vision.models.xresnet import xresnet18

from imagenette_course.data import get_dls, run_config
from imagenette_course.label_smoothing import LabelSmoothingCE, label_smoothing, smooth_targets
from imagenette_course.mixup import MIXUP_LONG_RUN, MixUpFromScratch, mix_inputs, mixup
from imagenette_course.progressive import EpochTimer, progressive_epochs
from imagenette_course.sota import MIXUP_MIN_EPOCHS, SOTA_SETTINGS, sota


@pytest.fixture
def dls(fake_imagenette):
    return get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0)


@pytest.fixture
def tiny_cfg(fake_imagenette):
    return run_config('quick', epochs=1, size=32, bs=8, n_train=4, n_valid=2, path=str(fake_imagenette))


def small_learner(dls, loss_func=None, **kwargs):
    return Learner(dls, xresnet18(n_out=dls.c), loss_func=loss_func or CrossEntropyLossFlat(), metrics=accuracy,
                   **kwargs)


def no_data(module, monkeypatch):
    "Make `module`'s `get_dls` fail the test: a check must refuse its argument before any data are loaded"
    monkeypatch.setattr(f'imagenette_course.{module}.get_dls', lambda *a, **k: pytest.fail('data loaded first'))


def fit_quietly(learn, epochs, **kwargs):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-3, **kwargs)


class Spy(Callback):
    "Copies of the batches the model sees (after mixup), with whether they were training batches"
    order = 99
    def __init__(self): self.seen = []
    def before_batch(self): self.seen.append((self.training, self.x.clone()))


# --- mixup ---

def test_mixup_trains_but_never_mixes_validation(dls):
    "The model trains on each batch blended with its permutation as `mix_inputs` says, and validates on plain batches"
    class Plain(Spy): order = -1  # sees each batch before mixup (order 0) replaces it
    class Mixed(Spy):
        "Also the λ and permutation mixup drew for each training batch"
        def before_batch(self):
            super().before_batch()
            if self.training: self.seen[-1] += (self.mix_up_from_scratch.lam, self.mix_up_from_scratch.perm)
    learn, unmixed, spy = small_learner(dls, cbs=MixUpFromScratch(0.4)), Plain(), Mixed()
    fit_quietly(learn, 1, cbs=[unmixed, spy])
    assert isinstance(learn.loss_func, CrossEntropyLossFlat)  # restored after training
    trained = [(before, *after) for (training, before), (_, *after) in zip(unmixed.seen, spy.seen) if training]
    assert len(trained) == len(learn.dls.train)
    for before, seen, lam, perm in trained: assert torch.allclose(seen, mix_inputs(before, lam, perm))
    assert not all(torch.allclose(seen, before) for before, seen, *_ in trained)  # mixed, not the plain batches
    valid_x = [x for training, x, *_ in spy.seen if not training]
    plain = [x for x, _ in learn.dls.valid]
    assert len(valid_x) == len(plain) and all(torch.allclose(a, b) for a, b in zip(valid_x, plain))


@pytest.mark.parametrize('cancel', [CancelTrainException, CancelEpochException, CancelFitException])
def test_mixup_restores_the_loss_when_training_is_cancelled(dls, cancel):
    "Each epoch cancelled after one training batch: the next epoch's before_train, and the end, see the plain loss"
    class CancelAfterOneBatch(Callback):
        def after_batch(self):
            if self.training: raise cancel()
    learn = small_learner(dls, cbs=MixUpFromScratch(0.4))
    fit_quietly(learn, 2, cbs=CancelAfterOneBatch())
    assert isinstance(learn.loss_func, CrossEntropyLossFlat)


@pytest.mark.parametrize('inner', [False, True])
def test_mixup_interrupted_by_ctrl_c_gives_plain_predictions_and_trains_again(dls, inner):
    """fastai sends no event when Ctrl-C stops a fit: the next use of the `Learner` must not see the mixed loss, even
    `get_preds(inner=True)`, as callbacks call it, which sends no before_fit"""
    class CtrlC(Callback):
        def after_batch(self):
            if self.training: raise KeyboardInterrupt
    learn = small_learner(dls, cbs=MixUpFromScratch(0.4))
    with pytest.raises(KeyboardInterrupt): fit_quietly(learn, 1, cbs=CtrlC())
    with learn.no_bar(): probs, _ = learn.get_preds(inner=inner)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)))  # softmaxed by the plain loss, not raw activations
    assert isinstance(learn.loss_func, CrossEntropyLossFlat)
    fit_quietly(learn, 1)


def test_mixed_loss_reduces_as_the_plain_loss_does(dls):
    learn = small_learner(dls, loss_func=CrossEntropyLossFlat(reduction='sum'))
    mix = MixUpFromScratch(0.4)
    mix.learn = learn
    x, y = dls.one_batch()
    learn.training, learn.xb, learn.yb = True, (x,), (y,)
    mix.before_train(); mix.before_batch()
    pred = learn.model(learn.xb[0])
    per_item_loss = CrossEntropyLossFlat(reduction='none')
    per_item = mix.lam * per_item_loss(pred, y) + (1 - mix.lam) * per_item_loss(pred, y[mix.perm])
    assert torch.allclose(learn.loss_func(pred, y), per_item.sum(), atol=1e-4)
    mix.after_train()
    assert learn.loss_func.reduction == 'sum'


def test_mixup_recipe_trains_with_fastais_callback(tiny_cfg):
    learn = mixup(tiny_cfg, loss_func=LabelSmoothingCrossEntropy())
    assert any(isinstance(cb, MixUp) for cb in learn.cbs)
    assert isinstance(learn.loss_func, LabelSmoothingCrossEntropy)  # MixUp put the given loss back
    assert len(learn.recorder.values) == 1 and learn.dls.one_batch()[0].shape[-1] == 32


def test_mixup_recipe_refuses_a_loss_without_y_int_before_loading_data(tiny_cfg, monkeypatch):
    "PyTorch's CrossEntropyLoss has no `y_int`: fastai's MixUp would blend the class indices, failing in training"
    no_data('mixup', monkeypatch)
    with pytest.raises(ValueError, match=r'loss_func=CrossEntropyLoss\(\): .*`y_int = True`'):
        mixup(tiny_cfg, loss_func=torch.nn.CrossEntropyLoss())


@pytest.mark.parametrize('alpha', [0, -1, '0.4', None, True, float('nan'), float('inf')])
def test_mixup_refuses_an_alpha_beta_cant_take(alpha):
    with pytest.raises(ValueError, match=re.escape(f'alpha={alpha!r}: λ ~ Beta(alpha, alpha) needs a finite')):
        MixUpFromScratch(alpha)


@pytest.mark.parametrize('alpha', [1, np.float32(0.2), 0.4])
def test_mixup_takes_any_positive_real_alpha(alpha):
    lam = MixUpFromScratch(alpha).distrib.sample((100,))
    assert lam.dtype == torch.float and ((lam >= 0) & (lam <= 1)).all()


def test_mixups_long_run_is_long_enough_for_the_combined_recipe_to_use_mixup():
    # chapter 6's long run and chapter 8's rule cite the same source: 80+ epochs
    assert run_config('full', **MIXUP_LONG_RUN).epochs >= MIXUP_MIN_EPOCHS


# --- label smoothing ---

def test_label_smoothing_trains_with_mixup(dls):
    learn = small_learner(dls, loss_func=LabelSmoothingCE(0.1), cbs=MixUpFromScratch(0.4))
    fit_quietly(learn, 1)
    assert isinstance(learn.loss_func, LabelSmoothingCE) and learn.loss_func.reduction == 'mean'
    losses = [float(l) for l in learn.recorder.losses]
    assert len(losses) == len(learn.dls.train) and all(np.isfinite(losses))
    preds, targs = learn.get_preds()
    assert torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)  # activation: softmax
    assert set(learn.get_preds(with_decoded=True)[2].tolist()) <= set(range(dls.c))  # decodes: class indices


@pytest.mark.parametrize('eps', [-0.5, 2, 1.01, '0.1', None, True, float('nan')])
def test_label_smoothing_refuses_an_eps_outside_0_to_1(eps, tiny_cfg, monkeypatch):
    "Targets with a negative share for some class are no probabilities; a string or None would fail only in training"
    no_data('label_smoothing', monkeypatch)
    for make in (lambda: smooth_targets(torch.tensor([0, 1]), 3, eps), lambda: LabelSmoothingCE(eps=eps),
                 lambda: label_smoothing(tiny_cfg, eps=eps)):
        with pytest.raises(ValueError, match=re.escape(f'eps={eps!r}: ')): make()


def test_label_smoothing_takes_eps_from_0_to_1():
    y = torch.tensor([0, 2])
    assert torch.equal(smooth_targets(y, 4, 0), torch.nn.functional.one_hot(y, 4).float())  # plain cross-entropy
    assert torch.allclose(smooth_targets(y, 4, 1), torch.full((2, 4), 0.25))  # uniform
    assert LabelSmoothingCE(np.float32(0.1)).eps == pytest.approx(0.1)


def test_label_smoothing_refuses_an_unknown_reduction_when_made():
    with pytest.raises(ValueError, match="unknown reduction 'Mean': use 'mean', 'sum' or 'none'"):
        LabelSmoothingCE(reduction='Mean')


def test_label_smoothing_recipe_uses_its_eps(tiny_cfg):
    learn = label_smoothing(tiny_cfg, eps=0.2)
    assert isinstance(learn.loss_func, LabelSmoothingCrossEntropy) and learn.loss_func.eps == 0.2
    assert len(learn.recorder.values) == 1


# --- the combined recipe ---

def test_sota_at_the_books_length_has_no_mixup():
    assert progressive_epochs(run_config('full', per_mode=SOTA_SETTINGS)) < MIXUP_MIN_EPOCHS


@pytest.mark.parametrize('use_mixup', [None, True])
def test_sota_trains_progressively_with_label_smoothing(tiny_cfg, use_mixup):
    timer = EpochTimer()  # the size of each epoch's training batches: the loaders' size after the fit is always full
    learn = sota(tiny_cfg, use_mixup=use_mixup, cbs=[timer])
    assert isinstance(learn.loss_func, LabelSmoothingCrossEntropy)
    assert any(isinstance(cb, MixUp) for cb in learn.cbs) == bool(use_mixup)  # a 3-epoch run: mixup only if forced
    assert len(learn.recorder.values) == progressive_epochs(tiny_cfg)  # every epoch in one fit: the size ramp
    sizes = [size for size, _ in timer.times]
    assert len(sizes) == progressive_epochs(tiny_cfg) and sizes[0] < tiny_cfg.size and sizes[-1] == tiny_cfg.size


# --- label smoothing: smoothing against plain cross-entropy on the same images ---

def test_paired_gap_of_a_label_smoothing_model_is_the_gap_in_validated_accuracy(dls):
    from imagenette_course.normalization import paired_accuracy_gap, right_per_image
    plain, smoothed = small_learner(dls), small_learner(dls, loss_func=LabelSmoothingCE())
    fit_quietly(smoothed, 1)
    gap, se = paired_accuracy_gap(right_per_image(plain), right_per_image(smoothed))
    with plain.no_bar(), smoothed.no_bar(): accs = plain.validate()[1], smoothed.validate()[1]
    assert gap == pytest.approx(accs[1] - accs[0], abs=1e-6) and se >= 0
