"Runs that survive interruption, results that are never lost or misreported, and data-parallel training"
import errno, json, os, re, signal, subprocess, sys, threading, time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.vision.models.xresnet import xresnet18, xresnet50

import imagenette_course.cli
import imagenette_course.distributed as distributed
import imagenette_course.fast_data as fast_data
from conftest import fake_dataset
from test_fast_data import no_room
import imagenette_course.recipes as recipes
import imagenette_course.resume as resume
from imagenette_course.data import get_dls, run_config
from imagenette_course.data import CLASS_NAMES
from imagenette_course.ledger import RunRecord, append_record, lock_file, read_ledger
from imagenette_course.recipes import recipe_config, run_recipe
from imagenette_course.resume import (Checkpoint, CheckpointError, RunError, check_every_fit_ran, real_fit, resumable,
                                      run_key, training_alone)
from imagenette_course.tta import fastai_tta

EXE = os.path.join(os.path.dirname(sys.executable), 'imagenette-course')
ARGS = ['--mode', 'quick', '--size', '32', '--bs', '8']  # 5 batches an epoch on the fake data's 40 images


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    "Each test trains for itself: no model reused from an earlier test in this process"
    monkeypatch.setattr(recipes, '_TRAINED', recipes.OrderedDict())


def cli(*args, **kwargs):
    return subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'}, **kwargs)


def learner(dls, arch=xresnet50):
    return Learner(dls, arch(n_out=dls.c), loss_func=CrossEntropyLossFlat())


# --- killed, interrupted, resumed ---

def test_killed_run_resumes_and_records_once(fake_imagenette, checkpoints, isolated_ledger):
    args = ['run', 'progressive', '--data', str(fake_imagenette), *ARGS, '--epochs', '4', '--ledger', str(isolated_ledger)]
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
    # at --size 32 the small stage is half of it: the images still grow
    assert rec['recipe'] == 'progressive' and rec['epochs'] == 1 + 1 + 4 and rec['sizes'] == [16, 32]
    assert set(rec['extra']['seconds_per_epoch']) == {'16', '32'}  # JSON keys: px as text
    assert list(checkpoints.iterdir()) == []


class InterruptAfter(Callback):
    "Ctrl-C at the end of epoch `epoch`, once `RunTracker` has saved it"
    order = 70
    def __init__(self, epoch): self.at = epoch
    def after_epoch(self):
        if self.epoch == self.at: raise KeyboardInterrupt


def test_a_fit_resumed_midway_shows_and_keeps_only_the_epochs_it_trains(fake_imagenette, checkpoints):
    "With fastai's progress bar on (the command line's case), the skipped epochs leave no row and no Recorder entry"
    dls = get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0)
    with resumable(Checkpoint(checkpoints/'fit.pt')), pytest.raises(KeyboardInterrupt):
        learner(dls, xresnet18).fit(3, cbs=InterruptAfter(0))
    with resumable(Checkpoint(checkpoints/'fit.pt')) as ck:
        learn = learner(dls, xresnet18)
        learn.fit(3)
    assert ck.state['fits'] == [[3, 3]] and len(ck.state['epochs']) == 3
    assert [len(v) for v in learn.recorder.values] == [2, 2]  # epochs 1 and 2: training and validation loss


def test_tta_after_a_resumable_fit_is_not_taken_for_a_fit(fake_imagenette, checkpoints):
    "`learn.tta` sends before_fit before it turns the epoch bar off: chapter 5's `fastai_tta` must not count as a fit"
    dls = get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0)
    with resumable(Checkpoint(checkpoints/'fit.pt')) as ck:
        learn = learner(dls, xresnet18)
        with learn.no_logging(): learn.fit(1)
        fastai_tta(learn, n=1)
    assert ck.state['fits'] == [[1, 1]]


def ctrl_c(): raise KeyboardInterrupt
def sigterm(): os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a batch system sends it

@pytest.mark.parametrize('interrupt', [ctrl_c, sigterm])
def test_interrupted_run_keeps_its_checkpoint_and_says_so(fake_imagenette, checkpoints, isolated_ledger, monkeypatch,
                                                          capsys, interrupt):
    "Ctrl-C or SIGTERM after the first checkpoint: exit 130 or 143, nothing in the ledger, the checkpoint kept for resuming"
    save = Checkpoint.save
    def save_then_interrupt(self, learn):
        save(self, learn)
        interrupt()
    monkeypatch.setattr(Checkpoint, 'save', save_then_interrupt)
    with pytest.raises(SystemExit) as e:
        imagenette_course.cli.main(['run', 'baseline', '--data', str(fake_imagenette), *ARGS, '--epochs', '3'])
    assert e.value.code == (130 if interrupt is ctrl_c else 143)  # as a shell reports either signal
    assert 'the same command resumes the interrupted training' in capsys.readouterr().err
    assert not isolated_ledger.exists() and len(list(checkpoints.glob('*.pt'))) == 1


