#!/usr/bin/env python
"""Unpack the AVIF pack that scripts/make_gpu_data.py made into an Imagenette folder (train/ and val/), on every core.

    python scripts/unpack_gpu_data.py build/gpu_data /tmp/imagenette      # then: scripts/gpu_check.py /tmp/imagenette

Each image is decoded from AVIF and written as a JPEG of quality 95 without chroma subsampling, under its original
path and name, so that the course reads the copy exactly as it reads Imagenette (the noisy-label CSV finds every
image by its path). The packer measured the PSNR of the images as written here. Needs only Pillow with AVIF
support (Pillow >= 11.3's wheels have it); it imports neither torch nor fastai.
"""
import argparse, json, os, shutil, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO
from pathlib import Path

from PIL import Image, features

PACK, INDEX = 'images.bin', 'index.json'
FACTS = 'gpu_pack.json'  # the pack's settings, sizes and PSNR, left beside the images: gpu_check.py reports them
JPEG_QUALITY = 95  # JPEG quality of the unpacked images; the PSNR the packer records includes its loss


def as_unpacked(avif_bytes):
    "The JPEG bytes that unpacking writes for one packed image"
    out = BytesIO()
    with Image.open(BytesIO(avif_bytes)) as im: im.convert('RGB').save(out, 'JPEG', quality=JPEG_QUALITY, subsampling=0)
    return out.getvalue()


class PackError(Exception):
    "The pack can't be unpacked; the message says what is wrong with it"


def unpack_files(pack, dest, entries):
    "Write the packed images `entries` ([path, offset, bytes]) of the file `pack` under `dest`; how many were written"
    with open(pack, 'rb') as f:
        for rel, offset, nbytes in entries:
            f.seek(offset)
            target = dest/rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try: target.write_bytes(as_unpacked(f.read(nbytes)))
            except OSError as e: raise PackError(f"{rel} (bytes {offset} to {offset + nbytes} of {pack}): {e}") from None
    return len(entries)


def read_index(pack_dir):
    "The pack's index, checked against its images file; `PackError` says what is wrong"
    fix = f"Fix: make the pack again with `python scripts/make_gpu_data.py SOURCE {pack_dir}` (or `make gpu-data`)."
    index, images = pack_dir/INDEX, pack_dir/PACK
    if not index.is_file() or not images.is_file(): raise PackError(f"{pack_dir} is not a pack: it needs {INDEX} and {PACK}. {fix}")
    try: index_data = json.loads(index.read_text())
    except (ValueError, UnicodeDecodeError) as e: raise PackError(f"{index} is not readable JSON ({e}). {fix}") from None
    files = index_data.get('files') or []
    end = max((offset + nbytes for _, offset, nbytes in files), default=0)
    if not files or images.stat().st_size != end:
        raise PackError(f"{images} holds {images.stat().st_size} bytes but its index describes {len(files)} images "
                        f"in {end}: the pack is incomplete or mixed with another. {fix}")
    missing = [f for f in index_data.get('extra_files', []) if not (pack_dir/f).is_file()]
    if missing: raise PackError(f"{pack_dir} lacks {', '.join(missing)}, which its index lists. {fix}")
    return index_data


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('pack', type=Path, help="folder holding index.json and images.bin")
    p.add_argument('dest', type=Path, help="new folder for the images (must not exist yet, or be empty)")
    p.add_argument('--workers', type=int, default=os.cpu_count(), help="processes (default: one per core)")
    args = p.parse_args(argv)
    if not features.check('avif'):
        p.error(f"this Pillow ({Image.__version__}) can't decode AVIF. Fix: install Pillow >= 11.3 (its wheels "
                "include AVIF), e.g. from the wheels `make gpu-wheels` downloads.")
    if args.dest.exists() and any(args.dest.iterdir()):
        p.error(f"{args.dest} already exists and is not empty: remove it or choose another folder")
    try: index = read_index(args.pack)
    except PackError as e: sys.exit(f"error: {e}")
    start, files, workers = time.perf_counter(), index['files'], max(1, args.workers)
    # into a temporary folder beside the destination, renamed at the end: a failed unpack leaves no half-made copy
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f'.{args.dest.name}-', dir=args.dest.parent))
    try:
        with ProcessPoolExecutor(workers) as pool:
            done = sum(pool.map(unpack_files, [args.pack/PACK] * workers, [partial] * workers,
                                [files[i::workers] for i in range(workers)]))
        for extra in index.get('extra_files', []): shutil.copy(args.pack/extra, partial/extra)
        (partial/FACTS).write_text(json.dumps({k: v for k, v in index.items() if k != 'files'}, indent=2) + '\n')
    except BaseException as e:  # any error, Ctrl-C included: no half-made copy is left behind
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, PackError): sys.exit(f"error: an image of the pack doesn't decode: {e}. Fix: make the pack again.")
        raise
    if args.dest.exists(): args.dest.rmdir()  # empty, checked above
    partial.rename(args.dest)
    print(f"{args.dest}: {done} images at {index['size']} px, JPEG quality {JPEG_QUALITY}, from AVIF quality "
          f"{index['quality']} (PSNR {index['psnr_db']['mean']:.1f} dB against the source), "
          f"{time.perf_counter() - start:.1f} s on {workers} processes")


if __name__ == '__main__': main()
