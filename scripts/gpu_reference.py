#!/usr/bin/env python
"""The committed full-mode GPU run, as the course shows it: results/gpu/summary.json (with ledger.jsonl and data_path.json) distilled into the package's
`full_mode_gpu.json` (read by chapters 02-08, chapter 8's table and figure, and `imagenette-course report`), the
README's full-mode table, and the run's figures in results/gpu/results.png (what `imagenette-course report --plot`
draws from its ledger).

    python scripts/gpu_reference.py                   # after a GPU run is committed in results/gpu/: rewrite all three
    python scripts/gpu_reference.py --check           # exit 1 if any is out of date (a unit test runs this)

A run's results don't include what the command never reached (a run stopped by its time limit): the runs the summary
says the check planned (`planned`) are listed too, as not finished, so that no chapter reads a missing result as a
missing technique. The plan is the summary's own, never today's run order, which may have runs the check never had.
It also shortens the machine paths the run's files in results/gpu/ hold, and those of the other committed runs
(`run_folders`), as results/cpu/ has them: each data folder to its name, the check's output folder to nothing (its
files by name).
"""
import argparse, hashlib, importlib.util, json, sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package, for the table's words and the figure
SUMMARY, LEDGER = ROOT/'results/gpu/summary.json', ROOT/'results/gpu/ledger.jsonl'
DATA_PATH = ROOT/'results/gpu/data_path.json'  # bench/gpu_data_path.py's, from the same GPU run
FIGURE = ROOT/'results/gpu/results.png'
PACKAGED, README = ROOT/'imagenette_course/full_mode_gpu.json', ROOT/'README.md'
TABLE_START, TABLE_END = '<!-- full-mode table: scripts/gpu_reference.py writes it -->', '<!-- end of full-mode table -->'
NOT_REACHED = "not finished within the command's {budget_s:.0f} s time budget"


class SummaryError(ValueError):
    "A summary.json that can't be distilled as it is: what to do is in the message"