def test_a_run_stopped_while_measuring_keeps_its_finished_training(fake_imagenette, checkpoints, isolated_ledger,
                                                                  monkeypatch, capsys):
    "Its checkpoint holds every epoch: the message must say so, not that nothing is left"
    def stopped(*args): raise KeyboardInterrupt
    monkeypatch.setattr(recipes, 'measured', stopped)
    with pytest.raises(SystemExit) as e:
        imagenette_course.cli.main(['run', 'baseline', '--data', str(fake_imagenette), *ARGS, '--epochs', '1'])
    assert e.value.code == 130 and 'is kept: the same command resumes the interrupted training' in capsys.readouterr().err
    assert not isolated_ledger.exists() and len(list(checkpoints.glob('*.pt'))) == 1


def test_killed_after_recording_is_not_recorded_twice(fake_imagenette, checkpoints, isolated_ledger, monkeypatch):
    "A run killed between writing its record and deleting its checkpoint is recognised when started again"
    def killed(self): raise KeyboardInterrupt
    overrides = dict(path=str(fake_imagenette), size=32, bs=4, epochs=1)
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, 'remove', killed)
        with pytest.raises(KeyboardInterrupt): run_recipe('progressive', 'quick', **overrides)
    assert len(read_ledger()) == 1 and len(list(checkpoints.glob('*.pt'))) == 1
    recipes._TRAINED.clear()
    again = run_recipe('progressive', 'quick', **overrides)
    assert len(read_ledger()) == 1 and again.extra['run_id'] == read_ledger()[0]['extra']['run_id']
    assert again.learn is None  # no model was loaded: run_recipe's docstring says so
    assert list(checkpoints.glob('*.pt')) == []


def killed_before_recording_then_rerun(recipe, checkpoints, monkeypatch, **overrides):
    "(the weights the killed run saved, the rerun's record): killed after training, before its record was written"
    def killed(record, ledger=None, checkpoint=None): raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(recipes, 'save_record', killed)
        with pytest.raises(KeyboardInterrupt): run_recipe(recipe, 'quick', **overrides)
    saved = torch.load(next(checkpoints.glob('*.pt')), weights_only=True)['model']
    recipes._TRAINED.clear()
    return saved, run_recipe(recipe, 'quick', **overrides)


def test_finished_but_unrecorded_run_records_the_final_model_at_its_final_size(fake_imagenette, checkpoints,
                                                                              isolated_ledger, monkeypatch):
    "Killed after training, before recording: the rerun trains nothing and measures the final 64 px model"
    saved, rec = killed_before_recording_then_rerun('progressive', checkpoints, monkeypatch,
                                                    path=str(fake_imagenette), size=64, bs=4, epochs=1)
    assert rec.sizes == [32, 64] and rec.epochs == 3 and len(read_ledger()) == 1
    assert rec.learn.dls.valid.one_batch()[0].shape[-2:] == (64, 64)
    assert all(torch.equal(v, rec.learn.model.state_dict()[k]) for k, v in saved.items())
    assert rec.accuracy == pytest.approx(float(rec.learn.validate()[1]))


def test_a_resumed_fit_trains_as_the_uninterrupted_one_would(fake_imagenette, checkpoints):
    "Same weights at the end: the resumed epochs draw the batches and augmentations the interrupted run would have"
    def fit(*cbs):
        learn = learner(get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0), xresnet18)
        with learn.no_logging(): learn.fit_one_cycle(3, cbs=list(cbs))
        return learn
    unkilled = fit()
    with resumable(Checkpoint(checkpoints/'fit.pt')), pytest.raises(KeyboardInterrupt): fit(InterruptAfter(0))
    with resumable(Checkpoint(checkpoints/'fit.pt')): resumed = fit()
    for k, v in unkilled.model.state_dict().items(): assert torch.allclose(v.float(), resumed.model.state_dict()[k].float(), atol=1e-6), k
    # and the same progress table: the resumed epochs' train_loss goes on smoothing from the saved one
    for got, want in zip(resumed.recorder.values, unkilled.recorder.values[1:], strict=True):  # train and valid loss
        assert list(got) == pytest.approx(list(want), rel=1e-5)  # fastai `L`s


def test_a_finished_mixup_run_killed_before_recording_records_without_training(fake_imagenette, checkpoints,
                                                                               isolated_ledger, monkeypatch):
    "fastai's MixUp fails if a fit is cancelled before it starts: a finished fit skips its epochs instead"
    saved, rec = killed_before_recording_then_rerun('mixup', checkpoints, monkeypatch,
                                                    path=str(fake_imagenette), size=32, bs=8, epochs=1)
    assert len(read_ledger()) == 1 and all(torch.equal(v, rec.learn.model.state_dict()[k]) for k, v in saved.items())


@pytest.mark.parametrize('stop, expected', [
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"), RunError),  # a full disk
    (KeyboardInterrupt(), KeyboardInterrupt)])  # Ctrl-C (or a SIGTERM) in the middle of the write
