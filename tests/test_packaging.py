"""Where learners start (issue 13): the notebooks' install cell and Colab links, and the package a release uploads.

The install cell is run in subprocesses with a fake `pip` first on the path, which records how it was called, so no
test installs anything or needs the network. The wheel is built offline from a copy of the checkout and installed
with `--no-deps --no-index` into a fresh venv that sees the course venv's packages (the pinned dependencies).
"""
import json, os, re, subprocess, sys, tarfile, tomllib, zipfile
from email.parser import Parser
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
PACKAGE = 'imagenette_course'
NOTEBOOKS = sorted(NBS.glob('[0-9]*.ipynb'))

# What the install cell installs when the package is missing. Once the course is on PyPI this becomes the plain
# name, 'imagenette_course'; change it here together with the cell in every notebook.
INSTALL_TARGET = 'imagenette_course @ git+https://github.com/imagenette-course/imagenette_course'
COLAB = 'https://colab.research.google.com/github/imagenette-course/imagenette_course/blob/main/'
COLAB_BADGE = 'https://colab.research.google.com/assets/colab-badge.svg'


def cells(nb_path): return json.loads(Path(nb_path).read_text())['cells']
def source(cell): return ''.join(cell['source'])


def install_cell(nb_path=NBS/'01_data.ipynb'):
    "The notebook's install cell: the code cell that checks whether the package is there"
    is_it = lambda c: c['cell_type'] == 'code' and "find_spec('imagenette_course')" in source(c)
    found = [source(c) for c in cells(nb_path) if is_it(c)]
    assert len(found) == 1, f"{nb_path.name}: expected one install cell (with find_spec('imagenette_course')), found {len(found)}"
    return found[0]


FAKE_PIP = '''\
import json, os, sys
from pathlib import Path
with open(os.environ['FAKE_PIP_LOG'], 'a') as f: f.write(json.dumps(dict(python=sys.executable, argv=sys.argv[1:])) + '\\n')
if os.environ.get('FAKE_PIP_INSTALL_INTO'):  # "install": a stub package where the kernel will look for it
    pkg = Path(os.environ['FAKE_PIP_INSTALL_INTO'])/'imagenette_course'
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg/'__init__.py').write_text("installed_by = 'fake pip'\\n")
sys.exit(int(os.environ.get('FAKE_PIP_EXIT', '0')))
'''


