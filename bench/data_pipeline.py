#!/usr/bin/env python
"""Data pipeline throughput on the CPU: the book's DataBlock against the course's `get_dls`, side by side.

Images per second at the end of the training DataLoader (decode, item transforms, collate and the batch
augmentation, all on the CPU), on one seeded subset of Imagenette's training images, in one process:

- book: `Resize(460)` on every item, then `aug_transforms(size)` and `Normalize` on the batch (the book's chapter 7);
- course: `get_dls`, which presizes to `default_presize(size)`: the book's 460 at 224 px, scaled to other sizes.

Imagenette here is 224 px, so `Resize(460)` doubles each side and the batch augmentation then crops and shrinks that
back to 224; at 224 px both do it, at quick mode's 64 px the course presizes to 131 px only. Run it with `make bench`; it takes a couple of minutes.
"""
import argparse, math, os, time

import imagenette_course  # first: it quiets a deprecation warning that importing fastai triggers
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.transforms import GrandparentSplitter, Normalize, parent_label
from fastai.torch_core import defaults
from fastai.vision.augment import Resize, aug_transforms
from fastai.vision.core import imagenet_stats
from fastai.vision.data import ImageBlock

from imagenette_course.cli import whole_number
from imagenette_course.data import (DATASETS, MODES, DataError, check_imagenette, get_dls, imagenette_items,
                                    resolve_data_path)


def book_dls(items, bs, size):
    "The book's chapter-7 `get_dls`: Resize(460) per item, then aug_transforms and Normalize per batch"
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_y=parent_label,
                       splitter=GrandparentSplitter(valid_name='val'), item_tfms=Resize(460),
                       batch_tfms=[*aug_transforms(size=size, min_scale=0.75), Normalize.from_stats(*imagenet_stats)])
    return dblock.dataloaders(items, bs=bs, device='cpu')


def images_per_second(dl, n_batches, size):
    "Training images per second out of `dl` over `n_batches` batches, after one warm-up batch (starts the workers)"
    # one epoch, which `per_class_needed` makes long enough: a second would restart the workers inside the timing
    batches = iter(dl)
    try:
        next(batches)
        n, start = 0, time.perf_counter()
        for _ in range(n_batches):
            xb, _ = next(batches)
            assert xb.shape[-2:] == (size, size), f"expected {size} px batches, got {tuple(xb.shape)}"
            n += len(xb)
        return n / (time.perf_counter() - start)
    finally: batches.close()  # the epoch's workers stop now, not while the next pipeline is timed


def per_class_needed(n_batches):
    "Training images per class for one epoch of the warm-up batch and `n_batches` full batches at every mode's bs"
    # the training loader drops its last partial batch
    return math.ceil((1 + n_batches) * max(m.bs for m in MODES.values()) / len(DATASETS['imagenette'].classes))


def pipelines(path, per_class, seed):
    "{(who, mode): build its DataLoaders}: the book's and the course's, at the full and the quick mode's size and bs"
    items = imagenette_items(path, n_train=per_class, n_valid=1, seed=seed)
    book = lambda cfg: lambda: book_dls(items, cfg.bs, cfg.size)
    course = lambda cfg: lambda: get_dls(bs=cfg.bs, size=cfg.size, path=path, n_train=per_class, n_valid=1, seed=seed,
                                         device='cpu')
    return {(who, mode): build(MODES[mode]) for mode in ('full', 'quick') for who, build in
            (('book', book), ('course', course))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', help="Imagenette folder (default: $IMAGENETTE_PATH)")
    p.add_argument('--per-class', type=whole_number(1), default=64,
                   help="training images per class (default 64: a bs-64 epoch holds the warm-up and 8 timed batches)")
    p.add_argument('--batches', type=whole_number(1), default=8,
                   help="timed batches per pipeline and round (default 8)")
    p.add_argument('--rounds', type=whole_number(1), default=2,
                   help="rounds over all pipelines; the best of each counts (default 2)")
    p.add_argument('--seed', type=int, default=42)
    args = p.parse_args(argv)
    if args.per_class < (needed := per_class_needed(args.batches)):
        p.error(f"--per-class {args.per_class} is too few for one warm-up and {args.batches} timed batches in one "
                f"epoch of every loader: use --per-class {needed} or more, or fewer --batches")
    try: path = check_imagenette(resolve_data_path(args.data))
    except DataError as e: p.error(str(e))

    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; DataLoader workers {defaults.cpus}; "
          f"{10 * args.per_class} training images; {args.batches} batches x {args.rounds} rounds")
    built = {key: build() for key, build in pipelines(path, args.per_class, args.seed).items()}
    speed = {key: 0. for key in built}
    for _ in range(args.rounds):  # rounds interleave the pipelines, so a burst of load elsewhere hits all of them
        for (who, mode), dls in built.items():
            speed[who, mode] = max(speed[who, mode], images_per_second(dls.train, args.batches, MODES[mode].size))
    for (who, mode), dls in built.items():
        presize = [t.size for t in dls.train.after_item.fs if isinstance(t, Resize)][0][0]
        print(f"{who:6} {mode:5}  {MODES[mode].size:3} px, presize {presize}, bs {dls.train.bs:2}: "
              f"{speed[who, mode]:7.1f} images/s")
    for mode in ('full', 'quick'):
        print(f"course / book at {MODES[mode].size} px ({mode} settings): "
              f"{speed['course', mode] / speed['book', mode]:.2f}x")
    print(f"course quick ({MODES['quick'].size} px) / book ({MODES['full'].size} px): "
          f"{speed['course', 'quick'] / speed['book', 'full']:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == '__main__': main()
