#!/usr/bin/env python
"""Does the data path keep the GPU busy? xresnet50 training throughput fed by each loader, against the model alone.

At each image size, in one process: the same training step (bf16 autocast, channels-last, Adam, bs 64, cuDNN
autotuning as full mode has it, and the loss read on the CPU after every step, as fastai's `Recorder` does for its
smoothed loss, so that the next batch cannot be made while the GPU still works unless it is made ahead) on (1) one
batch of random tensors already on the GPU, the model alone; (2) batches from appendix 92a's decoded-once loaders
as full mode runs them on a GPU, the batch transforms lean (`LeanPipeline`) and each batch made in turn
(`lean_in_turn`, named in the results as `full_mode_path`); (3) the same, each batch made ahead in a background
thread (`lean_ahead`); (4) and (5) the same loaders with fastai's own batch transforms, made in turn
(`fastai_in_turn`, full mode's path before the lean transforms) and ahead (`fastai_ahead`); (6) batches from the
book's loaders (`get_dls`, its presize recorded as `book_presize`). They are interleaved in `--rounds` rounds and
each keeps its best round, so that a slow moment of the machine slows one round of every path rather than one path.
The efficiency of a path is its images per second over the model alone's (the target for full mode's path: >= 0.9);
`full_mode_vs_book` is full mode's images per second over the book loaders'. Also: seconds per epoch of the training set at each path's speed (training steps only), and, on the
device, the largest difference between a batch of the lean transforms and of fastai's from the same random state
(`lean_vs_fastai_max_abs_diff`: 0, the same pixels). For reference only, cited from other runs and not comparable side by side with these
step-only speeds: the first GPU run's epoch wall time, validation included, and the book's ≈63 s per 224-px epoch.

    python bench/gpu_data_path.py DATA --out results/gpu/data_path.json          # on a GPU
    python bench/gpu_data_path.py DATA --smoke                                    # tiny, on a CPU: so it can't rot
"""
import argparse, json, time
from pathlib import Path

import torch
import imagenette_course  # first: it quiets a deprecation warning that importing fastai triggers
from fastai.torch_core import TensorCategory, TensorImage, set_seed
from fastai.vision.models.xresnet import xresnet50
from fasttransform import Pipeline

from imagenette_course.baseline import BOOK, REFERENCE_EPOCH_SECONDS
from imagenette_course.cli import MIN_SIZE, whole_number
from imagenette_course.data import DataError, check_imagenette, device_name, get_dls, resolve_data_path
from imagenette_course.fast_data import LeanPipeline, NoRoom, clear_decoded, store_dls
from imagenette_course.recipes import presize

# Cited, not measured here: epoch wall time with validation, on other data paths, against this script's step-only speeds
CITED = dict(
    first_gpu_run_epoch_images_per_s=760,  # bench/README.md: the first full-mode run, book's loaders, one H200:
    # 9,469 training images in 12.5 s of wall time per 224-px epoch (validation included), from 128-px JPEGs
    book_s_per_epoch_224=dict((source, s) for s, source in REFERENCE_EPOCH_SECONDS)[BOOK],  # fastbook, ≈1:03
    note="cited from other runs for reference: epoch wall time with validation, not this script's step-only speeds")

# the data paths measured -> (how `PATHS` names them, `store_dls`'s settings; None: the book's loaders)
PATHS = {'lean_in_turn': ("full mode's: decoded once, lean, made in turn", dict(lean=True, prefetch=False)),
         'lean_ahead': ('decoded once, lean, made ahead', dict(lean=True, prefetch=True)),
         'fastai_in_turn': ("decoded once, fastai's transforms, made in turn", dict(lean=False, prefetch=False)),
         'fastai_ahead': ("decoded once, fastai's transforms, made ahead", dict(lean=False, prefetch=True)),
         'book': ("book's loaders", None)}
FULL_MODE_PATH = 'lean_in_turn'  # what `DecodeOnce` makes, as full mode trains on a GPU


def batches_of(dl):
    "The input/target batches of `dl`, epoch after epoch"
    while True: yield from dl


def repeated(batch):
    "`batch`, again and again"
    while True: yield batch


def images_per_second(model, batches, steps, warmup, bs):
    "Training images per second of `model` on `steps` batches from `batches`, after `warmup` untimed ones"
    opt, loss_func, dev = torch.optim.Adam(model.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss(), model_device(model)
    def step(x, y):
        x, y = x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)  # fastai's tensor types, as plain tensors (no copy)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = loss_func(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(); loss.backward(); opt.step()
        loss.item()  # waits for the GPU, as fastai's smoothed loss (`to_detach` to the CPU) does after every batch
    for _ in range(warmup): step(*next(batches))
    sync(dev)
    start = time.perf_counter()
    for _ in range(steps): step(*next(batches))
    sync(dev)
    return steps * bs / (time.perf_counter() - start)


