#!/usr/bin/env python
"""The full-mode check on one GPU: every recipe through the `imagenette-course run` CLI, a ledger and a summary.json.

    python scripts/gpu_check.py DATA --out results/gpu-check            # full mode, on one NVIDIA GPU, no internet
    python scripts/gpu_check.py DATA --out /tmp/smoke --smoke           # tiny settings on a CPU, so it can't rot
    python scripts/gpu_check.py DATA --out results/gpu --lanes 3        # three runs at a time on the one GPU

DATA is an Imagenette folder (train/ and val/), usually the small copy that scripts/make_gpu_data.py makes. The
recipes run one after the other in this process (one import of torch and fastai, one CUDA start-up, and chapter 5's
TTA measured on the model chapter 4's recipe has just trained). Every recipe comes first, the ones with a number in
the book before the others and sota, so that if the time budget runs out those are the results that exist; then the
experiments that measure why our numbers differ from the book's: the baseline on the book's random 80/20 split (it
separates the split from the data copy), the baseline with the presize capped at the 224-px copy's size, as the
course had it before it kept the book's `Resize(460)` on any copy (training images are then crops blown up to 224 px
while validation images are not resized: chapter 2 measured the cost at 64 px on a CPU), and chapter 7's noisy-label
experiment: plain cross-entropy and label smoothing trained on 25% noisy labels (their 0% runs are the recipes
themselves), when the data folder has its noisy-label CSV. Without progress bars: their redraws are Python work in
every batch, for a log nobody watches. A run that would not finish within the time budget, at the speed of the runs
before it, is skipped. With --lanes N, N processes share the GPU, each with its log, summary and ledger in
OUT/lanes/lane-I. summary.json lists the runs the check planned (`planned`) and is rewritten after every run, so a
check that is killed still leaves what it finished, and what it didn't.
Stopped by a signal, it takes up to STOP_S (20 s) to end its lanes and mark the runs they cut: under `timeout`, give it
`-k 20` or more.
"""
import argparse, gc, json, shutil, signal, subprocess, sys, time, traceback
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image

import imagenette_course  # first: it quiets a deprecation warning that importing fastai triggers
import imagenette_course.cli as cli  # importing the CLI registers every chapter's recipe
from fastai.callback.progress import ProgressCallback

from imagenette_course.data import (BOOK_SIZE, DATASETS, MODES, SPLITS, DataError, check_imagenette, device_name,
                                    resolve_data_path)
from imagenette_course.baseline import BOOK, REFERENCE_EPOCH_SECONDS, REFERENCES, comparable_accuracy, run_name
from imagenette_course.ledger import library_versions, read_ledger
from imagenette_course.recipes import RECIPES
from imagenette_course.resume import default_callbacks

