import json, os, re, shutil, subprocess, sys, tempfile, threading
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest

from imagenette_course.data import MODES
from imagenette_course.ledger import (LedgerError, RunRecord, append_record, check_is_ledger, comparison_table,
                                      data_name, ledger_path, ledger_problem, plot_comparison, read_ledger, runs_table,
                                      special_file_problem)


def record(name='baseline', acc=0.5, mode='quick', **extra):
    return RunRecord(name, mode, 'cpu', n_train=400, n_valid=200, sizes=[64], epochs=3, accuracy=acc,
                     wall_time_s=12.3, seed=42, bs=32, lr=3e-3, extra=extra)

SHARED = dict(trained_by='progressive', train_s=7.2, measure_s=5.1)  # tta, measuring progressive's model in `run all`

def hand_edited(path, rec):
    "Add `rec` as a line typed into the ledger: `append_record` refuses a record `read_ledger` would skip"
    with open(path, 'a') as f: f.write(json.dumps(rec) + '\n')


def test_ledger_location(tmp_path, monkeypatch):
    assert ledger_path(tmp_path/'x.jsonl') == tmp_path/'x.jsonl'
    assert ledger_path() == tmp_path/'ledger.jsonl'  # set by the autouse fixture
    monkeypatch.delenv('IMAGENETTE_LEDGER')
    assert ledger_path().name == 'ledger.jsonl' and '.imagenette_course' in str(ledger_path())


def test_round_trip(tmp_path):
    path = tmp_path/'sub'/'ledger.jsonl'
    append_record(record('a', 0.1), path)
    append_record(record('b', 0.2), path)
    recs = read_ledger(path)
    assert [r['recipe'] for r in recs] == ['a', 'b']
    assert recs[0] == json.loads(json.dumps(asdict(record('a', 0.1)) | {'finished': recs[0]['finished']}))
    assert set(recs[0]['versions']) == {'python', 'torch', 'torchvision', 'fastai'}


def test_corrupt_lines_are_reported_not_fatal(tmp_path):
    path = tmp_path/'ledger.jsonl'
    append_record(record('a'), path)
    with open(path, 'a') as f: f.write('{"recipe": "cut off\n[1, 2]\n')
    append_record(record('b'), path)
    with pytest.warns(UserWarning) as w: recs = read_ledger(path)
    assert [r['recipe'] for r in recs] == ['a', 'b']
    assert [f'line {n}' in str(m.message) for m, n in zip(w, (2, 3))] == [True, True]


def test_missing_ledger_is_empty(tmp_path):
    assert read_ledger(tmp_path/'none.jsonl') == []


def test_crash_while_writing_leaves_the_ledger_whole(tmp_path, monkeypatch):
    path = tmp_path/'ledger.jsonl'
    append_record(record('a'), path)
    before = path.read_bytes()
    def killed(fd): raise KeyboardInterrupt
    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt): append_record(record('b'), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ledger.jsonl', 'ledger.jsonl.lock']


def test_a_partial_last_line_does_not_swallow_the_next_record(tmp_path):
    path = tmp_path/'ledger.jsonl'
    path.write_text(json.dumps(asdict(record('a'))) + '\n{"recipe": "b", "mo')
    append_record(record('c'), path)
    with pytest.warns(UserWarning, match='line 2'): recs = read_ledger(path)
    assert [r['recipe'] for r in recs] == ['a', 'c']


def test_concurrent_appends_keep_every_record(tmp_path):
    path = tmp_path/'ledger.jsonl'
    threads = [threading.Thread(target=append_record, args=(record(f'r{i}'), path)) for i in range(20)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert sorted(r['recipe'] for r in read_ledger(path)) == sorted(f'r{i}' for i in range(20))


def test_the_lock_is_msvcrts_where_there_is_no_fcntl(tmp_path):
    "On Windows `import fcntl` fails: the ledger still imports, and locks with msvcrt, waiting however long it takes"
    code = """if True:
        import errno, sys, types
        import imagenette_course.baseline  # everything the ledger imports but itself, before fcntl goes away
        calls = []
        def locking(fd, mode, nbytes):
            calls.append((mode, nbytes))
            if calls.count(('lock', 1)) < 3: raise OSError(errno.EDEADLOCK, 'held by another run for 10 s')
        sys.modules['fcntl'] = None  # `import fcntl` raises ImportError, as on Windows
        sys.modules['msvcrt'] = types.SimpleNamespace(locking=locking, LK_LOCK='lock', LK_UNLCK='unlock')
        from imagenette_course.ledger import append_record, read_ledger
        append_record(dict(recipe='a', mode='quick', device='cpu', sizes=[64], epochs=1, accuracy=0.5, wall_time_s=1.0),
                      sys.argv[1])
        print(calls, [r['recipe'] for r in read_ledger(sys.argv[1])])
    """
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path/'ledger.jsonl')], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[('lock', 1), ('lock', 1), ('lock', 1), ('unlock', 1)] ['a']"


