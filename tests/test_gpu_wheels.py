"The wheels carried to a lent GPU machine: with its image, they must provide every import of the GPU check"
import ast, importlib.util, sys
from importlib.metadata import packages_distributions
from pathlib import Path

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
