import argparse, json, os, re, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

import imagenette_course.recipes as recipes
from imagenette_course.cli import main, make_parser
from imagenette_course.data import MODES, device_name
from imagenette_course.ledger import append_record, read_ledger
from imagenette_course.recipes import Recipe
from imagenette_course.resume import Checkpoint, resumable
from test_data import write_noisy_csv

QUICK = MODES['quick']


@pytest.mark.parametrize('args, message', [
    (['run', 'baseline', '--epochs', '0'], 'at least 1'),
    (['run', 'baseline', '--epochs', 'two'], "'two' is not a whole number"),
    (['run', 'baseline', '--mode', 'fast'], "invalid choice: 'fast'"),
    (['run', 'nonsense'], "unknown recipe 'nonsense' (choose from baseline, "),
    (['run', 'baselin'], "unknown recipe 'baselin': did you mean 'baseline'?"),
    (['run'], 'the following arguments are required: RECIPE'),
    (['run', 'all', 'tta'], "all is every recipe: name it alone"),
    (['run', 'tta', 'baseline', 'tta'], "tta named more than once"),
    (['run', 'baseline', '--size', '64', '--presize', '32'],
     "--presize 32 is smaller than the run's image size, 64 px. Fix: --presize 64 or more"),
    (['run', 'baseline', '--split', 'valid'], "invalid choice: 'valid'"),
    (['run', 'baseline', '--presize', '0'], 'at least 8'),
    (['run', 'baseline', '--size', '4'], 'at least 8'),
    (['run', 'baseline', '--bs', '1'], 'at least 2 (batch norm'),
    (['run', 'baseline', '--seed', '-1'], 'from 0 to 4294967295'),
    (['run', 'baseline', '--noise', '25', '--split', 'random'], "leave out --split random"),
    (['report', '--plot', 'results.xyz'], "its extension .xyz is not a format matplotlib writes (.eps, "),
    (['report', '--plot', 'figures'], "it has no extension to name a format"),
    (['run', 'baseline', '--ledger', ''], "argument --ledger: the path is empty"),
    (['report', '--ledger', ' '], "argument --ledger: the path is empty"),
    (['report', '--plot', 'no_such_folder/results.png'], "there is no folder no_such_folder. Fix: create it"),
    ([], 'the following arguments are required'),
])
def test_bad_arguments_exit_2_with_argparse_message(args, message, capsys):
    with pytest.raises(SystemExit) as e: main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and 'usage: imagenette-course' in err


