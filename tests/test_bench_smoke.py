"The GPU check, end to end on a CPU in its --smoke setting, on a tiny copy made by its data helper: so it can't rot."
import importlib.util, json, os, re, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from imagenette_course.baseline import BOOK, REFERENCES
from imagenette_course.data import default_presize
from imagenette_course.fast_data import DecodeOnce, NoRoom
from imagenette_course.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]


def run_script(script, *args, timeout):
    "Run `script` (its path in the repository) with `args`; its standard output, after checking that it succeeded"
    out = subprocess.run([sys.executable, str(ROOT/script), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_gpu_check_smoke_runs_every_recipe_then_the_split_presize_and_noise_experiments(shared_data, tmp_path):
    pack, data, out = tmp_path/'pack', tmp_path/'data', tmp_path/'out'
    # 7 training images per class: progressive resizing's quick first stage needs one full batch of 64
    made = run_script('scripts/make_gpu_data.py', shared_data, pack, '--train-per-class', 7, '--val-per-class', 2,
                      '--size', 48, timeout=60)
    assert '90 images at 48 px, AVIF quality 40' in made
    index = json.loads((pack/'index.json').read_text())
    assert index['images'] == dict(train=70, val=20) and len(index['files']) == 90 and index['mib'] < 2
    assert 20 < index['psnr_db']['min'] <= index['psnr_db']['mean'] < 40  # lossy, but the same pictures
    run_script('scripts/unpack_gpu_data.py', pack, data, timeout=60)
    unpacked = sorted(p.relative_to(data).as_posix() for p in data.rglob('*.JPEG'))
    assert unpacked == sorted(f[0] for f in index['files']) and (data/'noisy_imagenette.csv').is_file()
    with open(pack/'images.bin', 'r+b') as f: f.truncate(f.seek(0, 2) - 100)  # a pack cut short in transfer
    cut = subprocess.run([sys.executable, str(ROOT/'scripts'/'unpack_gpu_data.py'), str(pack), str(tmp_path/'cut')],
                         capture_output=True, text=True, timeout=60)
    assert cut.returncode == 1 and 'the pack is incomplete' in cut.stderr and not (tmp_path/'cut').exists()
    # The recipes that exercise the script's own logic: book order, TTA reusing the progressive model, the split,
    # presize and noise experiments. That every recipe runs through the same `cli.main` is tested by `run all` in test_cli.py.
    chosen = ['label-smoothing', 'tta', 'progressive', 'normalized', 'baseline']
    # the decoded-once data path (appendix 92a), which full mode uses on a GPU, through every step of the check
    # in two lanes (processes) at once, as on the GPU machine, where one process leaves the GPU idle between kernels
    run_script('scripts/gpu_check.py', data, '--out', out, '--smoke', '--recipes', ','.join(chosen), '--data-path', 'fast',
               '--lanes', 2, timeout=300)

    summary = json.loads((out/'summary.json').read_text())
    runs = [(r['recipe'], r['noise'], r['split'], r['presize']) for r in summary['results']]
    book_results = {name for name, _, source, _ in REFERENCES if source == BOOK}
    plain = [(name, 0, 'official', None) for name in runs_in_book_order() if name in chosen]
    assert runs == ([r for r in plain if r[0] in book_results] + [r for r in plain if r[0] not in book_results]
                    + [('baseline', 0, 'random', None), ('baseline', 0, 'official', 224)]  # the book's split, the capped presize
                    + [('normalized', 25, 'official', None), ('label-smoothing', 25, 'official', None)])  # chapter 7's
    assert len(summary['commit']) >= 7  # the checkout it ran from
    assert summary['lanes'] == 2 and all((out/'lanes'/f'lane-{i}'/'log.txt').is_file() for i in range(2))
    # a lent GPU machine sends back at most 8 files: the lanes' own go in one folder, which its script archives
    assert sorted(f.name for f in out.iterdir()) == ['lanes', 'ledger.jsonl', 'summary.json']
    assert all(r['status'] == 'ok' and 0 <= r['accuracy'] <= 1 for r in summary['results']), summary['results']
    assert summary['smoke'] and summary['mode'] == 'quick' and summary['data']['images'] == dict(train=70, val=20)
    assert summary['data']['pack']['psnr_db'] == index['psnr_db']  # the data's provenance travels with the results
    book = {r['recipe']: r for r in summary['results'] if 'book_accuracy' in r}
    assert set(book) == book_results & set(chosen) and book['tta']['accuracy_tta'] is not None
    assert {'centre crop', 'fastai learn.tta', 'training-scale crop'} <= set(book['tta']['tta_ways']) == set(book['tta']['tta_costs'])
    # the split and presize runs are not compared with the book's as if they were its setting
    assert (book['baseline']['split'], book['baseline']['presize']) == ('official', None)
    ledger = [json.loads(line) for line in (out/'ledger.jsonl').read_text().splitlines()]
    trained = [(r['recipe'], r['config']['noise'], r['config']['split'], r['config']['presize']) for r in ledger]
    assert sorted(trained, key=str) == sorted(runs, key=str)
    presized, = [r for r in ledger if r['config']['presize']]
    assert presized['extra']['presize'] == 224  # the item resize it trained with, not the default's
    assert {r['extra']['data_path'] for r in ledger} == {'fast'}
    tta = next(r for r in ledger if r['recipe'] == 'tta')
    assert tta['extra']['reused_training']  # measured on the model the progressive recipe had just trained


@pytest.mark.parametrize('group', [False, True], ids=['kill', 'timeout'])
def test_a_killed_check_stops_its_lanes_and_says_which_runs_it_cut(fake_imagenette, tmp_path, group):
    "A plain `kill` reaches only the check's own process, `timeout`'s its whole group: either way no lane trains on"
    import psutil
    out = tmp_path/'out'
    check = subprocess.Popen([sys.executable, str(ROOT/'scripts'/'gpu_check.py'), str(fake_imagenette), '--out', str(out),
                              '--smoke', '--recipes', 'baseline,normalized', '--lanes', '2'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=group)
    logs = [out/'lanes'/f'lane-{i}'/'log.txt' for i in range(2)]
    for _ in range(600):  # until each lane has started its recipe
        if all(log.is_file() and '=== gpu check:' in log.read_text() for log in logs): break
        time.sleep(0.2)
    lanes = psutil.Process(check.pid).children()
    assert len(lanes) == 2
    start = time.monotonic()
    if group: os.killpg(check.pid, signal.SIGTERM)  # as `timeout` signals: the check and its lanes at once
    else: check.terminate()
    assert check.wait(60) == 128 + signal.SIGTERM
    assert time.monotonic() - start < gpu_check_module().STOP_S  # before `timeout -k STOP_S` would kill it
    _, alive = psutil.wait_procs(lanes, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []  # ended (a zombie has: only its exit status is left)
    summary = json.loads((out/'summary.json').read_text())
    # a recipe cut by the signal is 'cut', not 'failed' while its lane goes on to the next one
    assert {r['status'] for r in summary['results']} <= {'ok', 'cut'}, summary['results']


# A lane as far as stopping it goes: on a SIGTERM it cleans up for a second (saves, closes its loader's workers), and a
# second SIGTERM meanwhile cuts that short, as the CLI's handler raising again inside the clean-up does
FAKE_LANE = """import pathlib, signal, sys, time
def second(signum, frame): sys.exit(99)
def clean_up(signum, frame):
    signal.signal(signal.SIGTERM, second)
    print('cleaning up', flush=True)
    time.sleep(1)
    pathlib.Path(sys.argv[1]).write_text('cleaned up')
    sys.exit(143)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[2] == 'deaf' else clean_up)
print('ready', flush=True)
time.sleep(60)
"""


def load_script(path):
    "The script at `path` (in the repository) as a module"
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT/path)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    return module


def gpu_check_module(): return load_script('scripts/gpu_check.py')


def refusal(main, argv, capture):
    "What `main(argv)` says as it refuses its arguments (argparse's exit status 2), without its usage line"
    with pytest.raises(SystemExit) as e: main(argv)
    assert e.value.code == 2
    return capture.readouterr().err.split('error: ', 1)[1]  # capture: pytest's capsys or capfd


def fake_lanes(tmp_path, kinds):
    "Fake lane processes, one of each of `kinds` ('lane' or 'deaf', which ignores SIGTERM), started and ready"
    procs = [subprocess.Popen([sys.executable, '-c', FAKE_LANE, str(tmp_path/f'{i}.done'), kind],
                              stdout=subprocess.PIPE, text=True) for i, kind in enumerate(kinds)]
    assert all(p.stdout.readline() == 'ready\n' for p in procs)
    return procs


def test_a_stopped_check_lets_lanes_signalled_with_it_clean_up_before_signalling_them_again(tmp_path):
    gpu_check = gpu_check_module()
    procs = fake_lanes(tmp_path, ['lane', 'lane'])
    for p in procs: p.send_signal(signal.SIGTERM)  # as `timeout` signals the check's whole process group
    assert all(p.stdout.readline() == 'cleaning up\n' for p in procs)  # when the check's own handler runs, say
    gpu_check.stop_lanes(procs, grace=10, kill_after=2)
    assert [p.returncode for p in procs] == [143, 143]
    assert all((tmp_path/f'{i}.done').is_file() for i in range(2))


def test_a_stopped_check_signals_lanes_a_plain_kill_missed_and_kills_those_that_ignore_it(tmp_path):
    gpu_check = gpu_check_module()
    procs = fake_lanes(tmp_path, ['lane', 'deaf'])
    start = time.monotonic()
    gpu_check.stop_lanes(procs, grace=0.5, kill_after=3)
    assert time.monotonic() - start < 6
    assert [p.returncode for p in procs] == [143, -signal.SIGKILL] and (tmp_path/'0.done').is_file()
    # and all of it fits in what a `timeout` gives the check after its signal: the lent script's `-k`
    stop_s = int(re.search(r'^stop_s=(\d+)', (ROOT/'scripts'/'lent_gpu_check.sh').read_text(), re.M)[1])
    assert gpu_check.LANE_GRACE_S + gpu_check.LANE_KILL_S < gpu_check.STOP_S <= stop_s


def runs_in_book_order():
    "The recipes with a book number in the book's order, then the rest in chapter order"
    book = [name for name, _, source, _ in REFERENCES if source == BOOK]
    return [n for n in book if n in RECIPES] + [n for n in RECIPES if n not in book]


def test_data_path_benchmark_smoke_measures_every_path(shared_data, tmp_path):
    out = run_script('bench/gpu_data_path.py', shared_data, '--smoke', '--rounds', 2, '--commit', 'abc1234',
                     '--out', tmp_path/'dp.json',
                     timeout=300)
    results = json.loads((tmp_path/'dp.json').read_text())
    (res,) = results['sizes']
    paths = ('model_only', 'lean_in_turn', 'lean_ahead', 'fastai_in_turn', 'fastai_ahead', 'book')
    assert all(res[k] > 0 for k in paths)
    # every path measured in each round, interleaved; each keeps its best round
    assert res['rounds'] == 2 and all(len(res['each_round'][k]) == 2 for k in paths)
    assert all(abs(res[k] - max(res['each_round'][k])) < 0.1 for k in paths)
    assert all(res[f'{k}_efficiency'] == round(res[k] / res['model_only'], 3) for k in paths[1:])
    assert results['commit'] == 'abc1234'  # the benchmark may run from another commit than the check
    assert results['full_mode_path'] == 'lean_in_turn'  # what `DecodeOnce` makes by default:
    bench = load_script('bench/gpu_data_path.py')
    assert bench.PATHS[bench.FULL_MODE_PATH][1] == dict(lean=True, prefetch=DecodeOnce().prefetch)
    assert res['full_mode_vs_book'] == round(res['lean_in_turn'] / res['book'], 3)
    assert res['book_presize'] == default_presize(32)  # the book's loaders as `get_dls` makes them now
    assert res['lean_vs_fastai_max_abs_diff'] == 0  # the same pixels from the same random state
    assert "full mode's / book's loaders" in out
    # the first GPU run's and the book's epoch times are cited from other runs, not measured beside these
    assert set(results['cited']) == {'first_gpu_run_epoch_images_per_s', 'book_s_per_epoch_224', 'note'}
    assert not {'first_gpu_run_images_per_s', 'book_s_per_epoch_224'} & set(results)


def test_data_path_benchmark_without_room_for_the_decoded_images_measures_the_other_paths(shared_data, tmp_path):
    "On a GPU with too little free memory (`NoRoom`), as the check falls back to the book's loaders: null, not a crash"
    bench = load_script('bench/gpu_data_path.py')
    def no_room(*args, **kwargs): raise NoRoom("the fast data path keeps every decoded image on the GPU")
    bench.store_dls = no_room
    (res,) = bench.main([str(shared_data), '--smoke', '--rounds', '1', '--out', str(tmp_path/'dp.json')])['sizes']
    assert res['model_only'] > 0 and res['book'] > 0 and 'decoded image' in res['no_room']
    assert all(res[k] is None for k in ('lean_in_turn', 'lean_ahead', 'fastai_in_turn', 'fastai_ahead',
                                        'full_mode_vs_book', 'decode_once_s'))
    assert json.loads((tmp_path/'dp.json').read_text())['sizes'] == [res]


def test_data_path_benchmark_refuses_bad_counts_sizes_and_data(fake_imagenette, tmp_path, capsys):
    main = load_script('bench/gpu_data_path.py').main
    assert '--rounds: 0 is too small' in refusal(main, [str(fake_imagenette), '--smoke', '--rounds', '0'], capsys)
    assert '--steps: 0 is too small' in refusal(main, [str(fake_imagenette), '--smoke', '--steps', '0'], capsys)
    assert "--sizes: 'abc' is not a whole number" in refusal(main, [str(fake_imagenette), '--sizes', '128,abc'], capsys)
    no_data = refusal(main, [str(tmp_path/'nonexistent'), '--smoke'], capsys)
    assert 'which is not a folder' in no_data and 'as DATA' in no_data and '--data' not in no_data  # DATA: positional


def test_data_pipeline_benchmark_refuses_an_epoch_too_short_to_time_and_no_rounds(tmp_path, capsys):
    "An epoch shorter than the batches it times never ended; a second epoch in the timing restarts the workers"
    main = load_script('bench/data_pipeline.py').main
    short = refusal(main, ['--per-class', '5', '--batches', '1', '--rounds', '1'], capsys)
    assert '--per-class 5 is too few' in short and 'use --per-class 13 or more' in short  # (1 + 1) x bs 64 / 10 classes
    assert '--rounds: 0 is too small' in refusal(main, ['--rounds', '0'], capsys)
    # the defaults pass, up to the data, which is checked before any loader is made from it
    assert 'not a complete imagenette folder' in refusal(main, ['--data', str(tmp_path)], capsys)


def test_train_step_benchmark_refuses_no_rounds_or_steps_and_shows_why_a_measurement_failed(capfd):
    bench = load_script('bench/train_step.py')
    assert '--rounds: 0 is too small' in refusal(bench.main, ['--rounds', '0'], capfd)
    assert '--steps: 0 is too small' in refusal(bench.main, ['--steps', '0'], capfd)
    with pytest.raises(subprocess.CalledProcessError):
        bench.last_json([sys.executable, '-c', "import sys; sys.exit('the measurement failed because of this')"])
    assert 'because of this' in capfd.readouterr().err  # the child's own words, not just its exit status


def test_gpu_check_refuses_a_data_folder_in_terms_of_its_data_argument(tmp_path, capsys):
    "gpu_check takes DATA (no --data) and no IMAGENETTE_PATH; a pack must be unpacked before it can read it"
    said = refusal(gpu_check_module().main, [str(tmp_path), '--out', str(tmp_path/'out'), '--smoke'], capsys)
    assert said.startswith('DATA: ') and 'missing split folder' in said
    assert 'scripts/make_gpu_data.py SOURCE PACK' in said and 'scripts/unpack_gpu_data.py PACK NEW_FOLDER' in said
    assert '--data' not in said and 'IMAGENETTE_PATH' not in said


def test_make_gpu_data_takes_an_empty_imagenette_path_for_none(tmp_path, monkeypatch, capsys):
    "The Makefile exports IMAGENETTE_PATH empty without ../shared, the workflow when its variable is unset"
    monkeypatch.syspath_prepend(str(ROOT/'scripts'))  # the packer imports the unpacker
    monkeypatch.setenv('IMAGENETTE_PATH', '')
    said = refusal(load_script('scripts/make_gpu_data.py').main, [str(tmp_path/'pack')], capsys)
    assert said.startswith('no Imagenette folder') and not (tmp_path/'pack').exists()


def test_shrink_copy_checks_its_source_first_and_copies_the_noisy_labels_only_if_there(fake_imagenette, tmp_path,
                                                                                       monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT/'results/cpu'))  # imported by name: its worker processes unpickle `shrink`
    main = importlib.import_module('shrink_copy').main
    not_source = refusal(main, [str(tmp_path), str(tmp_path/'nothing')], capsys)
    assert 'not a complete imagenette folder' in not_source and 'as SOURCE' in not_source and '--data' not in not_source
    assert not (tmp_path/'nothing').exists()
    main([str(fake_imagenette), str(tmp_path/'small'), '--size', '16'])  # a copy without noisy_imagenette.csv
    assert len(list((tmp_path/'small').rglob('*.JPEG'))) == 60 and not list((tmp_path/'small').glob('*.csv'))


def test_unpacking_a_folder_that_is_not_a_pack_says_how_to_make_one(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT/'scripts'/'unpack_gpu_data.py'), str(tmp_path), str(tmp_path/'out')],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and 'is not a pack' in out.stderr and 'make gpu-data' in out.stderr
    assert not (tmp_path/'out').exists()


def test_optimizer_step_benchmark_smoke_times_every_optimizer(tmp_path):
    out = run_script('bench/optimizer_step.py', '--smoke', '--out', tmp_path/'opt.json', timeout=120)
    results = json.loads((tmp_path/'opt.json').read_text())['results']
    assert len(results) == 2 and 'fastai Adam / FusedAdam =' in out  # (a), and (b)'s settings on the CPU
    for r in results:
        assert set(r['ms_per_step']) == {'fastai Adam', 'FusedAdam', 'AdamW fused (ref.)'}
        assert all(ms > 0 for ms in r['ms_per_step'].values()) and r['fused_speedup'] > 0


def test_optimizer_step_benchmark_can_skip_the_cpu_regime(tmp_path):
    "On a GPU machine short of time, (b) alone: the CPU regime (a) is measured on any machine"
    run_script('bench/optimizer_step.py', '--smoke', '--no-cpu', '--out', tmp_path/'opt.json', timeout=120)
    results = json.loads((tmp_path/'opt.json').read_text())['results']
    assert [r['config'] for r in results] == ['smoke: (b) settings on the CPU']
    if not torch.cuda.is_available():  # nothing left to measure: an error, not an empty success
        out = subprocess.run([sys.executable, str(ROOT/'bench/optimizer_step.py'), '--no-cpu'], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and 'needs a CUDA GPU' in out.stderr