# The fastbook notebook's accuracies and seconds per epoch at 224 px, to compare with
BOOK_RESULTS = {name: (acc, setting) for name, acc, source, setting in REFERENCES if source == BOOK}
BOOK_SECONDS_PER_EPOCH_224 = dict((source, s) for s, source in REFERENCE_EPOCH_SECONDS)[BOOK]
# --smoke: small and fast enough for CI on 2 CPU cores; flags given explicitly still win.
SMOKE = dict(mode='quick', epochs=1, size=32, bs=16)


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('data', help="Imagenette folder holding train/ and val/ (e.g. made by scripts/make_gpu_data.py)")
    p.add_argument('--out', required=True, help="folder for ledger.jsonl and summary.json (created if missing)")
    p.add_argument('--smoke', action='store_true',
                   help=f"tiny run that works on a CPU: {', '.join(f'{k} {v}' for k, v in SMOKE.items())}")
    p.add_argument('--recipes', help=f"comma-separated recipes to run (default: all: {','.join(RECIPES)})")
    p.add_argument('--budget-min', type=float, default=8,
                   help="minutes the whole check may take; a run that would not finish within it (at the speed of the "
                        "runs before it) is skipped (default 8)")
    p.add_argument('--mode', choices=list(MODES), help="default: full (quick with --smoke)")
    p.add_argument('--epochs', type=cli.whole_number(1), help="override every recipe's epochs")
    p.add_argument('--size', type=cli.whole_number(cli.MIN_SIZE), help="override every recipe's image size in px")
    p.add_argument('--bs', type=cli.whole_number(2), help="override every recipe's batch size")
    p.add_argument('--data-path', choices=cli.DATA_PATH_NAMES,
                   help="fast (default on a GPU): images decoded once, appendix 92a; book: the book's loaders, to compare")
    p.add_argument('--lanes', type=cli.whole_number(1), default=1,
                   help="runs sharing the GPU at a time, each lane a process of its own (default 1); their seconds per "
                        "epoch are then measured while sharing")
    p.add_argument('--replace', action='store_true',
                   help="delete an earlier check's results in OUT first (ledger.jsonl, summary.json, lanes/); without "
                        "it, such a folder is refused, since its ledger would mix the two checks' runs")
    p.add_argument('--lane', type=int, help=argparse.SUPPRESS)  # set by the check itself: run only this lane's share
    p.add_argument('--started-at', type=float, help=argparse.SUPPRESS)  # set by the check itself: its start (time.time())
    p.add_argument('--commit', default=git_commit(),
                   help="the commit being run, for the summary (default: git's HEAD here, if this is a git checkout)")
    return p


def not_data(e):
    "The message of `DataError` `e` about DATA, with a fix of its own: the package's names --data and IMAGENETTE_PATH"
    return (f"DATA: {e.problem}\nFix: give as DATA an Imagenette folder (train/ and val/). To make a copy from "
            f"Imagenette at SOURCE: python scripts/make_gpu_data.py SOURCE PACK (or `make gpu-data`, PACK "
            f"build/gpu_data), then python scripts/unpack_gpu_data.py PACK NEW_FOLDER, and pass NEW_FOLDER as DATA.")


def git_commit():
    "The short hash of this checkout's HEAD, or None outside a git checkout"
    try: out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=Path(__file__).parent)
    except OSError: return None
    return out.stdout.strip() or None


# Where our numbers differ from the book's: the book's own split (a random 80/20 split of all images) on our data copy,
# and the presize capped at the 224-px copy's size, no room to crop, as the course had it before (the committed run)
SPLIT_EXPERIMENT, PRESIZE_EXPERIMENT = [('baseline', dict(split='random'))], [('baseline', dict(presize=BOOK_SIZE))]
# Chapter 7's experiment: does label smoothing help when 25% of the training labels are wrong?
NOISE_EXPERIMENT = [('normalized', dict(noise=25)), ('label-smoothing', dict(noise=25))]


def run_order(selected=None, noise=True):
    "(recipe, settings) pairs to run: the book's recipes, the other recipes, sota, then the split, presize and noise runs"
    book = [(n, {}) for n in BOOK_RESULTS if n in RECIPES]
    rest = [(n, {}) for n in RECIPES if n not in BOOK_RESULTS and n != 'sota']
    sota = [('sota', {})] if 'sota' in RECIPES else []
    runs = book + rest + sota + SPLIT_EXPERIMENT + PRESIZE_EXPERIMENT + (NOISE_EXPERIMENT if noise else [])
    return runs if selected is None else [(n, s) for n, s in runs if n in selected]


# Relative training time of a run, for sharing runs out between lanes: progressive runs train 4 + 1 + 5 epochs against
# the others' 5; TTA measures the model its progressive run has just trained.
RUN_COST = {'progressive': 2, 'progressive-schedule': 2, 'sota': 2, 'tta': 0}

def expected_seconds(name, finished):
    "Seconds run `name` should take, at the seconds per unit of `RUN_COST` of the `finished` runs (None before any)"
    trained = [r for r in finished if RUN_COST.get(r['recipe'], 1)]
    units = sum(RUN_COST.get(r['recipe'], 1) for r in trained)
    return RUN_COST.get(name, 1) * sum(r['seconds'] for r in trained) / units if units else None

