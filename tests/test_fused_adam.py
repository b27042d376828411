"FusedAdam (appendix 92): fastai's Adam step for step, through a Learner, its checkpoints and the command line"
import pytest
import torch
from fastcore.foundation import L
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.callback.schedule import fine_tune, fit_one_cycle
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import SGD, Adam, OptimWrapper
from fastai.torch_core import params, set_seed
from fastai.vision.models.xresnet import xresnet18

from imagenette_course.distributed import FusedAdam, FusedOptimizer, speed_ups
from imagenette_course.resume import Checkpoint, default_callbacks, resumable


def learner(opt_func, dtype=torch.float64, n=32, shuffle=True, **kwargs):
    "An xresnet18 and `n` random 16-px images (batches of 8), all seeded: the same Learner every time"
    set_seed(0)
    x, y = torch.randn(n, 3, 16, 16, dtype=dtype), torch.randint(0, 10, (n,))
    dls = DataLoaders.from_dsets(list(zip(x, y)), list(zip(x[:8], y[:8])), bs=8, device='cpu', shuffle=shuffle)
    return Learner(dls, xresnet18(n_out=10).to(dtype), loss_func=CrossEntropyLossFlat(), opt_func=opt_func, **kwargs)


def two_groups(m):
    "Body and head, so that `freeze` freezes the body"
    *body, head = m.children()
    return [[p for c in body for p in params(c)], params(head)]


def train(learn, how, *args, **kwargs):
    with learn.no_bar(), learn.no_logging(): getattr(learn, how)(*args, **kwargs)
    return learn


def assert_same_weights(a, b, eps):
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert (v - w).abs().max() <= eps, f"{k} differs by {(v - w).abs().max():.3g}"


# --- fastai's Adam, step for step ---

@pytest.mark.parametrize('splitter', ['default', 'two groups'])
def test_fine_tune_matches_fastai_adam(splitter):
    "float64, so that the two implementations' rounding is far below what is compared"
    kw = {} if splitter == 'default' else dict(splitter=two_groups)
    adam, fused = (train(learner(f, **kw), 'fine_tune', 1, 1e-2, freeze_epochs=1) for f in (Adam, FusedAdam))
    assert_same_weights(adam, fused, 1e-10)
    assert fused.opt.hypers == adam.opt.hypers and len(fused.opt.hypers) == (1 if splitter == 'default' else 2)
    for s, t in zip(adam.opt.state_dict()['state'], fused.opt.state_dict()['state']):
        assert s.keys() == t.keys() and s.get('step') == t.get('step')
        for k in ('grad_avg', 'sqr_avg'): torch.testing.assert_close(t[k], s[k], rtol=0, atol=1e-10)