def test_a_mode_from_the_environment_that_is_not_one_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('IMAGENETTE_MODE', 'bogus')
    with pytest.raises(SystemExit) as e: main(['run', 'baseline'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "IMAGENETTE_MODE is 'bogus'" in err and 'set it to quick or full' in err
    assert err.startswith('usage: imagenette-course run ')  # the options of the command it was given
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--mode', 'quick', '--data', str(tmp_path/'nope')])
    assert 'IMAGENETTE_MODE' not in capsys.readouterr().err  # --mode overrides it: the run goes on, to the data


def test_bad_data_path_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--data', str(tmp_path/'nope')])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path/'nope') in err and 'Fix:' in err and 'Traceback' not in err


@pytest.mark.parametrize('how', [['--debug'], 'IMAGENETTE_DEBUG'])
def test_debug_shows_the_traceback_of_an_error(tmp_path, capsys, monkeypatch, how):
    if how == 'IMAGENETTE_DEBUG': monkeypatch.setenv(how, '1')
    with pytest.raises(SystemExit) as e:
        main([*(how if isinstance(how, list) else []), 'run', 'baseline', '--data', str(tmp_path/'nope')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'Traceback (most recent call last)' in err and str(tmp_path/'nope') in err


@pytest.mark.parametrize('value', ['0', 'false', 'No', ''])
def test_imagenette_debug_set_to_off_is_off(value, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('IMAGENETTE_DEBUG', value)
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--data', str(tmp_path/'nope')])
    assert e.value.code == 2 and 'Traceback' not in capsys.readouterr().err


def test_a_recipe_may_be_named_as_its_training_function():
    assert make_parser().parse_args(['run', 'label_smoothing']).recipes == ['label-smoothing']


def test_the_help_gives_each_recipes_default_epochs():
    from imagenette_course.recipes import recipe_config
    shown = next(a.help for a in make_parser().commands['run']._actions if a.dest == 'epochs')
    assert f"{MODES['quick'].epochs} quick / {MODES['full'].epochs} full" in shown
    fewer = [n for n in recipes.recipe_names() if recipe_config(n, 'quick').epochs != MODES['quick'].epochs]
    quick = recipe_config(fewer[0], 'quick').epochs
    assert f"but {quick} in quick mode for {', '.join(fewer[:-1])} and {fewer[-1]}," in shown


def test_pgf_without_latex_is_refused_before_the_table(monkeypatch, capsys):
    import shutil
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    with pytest.raises(SystemExit) as e: main(['report', '--plot', 'results.pgf'])
    assert e.value.code == 2 and 'by running LaTeX (xelatex), which is not installed' in capsys.readouterr().err


def test_a_plot_path_that_is_a_folder_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: main(['report', '--plot', str(tmp_path)])
    assert e.value.code == 2 and f"--plot {tmp_path}: that is a folder" in capsys.readouterr().err


def test_a_plot_path_from_home_is_expanded(tmp_path, monkeypatch, capsys, isolated_ledger):
    monkeypatch.setenv('HOME', str(tmp_path))
    append_record(dict(recipe='baseline', mode='quick', device='cpu', sizes=[64], epochs=1, accuracy=0.5,
                       wall_time_s=1.0), isolated_ledger)
    main(['report', '--plot=~/results.png'])  # no shell expands a ~ after '='
    assert capsys.readouterr().out.splitlines()[-1] == f"figures saved to {tmp_path/'results.png'}"
    assert (tmp_path/'results.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_incomplete_data_folder_is_reported_before_training(fake_imagenette, capsys, isolated_ledger):
    (fake_imagenette/'val').rename(fake_imagenette/'valid')
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--data', str(fake_imagenette)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'missing split folder' in err and 'Fix:' in err
    assert not isolated_ledger.exists()


def test_interrupted_run_writes_nothing(fake_imagenette, monkeypatch, capsys, isolated_ledger):
    def interrupted(cfg): raise KeyboardInterrupt
    monkeypatch.setitem(recipes.RECIPES, 'baseline', Recipe(interrupted, 2))
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--data', str(fake_imagenette)])
    assert e.value.code == 130 and 'interrupted' in capsys.readouterr().err
    assert not isolated_ledger.exists()


def test_interrupted_run_all_names_the_recipes_it_recorded(fake_imagenette, monkeypatch, capsys, isolated_ledger,
                                                           checkpoints):
    def record(name): return dict(recipe=name, mode='quick', device='cpu', sizes=[64], epochs=1, accuracy=0.5, wall_time_s=1.0)
    append_record(record('sota'))  # an earlier run's
    checkpoints.mkdir(); (checkpoints/'sota-quick-0.pt').write_bytes(b'')  # another run's, not this one's
    def two_then_interrupted(*args, **kwargs):
        for name in ('baseline', 'normalized'): append_record(record(name))
        with resumable(Checkpoint(checkpoints/'progressive-quick-0.pt')):  # the third recipe's training
            (checkpoints/'progressive-quick-0.pt').write_bytes(b'')  # its first epoch
            raise KeyboardInterrupt
    monkeypatch.setattr(recipes, 'run_all', two_then_interrupted)
    with pytest.raises(SystemExit) as e: main(['run', 'all', '--data', str(fake_imagenette)])
    err = capsys.readouterr().err
    assert e.value.code == 130 and f'baseline, normalized finished and were recorded in {isolated_ledger}' in err
    assert 'interrupted: baseline, normalized finished' in err  # not sota, an earlier run's
    left = 'progressive progressive-schedule tta mixup label-smoothing sota'
    assert f'(the same command would train them again: to skip them, use `run {left}` with the same options)' in err
    # `run all` again would train baseline and normalized again first
    assert f"its checkpoint {checkpoints/'progressive-quick-0.pt'} is kept: `run {left}` with the same options resumes" in err


def test_an_interrupted_run_of_named_recipes_gives_the_command_for_those_left(fake_imagenette, monkeypatch, capsys,
                                                                             isolated_ledger, checkpoints):
    seen = {}
    def one_then_interrupted(*args, names=None, **kwargs):
        seen['names'] = names
        append_record(dict(recipe='normalized', mode='quick', device='cpu', sizes=[64], epochs=1, accuracy=0.5, wall_time_s=1.0))
        raise KeyboardInterrupt
    monkeypatch.setattr(recipes, 'run_all', one_then_interrupted)
    with pytest.raises(SystemExit) as e: main(['run', 'normalized', 'progressive', 'tta', '--data', str(fake_imagenette)])
    err = capsys.readouterr().err
    assert e.value.code == 130 and seen['names'] == ['normalized', 'progressive', 'tta']  # one process, in that order
    assert (f"normalized finished and was recorded in {isolated_ledger} (the same command would train it again: to skip "
            f"it, use `run progressive tta` with the same options)") in err


def test_a_run_interrupted_before_its_first_checkpoint_says_it_starts_over(fake_imagenette, monkeypatch, capsys,
                                                                           isolated_ledger, checkpoints):
    checkpoints.mkdir(); (checkpoints/'sota-quick-0.pt').write_bytes(b'')  # another run's, not this one's
    def interrupted(cfg): raise KeyboardInterrupt
    monkeypatch.setitem(recipes.RECIPES, 'baseline', Recipe(interrupted, 2))
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--data', str(fake_imagenette)])
    err = capsys.readouterr().err
    assert e.value.code == 130 and err.startswith('\n')  # off the line a progress bar may be drawing
    assert 'it left no checkpoint to resume from: the same command starts it over' in err and 'resumes' not in err


def test_an_error_that_stops_run_all_part_way_names_what_it_recorded(fake_imagenette, monkeypatch, capsys,
                                                                    isolated_ledger):
    from imagenette_course.resume import RunError
    def two_then_failed(*args, **kwargs):
        for name in ('baseline', 'normalized'):
            append_record(dict(recipe=name, mode='quick', device='cpu', sizes=[64], epochs=1, accuracy=0.5, wall_time_s=1.0))
        raise RunError("the checkpoint ... is not a readable checkpoint")
    monkeypatch.setattr(recipes, 'run_all', two_then_failed)
    with pytest.raises(SystemExit) as e: main(['run', 'all', '--data', str(fake_imagenette)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'error: the checkpoint' in err
    assert f"before it, baseline, normalized finished and were recorded in {isolated_ledger}" in err
    assert 'use `run progressive progressive-schedule tta mixup label-smoothing sota` with the same options' in err


def test_loader_workers_killed_by_a_group_sigterm_end_the_run_as_an_interruption(fake_imagenette, monkeypatch, capsys,
                                                                                isolated_ledger):
    "`timeout` or a batch system signals the whole process group: the loader's workers may die of it first"
    def workers_killed(cfg): raise RuntimeError("DataLoader worker (pid 13906) is killed by signal: Terminated. ")
    monkeypatch.setitem(recipes.RECIPES, 'baseline', Recipe(workers_killed, 2))
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--data', str(fake_imagenette)])
    err = capsys.readouterr().err
    assert e.value.code == 128 + signal.SIGTERM and 'interrupted: nothing was written' in err and 'Traceback' not in err
    def wrapped(cfg):  # the loader's own error, raised while it waits for a batch, names the signal only in its cause
        try: workers_killed(cfg)
        except RuntimeError as cause: raise RuntimeError("DataLoader worker (pid(s) 13906) exited unexpectedly") from cause
    monkeypatch.setitem(recipes.RECIPES, 'baseline', Recipe(wrapped, 2))
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--data', str(fake_imagenette)])
    assert e.value.code == 128 + signal.SIGTERM and 'Traceback' not in capsys.readouterr().err
    def broken(cfg): raise RuntimeError("CUDA error: an illegal memory access")  # any other error is not an interruption
    monkeypatch.setitem(recipes.RECIPES, 'baseline', Recipe(broken, 2))
    with pytest.raises(RuntimeError, match='illegal memory'): main(['run', 'baseline', '--data', str(fake_imagenette)])


def test_a_sigchld_pending_with_the_sigterm_prints_no_traceback():
    "A group SIGTERM kills the loader's workers too: their SIGCHLD may be pending when the SIGTERM's handler runs"
    code = """if True:
        import os, signal
        from imagenette_course.cli import sigterm_as_ctrl_c
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler, as torch's DataLoader installs one
        both = {signal.SIGTERM, signal.SIGCHLD}
        try:
            with sigterm_as_ctrl_c():
                signal.pthread_sigmask(signal.SIG_BLOCK, both)
                os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGCHLD)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, both)  # both pending before Python runs a handler
                sum(range(10))
        except KeyboardInterrupt: print('interrupted')
    """
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert out.stdout == 'interrupted\n' and out.stderr == '', out.stderr


def test_the_commands_run_where_there_is_no_sigchld(tmp_path):
    "On Windows `signal` has no SIGCHLD: the commands still run, and a SIGTERM still ends them as Ctrl-C does"
    code = """if True:
        import os, signal, sys
        import imagenette_course.data, imagenette_course.ledger, imagenette_course.resume  # all the command imports
        del signal.SIGCHLD  # as on Windows
        from imagenette_course.cli import main, sigterm_as_ctrl_c
        main(['report', '--ledger', sys.argv[1]])
        try:
            with sigterm_as_ctrl_c(): os.kill(os.getpid(), signal.SIGTERM); sum(range(10))
        except KeyboardInterrupt: print('interrupted')
    """
    (ledger := tmp_path/'ledger.jsonl').write_text('')
    out = subprocess.run([sys.executable, '-c', code, str(ledger)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'No runs recorded yet' in out.stdout and out.stdout.endswith('interrupted\n')


@pytest.mark.parametrize('argv', [['report'], ['run', 'baseline']])
def test_a_sigterm_while_the_command_loads_torch_ends_it_as_ctrl_c_does(argv):
    "The first seconds of a command import torch and fastai: a SIGTERM then says that nothing was written, too"
    code = """if True:
        import builtins, sys, time
        real_import = builtins.__import__
        def slow_torch(name, *args, **kwargs):  # torch's import held, as on a slow disk, until the SIGTERM comes
            if name == 'torch' and 'torch' not in sys.modules: print('importing torch', flush=True); time.sleep(120)
            return real_import(name, *args, **kwargs)
        builtins.__import__ = slow_torch
        from imagenette_course.cli import main
        main(sys.argv[1:])
    """
    command = subprocess.Popen([sys.executable, '-c', code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert command.stdout.readline() == 'importing torch\n'
        command.send_signal(signal.SIGTERM)
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None: command.kill()
    assert (command.returncode, err) == (128 + signal.SIGTERM,
                                         'imagenette-course: interrupted before it began: nothing was written\n')


def child_states(pid):
    "{child's pid: its state} of the processes `pid` started, such as a loader's workers (Linux); 'Z': ended"
    found = {}
    for p in filter(str.isdigit, os.listdir('/proc')):
        try: state, parent = Path(f'/proc/{p}/stat').read_text().rsplit(')', 1)[1].split()[:2]  # after the name
        except OSError: continue  # ended meanwhile
        if parent == str(pid): found[p] = state
    return found


def wait_for(check, timeout=300):
    "Whether `check()` came true within `timeout` seconds"
    start = time.monotonic()
    while not check() and time.monotonic() - start < timeout: time.sleep(0.05)
    return check()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason="reads the loader's workers from /proc")
def test_a_sigterm_to_the_process_group_of_a_real_run_ends_it_without_a_traceback(fake_imagenette):
    """As `timeout` or a batch system stops it: the loader's workers get the SIGTERM too, and die with the run. The
    run is held stopped until they have died, so that their SIGCHLD is pending with the SIGTERM, as where the run is
    busy in torch's C code while they die: the case that raced"""
    exe = os.path.join(os.path.dirname(sys.executable), 'imagenette-course')
    run = subprocess.Popen([exe, 'run', 'baseline', '--data', str(fake_imagenette), '--mode', 'quick', '--size', '64',
                            '--bs', '8', '--epochs', '100', '--data-path', 'book'],  # book: workers load the batches
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert run.stdout.readline().startswith('baseline: quick mode')  # printed once SIGTERM is handled
        assert wait_for(lambda: child_states(run.pid) or run.poll() is not None) and child_states(run.pid), "no workers"
        time.sleep(1)  # training
        os.kill(run.pid, signal.SIGSTOP)
        os.killpg(run.pid, signal.SIGTERM)
        wait_for(lambda: set(child_states(run.pid).values()) <= {'Z'}, timeout=60)  # the workers died
        os.kill(run.pid, signal.SIGCONT)
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None: os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 128 + signal.SIGTERM and 'interrupted' in err and 'Traceback' not in err, err


@pytest.mark.parametrize('argv, debug', [(['--debug', 'run', 'baseline'], True), (['run', 'baseline', '--debug'], True),
                                         (['report', '--debug'], True), (['run', 'baseline'], False), (['report'], False)])
def test_debug_is_taken_before_or_after_the_command(argv, debug):
    assert make_parser().parse_args(argv).debug is debug


def test_both_commands_say_which_ledger_they_use_without_ledger():
    for command in ('run', 'report'):
        shown = ' '.join(make_parser().commands[command].format_help().split())  # as one line, however argparse wraps it
        assert '--ledger FILE results ledger to ' in shown
        assert '(default: $IMAGENETTE_LEDGER, else ~/.imagenette_course/ledger.jsonl)' in shown, command


def test_a_file_that_is_not_a_ledger_is_refused_once(tmp_path, capsys):
    (tmp_path/'labels.csv').write_text('path,label\n' * 500)
    with pytest.raises(SystemExit) as e: main(['report', '--ledger', str(tmp_path/'labels.csv')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'is not a results ledger' in err and 'Fix:' in err


def test_an_os_error_names_the_file_and_a_fix(tmp_path):
    from imagenette_course.cli import error_message
    message = error_message(PermissionError(13, 'Permission denied', str(tmp_path/'ro.jsonl')))
    assert message.startswith(f"{tmp_path/'ro.jsonl'}: Permission denied. Fix: ")
    assert error_message(FileNotFoundError("--ledger x: there is no such file. Fix: …")) == "--ledger x: there is no such file. Fix: …"


def test_warnings_are_one_line_each():
    "Without the file and source line Python shows, which mean nothing to someone running the command"
    import warnings
    from imagenette_course.cli import plain_warnings
    with plain_warnings('imagenette-course'):
        shown = warnings.formatwarning('skipped 1 unreadable image', UserWarning, 'data.py', 300, 'warnings.warn(...)')
    assert shown == 'imagenette-course: warning: skipped 1 unreadable image\n'
    assert 'data.py:300' in warnings.formatwarning('x', UserWarning, 'data.py', 300)  # as Python has it, after the command


def test_an_interrupted_plot_leaves_the_earlier_figure_whole(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from imagenette_course.cli import save_whole
    fig, fname = plt.figure(), tmp_path/'results.svg'
    save_whole(fig, str(fname))
    earlier = fname.read_bytes()
    def cut_short(self, f, **kwargs):
        Path(f).write_text('<svg')
        raise KeyboardInterrupt
    monkeypatch.setattr(type(fig), 'savefig', cut_short)
    with pytest.raises(KeyboardInterrupt): save_whole(fig, str(fname))
    assert fname.read_bytes() == earlier and [p.name for p in tmp_path.iterdir()] == ['results.svg']


def test_two_saves_of_the_same_figure_file_at_once_keep_out_of_each_others_way(tmp_path, monkeypatch):
    "Two `report --plot results.png` at once: neither removes the other's temporary file"
    import matplotlib.pyplot as plt
    from imagenette_course.cli import save_whole
    fig, fname, saved = plt.figure(), tmp_path/'results.png', []
    savefig = type(fig).savefig
    def with_another_save(self, f, **kwargs):
        savefig(self, f, **kwargs)
        saved.append(f)
        if len(saved) == 1: save_whole(self, str(fname))  # the other report's, before this one renames its file
    monkeypatch.setattr(type(fig), 'savefig', with_another_save)
    save_whole(fig, str(fname))
    plt.close(fig)
    assert len(set(saved)) == 2 and [p.name for p in tmp_path.iterdir()] == ['results.png']
    umask = os.umask(0o22); os.umask(umask)  # read, and put back
    assert fname.stat().st_mode & 0o777 == 0o666 & ~umask  # as savefig makes a file: not only its owner's


class Configured(Exception): "Carries the config a stand-in recipe was called with"

def test_split_and_presize_reach_the_recipe(fake_imagenette, monkeypatch, isolated_ledger):
    def stand_in(cfg): raise Configured(cfg)
    monkeypatch.setitem(recipes.RECIPES, 'baseline', Recipe(stand_in, 2))
    with pytest.raises(Configured) as e:
        main(['run', 'baseline', '--data', str(fake_imagenette), '--split', 'random', '--presize', '460'])
    cfg = e.value.args[0]
    assert cfg.split == 'random' and cfg.subset['split'] == 'random' and 'random split' in str(cfg)
    assert cfg.presize == 460 and cfg.subset['presize'] == 460 and 'presize 460 px' in str(cfg)


def test_seed_and_data_path_reach_the_run_and_sigterm_is_handled_only_during_it(fake_imagenette, monkeypatch):
    seen, outside = [], signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(recipes, 'data_path_callbacks', lambda data_path=None: seen.append(data_path) or ('book', []))
    def stand_in(cfg): raise Configured(cfg, signal.getsignal(signal.SIGTERM))
    monkeypatch.setitem(recipes.RECIPES, 'baseline', Recipe(stand_in, 2))
    with pytest.raises(Configured) as e:
        main(['run', 'baseline', '--data', str(fake_imagenette), '--seed', '7', '--data-path', 'book'])
    cfg, during = e.value.args
    assert cfg.seed == 7 and seen and set(seen) == {'book'}
    assert during is not outside and signal.getsignal(signal.SIGTERM) is outside  # the caller's handler is put back


@pytest.mark.parametrize('options, epochs, size', [([], 1, 48), (['--epochs', '2'], 2, 48), (['--size', '40'], 1, 40)])
def test_unset_options_keep_the_recipes_own_settings(fake_imagenette, monkeypatch, isolated_ledger, options, epochs, size):
    def stand_in(cfg): raise Configured(cfg)
    monkeypatch.setitem(recipes.RECIPES, 'progressive', Recipe(stand_in, 4, dict(quick=dict(epochs=1, size=48))))
    with pytest.raises(Configured) as e: main(['run', 'progressive', '--data', str(fake_imagenette), '--mode', 'quick', *options])
    cfg = e.value.args[0]
    assert cfg.split == 'official' and cfg.presize is None
    assert (cfg.epochs, cfg.size, cfg.bs) == (epochs, size, QUICK.bs)  # bs: the mode's own


@pytest.mark.parametrize('args, size', [(['baseline', '--size', '64', '--presize', '32'], 64),
                                        (['baseline', '--mode', 'full', '--presize', '100'], 224),
                                        (['all', '--mode', 'quick', '--presize', str(QUICK.size - 1)], QUICK.size)])
def test_a_presize_below_the_runs_size_is_refused_before_the_data_is_looked_for(tmp_path, isolated_ledger, capsys, args, size):
    "Without --size, the recipe's own in its mode: a folder that isn't there is not what the message is about"
    with pytest.raises(SystemExit) as e: main(['run', *args, '--data', str(tmp_path/'not_downloaded_yet')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"is smaller than the run's image size, {size} px. Fix: --presize {size} or more" in err
    assert 'not_downloaded_yet' not in err and not isolated_ledger.exists()


@pytest.mark.parametrize('bad', ['ledger', 'checkpoints'])
def test_a_ledger_or_checkpoint_folder_that_cant_be_used_is_named_before_the_data_is_looked_for(tmp_path, monkeypatch,
                                                                                                capsys, bad):
    "Looking for the data may download it for minutes: a bad --ledger or IMAGENETTE_CHECKPOINTS is named first"
    import imagenette_course.data as data
    def looked_for(*args, **kwargs): raise AssertionError("the data was looked for before the run's folders")
    monkeypatch.setattr(data, 'resolve_data_path', looked_for)
    (a_file := tmp_path/'a_file').write_text('')
    if bad == 'checkpoints': monkeypatch.setenv('IMAGENETTE_CHECKPOINTS', str(a_file/'checkpoints'))
    ledger = ['--ledger', str(tmp_path)] if bad == 'ledger' else []  # a folder, not a ledger
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--mode', 'quick', *ledger])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert ('is a folder. Fix: --ledger FILE' if ledger else "checkpoints can't be written") in err


def test_report_of_a_ledger_that_is_not_there_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: main(['report', '--ledger', str(tmp_path/'typo.jsonl')])
    assert e.value.code == 2 and 'typo.jsonl: there is no such file. Fix:' in capsys.readouterr().err


def test_report_of_a_ledger_named_from_home_finds_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path/'runs.jsonl').write_text('')
    main(['report', '--ledger=~/runs.jsonl'])  # no shell expands a ~ after '='
    assert 'No runs recorded yet' in capsys.readouterr().out


def test_report(capsys, isolated_ledger, tmp_path):
    main(['report', '--plot', str(tmp_path/'results.png')])
    out = capsys.readouterr().out
    assert 'No runs recorded yet' in out and f"{tmp_path/'results.png'} was not written" in out
    assert not (tmp_path/'results.png').exists()
    rec = dict(recipe='tta', mode='full', device='cuda (H100)', n_train=9469, n_valid=3925, sizes=[128, 224], epochs=10,
               accuracy=0.8596, wall_time_s=600.4, extra=dict(accuracy_tta=0.8637), finished='2026-01-01T10:00')
    isolated_ledger.write_text(json.dumps({**rec, 'accuracy': 0.5}) + '\n' + json.dumps(rec) + '\n')
    with open(isolated_ledger, 'a') as f: f.write(json.dumps({**rec, 'accuracy': 'high'}) + '\n')  # a broken record
    with pytest.warns(UserWarning, match="line 3: .*'accuracy' is 'high'"): main(['report', '--plot', str(tmp_path/'results.png')])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f'Ledger: {isolated_ledger}', '']  # which ledger: it may come from IMAGENETTE_LEDGER
    lines = lines[2:]
    assert lines[0].split() == ['recipe', 'data', 'mode', 'device', 'epochs', 'px', 'accuracy', 'with', 'TTA', 'wall', 'time']
    assert lines[1].split() == ['tta', 'imagenette', 'full', 'cuda', '(H100)', '10', '128→224', '86.0%', '86.4%', '600', 's']
    report = '\n'.join(lines)
    assert "the course's committed full-mode GPU run (not measured here)" in report and "And the reference numbers (the book" in report
    from imagenette_course.baseline import full_mode_lines
    assert '\n'.join(full_mode_lines(noise=None, split=None, with_presize=True)) in report  # every run of it, labelled as a reference
    assert lines[-1] == f"figures saved to {tmp_path/'results.png'}"
    assert (tmp_path/'results.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_named_recipes_run_in_one_process_in_the_order_given(fake_imagenette, capsys, isolated_ledger):
    "tta after progressive measures the model progressive trained, which a separate `run tta` would train again"
    main(['run', 'progressive', 'tta', '--data', str(fake_imagenette), '--mode', 'quick', '--size', '32', '--bs', '8',
          '--epochs', '1'])
    assert [r['recipe'] for r in read_ledger()] == ['progressive', 'tta']
    assert 'measuring the model trained earlier in this process by recipe progressive' in capsys.readouterr().out


def test_run_all_runs_every_recipe_in_order_with_noisy_labels(fake_imagenette, tmp_path, monkeypatch, capsys,
                                                               isolated_ledger):
    "Every recipe, in chapter order, on 5% noisy training labels (one label changed in the tiny fake data)"
    write_noisy_csv(fake_imagenette, {'n01440764_0.JPEG': 'n03888257'})
    main(['run', 'all', '--data', str(fake_imagenette), '--mode', 'quick', '--size', '32', '--bs', '8', '--epochs', '1',
          '--noise', '5'])
    out = capsys.readouterr().out
    names = recipes.recipe_names()
    assert names[:3] == ['baseline', 'normalized', 'progressive'] and names[-1] == 'sota'
    assert [r['recipe'] for r in read_ledger()] == names
    assert {r['config']['noise'] for r in read_ledger()} == {5} and 'imagenette, 5% noisy labels' in out
    assert f'recipe {len(names)} of {len(names)}: sota' in out and "the course's committed full-mode GPU run" in out
    assert 'measuring the model trained earlier in this process by recipe progressive' in out  # tta reuses its training


def test_quick_baseline_from_the_command_line(shared_data, tmp_path):
    "The real thing: the installed console script trains on the shared Imagenette and records one run"
    ledger = tmp_path/'runs.jsonl'
    env = {**os.environ, 'IMAGENETTE_PATH': str(shared_data)}
    env.pop('IMAGENETTE_MODE', None)
    exe = os.path.join(os.path.dirname(sys.executable), 'imagenette-course')
    out = subprocess.run([exe, 'run', 'baseline', '--mode', 'quick', '--epochs', '1', '--ledger', str(ledger)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    # the same environment, so the same device as this process sees: the line names it on a GPU machine too
    assert f'baseline: quick mode on {device_name()}' in out.stdout and "baseline: accuracy" in out.stdout
    (rec,) = read_ledger(ledger)
    assert (rec['recipe'], rec['mode'], rec['epochs'], rec['sizes'], rec['n_train'], rec['n_valid']) == \
           ('baseline', 'quick', 1, [QUICK.size], 10 * QUICK.n_train, 10 * QUICK.n_valid)
    assert 0 <= rec['accuracy'] <= 1 and rec['wall_time_s'] > 0


def test_imagewoof_from_the_command_line(fake_imagewoof, tmp_path, monkeypatch, capsys, isolated_ledger):
    main(['run', 'baseline', '--dataset', 'imagewoof', '--data', str(fake_imagewoof), '--mode', 'quick', '--size', '32',
          '--bs', '4', '--epochs', '1'])
    (rec,) = read_ledger()
    assert rec['config']['dataset'] == 'imagewoof' and rec['n_train'] == 40
    main(['report'])
    assert 'baseline  imagewoof' in capsys.readouterr().out


def test_the_wrong_dataset_for_a_folder_says_what_it_looks_like(fake_imagewoof, capsys, isolated_ledger):
    with pytest.raises(SystemExit) as e: main(['run', 'baseline', '--data', str(fake_imagewoof)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "pass --dataset imagewoof" in err and 'Traceback' not in err


def test_help_and_bad_arguments_answer_before_torch_loads():
    code = ("import sys\nfrom imagenette_course.cli import main\ntry: main(sys.argv[1:])\nexcept SystemExit: pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')")
    for args in (['--help'], ['run', 'nonsense'], ['run', 'baseline', '--bs', '0'], ['run', 'baseline', '--data-path', 'gpu'],
                 ['report', '--plot', 'results.xyz'], ['run', 'baseline', '--size', '64', '--presize', '32']):
        out = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip().endswith('torch not loaded'), (args, out.stdout, out.stderr)


def test_the_module_runs_as_the_command():
    out = subprocess.run([sys.executable, '-m', 'imagenette_course.cli', 'run', 'baseline', '--bs', '1'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and 'usage: imagenette-course run' in out.stderr and 'at least 2' in out.stderr


def test_importing_the_package_shows_no_warning():
    "fastai's import-time FutureWarning (torch.jit.script) is filtered by the package, once"
    out = subprocess.run([sys.executable, '-c', 'import imagenette_course.recipes'], capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'})
    assert out.returncode == 0 and out.stderr == '', out.stderr[-2000:]  # what a user sees: FutureWarnings show


def test_a_notebook_copied_out_of_the_repository_runs_its_last_cell(tmp_path):
    "The hidden export cell does nothing outside the course's repository instead of failing"
    nb = json.loads((Path(__file__).resolve().parents[1]/'nbs'/'02_baseline.ipynb').read_text())
    last = ''.join(nb['cells'][-1]['source'])
    assert 'nbdev_export()' in last
    out = subprocess.run([sys.executable, '-c', last], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != 'IN_TEST'})
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_failed_unpack_leaves_no_temporary_folder(tmp_path):
    "Any error in a worker, not only a broken image: the half-made copy is removed and the error shown"
    pack = tmp_path/'pack'
    pack.mkdir()
    (pack/'images.bin').write_bytes(b'x' * 10)
    (pack/'index.json').write_text(json.dumps(dict(files=[[5, 0, 10]])))  # a path that isn't one: TypeError in the worker
    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1]/'scripts'/'unpack_gpu_data.py'),
                          str(pack), str(tmp_path/'out'), '--workers', '1'], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and 'TypeError' in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['pack']


def long_options(parser):
    "The `--options` of `parser` itself, without `--help`"
    return {opt for a in parser._actions for opt in a.option_strings if opt.startswith('--') and opt != '--help'}

def test_the_readmes_synopsis_names_every_option_of_every_command():
    "The README's usage block is written by hand: an option added to the parser must be added there too"
    readme = (Path(__file__).resolve().parents[1]/'README.md').read_text()
    synopsis = set(re.findall(r'--[\w-]+', readme.split('## Command line and results', 1)[1].split('```')[1]))
    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    options = long_options(parser) | {opt for p in commands.values() for opt in long_options(p)}
    assert options - synopsis == set(), "not in the README's synopsis"


def test_another_programs_json_given_as_the_ledger_is_refused_and_left_as_it_was(tmp_path, fake_imagenette, capsys):
    "Its first line is a `{` too: a run must not append a record to it"
    settings = tmp_path/'settings.json'
    settings.write_text('{\n  "theme": "dark"\n}\n')
    before = settings.read_bytes()
    with pytest.raises(SystemExit) as e:
        main(['run', 'baseline', '--data', str(fake_imagenette), '--ledger', str(settings)])
    assert e.value.code == 2 and 'is not a results ledger' in capsys.readouterr().err
    assert settings.read_bytes() == before


@pytest.mark.parametrize('error', [torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB'),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                                "memory: you tried to allocate 9663676416 bytes"),
                                   MemoryError()])
def test_running_out_of_memory_is_one_line_with_the_fix(monkeypatch, capsys, error):
    import imagenette_course.cli as cli
    def run(args): raise error
    monkeypatch.setattr(cli, 'run', run)
    with pytest.raises(SystemExit) as e: main(['run', 'baseline'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'out of memory' in err and 'smaller --bs or --size' in err


def test_a_reader_that_stops_reading_the_report_is_no_error(tmp_path):
    "`imagenette-course report | head`: the pipe closes, and the command ends quietly"
    import subprocess, sys
    code = ("import imagenette_course.cli as cli; cli.report = lambda args: [print('x' * 100) for _ in range(10**5)]; "
            "cli.main(['report'])")
    done = subprocess.run(['bash', '-c', f'"{sys.executable}" -c "{code}" | head -c 10 > /dev/null; exit ${{PIPESTATUS[0]}}'],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 141 and done.stderr == ''


def test_a_broken_pipe_that_is_not_the_output_is_an_error(monkeypatch, capsys):
    "A loader's worker pipe, say: not a reader that stopped reading, so it is reported, not hidden behind exit 141"
    import imagenette_course.cli as cli
    def run(args): raise BrokenPipeError(32, 'Broken pipe')
    monkeypatch.setattr(cli, 'run', run)
    with pytest.raises(SystemExit) as e: main(['run', 'baseline'])
    assert e.value.code == 2 and 'Broken pipe' in capsys.readouterr().err


def test_running_out_of_memory_in_report_gives_no_training_advice(monkeypatch, capsys):
    import imagenette_course.cli as cli
    def report(args): raise MemoryError()
    monkeypatch.setattr(cli, 'report', report)
    with pytest.raises(SystemExit) as e: main(['report'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'out of memory' in err and '--bs' not in err