def test_printed_record_states_mode_and_setting():
    quick, full = str(record()), str(record(mode='full'))
    for s in ('quick mode', 'cpu', '400 train / 200 valid', '64 px', '3 epochs', '50.0%'): assert s in quick
    assert "not the chapter's accuracy" in quick and "not the chapter's accuracy" not in full


@pytest.mark.parametrize('change, problem', [
    (dict(accuracy='85%'), "field 'accuracy' is '85%', not of type float"),
    (dict(epochs=True), "field 'epochs' is True, not of type int"),
    (dict(sizes=None), "field 'sizes' is None, not of type list"),
    (dict(extra=[1]), "field 'extra' is not an object"),
    (dict(accuracy=85.0), "field 'accuracy' is 85.0, not a share from 0 to 1"),  # a percentage typed for a share
    (dict(extra=dict(accuracy_tta=-0.1)), "field 'extra.accuracy_tta' is -0.1, not a share from 0 to 1"),
    (dict(wall_time_s=-5.0), "field 'wall_time_s' is -5.0, not a number of seconds from 0 to 1e+07"),
    (dict(wall_time_s=float('nan')), "field 'wall_time_s' is nan, not a number of seconds"),  # JSON's NaN, read back
    (dict(wall_time_s=float('inf')), "field 'wall_time_s' is inf, not a number of seconds"),
    (dict(wall_time_s=1e308), "field 'wall_time_s' is 1e+308, not a number of seconds"),  # breaks the figure's axis
    (dict(accuracy=float('nan')), "field 'accuracy' is nan, not a share from 0 to 1"),
    (dict(extra=dict(accuracy_tta=float('inf'))), "field 'extra.accuracy_tta' is inf, not a share from 0 to 1"),
    (dict(extra=dict(trained_by='progressive', train_s=float('nan'))), "field 'extra.trained_by' is not a recipe's"),
    (dict(epochs=0), "field 'epochs' is 0, not at least 1"),
    (dict(extra=dict(trained_by='progressive')), "field 'extra.trained_by' is not a recipe's name with its seconds"),
])
def test_records_with_a_wrong_type_are_skipped_with_their_line(tmp_path, change, problem):
    path = tmp_path/'ledger.jsonl'
    append_record(record('a'), path)
    hand_edited(path, {**asdict(record('b')), **change})
    with pytest.warns(UserWarning, match='line 2') as w: recs = read_ledger(path)
    assert [r['recipe'] for r in recs] == ['a'] and problem in str(w[0].message)


def test_a_ledger_saved_with_a_byte_order_mark_reads_whole(tmp_path):
    "As a Windows editor saves it"
    path = tmp_path/'ledger.jsonl'
    append_record(record('a'), path)
    path.write_bytes(b'\xef\xbb\xbf' + path.read_bytes())
    assert [r['recipe'] for r in read_ledger(path)] == ['a']
    path.write_bytes(b'\xef\xbb\xbf{"recipe": "a", "mo')  # and its only record cut short by a killed write
    with pytest.warns(UserWarning, match='line 1: skipped a broken record: not JSON'): assert read_ledger(path) == []
    append_record(record('b'), path)  # a ledger with a broken last line, not another program's file
    with pytest.warns(UserWarning, match='line 1'): assert [r['recipe'] for r in read_ledger(path)] == ['b']


def test_the_data_name_says_what_differs_from_the_plain_run():
    assert data_name(dict(config=dict(dataset='imagenette', noise=0, split='official', presize=None))) == 'imagenette'
    assert data_name(dict(config=dict(dataset='imagenette', noise=0, split='random', presize=460))) == \
           'imagenette, random split, presize 460 px'
    assert data_name(dict(config=dict(dataset='imagewoof', noise=25))) == 'imagewoof, 25% noisy labels'  # older records


