"The wheels carried to a lent GPU machine: with its image, they must provide every import of the GPU check"
import ast, importlib.util, subprocess, sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What runs there: the package, and the scripts scripts/lent_gpu_check.sh calls
GPU_CODE = [*sorted((ROOT/'imagenette_course').glob('*.py')), ROOT/'scripts/gpu_check.py', ROOT/'scripts/unpack_gpu_data.py',
            ROOT/'bench/gpu_data_path.py', ROOT/'bench/optimizer_step.py']


def top_level_imports(path):
    "The top-level names of the absolute imports in the Python file `path`"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import): found |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0: found.add(node.module.split('.')[0])
    return found


def test_the_image_and_the_wheels_provide_every_import_of_the_gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_wheels', ROOT/'scripts/gpu_wheels.py')
    wheels = importlib.util.module_from_spec(spec); spec.loader.exec_module(wheels)
    there = set(wheels.needed()) | wheels.PROVIDED
    dists = packages_distributions()
    local = {p.stem for p in GPU_CODE} | {'imagenette_course'}  # the working tree travels with the call
    missing = {(f.relative_to(ROOT).as_posix(), name) for f in GPU_CODE for name in top_level_imports(f)
               if name not in sys.stdlib_module_names and name not in local
               and not any(wheels.norm(d) in there for d in dists.get(name, []))}
    assert not missing, f"imported on the GPU machine but neither in its image nor carried: {sorted(missing)}"
    assert 'fastai' in there and 'accelerate' in there


def load_script(path):
    "The Python file `path` as a module"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    return module


def test_what_is_left_out_as_not_needed_is_not_imported_by_the_code_that_runs_there():
    "NOT_NEEDED's reason holds: the GPU code imports none of them, nor fastai.text, spacy's only user"
    wheels = load_script(ROOT/'scripts/gpu_wheels.py')
    assert not {'spacy', 'sniffio'} & wheels.PROVIDED  # neither is on the image's package list
    for f in GPU_CODE:
        assert not set(top_level_imports(f)) & wheels.NOT_NEEDED and 'fastai.text' not in f.read_text(), f


def test_the_pack_the_wheels_and_the_repository_fit_in_what_travels_to_a_lent_machine(monkeypatch):
    "make_gpu_data.py's --max-mib leaves room for the wheels and the tracked files, and 1 MiB that a session adds"
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True)
    if files.returncode: pytest.skip("not a git checkout")
    tracked = sum((ROOT/f).stat().st_size for f in files.stdout.decode().split('\0') if (ROOT/f).is_file()) / 2**20
    monkeypatch.syspath_prepend(str(ROOT/'scripts'))  # it imports unpack_gpu_data.py beside it
    pack = load_script(ROOT/'scripts/make_gpu_data.py')
    assert pack.make_parser().parse_args(['dest']).max_mib == pack.MAX_MIB
    assert tracked + pack.WHEELS_MIB + pack.MAX_MIB + 1 <= pack.TRAVEL_MIB
