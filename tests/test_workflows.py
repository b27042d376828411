"""The GitHub Actions workflows (issue 13), checked as far as can be without GitHub: they parse, each step's command
exists here (make targets in the Makefile, scripts in the repository, programs in the venv), the CI workflow runs
.ci/run, the docs workflow builds, checks and publishes the site, every action is pinned, and the linters pass."""
import re, subprocess, sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT/'.github'/'workflows').glob('*.yml'))
VENV_BIN = Path(sys.executable).parent


def load(path):
    wf = yaml.safe_load(path.read_text())
    if True in wf: wf['on'] = wf.pop(True)  # YAML 1.1 reads the key `on` as true
    return wf


def steps(wf): return [s for job in wf['jobs'].values() for s in job.get('steps', [])]
def runs(wf): return [s['run'] for s in steps(wf) if 'run' in s]


def make_targets():
    rules = re.findall(r'^([\w.-]+(?:[ \t]+[\w.-]+)*)[ \t]*:(?!=)', (ROOT/'Makefile').read_text(), re.MULTILINE)
    return {t for rule in rules for t in rule.split()}


def test_the_workflows_are_there():
    assert {p.name for p in WORKFLOWS} >= {'ci.yml', 'deploy.yml', 'gpu-check.yml'}


@pytest.mark.parametrize('path', WORKFLOWS, ids=lambda p: p.name)
def test_every_step_command_exists_here(path):
    wf, targets = load(path), make_targets()
    assert wf['on'] and wf['jobs'] and all(job.get('steps') for job in wf['jobs'].values())
    for cmd in runs(wf):
        for line in cmd.splitlines():
            for args in re.findall(r'\bmake((?:[ \t]+[\w.-]+(?=\s|$))+)', line):
                wanted = [a for a in args.split() if not a.startswith('-')]
                assert set(wanted) <= targets, f'{path.name}: `{line.strip()}`: no Makefile target {set(wanted) - targets}'
            for f in re.findall(r'(?<![\w/])((?:\.ci|scripts|docs|bench)/[\w./-]*\w)', line):
                assert (ROOT/f).exists(), f'{path.name}: `{line.strip()}`: {f} is not in the repository'
            for prog in re.findall(r'\.venv/bin/([\w.-]+)', line):
                assert (VENV_BIN/prog).exists(), f'{path.name}: `{line.strip()}`: the venv has no {prog}'


@pytest.mark.parametrize('path', WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_commit(path):
    "A tag can be moved to other code; a commit can't. The comment says which release the commit is"
    for line in path.read_text().splitlines():
        if m := re.search(r'uses:\s*(\S+)', line):
            assert re.fullmatch(r'[\w.-]+/[\w./-]+@[0-9a-f]{40}', m.group(1)) and re.search(r'#\s*v\d', line), line


def test_ci_runs_ci_script_on_every_push_and_pull_request():
    wf = load(ROOT/'.github'/'workflows'/'ci.yml')
    assert {'push', 'pull_request'} <= set(wf['on'])
    job, = wf['jobs'].values()
    assert re.fullmatch(r'python:3\.11-\w+', job['container'])
    assert 'bash .ci/run' in runs(wf)
    assert job['env']['IMAGENETTE_DOWNLOAD']
    cached = {s['with']['path'] for s in steps(wf) if s.get('uses', '').startswith('actions/cache@')}
    assert cached == {'~/.fastai', '~/.cache/pip'}
    ci_run = (ROOT/'.ci'/'run').read_text()
    assert 'IMAGENETTE_DOWNLOAD' in ci_run and 'untar_data(URLs.' in ci_run


def test_docs_workflow_builds_checks_and_publishes_from_main():
    wf = load(ROOT/'.github'/'workflows'/'deploy.yml')
    assert wf['on']['push']['branches'] == ['main']
    build, deploy = wf['jobs']['build'], wf['jobs']['deploy']
    assert [r for r in runs(dict(jobs=dict(build=build))) if r.startswith('make')] == ['make docs', 'make docs-check']
    upload, = [s for s in build['steps'] if s.get('uses', '').startswith('actions/upload-pages-artifact@')]
    assert upload['with']['path'] == '_site'
    assert deploy['needs'] == 'build' and deploy['permissions'] == {'pages': 'write', 'id-token': 'write'}
    assert deploy['environment']['name'] == 'github-pages'
    assert [s['uses'].split('@')[0] for s in deploy['steps']] == ['actions/deploy-pages']


def test_zizmor_finds_nothing():
    "zizmor (the dev extra), offline: unpinned actions, leaked credentials, broad permissions, injection"
    zizmor = VENV_BIN/'zizmor'
    if not zizmor.exists(): pytest.fail('zizmor is missing: make install (it is in the dev extra)')
    proc = subprocess.run([zizmor, '--offline', '--no-progress', ROOT/'.github'/'workflows'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_gpu_check_runs_when_what_it_installs_changes_and_its_log_is_the_new_runs():
    wf = load(ROOT/'.github'/'workflows'/'gpu-check.yml')
    assert {'pyproject.toml', 'requirements/constraints.txt', 'Makefile'} <= set(wf['on']['push']['paths'])
    # `make gpu-check` writes $(GPU_OUT)/log.txt afresh (an earlier run's log must not sit beside the new results);
    # a second writer would interleave with it
    assert not [r for r in runs(wf) if 'log.txt' in r]
    recipe = re.search(r'^gpu-check: install.*\n((?:\t.*\n)+)', (ROOT/'Makefile').read_text(), re.M)[1]
    assert 'log.txt)' in recipe.split('rm -f', 1)[1].splitlines()[0] and 'tee $(GPU_OUT)/log.txt' in recipe
