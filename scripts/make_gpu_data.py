#!/usr/bin/env python
"""Pack Imagenette for a GPU machine that takes little data with it: every image as AVIF, in one file with an index.

The lent GPU machines have no internet and take at most 64 MiB of working tree, wheels included, while the
offline Imagenette is 162 MB of 224-px JPEGs. AVIF at quality 40 keeps all 13,394 images at 224 px, the size the
book trains at, in 44.3 MiB (measured: index.json records it). The packer measures what re-encoding costs: the PSNR of every image as training
will see it after `unpack_gpu_data.py` (AVIF decoded, written as a JPEG of quality 95), against the source resized
to the same size; index.json records it with the sizes and settings.

    python scripts/make_gpu_data.py $IMAGENETTE_PATH build/gpu_data       # all images, 224 px, AVIF quality 40
    python scripts/make_gpu_data.py $IMAGENETTE_PATH /tmp/tiny --train-per-class 7 --val-per-class 2 --size 48
    python scripts/unpack_gpu_data.py build/gpu_data /tmp/imagenette     # on the GPU machine, on all its cores
"""
import argparse, json, os, shutil, sys, time
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, features
import imagenette_course  # first: it quiets a deprecation warning that importing fastai triggers
from fastai.data.transforms import get_image_files

from imagenette_course.data import DATASETS, SPLITS, DataError, balanced_subset, check_imagenette, resolve_data_path
from unpack_gpu_data import INDEX, JPEG_QUALITY, PACK, as_unpacked

MiB = 2**20
# 64 MiB travel to the GPU machine: the pack, the wheels it needs (`make gpu-wheels`: 9.7 MiB, measured in commit
# 0a293ad) and the repository's tracked files (4.1 MiB on 2026-11-29), which 47 leaves ~3 MiB to grow
TRAVEL_MIB, WHEELS_MIB, MAX_MIB = 64, 9.7, 47


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
    # an exported but empty IMAGENETTE_PATH (the Makefile's without ../shared, the workflow's when unset) is no folder
    p.add_argument('source', nargs='?', default=os.environ.get('IMAGENETTE_PATH') or None,
                   help="Imagenette folder holding train/ and val/ (default: $IMAGENETTE_PATH)")
    p.add_argument('dest', help="new folder for the pack (must not exist yet, or be empty)")
    p.add_argument('--size', type=whole_number(1), default=224, help="side of the square images, in px (default 224)")
    p.add_argument('--quality', type=whole_number(1, 100), default=40, help="AVIF quality (default 40)")
    p.add_argument('--train-per-class', type=whole_number(1), help="training images per class (default: all)")
    p.add_argument('--val-per-class', type=whole_number(1), help="validation images per class (default: all)")
    p.add_argument('--seed', type=int, default=42, help="seed that picks the images when a per-class count is given")
    p.add_argument('--max-mib', type=float, default=MAX_MIB,
                   help=f"fail if the pack is larger than this (default {MAX_MIB})")
    return p


def chosen_files(source, per_class, seed):
    "{split: files} to pack: all of each split, or `per_class[split]` per class, chosen by `balanced_subset`"
    chosen = {}
    for split in SPLITS:
        files = sorted(get_image_files(source/split))
        n = per_class[split]
        chosen[split] = files if n is None else balanced_subset(files, n, seed)
    return chosen


def psnr(a, b):
    "Peak signal-to-noise ratio of two uint8 images, in dB (higher is closer; identical images give infinity)"
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(255**2 / mse)


def encode(src, size, quality):
    "(AVIF bytes of image `src` as a `size`-px square, PSNR in dB of that image as unpacked against the source's)"
    with Image.open(src) as im: ref = im.convert('RGB').resize((size, size), Image.Resampling.LANCZOS)
    out = BytesIO()
    ref.save(out, 'AVIF', quality=quality, speed=8)  # vs the default 6, on 20 images: 25 vs 80 ms each, same size, 29.7 vs 30.1 dB
    with Image.open(BytesIO(as_unpacked(out.getvalue()))) as seen: return out.getvalue(), psnr(seen, ref)


def encode_all(files, size, quality):
    "`encode` each of `files` (a list for one process)"
    return [encode(f, size, quality) for f in files]


def pack(files, source, dest, size, quality, workers=None):
    "Encode `files` on every core into dest/images.bin; the index entries ([path, offset, bytes]) and the PSNRs"
    workers = workers or os.cpu_count()
    chunks = [files[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool: done = list(pool.map(encode_all, chunks, [size] * workers, [quality] * workers))
    encoded = [None] * len(files)
    for i, chunk in enumerate(done): encoded[i::workers] = chunk  # back in the order of `files`: the pack is deterministic
    entries, offset = [], 0
    with open(dest/PACK, 'wb') as f:
        for fn, (data, _) in zip(files, encoded):
            f.write(data)
            entries.append([Path(fn).relative_to(source).as_posix(), offset, len(data)])
            offset += len(data)
    return entries, [p for _, p in encoded]


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.source is None:
        parser.error("no Imagenette folder: pass it as the first argument or set IMAGENETTE_PATH")
    if not features.check('avif'):
        parser.error(f"this Pillow ({Image.__version__}) can't write AVIF. Fix: install Pillow >= 11.3, whose wheels include it")
    try: source = check_imagenette(resolve_data_path(args.source))
    except DataError as e: parser.error(str(e))
    dest = Path(args.dest).expanduser()
    if dest.exists() and any(dest.iterdir()):
        parser.error(f"{dest} already exists and is not empty: remove it or choose another folder")
    dest.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    files = chosen_files(source, {'train': args.train_per_class, 'val': args.val_per_class}, args.seed)
    entries, psnrs = pack([f for split in SPLITS for f in files[split]], source, dest, args.size, args.quality)
    extra = []
    noisy = source/DATASETS['imagenette'].noisy_csv  # chapter 7's noisy labels, looked up by each image's path
    if noisy.is_file():
        shutil.copy(noisy, dest/noisy.name)
        extra.append(noisy.name)
    mib = sum((dest/f).stat().st_size for f in [PACK, *extra]) / MiB  # index.json, written next, is added below
    index = dict(format='avif', size=args.size, quality=args.quality, unpacked_as=f'JPEG quality {JPEG_QUALITY}',
                 images={split: len(files[split]) for split in SPLITS}, mib=round(mib, 1),
                 psnr_db=dict(mean=round(float(np.mean(psnrs)), 2), min=round(float(np.min(psnrs)), 2),
                              against=f"the source resized to {args.size} px (Lanczos), as unpacked"),
                 pillow=Image.__version__, extra_files=extra, files=entries)
    (dest/INDEX).write_text(json.dumps(index) + '\n')
    mib += (dest/INDEX).stat().st_size / MiB  # all that travels
    print(f"{dest}: {len(entries)} images at {args.size} px, AVIF quality {args.quality}, {mib:.1f} MiB with its index, "
          f"PSNR {index['psnr_db']['mean']:.1f} dB (min {index['psnr_db']['min']:.1f}), "
          f"{time.perf_counter() - start:.0f} s")
    if mib > args.max_mib:
        sys.exit(f"error: the pack is {mib:.1f} MiB, over the {args.max_mib:g} MiB limit: "
                 f"use a lower --quality or --size, or fewer images per class")


if __name__ == '__main__': main()