def run_install_cell(tmp_path, hide_package, pip_exit=0, install=True):
    "Run the install cell as a script; (completed process, pip calls). `python -S`: no site-packages, so no course"
    fake, site = tmp_path/'fake', tmp_path/'site-packages'
    (fake/'pip').mkdir(parents=True)
    (fake/'pip'/'__init__.py').write_text('')
    (fake/'pip'/'__main__.py').write_text(FAKE_PIP)
    site.mkdir()  # exists before the cell runs, as site-packages does in Colab
    script = tmp_path/'cell.py'
    script.write_text(install_cell() + '\nprint("imported", imagenette_course.__file__)\n')
    log = tmp_path/'pip_calls.jsonl'
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'PIP_'))}
    env.update(PYTHONPATH=os.pathsep.join([str(fake), str(site)]), FAKE_PIP_LOG=str(log), FAKE_PIP_EXIT=str(pip_exit))
    if install: env['FAKE_PIP_INSTALL_INTO'] = str(site)
    cmd = [sys.executable, *(['-S'] if hide_package else []), str(script)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    calls = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def test_install_cell_does_nothing_where_the_course_is_installed(tmp_path):
    proc, calls = run_install_cell(tmp_path, hide_package=False)
    assert proc.returncode == 0, proc.stderr
    assert calls == []
    assert f'imported {ROOT/PACKAGE/"__init__.py"}' in proc.stdout


def test_install_cell_installs_the_course_where_it_is_missing(tmp_path):
    proc, calls = run_install_cell(tmp_path, hide_package=True)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 1, calls
    argv = calls[0]['argv']
    assert argv[0] == 'install' and argv[-1] == INSTALL_TARGET and all(a.startswith('-') for a in argv[1:-1]), argv
    # with the notebook's own interpreter, so the package lands in the kernel's environment
    assert Path(calls[0]['python']) == Path(sys.executable)
    assert f'imported {tmp_path/"site-packages"/PACKAGE/"__init__.py"}' in proc.stdout


def test_install_cell_stops_with_pips_error_when_the_install_fails(tmp_path):
    proc, calls = run_install_cell(tmp_path, hide_package=True, pip_exit=1, install=False)
    assert len(calls) == 1 and proc.returncode != 0
    assert 'CalledProcessError' in proc.stderr and INSTALL_TARGET in proc.stderr
    assert 'imported' not in proc.stdout


def test_install_cell_is_hidden_on_the_site():
    assert '#| hide' in install_cell().splitlines()
    sys.path.insert(0, str(ROOT/'docs'))
    try: from build_site import PROCESSORS
    finally: sys.path.remove(str(ROOT/'docs'))
    from fastcore.nbio import read_nb
    from nbdev.process import NBProcessor
    nb = NBProcessor(nb=read_nb(NBS/'01_data.ipynb'), procs=PROCESSORS, rm_directives=True, process=True).nb
    assert not [c for c in nb.cells if 'find_spec' in (c.get('source') or '')]


def test_site_shows_the_badge_from_its_own_files(tmp_path):
    "On the site the badge still links to Colab, but its image is the site's copy: pages draw offline"
    import nbformat, xml.etree.ElementTree as ET
    sys.path.insert(0, str(ROOT/'docs'))
    try: from build_site import DOCS, LOCAL_BADGE, process_notebook
    finally: sys.path.remove(str(ROOT/'docs'))
    badge = f'[![Open In Colab]({COLAB_BADGE})]({COLAB}nbs/01_demo.ipynb)'
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f'# Demo\n\n{badge}')])
    nbformat.write(nb, tmp_path/'01_demo.ipynb')
    out = process_notebook(tmp_path/'01_demo.ipynb', tmp_path/'out.ipynb')
    assert out.cells[0].source == f'# Demo\n\n[![Open In Colab]({LOCAL_BADGE})]({COLAB}nbs/01_demo.ipynb)'
    assert ET.parse(DOCS/LOCAL_BADGE).getroot().tag == '{http://www.w3.org/2000/svg}svg'


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_opens_every_notebook(nb):
    "The install cell comes first, after the `#| default_exp` cell of a notebook that exports a module"
    code = cells(nb)
    first = 1 if source(code[0]).startswith('#| default_exp') else 0
    assert len(code) > first and code[first]['cell_type'] == 'code' and source(code[first]) == install_cell(), \
        f"{nb.name}: the install cell of 01_data.ipynb must open the notebook (after any #| default_exp cell)"


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.name)
def test_open_in_colab_badge_links_to_its_own_notebook(nb):
    "The title cell or the first markdown cell after it has an Open in Colab badge for this very notebook"
    md = [(i, source(c)) for i, c in enumerate(cells(nb)) if c['cell_type'] == 'markdown']
    title = next((k for k, (_, s) in enumerate(md) if re.search(r'^# ', s, re.MULTILINE)), None)
    assert title is not None, f'{nb.name}: no H1 title'
    near_title = '\n'.join(s for _, s in md[title:title + 2])
    links = re.findall(r'\[!\[Open In Colab\]\(([^)\s]+)\)\]\(([^)\s]+)\)', near_title)
    assert links, f'{nb.name}: no "[![Open In Colab](...)](...)" badge in the title cell or the markdown cell after it'
    assert links == [(COLAB_BADGE, COLAB + f'nbs/{nb.name}')], f'{nb.name}: badge links {links}'


# --- the package: sdist and wheel -----------------------------------------------------------------------------------

def run(*cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope='module')
def dist(tmp_path_factory):
    "An sdist and a wheel, built offline from a copy of the checkout (what a fresh clone has: no stale build/)"
    tmp = tmp_path_factory.mktemp('dist')
    files = run('git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard', cwd=ROOT).stdout.split('\0')
    src = tmp/'src'
    for f in filter(None, files):
        if (ROOT/f).is_file():
            (src/f).parent.mkdir(parents=True, exist_ok=True)
            (src/f).write_bytes((ROOT/f).read_bytes())
    run(sys.executable, '-m', 'build', '--no-isolation', '--outdir', tmp/'dist', src)
    wheel, = (tmp/'dist').glob('*.whl')
    sdist, = (tmp/'dist').glob('*.tar.gz')
    return dict(src=src, wheel=wheel, sdist=sdist, tmp=tmp)


def test_twine_check_passes(dist):
    run(sys.executable, '-m', 'twine', 'check', '--strict', dist['wheel'], dist['sdist'])


def test_wheel_has_the_package_and_its_command_only(dist):
    names = zipfile.ZipFile(dist['wheel']).namelist()
    modules = sorted(n for n in names if n.startswith(f'{PACKAGE}/'))
    assert modules == sorted([f'{PACKAGE}/{p.name}' for p in (dist['src']/PACKAGE).glob('*.py')]
                             + [f'{PACKAGE}/full_mode_gpu.json'])  # the committed GPU run the chapters show
    assert not [n for n in names if n.endswith('.ipynb') or n.startswith(('nbs/', 'tests/', 'docs/'))]
    entry_points, = [n for n in names if n.endswith('.dist-info/entry_points.txt')]
    assert 'imagenette-course = imagenette_course.cli:main' in zipfile.ZipFile(dist['wheel']).read(entry_points).decode()