def test_a_checkpoint_write_cut_short_keeps_the_last_checkpoint_and_no_partial_file(fake_imagenette, checkpoints,
                                                                                     monkeypatch, stop, expected):
    dls = get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0)
    with resumable(Checkpoint(checkpoints/'fit.pt')), pytest.raises(KeyboardInterrupt):
        learner(dls, xresnet18).fit(3, cbs=InterruptAfter(0))
    saved = (checkpoints/'fit.pt').read_bytes()
    def cut_short(obj, f):
        Path(f).write_bytes(b'partial')
        raise stop
    monkeypatch.setattr(torch, 'save', cut_short)
    with resumable(Checkpoint(checkpoints/'fit.pt')), pytest.raises(expected) as e: learner(dls, xresnet18).fit(3)
    if expected is RunError: assert 'the last checkpoint there is kept' in str(e.value)
    assert [p.name for p in checkpoints.iterdir()] == ['fit.pt'] and (checkpoints/'fit.pt').read_bytes() == saved


# --- checkpoints that can't be used ---

def checkpoint_path(fake_imagenette, checkpoints, **settings):
    cfg = recipe_config('progressive', 'quick', path=str(fake_imagenette), size=32, bs=8, **settings)  # as ARGS
    return checkpoints/f"{run_key('progressive', cfg)}.pt"


@pytest.mark.parametrize('content', ['truncated', 'empty', 'torch.save({})', 'random bytes'])
def test_unusable_checkpoint_is_one_clear_error(fake_imagenette, checkpoints, isolated_ledger, content, capsys):
    path = checkpoint_path(fake_imagenette, checkpoints, epochs=6)
    if content == 'truncated':
        Checkpoint(path).save(learner(get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)))
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.parent.mkdir(parents=True)
        if content == 'empty': path.write_bytes(b'')
        elif content == 'random bytes': path.write_bytes(os.urandom(3000))
        else: torch.save({}, path)
    # in this process (the console script's `main`): the error comes before any training
    with pytest.raises(SystemExit) as exited:
        imagenette_course.cli.main(['run', 'progressive', '--data', str(fake_imagenette), *ARGS, '--epochs', '6',
                                    '--ledger', str(isolated_ledger)])
    out = '\n'.join(capsys.readouterr())
    assert exited.value.code == 2, out
    assert str(path) in out and 'Delete it to start the run over' in out
    assert 'Traceback' not in out and 'weights_only=False' not in out and len(out.strip().splitlines()) <= 3


def test_checkpoint_of_another_architecture_is_a_clear_error(fake_imagenette, tmp_path):
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    Checkpoint(tmp_path/'c.pt').save(learner(dls, arch=xresnet18))
    with pytest.raises(CheckpointError, match='different model'): Checkpoint(tmp_path/'c.pt').restore(learner(dls))


class Payload:
    def __reduce__(self): return (Path.touch, (Path(os.environ['PAYLOAD_FILE']),))


def test_checkpoints_load_weights_only(tmp_path, monkeypatch):
    "A file that would run code when unpickled is refused, and the code does not run"
    monkeypatch.setenv('PAYLOAD_FILE', str(tmp_path/'pwned'))
    torch.save(dict(model={}, opt=None, state=dict(uid='x', fits=[], epochs=[], elapsed=0.), evil=Payload()), tmp_path/'c.pt')
    with pytest.raises(CheckpointError, match='not a readable checkpoint'): Checkpoint(tmp_path/'c.pt')
    assert not (tmp_path/'pwned').exists()


def test_restored_weights_and_optimizer_are_the_saved_ones(fake_imagenette, tmp_path):
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    learn = learner(dls)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    Checkpoint(tmp_path/'c.pt').save(learn)
    fresh = learner(dls)
    Checkpoint(tmp_path/'c.pt').restore(fresh)
    for a, b in zip(learn.model.state_dict().values(), fresh.model.state_dict().values()): assert torch.equal(a, b)
    assert torch.equal(learn.opt.state_dict()['state'][0]['grad_avg'], fresh.opt.state_dict()['state'][0]['grad_avg'])


def test_an_unreadable_checkpoint_is_kept_not_called_broken(fake_imagenette, tmp_path, monkeypatch):
    "A read error (permissions, a failing disk, a folder in its place) says so: deleting it would lose good epochs"
    Checkpoint(tmp_path/'c.pt').save(learner(get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0), xresnet18))
    with monkeypatch.context() as m:
        m.setattr(torch, 'load', lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, 'Input/output error')))
        with pytest.raises(CheckpointError) as e: Checkpoint(tmp_path/'c.pt')
    assert 'could not be read (Input/output error); the checkpoint is kept' in e.value.msg
    assert 'Delete' not in e.value.msg
    (tmp_path/'folder.pt').mkdir()
    with pytest.raises(CheckpointError, match='could not be read') as e: Checkpoint(tmp_path/'folder.pt')
    assert 'Delete' not in e.value.msg


def test_saves_write_through_one_temporary_file(fake_imagenette, checkpoints, monkeypatch):
    """Checkpoints are hundreds of MB in full mode: saves killed half-way (SIGKILL, the OOM killer) must not pile up one
    temporary file each; the next save replaces the one left"""
    learn = learner(get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0), xresnet18)
    written, save = [], torch.save
    monkeypatch.setattr(torch, 'save', lambda obj, f: written.append(Path(f)) or save(obj, f))
    (checkpoints/'c.pt.tmp').parent.mkdir(parents=True, exist_ok=True)
    (checkpoints/'c.pt.tmp').write_bytes(b'half of a killed save')
    for _ in range(2): Checkpoint(checkpoints/'c.pt').save(learn)
    assert written == [checkpoints/'c.pt.tmp'] * 2
    assert [p.name for p in checkpoints.iterdir()] == ['c.pt']