def lanes_of(runs, n):
    "`runs` shared out between `n` lanes in their order, each to the least loaded lane; TTA joins its progressive run"
    lanes, load = [[] for _ in range(n)], [0] * n
    for name, settings in runs:
        trained_by = [i for i, lane in enumerate(lanes) if ('progressive', {}) in lane] if (name, settings) == ('tta', {}) else []
        i = trained_by[0] if trained_by else load.index(min(load))
        lanes[i].append((name, settings))
        load[i] += RUN_COST.get(name, 1)
    return lanes


RUN_ID = ('recipe', 'noise', 'split', 'presize')

def run_id(name, settings):
    "What tells a run apart in the summary, the ledger and the package's copy: (recipe, noise %, split, presize)"
    return name, settings.get('noise', 0), settings.get('split', 'official'), settings.get('presize')

def name_of(name, settings): return run_name(dict(zip(RUN_ID, run_id(name, settings))))


def cli_args(args, data, ledger, settings):
    "The `imagenette-course run RECIPE` arguments of a run with `settings` (noise %, split, presize) beside the check's own"
    argv = ['--mode', args.mode, '--data', str(data), '--ledger', str(ledger)]
    for flag, value in settings.items(): argv += [f'--{flag}', str(value)]
    for flag in ('epochs', 'size', 'bs', 'data_path'):
        if getattr(args, flag) is not None: argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return argv


def data_facts(path):
    "Images per split, MiB on disk, pixel size of the first image of `path`, and the pack it came from, if any"
    files = {split: sorted(f for f in (path/split).rglob('*') if f.is_file()) for split in SPLITS}
    with Image.open(files['train'][0]) as im: px = list(im.size)
    pack = path/'gpu_pack.json'  # left there by scripts/unpack_gpu_data.py: format, quality, packed MiB, PSNR
    return dict(path=path.name, images={s: len(f) for s, f in files.items()},
                mib=round(sum(f.stat().st_size for fs in files.values() for f in fs) / 2**20, 1), image_px=px,
                pack=json.loads(pack.read_text()) if pack.is_file() else None)


def run_one(name, argv, ledger):
    "Run recipe `name` through the CLI; (status, error, seconds, the ledger records it added)"
    before = len(read_ledger(ledger))
    start, status, error = time.perf_counter(), 'ok', None
    try: cli.main(['run', name, *argv])
    except SystemExit as e:  # the CLI's own exits: bad data, a bad checkpoint, Ctrl-C (130), SIGTERM (143)
        if e.code in (130, 128 + signal.SIGTERM): raise  # the check is stopped (its time limit?), not just this recipe
        status, error = 'failed', f"imagenette-course exited with status {e.code}"
    except Exception as e:  # one broken recipe must not hide the results of the others
        traceback.print_exc()
        status, error = 'failed', f"{type(e).__name__}: {e}"
    seconds = round(time.perf_counter() - start, 1)
    added = read_ledger(ledger)[before:]
    if status == 'ok' and not added: status, error = 'failed', "finished without writing a ledger record"
    return status, error, seconds, added


def tta_ways(record, field='accuracy'):
    "{way of predicting: its `field`} of chapter 5's `compare_tta` in a ledger `record` ('accuracy' or 'cost'), or None"
    ways = record.get('extra', {}).get('tta')
    return {name: r[field] for name, r in ways.items()} if ways else None


