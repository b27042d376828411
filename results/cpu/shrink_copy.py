"""A copy of Imagenette with every image resized to SIZE × SIZE px (bicubic, JPEG quality 95), the noisy-label CSV beside.

Trained at 64 px, a 64-px copy stands where the 224-px offline copy stands at 224 px: the book's presize, scaled,
upsamples its images, and a presize capped at their size leaves no room to crop; neither throws any detail away.

    python results/cpu/shrink_copy.py SOURCE DEST [--size 64]
"""
import argparse, shutil
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from PIL import Image


def shrink(source, dest, size, fn):
    "Save image `fn` of `source` resized to `size` px at the same place under `dest`"
    out = dest/fn.relative_to(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(fn).resize((size, size), Image.BICUBIC).save(out, quality=95)  # greyscale stays so: fastai converts


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('source', type=Path); p.add_argument('dest', type=Path)
    p.add_argument('--size', type=int, default=64)
    args = p.parse_args()
    files = sorted(args.source.glob('*/*/*.JPEG'))
    with ProcessPoolExecutor() as ex: list(ex.map(partial(shrink, args.source, args.dest, args.size), files, chunksize=256))
    shutil.copy(args.source/'noisy_imagenette.csv', args.dest/'noisy_imagenette.csv')
    print(f"{len(files)} images at {args.size} px in {args.dest}")