def test_one_run_trains_in_one_process_at_a_time(checkpoints, monkeypatch):
    "A second run of one training stops before it trains; the lock goes with its run, and a stale lock file stops none"
    ck = Checkpoint(checkpoints/'progressive-quick-0.pt')
    with training_alone(ck.path):
        with pytest.raises(RunError, match='another run is training progressive-quick-0 now') as e:
            with training_alone(ck.path, grace_s=0.5): pass
        assert 'IMAGENETTE_CHECKPOINTS' in e.value.msg
        with monkeypatch.context() as m:  # a data-parallel run's other processes train with the main one
            m.setenv('RANK', '1')
            with training_alone(ck.path): pass
    assert list(checkpoints.iterdir()) == []  # the lock file goes with its run
    (checkpoints/'progressive-quick-0.pt.lock').touch()  # left by a killed run: its lock went with its process
    with training_alone(ck.path): pass
    assert list(checkpoints.iterdir()) == []


def test_a_run_that_waited_on_a_lock_file_deleted_meanwhile_locks_the_new_one(checkpoints, monkeypatch):
    "A finishing run deletes its lock file: a run that waited on it must lock the one at its name, or a third trains too"
    path = checkpoints/'progressive-quick-0.pt'
    waiting, inside, leave = threading.Event(), threading.Event(), threading.Event()
    tried = resume._taken
    def trying(f, grace_s):
        if threading.current_thread().name == 'second': waiting.set()  # it has opened the first run's lock file
        return tried(f, grace_s)
    monkeypatch.setattr(resume, '_taken', trying)
    def second():
        with training_alone(path): inside.set(); leave.wait(30)
    thread = threading.Thread(target=second, name='second')
    try:
        with training_alone(path):  # the first run, which deletes its lock file as it ends
            thread.start()
            assert waiting.wait(10)
        assert inside.wait(10)
        with pytest.raises(RunError, match='another run is training'):  # a third run, which makes a new lock file
            with training_alone(path, grace_s=0.5): pass
    finally: leave.set(); thread.join()


def test_a_lock_that_a_killed_runs_workers_still_hold_is_waited_for(checkpoints):
    "A run killed outright leaves its forked loader workers holding its lock for a few seconds: the next run waits"
    checkpoints.mkdir(parents=True, exist_ok=True)
    lock = checkpoints/'progressive-quick-0.pt.lock'
    with open(lock, 'a') as worker:  # another open file of the lock, as a forked worker's
        assert lock_file(worker, wait=False)
        threading.Timer(1.0, worker.close).start()  # the worker exits a second later
        with training_alone(checkpoints/'progressive-quick-0.pt'): pass


def test_a_resumed_program_with_fewer_fits_is_an_error_not_an_untrained_model(fake_imagenette, checkpoints):
    "The fits it skips restore no weights: it would end with its model as created"
    dls = get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0)
    def run(n_fits):
        with resumable(Checkpoint(checkpoints/'fit.pt')) as ck:
            learn = learner(dls, xresnet18)
            with learn.no_bar(), learn.no_logging():
                for _ in range(n_fits): learn.fit(1)
        return ck
    check_every_fit_ran(run(2))  # trained, then
    check_every_fit_ran(run(2))  # resumed by the same program
    with pytest.raises(CheckpointError, match='saved by a run of 2 fits; this one ran 1.*Delete it'):
        check_every_fit_ran(run(1))


def test_float16_loss_scale_is_checkpointed(fake_imagenette, tmp_path):
    "fastai's MixedPrecision keeps a GradScaler in `learn.scaler` during a fit; older checkpoints have no scale"
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    learn, fresh = learner(dls, xresnet18), learner(dls, xresnet18)
    Checkpoint(tmp_path/'old.pt').save(learn)  # no scaler: as a float32 run, or a checkpoint written before
    learn.scaler = torch.amp.GradScaler('cpu', init_scale=1024.)
    Checkpoint(tmp_path/'c.pt').save(learn)
    fresh.scaler = torch.amp.GradScaler('cpu')
    Checkpoint(tmp_path/'old.pt').restore(fresh)
    assert fresh.scaler.get_scale() == 2.**16  # the initial scale, untouched
    Checkpoint(tmp_path/'c.pt').restore(fresh)
    assert fresh.scaler.get_scale() == 1024.

# --- results that are never lost or misreported ---