def recipe_result(name, status, error, seconds, record, settings):
    "One run's entry in summary.json, with the book's accuracy beside ours where the book has one"
    res = dict(zip(RUN_ID, run_id(name, settings)), status=status, error=error, seconds=seconds)
    if record is None: return res
    extra = record.get('extra', {})
    res.update({k: record[k] for k in ('accuracy', 'sizes', 'epochs', 'n_train', 'n_valid', 'wall_time_s', 'device')})
    res.update(accuracy_tta=extra.get('accuracy_tta'), data_path=extra.get('data_path'), reused_training=extra.get('reused_training'),
               seconds_per_epoch=extra.get('seconds_per_epoch'),  # {px: s}, from recipes that time their epochs
               wall_s_per_epoch=round(record['wall_time_s'] / record['epochs'], 1),  # upper bound: includes set-up
               tta_ways=tta_ways(record), tta_costs=tta_ways(record, 'cost'))
    if name in BOOK_RESULTS and not settings:
        book, source = BOOK_RESULTS[name]
        ours = comparable_accuracy(res)
        res.update(book_accuracy=book, book_source=source, vs_book_pp=round(100 * (ours - book), 2))
    return res


def seconds_per_epoch_by_size(results):
    "Mean seconds per training epoch at each image size, over the recipes that timed their epochs"
    by_size = {}
    for r in results:
        if r.get('reused_training'): continue  # `tta`: the epochs of the model it reused, already counted once
        for px, secs in (r.get('seconds_per_epoch') or {}).items(): by_size.setdefault(str(px), []).append(secs)
    return {px: round(sum(s) / len(s), 2) for px, s in sorted(by_size.items(), key=lambda kv: int(kv[0]))}


def write_summary(path, header, results, elapsed):
    "Write summary.json (whole, via a temporary file) with everything so far"
    spe = seconds_per_epoch_by_size(results)
    summary = dict(header, results=results, total_s=round(elapsed, 1),
                   within_budget=elapsed <= header['budget_s'], seconds_per_epoch=spe,
                   speedup_vs_book_224=round(BOOK_SECONDS_PER_EPOCH_224 / spe['224'], 1) if '224' in spe else None)
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(summary, indent=2) + '\n')
    tmp.replace(path)
    return summary


def print_table(summary):
    print(f"\n{summary['device']}, {summary['mode']} mode, {summary['total_s']:.0f} s "
          f"(budget {summary['budget_s']:.0f} s), seconds per epoch by px: {summary['seconds_per_epoch'] or 'n/a'}")
    for r in summary['results']:
        acc = f"{r['accuracy']:.2%}" if 'accuracy' in r else '-'
        tta = f", TTA {r['accuracy_tta']:.2%}" if r.get('accuracy_tta') is not None else ''
        book = f", book {r['book_accuracy']:.2%}" if 'book_accuracy' in r else ''
        print(f"  {run_name(r):36} {r['status']:8} {acc}{tta}{book}, {r['seconds']:.0f} s"
              + (f"  ({r['error']})" if r['error'] else ''))


def lane_dir(out, i): return out/'lanes'/f'lane-{i}'

def merge_lanes(out, header, order, lanes, elapsed):
    "summary.json and ledger.jsonl in `out` from the lanes' own, in the check's run order; a run no lane has reported is missing"
    done, records = {}, []
    for i in range(lanes):
        lane = lane_dir(out, i)
        if (lane/'summary.json').is_file():
            for r in json.loads((lane/'summary.json').read_text())['results']: done[run_id(r['recipe'], r)] = r
        records += read_ledger(lane/'ledger.jsonl')
    # a run whose lane was stopped after it wrote its record but before its summary still counts
    recorded = {run_id(r['recipe'], r['config']): r for r in records}
    def unreported(name, s):
        r = recorded.get(run_id(name, s))
        return recipe_result(name, 'ok', None, r['wall_time_s'], r, s) if r else recipe_result(name, 'running', NOT_YET, 0, None, s)
    results = [done.get(run_id(name, s)) or unreported(name, s) for name, s in order]
    rank = {run_id(name, s): i for i, (name, s) in enumerate(order)}
    records.sort(key=lambda r: rank.get(run_id(r['recipe'], r['config']), 0))
    tmp = out/'ledger.tmp'
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in records))
    tmp.replace(out/'ledger.jsonl')
    return write_summary(out/'summary.json', header, results, elapsed)


NOT_YET = "not finished when this summary was written"