def test_appending_keeps_the_ledgers_permissions_and_its_symlink(tmp_path):
    "The ledger is replaced whole on each append: the new file keeps the old one's mode, and a link stays a link"
    real, link = tmp_path/'shared'/'ledger.jsonl', tmp_path/'ledger.jsonl'
    append_record(record('a'), real)
    os.chmod(real, 0o664)
    link.symlink_to(real)
    append_record(record('b'), link)
    assert link.is_symlink() and (real.stat().st_mode & 0o777) == 0o664
    assert [r['recipe'] for r in read_ledger(link)] == ['a', 'b']


@pytest.mark.parametrize('edit, field', [({'extra': {'accuracy_tta': 'high'}}, 'extra.accuracy_tta'),
                                         ({'config': 'imagenette'}, "'config'"),
                                         ({'config': {'noise': '5%'}}, 'config.noise'),
                                         ({'config': {'dataset': None}}, 'config.dataset'),  # None + str in `data_name`
                                         ({'config': {'split': None}}, 'config.split'),  # else "None split"
                                         ({'config': {'noise': None}}, 'config.noise')])
def test_a_hand_edited_record_the_table_cant_show_is_skipped_with_its_line(tmp_path, edit, field):
    path = tmp_path/'ledger.jsonl'
    append_record(record('a'), path)
    hand_edited(path, {**asdict(record('b')), **edit})
    with pytest.warns(UserWarning, match=f'line 2.*{field}'): recs = read_ledger(path)
    table = comparison_table(recs).splitlines()
    assert [r['recipe'] for r in recs] == ['a'] and table[1].split()[0] == 'a' and table[2] == ''  # its row, and only it


def test_a_record_as_run_writes_it_with_the_default_presize_is_kept(tmp_path):
    "`run` records the whole `RunConfig`: its null presize means the default, not a broken record"
    path = tmp_path/'ledger.jsonl'
    append_record({**asdict(record('a')), 'config': asdict(MODES['quick'])}, path)
    assert asdict(MODES['quick'])['presize'] is None
    assert [data_name(r) for r in read_ledger(path)] == ['imagenette']


def test_labels_of_points_close_together_stack_instead_of_overlapping():
    from imagenette_course.ledger import label_lifts
    xy = [(100, 50), (110, 50), (120, 52), (400, 60), (105, 200)]  # in points on the figure
    lifts = label_lifts(xy, widths=[60] * 5, line=9)
    assert lifts[:3] == [3, 12, 21]  # three recipes at about one accuracy and wall time: each label above the last
    assert lifts[3:] == [3, 3]  # alone: just above the point
    assert label_lifts([], widths=[]) == []


def test_a_lock_file_it_makes_gets_the_mode_of_the_shared_ledger(tmp_path):
    path = tmp_path/'ledger.jsonl'
    path.write_text(json.dumps(asdict(record('a'))) + '\n')
    path.chmod(0o664)  # shared with the group
    umask = os.umask(0o022)
    try: append_record(record('b'), path)
    finally: os.umask(umask)
    assert (path.with_name('ledger.jsonl.lock').stat().st_mode & 0o777) == 0o664


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='another user is played by a forked process')
def test_a_lock_file_another_user_may_only_read_is_enough():
    "A group's shared ledger: another member may write the ledger, but only read the lock file the first writer made"
    shared = Path(tempfile.mkdtemp())  # not under tmp_path, which only its owner may enter
    try:
        shared.chmod(0o777)
        path = shared/'ledger.jsonl'
        append_record(record('a'), path)
        path.chmod(0o666); path.with_name('ledger.jsonl.lock').chmod(0o444)
        if os.geteuid() == 0:  # root may write any file: append as another user
            pid = os.fork()
            if pid == 0:
                try: os.setuid(65534); append_record(record('b'), path); os._exit(0)
                except BaseException as e: print(repr(e), file=sys.stderr); os._exit(1)
            assert os.waitpid(pid, 0)[1] == 0
        else: append_record(record('b'), path)
        assert [r['recipe'] for r in read_ledger(path)] == ['a', 'b']
    finally: shutil.rmtree(shared)


def test_a_new_ledger_gets_the_umask_without_setting_it(tmp_path, monkeypatch):
    "The umask is the whole process's: set even for a moment, another thread's new files could get the wrong one"
    umask = os.umask(0o027)
    try:
        with monkeypatch.context() as m:
            m.setattr(os, 'umask', lambda mask: pytest.fail('append_record set the umask'))
            append_record(record('a'), tmp_path/'ledger.jsonl')
    finally: os.umask(umask)
    assert ((tmp_path/'ledger.jsonl').stat().st_mode & 0o777) == 0o640