def test_float32_steps_agree_to_rounding():
    "Two steps of lr 1e-2: any slip in the arithmetic would move a weight by about 1e-2, rounding moves it by 1e-6"
    adam, fused = (train(learner(f, dtype=torch.float32, n=16), 'fit', 1, 1e-2) for f in (Adam, FusedAdam))
    for a, b in zip(adam.model.parameters(), fused.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('splitter', ['default', 'two groups'])
def test_freeze_and_unfreeze_as_with_adam(splitter):
    "One group: freeze freezes nothing; two: the body but its batchnorm. Both clear the state but the marks"
    kw = {} if splitter == 'default' else dict(splitter=two_groups)
    adam, fused = (train(learner(f, **kw), 'fit', 1, 1e-2) for f in (Adam, FusedAdam))
    for learn in (adam, fused): learn.freeze()
    trainable = [p.requires_grad for p in fused.model.parameters()]
    assert trainable == [p.requires_grad for p in adam.model.parameters()]
    assert all(trainable) == (splitter == 'default')
    assert fused.opt.state_dict()['state'] == adam.opt.state_dict()['state'] and len(fused.opt.opt.state) == 0
    assert sum(not s.get('do_wd', True) for s in fused.opt.state_dict()['state']) > 0  # the marks survived
    for learn in (adam, fused): train(learn, 'fit', 1, 1e-2)
    assert_same_weights(adam, fused, 1e-10)


# --- weight decay: decoupled, where fastai decays ---

def decayed(opt_func, **kwargs):
    "For each parameter tensor: did one step with zero gradients, lr 0.1 and wd 0.5 shrink it from 1 to 0.95?"
    learn = learner(opt_func, **kwargs)
    learn.create_opt()
    learn.opt.set_hypers(lr=0.1, wd=0.5)
    ps = list(learn.model.parameters())
    with torch.no_grad():
        for p in ps: p.fill_(1.)
    for p in ps: p.grad = torch.zeros_like(p)
    learn.opt.step()
    for p in ps: assert torch.allclose(p, torch.full_like(p, 0.95)) or torch.equal(p, torch.ones_like(p))
    return [bool((p < 1).all()) for p in ps]


@pytest.mark.parametrize('wd_bn_bias', [False, True])
def test_weight_decay_falls_where_fastai_puts_it(wd_bn_bias):
    fused = decayed(FusedAdam, wd_bn_bias=wd_bn_bias)
    assert fused == decayed(Adam, wd_bn_bias=wd_bn_bias)
    assert all(fused) == wd_bn_bias and any(fused)
    assert all(decayed(lambda ps, lr: OptimWrapper(ps, torch.optim.AdamW, lr=lr)))  # the bug FusedAdam avoids


def test_wd_is_fastais_hyper_and_never_torchs_l2():
    learn = train(learner(FusedAdam, wd=0.1), 'fit_one_cycle', 1, 1e-2)
    (hypers,) = learn.opt.hypers
    assert set(hypers) == {'lr', 'mom', 'sqr_mom', 'eps', 'wd'} and hypers['wd'] == 0.1
    assert all(pg['weight_decay'] == 0 and pg['betas'][0] == hypers['mom'] for pg in learn.opt.opt.param_groups)
    with pytest.raises(ValueError, match='decouples'): FusedAdam(list(learn.model.parameters()), 1e-3, decouple_wd=False)


# --- saved and loaded ---

def run(path, opt_func, dtype=torch.float32):
    "Two one-cycle epochs of a resumable run checkpointed at `path`; data in a fixed order, so a resumed run can match"
    with resumable(Checkpoint(path)):  # the tracker follows the fits made in the block
        return train(learner(opt_func, dtype=dtype, n=16, shuffle=False), 'fit_one_cycle', 2, 1e-2)


def interrupted(path, opt_func, monkeypatch, dtype=torch.float32):
    "`run`, stopped by a Ctrl-C just after its first epoch's checkpoint"
    save = Checkpoint.save
    def save_then_interrupt(self, learn):
        save(self, learn)
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, 'save', save_then_interrupt)
        with pytest.raises(KeyboardInterrupt): run(path, opt_func, dtype)


def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path, monkeypatch, capsys):
    whole = run(tmp_path/'whole.pt', FusedAdam)
    interrupted(tmp_path/'cut.pt', FusedAdam, monkeypatch)
    resumed = run(tmp_path/'cut.pt', FusedAdam)
    assert 'resuming from' in capsys.readouterr().out
    assert_same_weights(whole, resumed, 0)
    # the comparison can tell: resumed with the weights but a fresh optimizer, the run ends elsewhere
    interrupted(tmp_path/'fresh.pt', FusedAdam, monkeypatch)
    restore = Checkpoint.restore
    def weights_only(self, learn):
        restore(self, learn)
        learn.opt.clear_state()
    monkeypatch.setattr(Checkpoint, 'restore', weights_only)
    with pytest.raises(AssertionError): assert_same_weights(whole, run(tmp_path/'fresh.pt', FusedAdam), 1e-4)


@pytest.mark.parametrize('first,then', [(Adam, FusedAdam), (FusedAdam, Adam)],
                         ids=['Adam-then-FusedAdam', 'FusedAdam-then-Adam'])