# Stopped by a signal, the check gives its lanes LANE_GRACE_S to end their recipes on it (`timeout` signals the whole
# process group, lanes too), then signals those still running itself (a plain `kill` reaches only the check), and
# kills any still running LANE_KILL_S later: a second signal too soon would cut short a lane's clean-up. It then marks
# the cut runs in the summary, so a `timeout` must give it STOP_S before its SIGKILL (`timeout -k STOP_S`).
LANE_GRACE_S, LANE_KILL_S = 10, 3
STOP_S = LANE_GRACE_S + LANE_KILL_S + 7  # 7 s: merging the lanes' summaries, and margin


def running_after(procs, seconds):
    "The processes of `procs` still running after waiting at most `seconds` in all for them to end"
    end = time.monotonic() + seconds
    for p in procs:
        try: p.wait(max(0, end - time.monotonic()))
        except subprocess.TimeoutExpired: pass
    return [p for p in procs if p.poll() is None]


def stop_lanes(procs, grace=LANE_GRACE_S, kill_after=LANE_KILL_S):
    "End the lane processes `procs`: `grace` s to end on the signal that stopped the check, then SIGTERM, then SIGKILL"
    for p in running_after(procs, grace): p.terminate()
    for p in running_after(procs, kill_after): p.kill(); p.wait()


def run_lanes(argv, args, out, header, order):
    "Run the check as `args.lanes` processes sharing the GPU, each with its share of `order` and its own log and summary"
    start, lanes = time.perf_counter(), lanes_of(order, args.lanes)
    procs, started_at = [], time.time()
    def stopped(signum, frame):  # stopped by `timeout` (or a `kill`): stop the lanes, then say which runs were cut short
        signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut this handler short
        stop_lanes(procs)  # each ends its recipe as a SIGTERM does (appendix 94); the runs it cut are marked below
        summary = merge_lanes(out, header, order, args.lanes, time.perf_counter() - start)
        for r in summary['results']:
            if r['status'] == 'running': r.update(status='cut', error=f"stopped by signal {signum} (the command's time "
                                                                         f"limit?) before it finished")
        write_summary(out/'summary.json', header, summary['results'], summary['total_s'])
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, stopped)
    for i, lane in enumerate(lanes):
        lane_dir(out, i).mkdir(parents=True, exist_ok=True)
        print(f"lane {i}: {', '.join(name_of(n, s) for n, s in lane)}; log in {lane_dir(out, i)/'log.txt'}", flush=True)
        with open(lane_dir(out, i)/'log.txt', 'w') as log:  # unbuffered (-u): a cut log keeps its tail
            procs.append(subprocess.Popen([sys.executable, '-u', __file__, *argv, '--lane', str(i), '--out', str(lane_dir(out, i)),
                                           '--started-at', str(started_at)], stdout=log, stderr=subprocess.STDOUT))
    while any(p.poll() is None for p in procs):  # the merged summary is at most a few seconds old if this is killed
        merge_lanes(out, header, order, args.lanes, time.perf_counter() - start)
        time.sleep(5)
    summary = merge_lanes(out, header, order, args.lanes, time.perf_counter() - start)
    lane_of = {run_id(*run): i for i, lane in enumerate(lanes) for run in lane}
    for r in summary['results']:
        i = lane_of[run_id(r['recipe'], r)]
        if r['status'] == 'running': r.update(status='failed', error=f"lane {i} ended (exit status {procs[i].returncode}) "
                                                                      f"without reporting it: see lanes/lane-{i}/log.txt")
    return write_summary(out/'summary.json', header, summary['results'], summary['total_s'])


def earlier_results(out):
    "What an earlier check left in `out`: its ledger, summary and lanes' folder"
    return [out/name for name in ('ledger.jsonl', 'summary.json', 'lanes') if (out/name).exists()]


