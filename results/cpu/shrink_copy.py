"""A copy of Imagenette with every image resized to SIZE × SIZE px (bicubic, JPEG quality 95), with its noisy labels.

Trained at 64 px, a 64-px copy stands where the 224-px offline copy stands at 224 px: the book's presize, scaled,
upsamples its images, and a presize capped at their size leaves no room to crop; neither throws any detail away.

    python results/cpu/shrink_copy.py SOURCE DEST [--size 64]
"""
import argparse, shutil
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from PIL import Image

import imagenette_course  # first: it quiets a deprecation warning that importing fastai triggers
from fastai.data.transforms import get_image_files

from imagenette_course.cli import MIN_SIZE, whole_number
from imagenette_course.data import DATASETS, DataError, check_imagenette, resolve_data_path


def shrink(source, dest, size, fn):
    "Save image `fn` of `source` resized to `size` px at the same place under `dest`"
    out = dest/fn.relative_to(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(fn).resize((size, size), Image.BICUBIC).save(out, quality=95)  # greyscale stays so: fastai converts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('source', help="Imagenette folder holding train/ and val/")
    p.add_argument('dest', type=Path, help="folder for the copy, outside the repository (its name names it in ledgers)")
    p.add_argument('--size', type=whole_number(MIN_SIZE), default=64,
                   help="side of the square images, in px (default 64)")
    args = p.parse_args(argv)
    # checked before any image is shrunk: a wrong SOURCE would otherwise give an empty copy, or fail at the end
    try: source = check_imagenette(resolve_data_path(args.source))
    except DataError as e: p.error(f"SOURCE: {e.problem}\nFix: pass an Imagenette folder (train/ and val/) as SOURCE")
    files = sorted(get_image_files(source))
    with ProcessPoolExecutor() as ex: list(ex.map(partial(shrink, source, args.dest, args.size), files, chunksize=256))
    noisy = source/DATASETS['imagenette'].noisy_csv  # chapter 7's noisy labels; a copy of Imagenette may lack them
    if noisy.is_file(): shutil.copy(noisy, args.dest/noisy.name)
    print(f"{len(files)} images at {args.size} px in {args.dest}")


if __name__ == '__main__': main()
