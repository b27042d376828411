#!/usr/bin/env python
"""Make a small copy of Imagenette (train/ and val/, one folder per class) for the full-mode GPU check.

The GPU machine has no internet and takes at most 60 MiB of data with it, while the offline Imagenette is about
134 MiB. The default keeps every image (so accuracies stay comparable with the book's, which used all of them) and
shrinks each one to 160x160 px at JPEG quality 55, which comes to about 54 MiB. The copy is deterministic: the same
source, options and Pillow version give the same files.

    python scripts/make_gpu_data.py $IMAGENETTE_PATH build/gpu_data
    python scripts/make_gpu_data.py $IMAGENETTE_PATH /tmp/tiny --train-per-class 7 --val-per-class 2 --size 64
"""
import argparse, os, shutil, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
import imagenette_course  # first: it quiets a deprecation warning that importing fastai triggers
from fastai.data.transforms import get_image_files

from imagenette_course.data import DATASETS, SPLITS, DataError, balanced_subset, check_imagenette, resolve_data_path

MiB = 2**20


def whole_number(lo, hi=None):
    "argparse type: a whole number from `lo` to `hi` (no upper bound if `hi` is None)"
    def parse(s):
        try: n = int(s)
        except ValueError: raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"{n} is out of range: use {lo} or more" if hi is None else
                                             f"{n} is out of range: use {lo} to {hi}")
        return n
    return parse


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('source', nargs='?', default=os.environ.get('IMAGENETTE_PATH'),
                   help="Imagenette folder holding train/ and val/ (default: $IMAGENETTE_PATH)")
    p.add_argument('dest', help="new folder for the copy (must not exist yet, or be empty)")
    p.add_argument('--size', type=whole_number(1), default=160, help="side of the square images, in px (default 160)")
    p.add_argument('--quality', type=whole_number(1, 95), default=55, help="JPEG quality (default 55)")
    p.add_argument('--train-per-class', type=whole_number(1), help="training images per class (default: all)")
    p.add_argument('--val-per-class', type=whole_number(1), help="validation images per class (default: all)")
    p.add_argument('--seed', type=int, default=42, help="seed that picks the images when a per-class count is given")
    p.add_argument('--max-mib', type=float, default=60, help="fail if the copy is larger than this (default 60)")
    return p


def chosen_files(source, per_class, seed):
    "{split: files} to copy: all of each split, or `per_class[split]` per class, chosen by `balanced_subset`"
    chosen = {}
    for split in SPLITS:
        files = sorted(get_image_files(source/split))
        n = per_class[split]
        chosen[split] = files if n is None else balanced_subset(files, n, seed)
    return chosen


def shrink(src, dst, size, quality):
    "Write image `src` to `dst` as a `size`-px square JPEG; returns its size in bytes"
    with Image.open(src) as im:
        # greyscale stays greyscale (smaller; fastai converts to RGB when it loads it); anything else becomes RGB
        im = im.convert('L' if im.mode == 'L' else 'RGB').resize((size, size), Image.Resampling.LANCZOS)
        im.save(dst, 'JPEG', quality=quality, optimize=True)
    return dst.stat().st_size


def copy_split(files, source, dest, size, quality):
    "Shrink `files` into `dest`, keeping their paths relative to `source`; total bytes written"
    targets = [dest/Path(f).relative_to(source) for f in files]
    for folder in {t.parent for t in targets}: folder.mkdir(parents=True, exist_ok=True)
    # Pillow releases the GIL while it decodes, resizes and encodes, so threads use every core
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return sum(pool.map(lambda ft: shrink(ft[0], ft[1], size, quality), zip(files, targets)))


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.source is None:
        parser.error("no Imagenette folder: pass it as the first argument or set IMAGENETTE_PATH")
    try: source = check_imagenette(resolve_data_path(args.source))
    except DataError as e: parser.error(str(e))
    dest = Path(args.dest).expanduser()
    if dest.exists() and any(dest.iterdir()):
        parser.error(f"{dest} already exists and is not empty: remove it or choose another folder")
    files = chosen_files(source, {'train': args.train_per_class, 'val': args.val_per_class}, args.seed)
    total = 0
    for split in SPLITS:
        nbytes = copy_split(files[split], source, dest, args.size, args.quality)
        print(f"{split}: {len(files[split])} images, {nbytes / MiB:.1f} MiB")
        total += nbytes
    noisy = source/DATASETS['imagenette'].noisy_csv  # chapter 7's noisy labels, looked up by each image's path
    if noisy.is_file():
        shutil.copy(noisy, dest/noisy.name)
        total += noisy.stat().st_size
    print(f"{dest}: {sum(map(len, files.values()))} images at {args.size} px, JPEG quality {args.quality}, "
          f"{total / MiB:.1f} MiB")
    if total > args.max_mib * MiB:
        sys.exit(f"error: the copy is {total / MiB:.1f} MiB, over the {args.max_mib:g} MiB limit: "
                 f"use a smaller --size or --quality, or fewer images per class")


if __name__ == '__main__': main()