def main(argv=None):
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            if getattr(args, k) is None: setattr(args, k, v)
        # The smoke run checks the plumbing, not the speed. On a CPU that other processes also use, a second torch
        # thread makes every tiny op wait for a core: one recipe took 60 s with two threads, 3 s with one.
        torch.set_num_threads(1)
    args.mode = args.mode or 'full'
    try: data = check_imagenette(resolve_data_path(args.data))
    except DataError as e: parser.error(not_data(e))
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: the full-mode check needs one. Use --smoke for the small CPU run.")
    selected = None if args.recipes is None else args.recipes.split(',')
    unknown = set(selected or []) - set(RECIPES)
    if unknown: parser.error(f"unknown recipe(s) {', '.join(sorted(unknown))}: choose from {', '.join(RECIPES)}")

    out = Path(args.out)
    earlier = earlier_results(out) if args.lane is None else []  # a lane's folder is made for it just before
    if earlier and not args.replace:
        parser.error(f"{out} holds an earlier check's results ({', '.join(f.name for f in earlier)}), which this "
                     f"check's would mix with. Fix: --replace to delete them first, or another --out")
    for f in earlier: shutil.rmtree(f) if f.is_dir() else f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    ledger, summary_path = out/'ledger.jsonl', out/'summary.json'
    order = run_order(selected, noise=(data/DATASETS['imagenette'].noisy_csv).is_file())
    if args.lane is not None: order = lanes_of(order, args.lanes)[args.lane]
    header = dict(smoke=args.smoke, commit=args.commit, lanes=args.lanes, mode=args.mode, overrides={k: getattr(args, k) for k in ('epochs', 'size', 'bs', 'data_path')},
                  device=device_name(), versions=library_versions(), data=data_facts(data),
                  started=datetime.now(timezone.utc).isoformat(timespec='seconds'), budget_s=60 * args.budget_min,
                  # every run this check means to make, in its order: a run it never reached is then known as one
                  # (scripts/gpu_reference.py), whatever the run order of later code
                  planned=[dict(zip(RUN_ID, run_id(name, s))) for name, s in order],
                  ledger=ledger.name, book=dict(seconds_per_epoch_224=BOOK_SECONDS_PER_EPOCH_224,
                                                accuracy={k: v[0] for k, v in BOOK_RESULTS.items()}))
    if args.lanes > 1 and args.lane is None:
        summary = run_lanes(argv, args, out, header, order)
        return finish(summary, out)
    # a lane counts the budget from the check's start, not its own (each lane first imports and starts CUDA)
    start, results = time.perf_counter() - (time.time() - args.started_at if args.started_at else 0), []
    for name, settings in order:
        elapsed = time.perf_counter() - start
        expected = expected_seconds(name, [r for r in results if r['status'] == 'ok'])
        if elapsed + (expected or 0) > header['budget_s']:  # a run that would be cut only slows the others down
            why = (f"expected to take {expected:.0f} s, with {max(0, header['budget_s'] - elapsed):.0f} s of the time budget left"
                   if expected else "the time budget was spent before it could start")
            results.append(recipe_result(name, 'skipped', why, 0, None, settings))
            continue
        print(f"\n=== gpu check: {name_of(name, settings)}, {elapsed:.0f} s so far ===", flush=True)
        with default_callbacks(remove=[ProgressCallback]):  # redraws: Python work in every batch, for a log
            status, error, seconds, added = run_one(name, cli_args(args, data, ledger, settings), ledger)
        results.append(recipe_result(name, status, error, seconds, added[-1] if added else None, settings))
        write_summary(summary_path, header, results, time.perf_counter() - start)
        gc.collect()  # the finished recipe's learner and data loaders: free them before the next recipe
        if torch.cuda.is_available(): torch.cuda.empty_cache()
    return finish(write_summary(summary_path, header, results, time.perf_counter() - start), out)


def finish(summary, out):
    "Print the summary's table and exit: 0 if every run finished within the budget"
    print_table(summary)
    print(f"Wrote {out/'summary.json'} and {out/'ledger.jsonl'}")
    sys.exit(0 if all(r['status'] == 'ok' for r in summary['results']) and summary['within_budget'] else 1)


if __name__ == '__main__': main()