def gpu_check_module():
    "scripts/gpu_check.py as a module: how it tells runs apart (run_id) and reads a ledger record's TTA comparison"
    spec = importlib.util.spec_from_file_location('gpu_check', ROOT/'scripts/gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_entry(r):
    "One run of the summary, without what names the machine it ran on"
    keep = ('recipe', 'noise', 'presize', 'status', 'error', 'accuracy', 'accuracy_tta', 'tta_ways', 'tta_costs', 'epochs',
            'sizes', 'seconds_per_epoch', 'n_train', 'n_valid')  # the image counts: an accuracy's standard error
    # summaries written before `split` and `reused_training` were recorded: the official split; TTA was the one reuse
    # `call`: 2 for a run the check skipped for time, made in a second call right after it (the summary's `second_call`)
    return {**{k: r.get(k) for k in keep}, 'split': r.get('split', 'official'), 'seconds': r['seconds'],
            'reused_training': r.get('reused_training', r['recipe'] == 'tta'), 'call': r.get('call', 1)}


def data_words(data):
    "The data the runs trained on, in words"
    n = (f"{data['images']['train']:,} train and {data['images']['val']:,} validation images (official split; a run on "
         f"the random split says so)")
    pack = data.get('pack')
    if not pack: return f"{data['path']}, {n}"
    return (f"Imagenette's {data['image_px'][0]}-px copy re-encoded as {pack['format'].upper()} quality "
            f"{pack['quality']} ({pack['mib']} MiB, PSNR {pack['psnr_db']['mean']} dB), {n}")


def with_ledger_details(run, ledger, check):
    """`run` with what only its ledger record holds: the presize, batch size and lr it trained with, and (for a summary
    written before the TTA comparison was in it) each way's accuracy and cost"""
    mine = [r for r in ledger if check.run_id(r['recipe'], r.get('config') or {}) == check.run_id(run['recipe'], run)]
    rec = mine[-1] if mine else {}
    # the presize the run trained with, whatever its settings asked for (the default one has changed since some runs)
    run = {**run, 'presize_px': (rec.get('extra') or {}).get('presize'), 'bs': rec.get('bs'), 'lr': rec.get('lr')}
    if run['recipe'] != 'tta' or None not in (run['tta_ways'], run['tta_costs']): return run
    return {**run, 'tta_ways': run['tta_ways'] or (check.tta_ways(rec) if rec else None),
            'tta_costs': run['tta_costs'] or (check.tta_ways(rec, 'cost') if rec else None)}


def planned_ids(summary, check):
    "The run ids the check that wrote `summary` planned, in its order: from the summary, never from today's run order"
    if 'planned' not in summary:
        raise SummaryError("the summary doesn't say which runs its check planned (`planned`, which "
                           "scripts/gpu_check.py writes; older summaries lack it). Fix: add them, as the run's own "
                           "scripts/gpu_check.py listed them (its run_order()), with `planned_from` saying so: today's "
                           "run order may have runs that check never had")
    return [check.run_id(p['recipe'], p) for p in summary['planned']]


def second_call_of(summary):
    "How long the second call took and how many runs it made at a time (None if none), for runs marked `call: 2`"
    later = [r for r in summary['results'] if r.get('call', 1) == 2]
    call = summary.get('second_call')
    if later and not (call and {'wall_s', 'lanes'} <= call.keys()):
        raise SummaryError("runs marked `call: 2` need the summary's `second_call`, with its `wall_s` and `lanes` (how "
                           "many ran at a time): the README says how they were made")
    return {k: call[k] for k in ('wall_s', 'lanes')} if later else None


def distil(summary, commit=None, ledger=()):
    "The packaged reference from a gpu_check summary and its ledger: provenance, then every run its check planned"
    check = gpu_check_module()
    done = {check.run_id(r['recipe'], r): with_ledger_details(r, ledger, check) for r in map(run_entry, summary['results'])}
    keys = planned_ids(summary, check)
    if unplanned := [k for k in done if k not in keys]:
        raise SummaryError(f"the summary has results of runs it didn't plan: {unplanned}; its `planned` is wrong")
    runs = [done.get(k, dict(zip(check.RUN_ID, k), status='no result', error=NOT_REACHED.format(budget_s=summary['budget_s']))) for k in keys]
    paths = sorted({r['data_path'] for r in summary['results'] if r.get('data_path')})
    return dict(device=summary['device'], date=summary['started'][:10], commit=summary.get('commit') or commit,
                lanes=summary.get('lanes', 1), mode=summary['mode'], versions=summary['versions'], data=data_words(summary['data']),
                data_path=', '.join(paths), total_s=summary['total_s'], budget_s=summary['budget_s'],
                seconds_per_epoch=summary['seconds_per_epoch'], second_call=second_call_of(summary), runs=runs)


def data_path_speed(bench):
    "Training images per second at each size (bench/gpu_data_path.py): the model alone, then each data path feeding it"
    keep = ('size', 'bs', 'model_only', 'lean_in_turn', 'lean_ahead', 'fastai_in_turn', 'fastai_ahead', 'book',
            'each_round', 'decode_once_s', 'book_presize', 'rounds', 'lean_vs_fastai_max_abs_diff')
    return [{k: s.get(k) for k in keep} for s in bench['sizes']]


def markdown_table(ref):
    "The README's table of the reference run"
    from imagenette_course.baseline import epoch_seconds, book_accuracy, run_name
    device = ref['device'].split('(')[-1].rstrip(')')  # 'cuda (NVIDIA H200)' -> 'NVIDIA H200'
    rows = ["| recipe | accuracy | with TTA | book | seconds per epoch | wall time | device | presize |",
            "|---|---|---|---|---|---|---|---|"]
    for r in ref['runs']:
        name = run_name(r)
        book = book_accuracy(r['recipe']) if name == r['recipe'] else None
        if r['status'] != 'ok':
            rows.append(f"| {name} | {r['status']} | | {f'{book:.2%}' if book else ''} | | | | |")
            continue
        tta = f"{r['accuracy_tta']:.2%}" if r['accuracy_tta'] is not None else ''
        presize = f"{r['presize_px']} px" if r.get('presize_px') else ''
        rows.append(f"| {name} | {r['accuracy']:.2%} | {tta} | {f'{book:.2%}' if book else ''} | "
                    f"{epoch_seconds(r['seconds_per_epoch'])} | {r['seconds']:.0f} s | {device} | {presize} |")
    shared = f", {ref['lanes']} runs at a time (seconds per epoch are shared time)" if ref['lanes'] > 1 else ''
    missing = Counter(r['error'] for r in ref['runs'] if r['status'] != 'ok')
    why = ''.join(f" {n} {'run has' if n == 1 else 'runs have'} no result: {error}." for error, n in missing.items())
    head = (f"One run on {ref['device']}, {ref['date']}, commit {ref['commit']}, {ref['mode']} mode, "
            f"{ref['data_path']} data path{shared}; {ref['data']}. The check took {ref['total_s']:.0f} s."
            f"{why}{second_call_words(ref)}")
    return '\n'.join([TABLE_START, head, '', *rows, TABLE_END])


def second_call_words(ref):
    "What the README says of the runs made in a second call, after the check skipped them for time ('' if none)"
    from imagenette_course.baseline import run_name
    call = ref['second_call']  # None: no run of the second call (`second_call_of`)
    if not call: return ''
    later = [run_name(r) for r in ref['runs'] if r['call'] == 2]
    runs, they = ((f"{len(later)} runs", f"they ran right after it on the same machine, in a second call, "
                   f"{call['lanes']} at a time") if len(later) > 1 else
                  ("1 run", "it ran right after it on the same machine, in a second call"))
    return f" The check skipped {runs} for time ({'; '.join(later)}): {they} ({call['wall_s']:.0f} s)."


def with_table(readme, table):
    "`readme` with its full-mode table replaced by `table`"
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    return readme[:start] + table + readme[end:]


def machine_paths(summary, ledger):
    """{a path on the machine that ran the check: what the committed files say instead}: each data folder the ledger's
    records name, its name (as results/cpu/ has them); the check's output folder, nothing (its files by name)"""
    configs = [r.get('config') or {} for r in ledger]
    # the first checks' records named the data folder `data`
    data = {d for c in configs if Path(d := c.get('path') or c.get('data') or '').is_absolute()}
    ledger_file = Path(summary.get('ledger') or '')
    out = ledger_file.parent if ledger_file.is_absolute() else None  # earlier checks wrote its whole path
    return {**{d: Path(d).name for d in data}, **({f'{out}/': ''} if out else {})}


def shortened(text, paths): # {machine path: what to say instead}, from `machine_paths`
    "`text` with each path of `paths` replaced, the longest first (a folder inside another is replaced as itself)"
    for path in sorted(paths, key=len, reverse=True): text = text.replace(path, paths[path])
    return text


def run_folders():
    "Every committed folder of run results (a ledger, maybe a summary and logs): the GPU run's, then the others"
    return SUMMARY.parent, ROOT/'results/cpu', ROOT/'bench/gpu-results'


def run_files(folder):
    "{each text file of the run results in `folder`: its text with the machine's paths shortened}"
    summary, ledger = folder/'summary.json', folder/'ledger.jsonl'
    records = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()] if ledger.is_file() else []
    paths = machine_paths(json.loads(summary.read_text()) if summary.is_file() else {}, records)
    return {f: shortened(f.read_text(), paths) for f in sorted(folder.iterdir())
            if f.suffix in ('.json', '.jsonl', '.txt')}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--check', action='store_true', help="exit 1 if the packaged reference or README is out of date")
    p.add_argument('--commit', help="the commit the run was made from, for a summary that doesn't record it")
    args = p.parse_args(argv)
    old = json.loads(PACKAGED.read_text()) if PACKAGED.is_file() else {}
    # the runs' own files as they are committed: their text files with the machine's paths shortened
    committed = {f: text for folder in run_folders() for f, text in run_files(folder).items()}
    summary = json.loads(committed[SUMMARY])
    ledger = [json.loads(line) for line in committed.get(LEDGER, '').splitlines() if line.strip()]
    same_run = (old.get('date'), old.get('device')) == (summary['started'][:10], summary['device'])
    commit = summary.get('commit') or args.commit or (old.get('commit') if same_run else None)
    if not commit: p.error("results/gpu/summary.json records no commit: pass the commit the run was made from, --commit HASH")
    try: ref = distil(summary, commit, ledger)
    except SummaryError as e: p.error(f"results/gpu/summary.json: {e}")
    if DATA_PATH in committed:
        bench = json.loads(committed[DATA_PATH])
        # the benchmark may have run from another commit than the check (its own call, before the check's)
        ref.update(full_mode_path=bench['full_mode_path'], data_path_commit=bench.get('commit'),
                   data_path_speed=data_path_speed(bench))
    text = json.dumps(ref, indent=1) + '\n'
    readme = with_table(README.read_text(), markdown_table(ref))
    outputs = {**committed, PACKAGED: text, README: readme}
    if args.check:
        stale = [str(f.relative_to(ROOT)) for f, new in outputs.items() if not f.is_file() or f.read_text() != new]
        if ledger and figure_of() != ledger_digest(): stale.append(str(FIGURE.relative_to(ROOT)))
        if stale: sys.exit(f"out of date with results/gpu/summary.json: {', '.join(stale)}; "
                           f"run python scripts/gpu_reference.py")
        return
    for f, new in outputs.items():
        if not f.is_file() or f.read_text() != new: f.write_text(new)
    if ledger: save_figure(ledger)
    print(f"wrote {PACKAGED.relative_to(ROOT)}, the table in README.md and {FIGURE.relative_to(ROOT)}, and shortened "
          f"the machine paths in {', '.join(f'{d.relative_to(ROOT)}/' for d in run_folders())}; now re-execute the "
          f"chapters (make notebooks): their checked outputs print the old run until then")


def ledger_digest():
    "The SHA-256 of results/gpu/ledger.jsonl, which the figure drawn from it carries"
    return hashlib.sha256(LEDGER.read_bytes()).hexdigest()


def figure_of():
    "The digest of the ledger results/gpu/results.png was drawn from (None: no figure, or one without it)"
    if not FIGURE.is_file(): return None
    from PIL import Image
    with Image.open(FIGURE) as im: return im.text.get('Description')


def save_figure(ledger):
    "The run's figures, as `imagenette-course report --plot` draws them from its ledger, stamped with the ledger's digest"
    import matplotlib; matplotlib.use('Agg')
    from imagenette_course.cli import RECIPE_NAMES
    from imagenette_course.ledger import plot_comparison
    plot_comparison(ledger, order=RECIPE_NAMES).savefig(FIGURE, dpi=120, metadata={'Description': ledger_digest()})


if __name__ == '__main__': main()
