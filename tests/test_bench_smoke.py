"The GPU check, end to end on a CPU in its --smoke setting, on a tiny copy made by its data helper: so it can't rot."
import json, subprocess, sys
from pathlib import Path

from imagenette_course.baseline import BOOK, REFERENCES
from imagenette_course.recipes import RECIPES

SCRIPTS = Path(__file__).resolve().parents[1]/'scripts'


def run_script(name, *args, timeout):
    out = subprocess.run([sys.executable, str(SCRIPTS/name), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_gpu_check_smoke_runs_recipes_in_book_order_and_the_noise_experiment(shared_data, tmp_path):
    data, out = tmp_path/'data', tmp_path/'out'
    # 7 training images per class: progressive resizing's quick first stage needs one full batch of 64
    made = run_script('make_gpu_data.py', shared_data, data, '--train-per-class', 7, '--val-per-class', 2,
                      '--size', 48, timeout=60)
    assert '90 images at 48 px' in made
    # The recipes that exercise the script's own logic: book order, TTA reusing the progressive model, the noise
    # experiment. That every recipe runs through the same `cli.main` is tested by `run all` in test_cli.py.
    chosen = ['label-smoothing', 'tta', 'progressive', 'normalized']
    run_script('gpu_check.py', data, '--out', out, '--smoke', '--recipes', ','.join(chosen), timeout=300)

    summary = json.loads((out/'summary.json').read_text())
    runs = [(r['recipe'], r['noise']) for r in summary['results']]
    assert runs[:len(chosen)] == [(name, 0) for name in runs_in_book_order() if name in chosen]
    assert runs[len(chosen):] == [('normalized', 25), ('label-smoothing', 25)]  # chapter 7's noisy-label experiment
    assert all(r['status'] == 'ok' and 0 <= r['accuracy'] <= 1 for r in summary['results']), summary['results']
    assert summary['smoke'] and summary['mode'] == 'quick' and summary['data']['images'] == dict(train=70, val=20)
    book = {r['recipe']: r for r in summary['results'] if 'book_accuracy' in r}
    book_results = {name for name, _, source, _ in REFERENCES if source == BOOK}
    assert set(book) == book_results & set(chosen) and book['tta']['accuracy_tta'] is not None
    ledger = [json.loads(line) for line in (out/'ledger.jsonl').read_text().splitlines()]
    assert sorted((r['recipe'], r['config']['noise']) for r in ledger) == sorted(runs)
    tta = next(r for r in ledger if r['recipe'] == 'tta')
    assert tta['extra']['reused_training']  # measured on the model the progressive recipe had just trained


def runs_in_book_order():
    "The recipes with a book number in the book's order, then the rest in chapter order"
    book = [name for name, _, source, _ in REFERENCES if source == BOOK]
    return [n for n in book if n in RECIPES] + [n for n in RECIPES if n not in book]