def test_checkpoints_of_one_resume_with_the_other(tmp_path, monkeypatch, first, then):
    "A run started on a CPU (fastai's Adam) goes on on a GPU (FusedAdam), and back"
    whole = run(tmp_path/'whole.pt', then, torch.float64)
    interrupted(tmp_path/'cut.pt', first, monkeypatch, torch.float64)
    assert_same_weights(whole, run(tmp_path/'cut.pt', then, torch.float64), 1e-10)


def test_restored_optimizer_state_goes_to_each_parameters_device(tmp_path, monkeypatch):
    "The file is read onto the CPU, and fastai's `Adam` keeps a loaded state where it is: away from a GPU's parameters"
    interrupted(tmp_path/'cut.pt', Adam, monkeypatch)
    learn = learner(Adam, n=16, shuffle=False)
    learn.model.to('meta')  # stands for a GPU: any device but the CPU that the file is read onto
    learn.create_opt()  # on the parameters there (`to` makes new ones for a meta device)
    Checkpoint(tmp_path/'cut.pt').restore(learn)
    states = [s for _, _, s, _ in learn.opt.all_params()]
    assert all(states) and {v.device.type for s in states for v in s.values() if torch.is_tensor(v)} == {'meta'}

def test_loaded_state_takes_the_parameters_memory_format():
    "The fused kernel pairs elements by position: a contiguous saved state must not meet a channels-last parameter"
    set_seed(0)
    w = torch.randn(4, 3, 2, 2)
    ref = torch.nn.Parameter(w.clone())
    p = torch.nn.Parameter(w.clone().contiguous(memory_format=torch.channels_last))
    saved = dict(grad_avg=torch.randn(4, 3, 2, 2), sqr_avg=torch.rand(4, 3, 2, 2), step=3)
    opts = [Adam([ref], lr=0.1), FusedAdam([p], lr=0.1)]
    for o in opts: o.load_state_dict(dict(state=[dict(saved)], hypers=L([o.hypers[0]])))
    assert opts[1].opt.state[p]['exp_avg'].stride() == p.stride()
    g = torch.randn(4, 3, 2, 2)
    ref.grad, p.grad = g.clone(), g.clone().contiguous(memory_format=torch.channels_last)
    for o in opts: o.step()
    torch.testing.assert_close(p.detach(), ref.detach())


def test_mismatched_state_is_refused():
    o = FusedAdam(list(xresnet18(n_out=10).parameters()), 1e-3)
    with pytest.raises(ValueError, match='this optimizer has 68'): o.load_state_dict(dict(state=[{}], hypers=[o.hypers[0]]))


def test_lr_find_saves_and_restores_through_it(tmp_path):
    learn = learner(FusedAdam, n=64)
    learn.path = tmp_path
    before = [p.detach().clone() for p in learn.model.parameters()]
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=10, show_plot=False)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))


# --- the command line's callback ---

def test_callback_replaces_only_fastais_default_adam():
    with default_callbacks([FusedOptimizer]):
        assert learner(Adam).opt_func is FusedAdam and learner(SGD).opt_func is SGD
        assert isinstance(train(learner(Adam), 'fit', 1).opt, FusedAdam)


def test_speed_ups_add_it_on_a_gpu_only(monkeypatch):
    assert FusedOptimizer not in speed_ups()[0] or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    assert FusedOptimizer in speed_ups()[0]


@pytest.mark.parametrize('native, expected', [(True, AMPMode.BF16), (False, AMPMode.FP16)])
def test_speed_ups_train_in_bfloat16_only_where_the_gpu_has_it(monkeypatch, native, expected):
    # torch's default, including_emulation=True, says yes on a T4 too, which only emulates bfloat16
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: native or including_emulation)
    [mp] = [cb for cb in speed_ups()[0] if issubclass(cb, MixedPrecision)]
    assert mp().amp_mode == expected
