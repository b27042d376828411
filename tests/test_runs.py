"Runs that survive interruption, checkpoints that can't run code, and data-parallel training"
import os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from fastai.vision.models.xresnet import xresnet18

import imagenette_course.cli  # registers every recipe
import imagenette_course.training as training
from imagenette_course.data import get_dls
from imagenette_course.training import (Checkpoint, CheckpointError, read_ledger, recipe_config, run_key, run_recipe,
                                        xresnet_learner)

EXE = os.path.join(os.path.dirname(sys.executable), 'imagenette-course')
ARGS = ['--mode', 'quick', '--size', '32', '--bs', '4']


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    path = tmp_path/'checkpoints'
    monkeypatch.setenv('IMAGENETTE_CHECKPOINTS', str(path))
    return path


def cli(*args, **kwargs):
    return subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'}, **kwargs)


def test_killed_run_resumes_and_records_once(fake_imagenette, checkpoints, isolated_ledger):
    args = ['run', 'progressive', '--data', str(fake_imagenette), *ARGS, '--epochs', '6', '--ledger', str(isolated_ledger)]
    first = cli(*args)
    deadline = time.time() + 240
    while not list(checkpoints.glob('*.pt')) and first.poll() is None and time.time() < deadline: time.sleep(0.2)
    assert first.poll() is None, f"the run ended before it could be killed:\n{first.stdout.read()}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not isolated_ledger.exists() and len(list(checkpoints.glob('*.pt'))) == 1
    second = cli(*args)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert 'resuming from' in out
    (rec,) = read_ledger(isolated_ledger)
    assert rec['recipe'] == 'progressive' and rec['epochs'] == 1 + 1 + 6 and rec['sizes'] == [32, 32]
    assert list(checkpoints.iterdir()) == []


def test_interrupted_run_keeps_its_checkpoint_and_says_so(fake_imagenette, checkpoints, isolated_ledger, monkeypatch,
                                                          capsys):
    "Ctrl-C after the first checkpoint: exit 130, nothing in the ledger, the checkpoint kept for resuming"
    save = Checkpoint.save
    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(Checkpoint, 'save', save_then_interrupt)
    with pytest.raises(SystemExit) as e:
        imagenette_course.cli.main(['run', 'progressive', '--data', str(fake_imagenette), *ARGS, '--epochs', '6'])
    assert e.value.code == 130 and 'run the same command again to resume' in capsys.readouterr().err
    assert not isolated_ledger.exists() and len(list(checkpoints.glob('*.pt'))) == 1


def test_killed_after_recording_is_not_recorded_twice(fake_imagenette, checkpoints, isolated_ledger, monkeypatch):
    "A run killed between writing its record and deleting its checkpoint is recognised when started again"
    def killed(self): raise KeyboardInterrupt
    overrides = dict(data=str(fake_imagenette), size=32, bs=4, epochs=1)
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, 'remove', killed)
        with pytest.raises(KeyboardInterrupt): run_recipe('progressive', 'quick', **overrides)
    assert len(read_ledger()) == 1 and len(list(checkpoints.glob('*.pt'))) == 1
    again = run_recipe('progressive', 'quick', **overrides)
    assert len(read_ledger()) == 1 and again.extra['run_id'] == read_ledger()[0]['extra']['run_id']
    assert list(checkpoints.glob('*.pt')) == []


def checkpoint_path(fake_imagenette, checkpoints):
    cfg = recipe_config('progressive', 'quick', data=str(fake_imagenette), size=32, bs=4, epochs=6)
    return checkpoints/f"{run_key('progressive', cfg)}.pt"


def test_truncated_checkpoint_is_a_clear_error(fake_imagenette, checkpoints, isolated_ledger, tmp_path):
    learn = xresnet_learner(get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0))
    path = checkpoint_path(fake_imagenette, checkpoints)
    Checkpoint(path).save(learn, phase=0, epoch=1, elapsed=1.0)
    path.write_bytes(path.read_bytes()[:5000])
    run = cli('run', 'progressive', '--data', str(fake_imagenette), *ARGS, '--epochs', '6', '--ledger', str(isolated_ledger))
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 2 and 'not a readable checkpoint' in out and str(path) in out and 'Delete it' in out


def test_checkpoint_of_another_architecture_is_a_clear_error(fake_imagenette, tmp_path):
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    Checkpoint(tmp_path/'c.pt').save(xresnet_learner(dls, arch=xresnet18), phase=0, epoch=1, elapsed=1.0)
    with pytest.raises(CheckpointError, match='different model'): Checkpoint(tmp_path/'c.pt').restore(xresnet_learner(dls))


class Payload:
    def __reduce__(self): return (Path.touch, (Path(os.environ['PAYLOAD_FILE']),))


def test_checkpoints_load_weights_only(tmp_path, monkeypatch):
    "A file that would run code when unpickled is refused, and the code does not run"
    monkeypatch.setenv('PAYLOAD_FILE', str(tmp_path/'pwned'))
    torch.save(dict(model={}, opt=None, state=dict(uid='x', phase=0, epoch=1, elapsed=0.), evil=Payload()), tmp_path/'c.pt')
    with pytest.raises(CheckpointError, match='not a readable checkpoint'): Checkpoint(tmp_path/'c.pt')
    assert not (tmp_path/'pwned').exists()


def test_resumed_weights_and_optimizer_are_the_saved_ones(fake_imagenette, tmp_path):
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    learn = xresnet_learner(dls)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    Checkpoint(tmp_path/'c.pt').save(learn, phase=1, epoch=2, elapsed=3.0)
    fresh = xresnet_learner(dls)
    ck = Checkpoint(tmp_path/'c.pt')
    ck.restore(fresh)
    assert (ck.state['phase'], ck.state['epoch'], ck.elapsed) == (1, 2, 3.0)
    for a, b in zip(learn.model.state_dict().values(), fresh.model.state_dict().values()): assert torch.equal(a, b)
    assert torch.equal(learn.opt.state_dict()['state'][0]['grad_avg'], fresh.opt.state_dict()['state'][0]['grad_avg'])


def test_two_processes_train_data_parallel_and_record_once(fake_imagenette, checkpoints, isolated_ledger):
    "Two CPU processes on the gloo backend train one recipe together; only the main process writes"
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    out = subprocess.run([torchrun, '--standalone', '--nproc_per_node', '2', EXE, 'run', 'progressive',
                          '--data', str(fake_imagenette), *ARGS, '--epochs', '1', '--ledger', str(isolated_ledger)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert out.returncode == 0, out.stdout + out.stderr
    (rec,) = read_ledger(isolated_ledger)
    assert rec['recipe'] == 'progressive' and rec['n_train'] == 40
    assert out.stdout.count('progressive: accuracy') == 1 and list(checkpoints.iterdir()) == []
