#!/usr/bin/env python
"""Download the wheels a lent GPU machine needs to run the course: the course's requirements that its image lacks.

    python scripts/gpu_wheels.py .whl            # then, there: pip install --no-index --no-deps --target DIR .whl/*.whl

The lent machines (Python 3.12, torch, torchvision, numpy, pandas, matplotlib, scikit-learn, scipy, accelerate and
more, no internet) lack fastai and the small packages it brings. This walks the course's requirements (fastai's among
them) in this environment, so each wheel has the version the course was tested with, skips what the machine's image
already has, and downloads
the rest for CPython 3.12 on x86-64 Linux, without their dependencies (pip there installs them with --no-deps).
Pillow comes too: unpack_gpu_data.py needs AVIF, which Pillow's wheels have had since 11.3.
"""
import argparse, re, subprocess, sys
from importlib import metadata
from pathlib import Path

# Installed on the lent machines' image (their package list, 2026-11), so not carried
PROVIDED = set("""accelerate anyio certifi charset-normalizer click cloudpickle filelock fsspec h11 hf-xet httpcore httpx
huggingface-hub idna jinja2 markdown-it-py markupsafe matplotlib mdurl numpy packaging pandas psutil pygments
python-dateutil pyyaml requests rich safetensors scikit-learn scipy six threadpoolctl torch torchvision tqdm
typing-extensions urllib3 uvloop""".split())
# Not on the image, and not needed there either, so not carried: spacy, which fastai requires for fastai.text alone
# (the course never imports it); sniffio, which anyio and httpcore import only if it is installed
NOT_NEEDED = {'spacy', 'sniffio'}
ALWAYS = ['pillow']  # for AVIF, whatever the image's version
PLATFORMS = ['manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64']


def norm(name):
    "A distribution's name as pip compares them"
    return re.sub(r'[-_.]+', '-', name).lower()


def requirements(dist):
    "The names of what the distribution `dist` requires to run (not its extras)"
    return [re.split(r'[\s;<>=!~\[(]', r, maxsplit=1)[0] for r in dist.requires or [] if 'extra ==' not in r]


def needed(root='imagenette_course'):
    "{name: version} of what `root` (carried as source) requires here, less `PROVIDED` and `NOT_NEEDED`, plus `ALWAYS`"
    found, todo = {}, [*requirements(metadata.distribution(root)), *ALWAYS]
    while todo:
        name = norm(todo.pop())
        if name in found or (name in PROVIDED | NOT_NEEDED and name not in ALWAYS): continue
        try: dist = metadata.distribution(name)
        except metadata.PackageNotFoundError: continue  # a requirement for another platform (its marker excluded it here)
        found[name] = dist.version
        todo += requirements(dist)
    return found


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('dest', type=Path, help="folder for the wheels (e.g. .whl, which git ignores)")
    args = p.parse_args(argv)
    wanted = needed()
    args.dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:', '--python-version',
           '3.12', '--implementation', 'cp', *[a for plat in PLATFORMS for a in ('--platform', plat)], '-d', str(args.dest)]
    result = subprocess.run(cmd + [f'{n}=={v}' for n, v in sorted(wanted.items())])
    if result.returncode: sys.exit(f"error: pip could not download every wheel (exit {result.returncode}); see above")
    wheels = sorted(args.dest.glob('*.whl'))
    print(f"{args.dest}: {len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB: "
          + ', '.join(f'{n} {v}' for n, v in sorted(wanted.items())))


if __name__ == '__main__': main()