def test_a_batch_larger_than_the_training_set_is_an_error_not_a_record(fake_imagenette, isolated_ledger, capsys):
    with pytest.raises(SystemExit) as e:
        imagenette_course.cli.main(['run', 'baseline', '--data', str(fake_imagenette), '--mode', 'quick', '--size', '32',
                                    '--bs', '64'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'nothing to train on' in err and '--bs' in err and 'Traceback' not in err
    assert not isolated_ledger.exists()


def test_loaders_get_dls_did_not_make_meet_the_runs_own_check_for_a_full_batch(tmp_path):
    "Hand-built loaders, or a process's share in data-parallel training, with no full batch: the fit trains nothing"
    from fastai.data.core import DataLoaders
    items = [(torch.randn(4), torch.tensor(i % 2)) for i in range(5)]
    dls = DataLoaders.from_dsets(items, items, bs=8, device='cpu')  # the training loader drops its partial batch
    with resumable(Checkpoint(tmp_path/'hand.pt')), pytest.raises(RunError, match='nothing to train on: 5 training'):
        Learner(dls, torch.nn.Linear(4, 2), loss_func=CrossEntropyLossFlat()).fit(1)  # made in the run: tracked

def refuse_files_in(folder, monkeypatch):
    "Creating files in `folder` fails as in a read-only folder (chmod can't show it: CI runs as root, who writes anyway)"
    make = recipes.tempfile.NamedTemporaryFile
    def refused(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder: raise PermissionError(13, 'Permission denied')
        return make(*args, dir=dir, **kwargs)
    monkeypatch.setattr(recipes.tempfile, 'NamedTemporaryFile', refused)


@pytest.mark.parametrize('kind', ['folder', 'not a ledger', 'read-only folder', 'read-only checkpoint folder'])
def test_unwritable_ledger_or_checkpoints_are_found_before_training(fake_imagenette, tmp_path, monkeypatch, capsys,
                                                                    checkpoints, kind):
    ledger = tmp_path/'out'/'ledger.jsonl'
    named = {'read-only folder': ledger.parent, 'read-only checkpoint folder': checkpoints}.get(kind, ledger)  # in the message
    if kind == 'folder': ledger.mkdir(parents=True)
    elif kind == 'not a ledger':
        ledger.parent.mkdir(); ledger.write_text('name,accuracy\nmine,0.5\n')
    else: refuse_files_in(named, monkeypatch)
    def never(cfg): raise AssertionError("trained although the results can't be written")
    monkeypatch.setitem(recipes.RECIPES, 'baseline', recipes.Recipe(never, 2))
    with pytest.raises(SystemExit) as e:
        imagenette_course.cli.main(['run', 'baseline', '--data', str(fake_imagenette), '--ledger', str(ledger)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and str(named) in err and 'Fix:' in err and 'Traceback' not in err


def counted_saves(monkeypatch):
    "The checkpoint saves from now on, one per epoch trained"
    saves, save = [], Checkpoint.save
    monkeypatch.setattr(Checkpoint, 'save', lambda self, learn: saves.append(self.path) or save(self, learn))
    return saves


def test_a_ledger_write_that_fails_after_training_keeps_the_result(fake_imagenette, checkpoints, isolated_ledger,
                                                                  monkeypatch, capsys):
    "Printed, saved beside the ledger, its checkpoint kept: the ledger fixed, a rerun records it, training nothing"
    args = ['run', 'baseline', '--data', str(fake_imagenette), *ARGS, '--epochs', '1']
    def disk_full(record, path=None): raise OSError(28, 'No space left on device')
    with monkeypatch.context() as m:
        m.setattr(recipes, 'append_record', disk_full)
        with pytest.raises(SystemExit) as e: imagenette_course.cli.main(args)
    err = capsys.readouterr().err
    (ck,) = checkpoints.glob('*.pt')
    assert e.value.code == 2 and 'No space left on device' in err and 'baseline: accuracy' in err
    assert f"the ledger {isolated_ledger} (" in err and f"checkpoint {ck} is kept" in err
    assert f">> {isolated_ledger}`" in err and 'run recipe baseline again with the same options' in err
    spare = Path(err.split('the line saved in ')[1].split(' to the ledger')[0])
    (rec,) = [json.loads(line) for line in spare.read_text().splitlines()]
    assert rec['recipe'] == 'baseline' and 0 <= rec['accuracy'] <= 1
    spare.unlink()
    recipes._TRAINED.clear()  # the rerun: a new process
    saves = counted_saves(monkeypatch)
    imagenette_course.cli.main(args)
    assert saves == [] and [r['recipe'] for r in read_ledger()] == ['baseline'] and list(checkpoints.glob('*.pt')) == []


# --- several processes ---

def two_processes(*args):
    "Run the command line with `args` in two CPU processes on the gloo backend"
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    return subprocess.run([torchrun, '--standalone', '--nproc_per_node', '2', EXE, *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_two_processes_train_data_parallel_and_record_once(fake_imagenette, checkpoints, isolated_ledger):
    "Two CPU processes on the gloo backend train one recipe together; only the main process writes"
    out = two_processes('run', 'progressive', '--data', str(fake_imagenette), *ARGS, '--epochs', '1',
                        '--ledger', str(isolated_ledger))
    assert out.returncode == 0, out.stdout + out.stderr
    (rec,) = read_ledger(isolated_ledger)
    assert rec['recipe'] == 'progressive' and rec['n_train'] == 40
    assert out.stdout.count('progressive: accuracy') == 1 and list(checkpoints.iterdir()) == []


def test_two_processes_find_a_recorded_run_finished(fake_imagenette, checkpoints, isolated_ledger, monkeypatch):
    "Recorded, but killed before its checkpoint was deleted: both processes see it, neither trains, one reports"
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, 'remove', lambda self: None)  # as if killed between recording and deleting
        m.setattr(recipes, 'num_distrib', lambda: 2)  # the checkpoint of a two-process run, which they alone resume
        run_recipe('baseline', 'quick', isolated_ledger, path=str(fake_imagenette), size=32, bs=8, epochs=1)
    out = two_processes('run', 'baseline', '--data', str(fake_imagenette), *ARGS, '--epochs', '1',
                        '--ledger', str(isolated_ledger))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count('had already finished') == 1 and 'train_loss' not in out.stdout  # no training table
    assert len(read_ledger(isolated_ledger)) == 1 and list(checkpoints.iterdir()) == []

def test_each_process_of_a_data_parallel_run_uses_its_own_gpu(monkeypatch):
    "Before any data is loaded: fastai puts the normalization on the current GPU, the batches on the process's own"
    calls = []
    for k, v in dict(WORLD_SIZE='2', RANK='1', LOCAL_RANK='1').items(): monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda **kwargs: calls.append('asked') or True)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: calls.append(device))
    distributed.speed_ups()
    assert calls == [1, 'asked']


class ValidateEachEpoch(Callback):
    def after_epoch(self):
        if real_fit(self.learn): self.learn.validate()  # not in the validation's own after_epoch


def test_cudnn_autotuning_is_set_back_after_a_fit_that_validates_inside(fake_imagenette, monkeypatch):
    "A `validate` inside the fit sends fit events too: it must not make the fit keep the setting it turned on"
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    learn = learner(get_dls(bs=8, size=32, path=fake_imagenette, num_workers=0), xresnet18)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=[distributed.CudnnAutotune(), ValidateEachEpoch()])
    assert torch.backends.cudnn.benchmark is False


def test_a_setting_added_later_leaves_the_run_key_as_it_was_until_it_is_set():
    "Checkpoints written before `presize` existed still resume"
    cfg = run_config('quick', epochs=1, size=32, bs=8, n_train=2, n_valid=1)
    assert run_key('two_fits', cfg) == 'two_fits-quick-5445a3866a68'  # appendix 91's run, as named before `presize`
    assert run_key('two_fits', replace(cfg, presize=64)) != run_key('two_fits', cfg)


def test_a_data_folder_given_as_a_path_names_the_run_as_its_text_does(tmp_path):
    cfg = run_config('quick', path=str(tmp_path))
    assert run_key('two_fits', replace(cfg, path=tmp_path)) == run_key('two_fits', cfg)


def test_a_checkpoint_given_as_text_is_locked_and_named_as_a_path(checkpoints):
    checkpoints.mkdir()
    (checkpoints/'baseline-quick-1.pt').write_bytes(b'')  # another run's
    path = str(checkpoints/'baseline-quick-0.pt')
    with training_alone(path): assert (checkpoints/'baseline-quick-0.pt.lock').exists()
    assert recipes.other_checkpoints('baseline', path) == ['baseline-quick-1.pt']


def recorded(recipe, run_id):
    return RunRecord(recipe, 'quick', 'cpu', 40, 20, [32], 1, 0.5, 1.0, 42, 8, 3e-3, extra=dict(run_id=run_id))


def test_a_checkpoint_is_finished_only_by_its_own_runs_record(checkpoints, isolated_ledger):
    "A repeat of a recorded recipe, interrupted, resumes: the earlier run's record is not this run's"
    ck = Checkpoint(checkpoints/'c.pt')
    append_record(recorded('progressive', 'an-earlier-run'), isolated_ledger)
    append_record(recorded('baseline', ck.state['uid']), isolated_ledger)
    assert recipes.finished_record('progressive', ck, isolated_ledger) is None
    append_record(recorded('progressive', ck.state['uid']), isolated_ledger)
    assert recipes.finished_record('progressive', ck, isolated_ledger).extra['run_id'] == ck.state['uid']
    # a line with a field `RunRecord` lacks, which `read_ledger` accepts: a note added by hand
    noted = {**asdict(recorded('progressive', ck.state['uid'])), 'note': 'after a driver update'}
    append_record(noted, isolated_ledger)
    assert recipes.finished_record('progressive', ck, isolated_ledger).extra['run_id'] == ck.state['uid']


def test_a_checkpoint_belongs_to_one_data_folder_and_one_data_path(fake_imagenette, tmp_path, monkeypatch):
    "The checkpoint's name: the same for one folder however it is named, another for another folder or data path"
    names = []
    def stand_in(cfg): raise KeyboardInterrupt
    monkeypatch.setitem(recipes.RECIPES, 'baseline', recipes.Recipe(stand_in, 2))
    monkeypatch.setattr(recipes, 'Checkpoint', lambda path: names.append(path.name) or Checkpoint(path))
    other = fake_dataset(tmp_path/'other', CLASS_NAMES)
    monkeypatch.chdir(fake_imagenette.parent)
    for folder, data_path in [(fake_imagenette, 'book'), (fake_imagenette.name, 'book'), (other, 'book'),
                              (fake_imagenette, 'fast')]:
        with pytest.raises(KeyboardInterrupt): run_recipe('baseline', 'quick', data_path=data_path, path=str(folder))
    absolute, relative, elsewhere, fast = names[::2]  # run_recipe and the training each open it
    assert absolute == relative and len({absolute, elsewhere, fast}) == 3


@pytest.mark.parametrize('room', [True, False])
def test_the_record_names_the_data_path_the_run_used(fake_imagenette, monkeypatch, room):
    "Asked for the fast path, a run whose images don't fit trains on the book's loaders, and its record says so"
    if not room: monkeypatch.setattr(fast_data, 'store_for', no_room)
    try: rec = run_recipe('baseline', 'quick', data_path='fast', path=str(fake_imagenette), epochs=1, size=32, bs=8)
    finally: fast_data.clear_decoded()
    assert rec.extra['data_path'] == ('fast' if room else 'book')


def test_a_data_parallel_run_has_its_own_checkpoint_and_says_so_in_its_record(monkeypatch):
    "N processes train on N × bs images a step: not a run for one process to resume, nor to read as one"
    import imagenette_course.recipes as recipes
    from imagenette_course.data import run_config
    from imagenette_course.ledger import RunRecord
    cfg = run_config('quick')
    one = recipes.training_key(recipes.RECIPES['baseline'], cfg, 'book')
    monkeypatch.setattr(recipes, 'num_distrib', lambda: 4)
    assert recipes.training_key(recipes.RECIPES['baseline'], cfg, 'book') == f"{one}-4procs"
    record = RunRecord('baseline', 'full', 'cuda', 10, 10, [224], 5, 0.8, 60.0, 42, 64, 3e-3, extra=dict(processes=4))
    assert 'cuda × 4 processes, batches of 4 × 64' in str(record)
    assert 'processes' not in str(RunRecord('baseline', 'full', 'cuda', 10, 10, [224], 5, 0.8, 60.0, 42, 64, 3e-3))


def test_a_result_the_ledger_refused_is_kept_beside_it_or_printed_whole(tmp_path, monkeypatch):
    "Beside the ledger first (the temp folder may be emptied by a reboot); where no folder takes it, in the message"
    from imagenette_course.ledger import RunRecord
    from imagenette_course.resume import RunError
    record = RunRecord('baseline', 'quick', 'cpu', 10, 10, [32], 1, 0.5, 1.0, 42, 8, 3e-3)
    def disk_full(record, path=None): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(recipes, 'append_record', disk_full)
    with pytest.raises(RunError) as e: recipes.save_record(record, tmp_path/'ledger.jsonl')
    (spare,) = tmp_path.glob('imagenette-course-baseline-*.json')
    assert str(spare) in str(e.value) and json.loads(spare.read_text())['recipe'] == 'baseline'
    def no_room(*args, **kwargs): raise OSError(30, 'Read-only file system')
    monkeypatch.setattr(recipes.tempfile, 'mkstemp', no_room)
    with pytest.raises(RunError) as e: recipes.save_record(record, tmp_path/'ledger.jsonl')
    assert 'no folder took a copy of it' in str(e.value) and '"recipe": "baseline"' in str(e.value)


def test_a_ledger_replaced_by_another_file_during_training_keeps_the_result_too(tmp_path):
    "The check before training can't see a later change: the append's own refusal keeps the result all the same"
    from imagenette_course.ledger import RunRecord
    from imagenette_course.resume import RunError
    record = RunRecord('baseline', 'quick', 'cpu', 10, 10, [32], 1, 0.5, 1.0, 42, 8, 3e-3)
    settings = tmp_path/'settings.json'
    settings.write_text('{"theme": "dark"}\n')
    with pytest.raises(RunError, match='put the results ledger back') as e: recipes.save_record(record, settings)
    (spare,) = tmp_path.glob('imagenette-course-baseline-*.json')
    assert str(spare) in str(e.value) and settings.read_text() == '{"theme": "dark"}\n'


def test_a_symlinked_ledger_is_checked_and_kept_beside_the_file_it_points_to(tmp_path, monkeypatch):
    "`append_record` writes in the folder of the file a link points to: the folder to check, and to save a copy in"
    real = tmp_path.resolve()/'real'
    real.mkdir(); (real/'ledger.jsonl').write_text('')
    (tmp_path/'link.jsonl').symlink_to(real/'ledger.jsonl')
    record = RunRecord('baseline', 'quick', 'cpu', 10, 10, [32], 1, 0.5, 1.0, 42, 8, 3e-3)
    assert Path(recipes.spare_copy(record, tmp_path/'link.jsonl')).parent == real
    refuse_files_in(real, monkeypatch)
    with pytest.raises(RunError, match=f"can't be written in {re.escape(str(real))}"):
        recipes.check_ledger(tmp_path/'link.jsonl')



@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='POSIX pipes')
def test_a_pipe_as_the_runs_ledger_is_refused_with_a_fix_that_fits_it(tmp_path):
    "Moving a pipe or /dev/null away is no fix: the run's check says to name another file, before it opens the pipe"
    os.mkfifo(tmp_path/'pipe')
    with pytest.raises(RunError, match='not a regular file') as e: recipes.check_ledger(tmp_path/'pipe')
    assert 'throwaway' in str(e.value) and 'move that file away' not in str(e.value)


# --- recipes that share a training ---

def tiny_run(fake_imagenette): return dict(path=str(fake_imagenette), size=32, bs=8, epochs=1)


def test_a_recorded_run_leaves_no_checkpoint_even_after_a_later_fit_and_names_other_settings_ones(
        fake_imagenette, checkpoints, capsys):
    """Learners keep their callbacks: a fit on `record.learn` must not write the recorded run's checkpoint again. The
    checkpoints of the same training with other settings are named when the run starts, and kept"""
    checkpoints.mkdir()
    other = checkpoints/'baseline-quick-000000000000.pt'
    for p in (other, checkpoints/'normalized-quick-000000000000.pt'): p.write_bytes(b'')  # other runs'
    rec = run_recipe('baseline', 'quick', **tiny_run(fake_imagenette))
    out = capsys.readouterr().out
    assert f"other checkpoints of `baseline` in {checkpoints}" in out and f"resume): {other.name}\n" in out
    with rec.learn.no_bar(), rec.learn.no_logging(): rec.learn.fit(1)
    assert len(list(checkpoints.glob('*.pt'))) == 2 and other.exists()


def test_run_all_checks_every_name_before_it_trains(fake_imagenette, monkeypatch):
    def never(cfg): raise AssertionError('trained before every name was checked')
    monkeypatch.setitem(recipes.RECIPES, 'baseline', recipes.Recipe(never, 2))
    with pytest.raises(ValueError, match="unknown recipe 'nope': choose from baseline, "):
        recipes.run_all('quick', names=['baseline', 'nope'], **tiny_run(fake_imagenette))


def test_run_all_takes_one_recipes_name_as_that_recipe(fake_imagenette, isolated_ledger, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(recipes, 'run_recipe', lambda name, *args, **kwargs: ran.append(name))
    recipes.run_all('quick', names='baseline', **tiny_run(fake_imagenette))
    assert ran == ['baseline'] and '=== run baseline: 1 recipes in ' in capsys.readouterr().out


def test_a_training_a_later_recipe_measures_keeps_its_checkpoint_for_it(fake_imagenette, checkpoints,
                                                                       isolated_ledger, monkeypatch):
    "In `run_all`, chapter 4's recipe keeps its checkpoint for TTA: stopped while TTA measures, `run tta` won't train"
    measured = recipes.measured
    def stopped_at_tta(recipe, learn, ck):
        if recipe is recipes.RECIPES['tta']: raise KeyboardInterrupt
        return measured(recipe, learn, ck)
    with monkeypatch.context() as m:
        m.setattr(recipes, 'measured', stopped_at_tta)
        with pytest.raises(KeyboardInterrupt):
            recipes.run_all('quick', names=['progressive', 'tta'], **tiny_run(fake_imagenette))
    (progressive,) = read_ledger()
    assert progressive['recipe'] == 'progressive' and len(list(checkpoints.glob('*.pt'))) == 1
    recipes._TRAINED.clear()  # `run tta`: a new process
    saves = counted_saves(monkeypatch)
    tta = run_recipe('tta', 'quick', **tiny_run(fake_imagenette))
    assert saves == [] and tta.extra['run_id'] == progressive['extra']['run_id']
    assert tta.extra['trained_by'] == 'progressive' and tta.extra['reused_training']  # the checkpoint says whose
    assert list(checkpoints.glob('*.pt')) == []


def test_a_shared_training_found_recorded_keeps_its_checkpoint_for_the_recipe_still_to_run(
        fake_imagenette, checkpoints, isolated_ledger, monkeypatch):
    "Killed between recording chapter 4's recipe and deleting its checkpoint: `run all` again keeps it for TTA"
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, 'remove', lambda self: None)  # as if killed between recording and deleting
        run_recipe('progressive', 'quick', **tiny_run(fake_imagenette))
    recipes._TRAINED.clear()  # a new process
    saves = counted_saves(monkeypatch)
    recipes.run_all('quick', names=['progressive', 'tta'], **tiny_run(fake_imagenette))
    assert saves == [] and [r['recipe'] for r in read_ledger()] == ['progressive', 'tta']
    assert list(checkpoints.glob('*.pt')) == []


def test_a_recipe_measuring_another_recipes_training_names_it_and_times_both_parts(fake_imagenette, checkpoints,
                                                                                   isolated_ledger):
    "Its wall time is what it costs alone, training and measuring, each given; measured again, a model is reused"
    recipes.run_all('quick', names=['progressive', 'tta'], **tiny_run(fake_imagenette))
    progressive, tta = read_ledger()
    assert progressive['extra']['reused_training'] is False and 'trained_by' not in progressive['extra']
    assert tta['extra']['reused_training'] is True and tta['extra']['trained_by'] == 'progressive'
    assert tta['extra']['train_s'] == progressive['extra']['train_s'] > 0 and tta['extra']['measure_s'] > 0
    for rec in (progressive, tta):
        assert rec['wall_time_s'] == pytest.approx(rec['extra']['train_s'] + rec['extra']['measure_s'], abs=0.11)
    assert list(checkpoints.glob('*.pt')) == []
    again = run_recipe('progressive', 'quick', **tiny_run(fake_imagenette))  # measures the model this process trained
    assert again.extra['reused_training'] is True and 'trained_by' not in again.extra  # its own training, not shared