def test_nothing_is_appended_to_a_file_that_is_no_ledger(tmp_path):
    "Another program's JSON given as the ledger is refused when the record is written, not only before the run"
    settings = tmp_path/'settings.json'
    settings.write_text(json.dumps({'theme': 'dark'}, indent=2))
    before = settings.read_bytes()
    with pytest.raises(LedgerError, match=r'is not a results ledger.*Fix: --ledger'): append_record(record('a'), settings)
    assert settings.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['settings.json']  # and no lock file left beside it


def test_a_file_of_the_users_named_like_a_temporary_one_is_left_alone(tmp_path):
    "The ledger is rewritten through a temporary file of a name of its own, not one a user's file may have"
    (tmp_path/'ledger.jsonl.tmp').write_text('precious')
    append_record(record('a'), tmp_path/'ledger.jsonl')
    assert (tmp_path/'ledger.jsonl.tmp').read_text() == 'precious'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ledger.jsonl', 'ledger.jsonl.lock', 'ledger.jsonl.tmp']


def test_a_wall_time_with_another_recipes_training_says_so():
    shared = record('tta', accuracy_tta=0.6, **SHARED)
    assert "12 s (7 s of it progressive's training, shared), seed 42" in str(shared)
    assert '12 s, seed 42' in str(record('progressive'))  # an older record, or one that trained for itself
    table = runs_table([asdict(record('progressive')), asdict(shared)], order=['progressive', 'tta']).splitlines()
    assert table[1].endswith('  12 s') and table[2].endswith('  12 s*')
    assert table[3:] == ["* tta, imagenette, quick, cpu: 12 s, 7 s of it progressive's training, shared"]
    assert comparison_table([asdict(record('progressive'))]).splitlines()[2] == ''  # no star, no note


def test_the_figures_say_which_runs_the_references_and_a_shared_training_belong_to():
    "The book's numbers are plain Imagenette's: none on a run on Imagewoof or noisy labels; a shared training is named"
    import matplotlib; matplotlib.use('Agg')
    from imagenette_course.ledger import plot_comparison
    runs = [asdict(record('baseline')), asdict(record('tta', **SHARED)),
            {**asdict(record('baseline')), 'config': dict(dataset='imagewoof')},
            {**asdict(record('baseline')), 'config': dict(dataset='imagenette', noise=25)},
            {**asdict(record('baseline', mode='full')), 'config': dict(dataset='imagenette', split='random')}]
    fig = plot_comparison(runs, order=['baseline', 'tta'])
    ax1, ax2 = fig.axes
    bars = [t.get_text().split('\n')[1] for t in ax1.get_xticklabels()]
    book = next(c for c in ax1.collections if c.get_label() == "the book's notebook (reference)")
    marked = sorted(bars[int(x)] for x, _ in book.get_offsets())  # baseline's and tta's, and a random split's
    assert marked == ['imagenette, quick, cpu', 'imagenette, quick, cpu', 'imagenette, random split, full, cpu']
    assert "tta (incl. progressive's training)" in [t.get_text() for t in ax2.texts]
    matplotlib.pyplot.close(fig)


def test_a_ledger_replaced_by_another_file_while_waiting_for_the_lock_is_left_alone(tmp_path, monkeypatch):
    "Checked again under the lock: another program may have put its file at the ledger's name meanwhile"
    import imagenette_course.ledger as ledger
    path, foreign = tmp_path/'ledger.jsonl', json.dumps({'theme': 'dark'}).encode()
    append_record(record('a'), path)
    real_lock = ledger.locked
    @contextmanager
    def replaced_meanwhile(*args, **kwargs):
        with real_lock(*args, **kwargs):
            path.write_bytes(foreign)
            yield
    monkeypatch.setattr(ledger, 'locked', replaced_meanwhile)
    with pytest.raises(LedgerError, match='is not a results ledger'): append_record(record('b'), path)
    assert path.read_bytes() == foreign


