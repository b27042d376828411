"The committed GPU run as the course shows it: the packaged copy and the README's table follow results/gpu/summary.json."
import importlib.util, json
from pathlib import Path

import pytest

from imagenette_course.baseline import full_mode_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def gpu_reference():
    spec = importlib.util.spec_from_file_location('gpu_reference', ROOT/'scripts/gpu_reference.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packaged_run_and_readme_table_are_up_to_date(gpu_reference):
    gpu_reference.main(['--check'])  # exits with the file names if either lags behind results/gpu/summary.json


def test_packaged_run_names_no_machine_path_and_says_where_it_came_from():
    text = (ROOT/'imagenette_course/full_mode_gpu.json').read_text()
    assert '/tmp/' not in text and '/root/' not in text and '/work/' not in text
    ref = json.loads(text)
    assert ref['device'].startswith('cuda (') and ref['commit'] and ref['date'] and ref['versions']['fastai']
    assert 'AVIF' in ref['data'] and 'PSNR' in ref['data']


RUN_ID = ('recipe', 'noise', 'split', 'presize')


def summary(results, extra_files=('noisy_imagenette.csv',), planned=None):
    "A gpu_check summary with `results`, of a check that planned `planned` runs (default: just those)"
    data = dict(path='imagenette', images=dict(train=9469, val=3925), mib=259.3, image_px=[224, 224],
                pack=dict(format='avif', quality=40, mib=44.3, psnr_db=dict(mean=30.4), extra_files=list(extra_files)))
    planned = [{k: r[k] for k in RUN_ID} for r in results] if planned is None else planned
    return dict(device='cuda (NVIDIA H100)', started='2026-12-01T10:00:00+00:00', commit='abc1234', mode='full',
                versions=dict(fastai='2.8.12'), data=data, total_s=400.0, budget_s=480.0, planned=planned,
                seconds_per_epoch={'224': 5.0}, results=results)


def plan(*runs):
    "A summary's `planned`: (recipe, noise, split, presize) of each run"
    return [dict(zip(RUN_ID, run)) for run in runs]


def result(recipe, accuracy, noise=0, split='official', presize=None, **kw):
    return dict(recipe=recipe, noise=noise, split=split, presize=presize, status='ok', error=None, seconds=30.0,
                accuracy=accuracy, accuracy_tta=None, epochs=5, sizes=[224], seconds_per_epoch={'224': 5.0}, data_path='fast',
                ledger='/root/out/ledger.jsonl', **kw)


def test_the_data_path_speeds_keep_each_size_and_what_fed_the_model():
    "Appendix 92a prints them: the model alone, full mode's path (named by the run) and the book's loaders, at each size"
    run = full_mode_run()
    speeds = run['data_path_speed']
    assert sorted(s['size'] for s in speeds) == [128, 224] and all(s['model_only'] > 0 and s['bs'] == 64 for s in speeds)
    assert all(s[run['full_mode_path']] > 0 and s['book'] > 0 for s in speeds)
    assert run['data_path_commit']  # the benchmark's own commit: it may have run in a call of its own


def test_every_run_the_check_planned_is_listed_and_a_missing_one_says_so(gpu_reference):
    planned = plan(('baseline', 0, 'official', None), ('normalized', 0, 'official', None),
                   ('baseline', 0, 'random', None), ('baseline', 0, 'official', 224), ('normalized', 25, 'official', None))
    ref = gpu_reference.distil(summary([result('baseline', 0.8), result('baseline', 0.85, split='random'),
                                        result('baseline', 0.83, presize=224), result('normalized', 0.7, noise=25)],
                                       planned=planned))
    key = lambda r: tuple(r[k] for k in RUN_ID)
    assert [key(r) for r in ref['runs']] == [key(r) for r in planned]  # the summary's plan, in its order
    by_key = {key(r): r for r in ref['runs']}
    assert by_key['baseline', 0, 'official', None]['accuracy'] == 0.8
    assert by_key['baseline', 0, 'random', None]['accuracy'] == 0.85
    assert by_key['baseline', 0, 'official', 224]['accuracy'] == 0.83
    assert by_key['normalized', 25, 'official', None]['accuracy'] == 0.7
    assert by_key['normalized', 0, 'official', None]['status'] == 'no result'
    assert 'ledger' not in json.dumps(ref)  # the summary's machine paths stay out of the package


def test_a_run_the_check_never_planned_is_not_listed_though_todays_checks_make_it(gpu_reference):
    "An older check's summary: runs added to the check since (the split and presize experiments) were never missing"
    older = plan(('baseline', 0, 'official', None), ('mixup', 0, 'official', None))
    ref = gpu_reference.distil(summary([result('baseline', 0.8)], planned=older))
    assert [(r['recipe'], r['status']) for r in ref['runs']] == [('baseline', 'ok'), ('mixup', 'no result')]
    assert ('baseline', {'split': 'random'}) in gpu_reference.gpu_check_module().run_order()  # today's checks make it


def test_a_summary_that_says_nothing_of_its_plan_or_contradicts_it_is_refused(gpu_reference):
    unplanned = summary([result('baseline', 0.8)])
    del unplanned['planned']
    with pytest.raises(gpu_reference.SummaryError, match=r"which runs its check planned \(`planned`"):
        gpu_reference.distil(unplanned)  # rather than guessing the plan from today's run order
    wrong = summary([result('baseline', 0.8), result('mixup', 0.7)], planned=plan(('baseline', 0, 'official', None)))
    with pytest.raises(gpu_reference.SummaryError, match="results of runs it didn't plan: .*mixup"):
        gpu_reference.distil(wrong)


def test_machine_paths_in_the_runs_files_are_shortened_as_results_cpu_has_them(gpu_reference):
    ledger = [dict(recipe='baseline', config=dict(path='/tmp/imagenette')),
              dict(recipe='baseline', config=dict(path='/tmp/imagenette-64px')), dict(recipe='tta', config={})]
    paths = gpu_reference.machine_paths(dict(ledger='/root/out/gpu/ledger.jsonl'), ledger)
    log = "/tmp/imagenette: 13394 images\n/tmp/imagenette-64px/train\nWrote /root/out/gpu/summary.json"
    assert gpu_reference.shortened(log, paths) == "imagenette: 13394 images\nimagenette-64px/train\nWrote summary.json"
    assert gpu_reference.machine_paths(dict(ledger='ledger.jsonl'), [dict(config=dict(path='imagenette'))]) == {}
    first_checks = [dict(recipe='baseline', config=dict(data='/tmp/d/gpu_data'))]  # bench/gpu-results: `data`
    assert gpu_reference.machine_paths({}, first_checks) == {'/tmp/d/gpu_data': 'gpu_data'}


def test_the_committed_runs_files_name_no_machine_path(gpu_reference):
    "gpu_reference.py shortens the paths it knows of (its --check test finds those left); this finds any other"
    committed = {f.parent for f in [*ROOT.glob('results/*/ledger.jsonl'), *ROOT.glob('bench/*/ledger.jsonl')]}
    assert committed <= set(gpu_reference.run_folders())  # every folder of run results is shortened
    for folder in gpu_reference.run_folders():
        for f in [*folder.iterdir(), ROOT/'bench/README.md']:  # and the command the README quotes
            if f.suffix in ('.json', '.jsonl', '.txt', '.md'):
                text = f.read_text()
                assert not any(p in text for p in ('/tmp/', '/root/', '/work/', '/home/')), f.relative_to(ROOT)


def test_a_summary_written_before_presize_was_recorded_reads_as_the_default_presize(gpu_reference):
    older = {k: v for k, v in result('baseline', 0.8).items() if k != 'presize'}
    ref = gpu_reference.distil(summary([older], planned=plan(('baseline', 0, 'official', None),
                                                             ('baseline', 0, 'official', 224))))
    baseline, = [r for r in ref['runs'] if r['recipe'] == 'baseline' and r['split'] == 'official' and not r['presize']]
    assert baseline['accuracy'] == 0.8
    assert [r['status'] for r in ref['runs'] if r['presize']] == ['no result']


def test_the_tta_comparison_comes_from_the_summary_or_else_from_the_ledger(gpu_reference):
    record = dict(recipe='tta', config=dict(noise=0, split='official', presize=None),
                  extra=dict(tta={'centre crop': dict(accuracy=0.76, cost=1.0), 'flip only': dict(accuracy=0.77, cost=1.5)}))
    older = gpu_reference.distil(summary([result('tta', 0.76)]), ledger=[record])  # a summary from before `tta_ways`
    newer = gpu_reference.distil(summary([result('tta', 0.76, tta_ways={'centre crop': 0.75},
                                                 tta_costs={'centre crop': 1.0})]), ledger=[record])
    tta = lambda ref: next(r for r in ref['runs'] if r['recipe'] == 'tta')
    assert tta(older)['tta_ways'] == {'centre crop': 0.76, 'flip only': 0.77} and tta(newer)['tta_ways'] == {'centre crop': 0.75}
    assert tta(older)['tta_costs'] == {'centre crop': 1.0, 'flip only': 1.5} and tta(newer)['tta_costs'] == {'centre crop': 1.0}
    # a summary from before `tta_costs`, with no ledger record to fill them in: its accuracies are kept
    costless = gpu_reference.distil(summary([result('tta', 0.76, tta_ways={'centre crop': 0.75})]))
    assert (tta(costless)['tta_ways'], tta(costless)['tta_costs']) == ({'centre crop': 0.75}, None)


def test_readme_table_has_a_row_per_run_and_the_books_number_only_on_plain_runs(gpu_reference):
    ref = gpu_reference.distil(summary([result('baseline', 0.8), result('baseline', 0.85, split='random'),
                                        result('baseline', 0.83, presize=224)]))
    rows = gpu_reference.markdown_table(ref).splitlines()
    table = [r for r in rows if r.startswith('| ') and not r.startswith('| recipe')]
    assert len(table) == len(ref['runs'])
    assert table[0].startswith('| baseline | 80.00% |  | 82.52% |')
    random_split, = [r for r in table if r.startswith('| baseline, random split |')]
    assert '85.00%' in random_split and '82.52%' not in random_split  # not the book's setting, not held against it
    capped_presize, = [r for r in table if r.startswith('| baseline, presize 224 px |')]
    assert '83.00%' in capped_presize and '82.52%' not in capped_presize


def test_lanes_keep_tta_with_its_progressive_run_and_every_run_once(gpu_reference):
    check = gpu_reference.gpu_check_module()
    order = check.run_order()
    recipes = [n for n, s in order if not s]
    assert sorted(recipes) == sorted(check.RECIPES) and order[:len(recipes)] == [(n, {}) for n in recipes]  # every recipe first
    for n in (1, 2, 3):
        lanes = check.lanes_of(order, n)
        assert sorted(map(str, sum(lanes, []))) == sorted(map(str, order))  # each run in exactly one lane
        for lane in lanes: assert lane == [run for run in order if run in lane]  # in the check's order
        tta_lane, = [lane for lane in lanes if ('tta', {}) in lane]
        assert tta_lane.index(('progressive', {})) < tta_lane.index(('tta', {}))  # measured on that lane's model


def test_a_summary_without_a_pack_still_distils(gpu_reference):
    s = summary([result('baseline', 0.8)])
    s['data']['pack'] = None  # data that scripts/make_gpu_data.py didn't make
    ref = gpu_reference.distil(s)
    assert ref['data'].startswith('imagenette, ') and [r['accuracy'] for r in ref['runs']] == [0.8]


def test_a_run_expected_to_overrun_the_budget_is_foreseen_from_the_runs_before_it(gpu_reference):
    check = gpu_reference.gpu_check_module()
    assert check.expected_seconds('baseline', []) is None  # nothing to go by: the first run always starts
    finished = [dict(recipe='baseline', seconds=50.), dict(recipe='tta', seconds=30.), dict(recipe='progressive', seconds=110.)]
    # 160 s for 3 units of training (TTA trains nothing): 53.3 s a unit, and sota costs 2
    assert check.expected_seconds('sota', finished) == pytest.approx(2 * 160 / 3)
    assert check.expected_seconds('normalized', finished) == pytest.approx(160 / 3)


def test_a_run_whose_lane_was_stopped_after_recording_it_counts_as_finished(gpu_reference, tmp_path):
    check = gpu_reference.gpu_check_module()
    lane = check.lane_dir(tmp_path, 0)
    lane.mkdir(parents=True)
    record = dict(recipe='baseline', mode='full', config=dict(noise=0, split='official', presize=None), accuracy=0.8, sizes=[224],
                  epochs=5, n_train=9469, n_valid=3925, wall_time_s=60., device='gpu', extra={})
    (lane/'ledger.jsonl').write_text(json.dumps(record) + '\n')  # its summary.json never written
    header = dict(budget_s=100, device='gpu')
    merged = check.merge_lanes(tmp_path, header, [('baseline', {}), ('normalized', {})], 1, 70.)
    assert [(r['recipe'], r['status']) for r in merged['results']] == [('baseline', 'ok'), ('normalized', 'running')]
    assert merged['results'][0]['accuracy'] == 0.8 and (tmp_path/'summary.json').is_file()


def test_a_new_run_is_never_labelled_with_the_packaged_runs_commit(gpu_reference, monkeypatch, tmp_path, capsys):
    s = summary([result('baseline', 0.8)])
    s['started'] = '2099-01-01T00:00:00+00:00'  # another run than the packaged one, without a commit
    del s['commit']
    monkeypatch.setattr(gpu_reference, 'SUMMARY', tmp_path/'summary.json')
    for name in ('PACKAGED', 'README'):  # copies: should the check ever fail, it writes them, not the real ones
        copy = tmp_path/getattr(gpu_reference, name).name
        copy.write_text(getattr(gpu_reference, name).read_text())
        monkeypatch.setattr(gpu_reference, name, copy)
    gpu_reference.SUMMARY.write_text(json.dumps(s))
    with pytest.raises(SystemExit) as e: gpu_reference.main([])
    assert e.value.code == 2 and 'records no commit' in capsys.readouterr().err


def test_an_out_folder_holding_an_earlier_check_is_refused_unless_told_to_replace_it(gpu_reference, fake_imagenette,
                                                                                     tmp_path, capsys):
    "Else the new check's ledger would get the earlier one's records too (`make gpu-check` replaces results/gpu)"
    check, out = gpu_reference.gpu_check_module(), tmp_path/'out'
    out.mkdir()
    earlier = gpu_reference.LEDGER.read_text().splitlines()[0] + '\n'  # a full-mode record of the committed run
    (out/'ledger.jsonl').write_text(earlier)
    argv = [str(fake_imagenette), '--out', str(out), '--smoke', '--recipes', 'normalized']
    with pytest.raises(SystemExit) as e: check.main(argv)
    assert e.value.code == 2 and 'Fix: --replace' in capsys.readouterr().err
    assert (out/'ledger.jsonl').read_text() == earlier  # nothing lost
    with pytest.raises(SystemExit): check.main([*argv, '--replace'])
    records = check.read_ledger(out/'ledger.jsonl')
    assert [(r['recipe'], r['mode']) for r in records] == [('normalized', 'quick')]  # this check's run alone
    written = json.loads((out/'summary.json').read_text())
    assert [r['status'] for r in written['results']] == ['ok']
    # what it planned, whatever later code's run order: no noise run, the fake data having no noisy-label CSV
    assert written['planned'] == plan(('normalized', 0, 'official', None))


def test_result_lines_give_a_ramps_epoch_times_as_a_range_and_nest_no_parentheses(monkeypatch):
    "A ramp trains too few epochs at each size to time the sizes apart: per-size times read as if small were slower"
    import imagenette_course.baseline as baseline
    ran = dict(noise=0, split='official', presize=None, status='ok', accuracy=0.76, accuracy_tta=None, epochs=10,
               sizes=[128, 224], seconds_per_epoch={'128': 4.8, '224': 8.6}, seconds=105., reused_training=False,
               presize_px=224)
    runs = [dict(ran, recipe='progressive'),
            dict(ran, recipe='tta', accuracy_tta=0.82, seconds=12., reused_training=True),
            dict(ran, recipe='progressive-schedule', sizes=[128, 160, 224],
                 seconds_per_epoch={'128': 7.3, '160': 8.5, '224': 6.6})]
    run = dict(device='cuda (GPU)', date='2026-12-01', commit='abc1234', lanes=1, data='the data', data_path='fast',
               runs=runs)
    monkeypatch.setattr(baseline, 'full_mode_run', lambda: run)
    lines = {l.split()[0]: l for l in baseline.full_mode_lines() if l.startswith('  ') and not l.startswith('    ')}
    assert lines['progressive'].endswith("10 epochs at 128→224 px, presize 224 px; per epoch 4.8 s at 128 px, "
                                         "8.6 s at 224 px; 105 s in all")
    assert lines['progressive-schedule'].endswith("10 epochs at 128→224 px, presize 224 px; per epoch 6.6 to 8.5 s "
                                                  "across its 3 sizes; 105 s in all")
    tta = lines['tta'].split('82.00%  ')[1]
    assert tta.startswith("without TTA 76.00%; 12 s to measure, on the model an earlier run trained: 10 epochs at")
    assert '(' not in tta
    header = baseline.full_mode_lines()[0]
    assert 'fast data path' in header and 'at a time' not in header
    monkeypatch.setattr(baseline, 'full_mode_run', lambda: dict(run, lanes=3))  # runs sharing the GPU: it says so
    assert ', 3 runs at a time (seconds per epoch are shared time):' in baseline.full_mode_lines()[0]


def test_runs_made_in_a_second_call_after_the_check_say_so_in_the_readme_and_the_chapters(gpu_reference, monkeypatch):
    "The check skipped them for time; run right after it, they are the run's results, but not the check's"
    import imagenette_course.baseline as baseline
    s = summary([result('baseline', 0.8, n_train=9469, n_valid=3925),
                 result('baseline', 0.85, split='random', call=2, n_train=10716, n_valid=2678)])
    s['second_call'] = dict(wall_s=133.0, runs=plan(('baseline', 0, 'random', None)))
    with pytest.raises(gpu_reference.SummaryError, match='how many ran at a time'): gpu_reference.distil(s)
    s['second_call']['lanes'] = 1
    ref = gpu_reference.distil(s)
    assert [r['call'] for r in ref['runs']] == [1, 2] and [r['n_valid'] for r in ref['runs']] == [3925, 2678]
    head = gpu_reference.markdown_table(ref).splitlines()[1]
    assert head.endswith("The check took 400 s. The check skipped 1 run for time (baseline, random split): it ran "
                         "right after it on the same machine, in a second call (133 s).")
    del s['second_call'], s['results'][1]['call']  # a run without a second call: nothing said of one
    assert 'second call' not in gpu_reference.markdown_table(gpu_reference.distil(s))
    monkeypatch.setattr(baseline, 'full_mode_run', lambda: dict(gpu_reference.distil(summary([])), runs=[
        dict(r, presize_px=460, bs=64, lr=3e-3) for r in ref['runs']]))
    first, later = [l for l in baseline.full_mode_lines(split=None) if l.startswith('  baseline')]
    assert later.endswith('; in a second call, after the check') and 'second call' not in first


def test_seconds_per_epoch_by_size_count_a_reused_models_epochs_once(gpu_reference):
    "`tta` carries the epoch times of the progressive model it measured: they are progressive's, not more epochs"
    check = gpu_reference.gpu_check_module()
    progressive = dict(recipe='progressive', seconds_per_epoch={'128': 7.0, '224': 11.0}, reused_training=False)
    baseline = dict(recipe='baseline', seconds_per_epoch={'224': 13.0}, reused_training=False)
    tta = dict(progressive, recipe='tta', reused_training=True)
    assert check.seconds_per_epoch_by_size([progressive, tta, baseline]) == {'128': 7.0, '224': 12.0}
