"The GPU check, end to end on a CPU in its --smoke setting, on a tiny copy made by its data helper: so it can't rot."
import json, subprocess, sys
from pathlib import Path

import imagenette_course.cli  # registers every chapter's recipe
from imagenette_course.training import BOOK_RESULTS, RECIPES

SCRIPTS = Path(__file__).resolve().parents[1]/'scripts'


def run_script(name, *args, timeout):
    out = subprocess.run([sys.executable, str(SCRIPTS/name), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_gpu_check_smoke_runs_every_recipe(shared_data, tmp_path):
    data, out = tmp_path/'data', tmp_path/'out'
    # 7 training images per class: progressive resizing's quick first stage needs one full batch of 64
    made = run_script('make_gpu_data.py', shared_data, data, '--train-per-class', 7, '--val-per-class', 2,
                      '--size', 48, timeout=60)
    assert '90 images at 48 px' in made
    run_script('gpu_check.py', data, '--out', out, '--smoke', timeout=300)

    summary = json.loads((out/'summary.json').read_text())
    assert {r['recipe'] for r in summary['results']} == set(RECIPES)
    assert all(r['status'] == 'ok' and 0 <= r['accuracy'] <= 1 for r in summary['results']), summary['results']
    assert summary['smoke'] and summary['mode'] == 'quick' and summary['data']['images'] == dict(train=70, val=20)
    book = {r['recipe']: r for r in summary['results'] if 'book_accuracy' in r}
    assert set(book) == set(BOOK_RESULTS) & set(RECIPES) and book['tta']['accuracy_tta'] is not None
    ledger = [json.loads(line) for line in (out/'ledger.jsonl').read_text().splitlines()]
    assert sorted(r['recipe'] for r in ledger) == sorted(RECIPES)