def test_sdist_has_the_source_readme_and_license(dist):
    names = {n.split('/', 1)[1] for n in tarfile.open(dist['sdist']).getnames() if '/' in n}
    assert {'pyproject.toml', 'README.md', 'LICENSE', f'{PACKAGE}/__init__.py', f'{PACKAGE}/cli.py',
            f'{PACKAGE}/full_mode_gpu.json'} <= names
    assert not [n for n in names if n.startswith(('nbs/', 'tests/', 'docs/')) or n.endswith('.ipynb')]


def wheel_metadata(wheel):
    zf = zipfile.ZipFile(wheel)
    meta, = [n for n in zf.namelist() if n.endswith('.dist-info/METADATA')]
    return Parser().parsestr(zf.read(meta).decode())


def test_metadata_is_complete(dist):
    meta = wheel_metadata(dist['wheel'])
    assert meta['Name'] == PACKAGE and meta['Summary'] and meta['Requires-Python'] == '>=3.11'
    assert meta['License-Expression'] == 'Apache-2.0' and meta['License-File'] == 'LICENSE'
    assert meta['Description-Content-Type'] == 'text/markdown' and 'pip install imagenette_course' in meta.get_payload()
    assert {'Programming Language :: Python :: 3.11', 'Programming Language :: Python :: 3.12'} <= set(meta.get_all('Classifier'))
    urls = dict(u.split(', ', 1) for u in meta.get_all('Project-URL'))
    assert urls['Repository'] == 'https://github.com/imagenette-course/imagenette_course'
    assert urls['Documentation'] == 'https://imagenette-course.github.io/imagenette_course/'
    assert urls['Issues'] == 'https://github.com/imagenette-course/imagenette_course/issues'


def test_package_declares_ranges_and_the_course_environment_has_the_pins(dist):
    "No exact pins in what `pip install imagenette_course` asks for; the constraints file pins the course's own venv"
    from packaging.requirements import Requirement
    reqs = [Requirement(r) for r in wheel_metadata(dist['wheel']).get_all('Requires-Dist')]
    runtime = [r for r in reqs if not r.marker]
    assert {r.name for r in runtime} >= {'fastai', 'torch', 'torchvision', 'accelerate', 'matplotlib'}
    assert not [r for r in reqs if any(s.operator in ('==', '===') for s in r.specifier)]
    pins = dict(l.split('==') for l in (ROOT/'requirements'/'constraints.txt').read_text().split('\n')
                if l.strip() and not l.startswith('#'))
    assert {'fastai', 'torch', 'torchvision', 'accelerate'} <= set(pins)
    for r in reqs:  # every pin is a version the package accepts, and the version this environment has
        if r.name in pins: assert r.specifier.contains(pins[r.name]), (r, pins[r.name])
    for name, pinned in pins.items(): assert version(name).split('+')[0] == pinned, name


def test_wheel_installs_offline_into_a_fresh_venv(dist, tmp_path):
    "`--no-deps --no-index`: the dependencies come from the course venv, seen through a .pth file"
    venv = tmp_path/'venv'
    run(sys.executable, '-m', 'venv', '--without-pip', venv)
    py = venv/'bin'/'python'
    site = Path(run(py, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))').stdout.strip())
    deps = Path(run(sys.executable, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))').stdout.strip())
    (site/'course_venv_deps.pth').write_text(f'{deps}\n')  # a plain path: the course's editable install stays off
    run(sys.executable, '-m', 'pip', '--python', py, 'install', '--quiet', '--no-deps', '--no-index', dist['wheel'])
    elsewhere = tmp_path/'elsewhere'
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTHON', 'IMAGENETTE_'))}
    imported = run(py, '-c', 'import imagenette_course as m; print(m.__file__, m.__version__)', cwd=elsewhere, env=env)
    shown = run(py, '-c', 'from imagenette_course.baseline import full_mode_run; print(full_mode_run()["device"])',
                cwd=elsewhere, env=env)
    assert shown.stdout.strip() == json.loads((ROOT/PACKAGE/'full_mode_gpu.json').read_text())['device']
    file, ver = imported.stdout.split()
    assert Path(file).is_relative_to(site) and ver == version(PACKAGE)
    helped = run(venv/'bin'/'imagenette-course', '--help', cwd=elsewhere, env=env)
    assert 'usage: imagenette-course' in helped.stdout and 'run' in helped.stdout and 'report' in helped.stdout