def without_hanging(fn, pipe): # what to call; a FIFO it may open to read
    "What `fn()` raised (`None` if nothing); the test fails if it waited on `pipe`, which a writer then lets go"
    raised = []
    def call():
        try: fn()
        except BaseException as e: raised.append(e)
    thread = threading.Thread(target=call, daemon=True)
    thread.start(); thread.join(5)
    if thread.is_alive():
        while thread.is_alive():  # each open of the pipe to read waits for a writer: be one, and go
            try: os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            except OSError: pass  # no reader at this moment
            thread.join(0.1)
        pytest.fail(f'{fn} waited for a writer of the pipe {pipe}')
    return raised[0] if raised else None


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='Windows has no named pipes')
def test_a_pipe_or_a_device_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    "Reading a pipe waits for a writer forever, and the ledger's rewrite would replace a device (/dev/null) by a file"
    import imagenette_course.ledger as ledger
    @contextmanager
    def no_lock_beside_it(path, mode=None): pytest.fail(f'append_record went on to lock {path}')
    monkeypatch.setattr(ledger, 'locked', no_lock_beside_it)  # before it could touch a device's folder, /dev
    pipe, device = tmp_path/'pipe.jsonl', tmp_path/'device.jsonl'
    os.mkfifo(pipe)
    device.symlink_to(os.devnull)  # a character device, behind a link: only read, never written
    message = r'is not a regular file \(a device or a pipe\)\. Fix: --ledger \(or IMAGENETTE_LEDGER\) naming'
    for path in (pipe, device):
        for fn in (lambda: read_ledger(path), lambda: append_record(record('a'), path)):
            e = without_hanging(fn, pipe)
            assert isinstance(e, LedgerError) and re.search(message, str(e)), e
        assert ledger_problem(path).endswith('is not a regular file (a device or a pipe)')
    assert pipe.exists() and not pipe.is_file() and os.path.realpath(device) == os.devnull
    assert sorted(p.name for p in tmp_path.iterdir()) == ['device.jsonl', 'pipe.jsonl']


@pytest.mark.parametrize('bad, problem', [
    (record('a', acc=85.0), "field 'accuracy' is 85.0, not a share from 0 to 1"),  # `read_ledger` would skip it
    (dict(mode='quick', note='hand-made'), "no 'recipe' field"),  # a new ledger of it would refuse every later record
])
def test_a_record_the_ledger_cant_use_is_refused_before_any_file_is_written(tmp_path, bad, problem):
    path = tmp_path/'ledger.jsonl'
    with pytest.raises(ValueError, match=re.escape(f"not a run's record: {problem}; nothing was written")):
        append_record(bad, path)
    assert list(tmp_path.iterdir()) == []
    append_record(record('b'), path)
    assert [r['recipe'] for r in read_ledger(path)] == ['b']


def test_a_ledger_given_as_text_is_checked_as_a_path(tmp_path):
    path, other = tmp_path/'ledger.jsonl', tmp_path/'labels.csv'
    append_record(record('a'), path)
    other.write_text('path,label\n')
    assert special_file_problem(str(path)) is None and ledger_problem(str(path)) is None
    check_is_ledger(str(path))
    with pytest.raises(LedgerError, match='is not a results ledger'): check_is_ledger(str(other))


def test_the_table_and_figure_take_records_as_run_recipe_returns_them():
    "A `RunRecord`, or the dict the ledger holds; 'a' is no recipe of the committed GPU run: it gets no cross"
    import matplotlib.pyplot as plt
    recs = [record('a'), record('tta', **SHARED, accuracy_tta=0.6)]
    assert runs_table(recs) == runs_table([asdict(r) for r in recs]) and data_name(recs[0]) == 'imagenette'
    fig = plot_comparison(recs)
    gpu = next(c for c in fig.axes[0].collections if c.get_label() == "the course's full-mode GPU run (reference)")
    assert [int(x) for x, _ in gpu.get_offsets()] == [1]
    plt.close(fig)


def test_references_and_the_gpu_run_refuse_a_name_they_dont_have_rather_than_answer_nothing():
    from imagenette_course.baseline import BOOK, full_mode_lines, full_mode_result, references
    with pytest.raises(ValueError, match="recipe 'Baseline': not in REFERENCES. Fix: one of 'baseline', "):
        references('Baseline')
    with pytest.raises(ValueError, match="source='book': not a source of REFERENCES. Fix: .* source=BOOK"):
        references('baseline', source='book')
    for listed in (references, full_mode_lines):
        with pytest.raises(TypeError, match="pass the recipes as separate arguments"): listed(['baseline', 'tta'])
    for typo, name in (('Baseline', 'baseline'), ('progressive_schedule', 'progressive-schedule')):
        with pytest.raises(ValueError, match=f"recipe={typo!r}: recipes are named in lower case, with '-'. Fix: {name!r}"):
            full_mode_result(typo)
    assert len(references('baseline', 'tta', source=BOOK)) == 2 and full_mode_result('baseline')['status'] == 'ok'
    assert full_mode_result('a-recipe-it-never-ran') is None  # as its docstring says: no result, not an error