def model_device(model): return next(model.parameters()).device
def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def measure_size(data, size, bs, steps, warmup, device, rounds, per_class=None):
    "{path: images/s, the best of `rounds` interleaved rounds} at `size` px: the model alone, each data path; ratios"
    model = xresnet50(n_out=10).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(bs, 3, size, size, device=device)
    y = torch.randint(0, 10, (bs,), device=device)
    book = get_dls(bs, size, path=data, n_train=per_class, n_valid=per_class, device=device)
    res = dict(size=size, bs=bs, n_train=len(book.train_ds), book_presize=presize(book), rounds=rounds)
    clear_decoded()  # time a decode, not a hit in the per-process cache of decoded images
    start = time.perf_counter()
    try:
        stored = {path: store_dls(book, device, **settings) for path, (_, settings) in PATHS.items() if settings}
        res['decode_once_s'] = round(time.perf_counter() - start, 1)  # the first decodes, the others share its images
        res['lean_vs_fastai_max_abs_diff'] = lean_vs_fastai(stored[FULL_MODE_PATH].train)
    except NoRoom as e:  # a GPU with too little free memory, where full mode takes the book's loaders: the others only
        stored, res['decode_once_s'], res['no_room'] = {}, None, str(e)
    feeds = {'model_only': lambda: repeated((x, y)),
             **{path: (lambda dls=dls: batches_of(dls.train)) for path, dls in stored.items()},
             'book': lambda: batches_of(book.train)}
    each = {path: [] for path in feeds}
    for _ in range(rounds):
        for path, feed in feeds.items():
            batches = feed()
            try: each[path].append(images_per_second(model, batches, steps, warmup, bs))
            finally: batches.close()  # the loader's workers, or the thread making batches ahead, stop before the next
    res.update({path: max(ips) for path, ips in each.items()})
    res['each_round'] = {path: [round(v, 1) for v in ips] for path, ips in each.items()}
    for path in PATHS:  # None where a path was not measured (no room for the decoded images)
        ips = res.setdefault(path, None)
        res[f'{path}_efficiency'] = ips and round(ips / res['model_only'], 3)
        res[f'{path}_s_per_epoch'] = ips and round(res['n_train'] / ips, 1)
    full = res[FULL_MODE_PATH]
    res['full_mode_vs_book'] = full and round(full / res['book'], 3)
    return res


def lean_vs_fastai(dl):
    "The largest difference between a training batch of `dl`'s lean transforms and fastai's, from the same random state"
    b = TensorImage(dl.images[:dl.bs]), TensorCategory(dl.labels[:dl.bs])
    def made_by(pipeline):
        set_seed(0)
        pipeline.split_idx = 0
        return pipeline(b)[0]
    return (made_by(LeanPipeline(dl.after_batch.fs)) - made_by(Pipeline(dl.after_batch.fs))).abs().max().item()


def describe(r):
    "One line of the results `r` of `measure_size`"
    paths = '; '.join(f"{label} {r[p]:.0f} img/s ({r[p + '_efficiency']:.0%}, {r[p + '_s_per_epoch']} s/epoch)"
                      if r[p] else f"{label}: not measured" for p, (label, _) in PATHS.items())
    decoded = (f"full mode's / book's loaders (presize {r['book_presize']} px) {r['full_mode_vs_book']:.2f}x; "
               f"decoded in {r['decode_once_s']} s; lean vs fastai's transforms, largest difference "
               f"{r['lean_vs_fastai_max_abs_diff']}" if r[FULL_MODE_PATH] else f"not decoded once: {r['no_room']}")
    return f"{r['size']} px, best of {r['rounds']} rounds: model alone {r['model_only']:.0f} img/s; {paths}; {decoded}"


def image_sizes(s):
    "An argparse type: comma-separated image sizes in px, each a whole number of at least `MIN_SIZE`"
    return [whole_number(MIN_SIZE)(size) for size in s.split(',')]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('data', help="Imagenette folder (train/ and val/)")
    p.add_argument('--out', help="write the results here as JSON")
    p.add_argument('--sizes', type=image_sizes, default='128,224',
                   help="comma-separated image sizes in px (default 128,224)")
    p.add_argument('--steps', type=whole_number(1), default=40,
                   help="timed training steps per measurement (default 40)")
    p.add_argument('--rounds', type=whole_number(1), default=3,
                   help="rounds, each measuring every path in turn; a path keeps its best round (default 3)")
    p.add_argument('--smoke', action='store_true', help="tiny sizes and steps, on a CPU")
    p.add_argument('--commit', help="the commit being measured, for the results (where there is no git checkout)")
    args = p.parse_args(argv)
    try: data = check_imagenette(resolve_data_path(args.data))
    except DataError as e: p.error(f"DATA: {e.problem}\nFix: pass an Imagenette folder (train/ and val/) as DATA")
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.type != 'cuda' and not args.smoke: p.error("no CUDA GPU is visible: use --smoke for the tiny CPU run")
    sizes, bs, steps, warmup, per_class = (([32], 8, 2, 1, 2) if args.smoke else
                                           (args.sizes, 64, args.steps, 10, None))
    torch.backends.cudnn.benchmark = True  # as full mode's `CudnnAutotune` (appendix 92) sets it for every fit
    results = dict(device=device_name(), torch=torch.__version__, commit=args.commit, cited=CITED, full_mode_path=FULL_MODE_PATH,
                   cudnn_benchmark=True,
                   loss_read_every_step=True, sizes=[])
    for size in sizes:  # each size's result printed and written as soon as it is measured: a cut run keeps it
        r = measure_size(data, size, bs, steps, warmup, device, args.rounds, per_class)
        results['sizes'].append(r)
        print(describe(r), flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2) + '\n')
    print(f"Cited, not measured here (epoch wall time with validation, other runs): the first GPU run "
          f"{CITED['first_gpu_run_epoch_images_per_s']} img/s; "
          f"the book ≈{CITED['book_s_per_epoch_224']} s per 224-px epoch")
    return results


if __name__ == '__main__': main()
