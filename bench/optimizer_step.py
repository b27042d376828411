#!/usr/bin/env python
"""Milliseconds per `Learner.fit` training step with fastai's `Adam` and with `FusedAdam` (appendix 92), side by side.

Two regimes, in one process, the optimizers interleaved over rounds (the best of each counts):
(a) on the CPU, an xresnet50 of the full depth (the same 167 parameter tensors) but 1/16 of the width, bs 4 at 32 px,
where the step is almost all per-tensor overhead; (b) on a CUDA GPU, when there is one, the real xresnet50 at bs 64,
128 and 224 px, with bf16 autocast and channels-last, as the command line trains in full mode. Every step is a whole
fastai training step (callbacks, forward, backward, optimizer step, zero_grad) on one batch of random tensors already
on the device, so the data pipeline is not in it. A third optimizer is shown for reference, not as a candidate:
fastai's `OptimWrapper` around PyTorch's fused `AdamW`, which decays batchnorm weights and biases too.
Ratios only, no pass/fail: the numbers are as good as the machine is quiet.

    OMP_NUM_THREADS=1 python bench/optimizer_step.py                 # (a) here; (a) and (b) on a GPU machine
    python bench/optimizer_step.py --no-cpu                          # (b) alone, on a GPU machine
    python bench/optimizer_step.py --smoke                           # seconds, on a CPU: so it can't rot
"""
import argparse, json, os, time
from functools import partial
from pathlib import Path

import torch
import imagenette_course  # first: it quiets a deprecation warning that importing fastai triggers
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.core import Callback
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import Adam, OptimWrapper
from fastai.torch_core import set_seed
from fastai.vision.models.xresnet import ResBlock, XResNet, xresnet50

from imagenette_course.distributed import FusedAdam

OPTIMIZERS = {'fastai Adam': Adam, 'FusedAdam': FusedAdam,
              'AdamW fused (ref.)': partial(OptimWrapper, opt=partial(torch.optim.AdamW, fused=True))}


def thin_xresnet50(): return XResNet(ResBlock, 4, [3, 4, 6, 3], n_out=10, stem_szs=(8, 8, 64), widen=0.0625)


class SameBatch:
    "A loader that yields one batch, already on its device, `n` times: nothing but the training step is timed"
    def __init__(self, x, y, n): self.x, self.y, self.n = x, y, n
    def __iter__(self): return iter([(self.x, self.y)] * self.n)
    def __len__(self): return self.n
    def to(self, device): return self


class StepTimer(Callback):
    "Seconds per training batch after the first `warmup`; the clock is read with the GPU caught up"
    order = 100
    def __init__(self, warmup): self.warmup = warmup
    def after_batch(self):
        if not self.training or self.iter + 1 not in (self.warmup, self.n_iter): return
        if self.x.is_cuda: torch.cuda.synchronize()
        if self.iter + 1 == self.warmup: self.start = time.perf_counter()
        else: self.per_step = (time.perf_counter() - self.start) / (self.n_iter - self.warmup)


def ms_per_step(opt_func, make_model, size, bs, steps, warmup, device, amp_cl):
    "Milliseconds per step of one `fit` epoch of `warmup` + `steps` batches (and one validation batch)"
    set_seed(0)
    x, y = torch.randn(bs, 3, size, size, device=device), torch.randint(0, 10, (bs,), device=device)
    cbs = [StepTimer(warmup)]
    if amp_cl:  # as the command line on a GPU: bf16 autocast; fastai's ChannelsLast makes the weights channels-last,
        # and the first convolution converts the inputs, as it does there
        cbs += [ChannelsLast(), MixedPrecision(amp_mode=AMPMode.BF16)]
    dls = DataLoaders(SameBatch(x, y, warmup + steps), SameBatch(x, y, 1), device=device)
    learn = Learner(dls, make_model(), loss_func=CrossEntropyLossFlat(), opt_func=opt_func, cbs=cbs)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return cbs[0].per_step * 1000


def measure(name, make_model, size, bs, steps, warmup, rounds, device, amp_cl=False):
    "{optimizer: best ms per step} of one configuration, the optimizers interleaved in each round"
    best = {}
    for _ in range(rounds):
        for opt, opt_func in OPTIMIZERS.items():
            ms = ms_per_step(opt_func, make_model, size, bs, steps, warmup, device, amp_cl)
            best[opt] = min(best.get(opt, ms), ms)
    res = dict(config=name, device=device.type, size=size, bs=bs, ms_per_step={k: round(v, 2) for k, v in best.items()},
               fused_speedup=round(best['fastai Adam'] / best['FusedAdam'], 3))
    print(f"{name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in best.items())
          + f"; fastai Adam / FusedAdam = {res['fused_speedup']:.2f}x, FusedAdam / AdamW fused (ref.) = "
          f"{best['FusedAdam'] / best['AdamW fused (ref.)']:.2f}x", flush=True)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--rounds', type=int, default=3, help="rounds over the optimizers; the fastest counts (default 3)")
    p.add_argument('--steps', type=int, default=30, help="timed steps per measurement (default 30)")
    p.add_argument('--warmup', type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument('--gpu-sizes', default='128,224', help="image sizes of the GPU runs (default 128,224)")
    p.add_argument('--out', help="write the results here as JSON")
    p.add_argument('--no-cpu', action='store_true',
                   help="skip (a), the CPU regime: on a GPU machine short of time, (b) is what only it can measure")
    p.add_argument('--smoke', action='store_true', help="one tiny round on the CPU")
    args = p.parse_args(argv)
    if args.no_cpu and not args.smoke and not torch.cuda.is_available():  # else it would measure nothing, silently
        p.error("--no-cpu leaves only (b), which needs a CUDA GPU: leave out --no-cpu on this machine")
    rounds, steps, warmup = (1, 2, 1) if args.smoke else (args.rounds, args.steps, args.warmup)
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{warmup} warm-up + {steps} timed steps x {rounds} rounds, fastest round", flush=True)
    cpu = torch.device('cpu')
    results = []
    def record(res):  # written after each configuration: a run cut short keeps what it measured
        results.append(res)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(dict(torch=torch.__version__, cpu_threads=torch.get_num_threads(),
                                                      results=results), indent=2) + '\n')
    if not args.no_cpu:
        record(measure('(a) xresnet50 at 1/16 width, CPU, bs 4, 32 px', thin_xresnet50, 32, 4, steps, warmup, rounds,
                       cpu))
    if torch.cuda.is_available() and not args.smoke:
        gpu = torch.device('cuda')
        for size in map(int, args.gpu_sizes.split(',')):
            record(measure(f'(b) xresnet50, {torch.cuda.get_device_name()}, bs 64, {size} px, bf16, channels-last',
                           partial(xresnet50, n_out=10), size, 64, steps, warmup, rounds, gpu, amp_cl=True))
    if args.smoke:  # the GPU configuration's code (its callbacks, channels-last weights) on the CPU's tiny model
        record(measure('smoke: (b) settings on the CPU', thin_xresnet50, 32, 4, steps, warmup, rounds, cpu, amp_cl=True))
    print(f"load average {os.getloadavg()[0]:.2f}")
    return results


if __name__ == '__main__': main()
