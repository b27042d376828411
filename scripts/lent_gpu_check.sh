#!/usr/bin/env bash
# The full-mode check on a lent GPU machine (no internet, no fastai, 64 MiB of working tree), run there from the
# repository root with .whl (`make gpu-wheels`) and build/gpu_data (`make gpu-data`) carried:
#     bash scripts/lent_gpu_check.sh "$OUT/gpu" COMMIT [DEADLINE]   # COMMIT: the commit being run (no .git there)
# DEADLINE (or $LENT_DEADLINE_S): seconds this script may take, default 585, the 600 s of a call's timeout_s less 15
# for the archive at the end. A call's limit can be less (less device time left): pass that limit less 15, as on a
# rerun with `timeout_s=300`: bash scripts/lent_gpu_check.sh "$OUT/gpu" COMMIT 285. Such a rerun of every part leaves
# the check about a minute, too little for a run: rerun only the parts it needs (`LENT_PARTS`, below).
# Writes to $1 the ledger, summary.json, data_path.json (bench/gpu_data_path.py), optimizer_step.json
# (bench/optimizer_step.py), gpu.txt, log.txt and lanes.tgz (each lane's log, summary and ledger): 7 files, as at most
# 8 come back from the machine, none deeper than $OUT/a/b/. Copy them to results/gpu/, commit them, and run
# scripts/gpu_reference.py. The log's last line is the command's wall time.
set -euo pipefail
out=${1:?pass the results folder, e.g. \$OUT/gpu}
commit=${2:?pass the commit being run, e.g. \$(git rev-parse --short HEAD)}
mkdir -p "$out"
# The lanes' folders, their machine paths shortened, as one archive without the ledgers' lock files (none deeper
# than $OUT/a/b/ comes back), if the check got to make them
archive_lanes() {
  shorten_paths
  if [[ -d $out/lanes ]]; then tar czf "$out/lanes.tgz" --exclude="*.lock" -C "$out" lanes && rm -rf "$out/lanes"; fi
}
# The log and the lanes' files without this machine's paths, as results/cpu/ names things (scripts/gpu_reference.py
# shortens the ledger's and the summary's): the results folder's files by name, the data folder by its name, the
# repository's and the installed packages' files by their own (tracebacks), the smoke run's and the checkpoints'
# temporary folders as smoke/ and checkpoints/
shorten_paths() {
  local sed_args=(-e "s#$out/##g" -e "s#/tmp/imagenette#imagenette#g" -e "s#/tmp/site/##g")
  [[ -n ${smoke:-} ]] && sed_args+=(-e "s#$smoke#smoke#g")
  [[ -n ${IMAGENETTE_CHECKPOINTS:-} ]] && sed_args+=(-e "s#$IMAGENETTE_CHECKPOINTS#checkpoints#g")
  # the repository last, as it may hold the folders above; never `/`, whose rule would take the `/` of every `//`
  [[ $PWD != / ]] && sed_args+=(-e "s#$PWD/##g")
  find "$out" -type f \( -name '*.txt' -o -name '*.json' -o -name '*.jsonl' \) -exec sed -i "${sed_args[@]}" {} +
}
# Whatever ends the script: the archive, nothing else beside the results, and the command's wall time
finish() {
  archive_lanes || true; rm -rf "$out"/*.lock "$out"/*.tmp; ls -l "$out"
  echo "=== lent_gpu_check.sh: ${SECONDS} s in all" | tee -a "$out/log.txt"
}
trap finish EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# A wheel the image lacks stops the call here, in seconds, not after unpacking the data
python3 -c 'import imagenette_course.cli, imagenette_course.recipes' 2>&1 | tee -a "$out/log.txt"
# A rerun on a machine still warm from the last one starts afresh: no resuming the cut runs of the last one
export IMAGENETTE_CHECKPOINTS=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
rm -rf /tmp/imagenette  # a rerun on the same machine unpacks again
python3 scripts/unpack_gpu_data.py build/gpu_data /tmp/imagenette 2>&1 | tee -a "$out/log.txt"
# All inside the call's limit (`deadline`), so that what finished comes back; each step's time limit is what is left
# of it (`left`), less what the steps after it need. Wheels and unpacking take ~20 s. The parts ($LENT_PARTS, default
# smoke,bench,check: all of them, in one call), in this order:
# - smoke: the CUDA code paths at tiny sizes, in two lanes as the check runs them (chapter 5's recipe: progressive
#   resizing and TTA; mixup; sota: the size schedule, label smoothing), which stops the call within 90 s if none of
#   them works there, leaving the device time to fix and rerun; one broken recipe, or a smoke cut by its 90 s (a slow
#   start, not broken code), does not: the check isolates a broken recipe;
# - bench: the data-path benchmark, alone on the GPU (120 s at most, 224 px first, the size full mode trains at), and,
#   after the check if there is one, the GPU part of the optimizer step benchmark (40 s) if there is time left for it;
# - check: the recipes, in all the time left but the optimizer benchmark's; none starts that would not end 40 s before
#   its limit.
# `LENT_PARTS=smoke,bench` then `LENT_PARTS=check` splits them over two calls on the same machine, when one call's
# 600 s is too short for every run. `-k`: a step that ignores the SIGTERM is killed soon after; the check's is
# `stop_s`, the time it takes to end its lanes and mark the runs they cut (gpu_check.py's STOP_S); `|| step`: a failed
# or cut step still leaves the next its time.
deadline=${3:-${LENT_DEADLINE_S:-585}}  # s: the call's limit, less the trap's archive
parts=${LENT_PARTS:-smoke,bench,check}
has() { [[ ",$parts," == *",$1,"* ]]; }
left() { echo $(( deadline - SECONDS )); }
step() { echo "=== $1: exit status $2" | tee -a "$out/log.txt"; }
smoke=$(mktemp -d)
# A failed smoke: the end of each lane's log (its traceback) into log.txt, as the smoke's folder does not come back;
# succeeds (carry on) if the smoke was cut by its time limit or any of its runs came back ok
smoke_failed() {
  step smoke "$1"
  for log in "$smoke"/lanes/lane-*/log.txt; do
    if [[ -f $log ]]; then echo "=== smoke ${log#"$smoke"/}, its last 100 lines:"; tail -n 100 "$log"; fi
  done >> "$out/log.txt"
  (( $1 == 124 || $1 == 137 )) && return 0
  python3 -c 'import json, sys; sys.exit(all(r["status"] != "ok" for r in json.load(open(sys.argv[1]))["results"]))' \
    "$smoke/summary.json" 2>/dev/null
}
if has smoke; then
  timeout -k 5 90 python3 scripts/gpu_check.py /tmp/imagenette --out "$smoke" --smoke --lanes 2 \
    --recipes tta,mixup,sota --commit "$commit" 2>&1 | tee -a "$out/log.txt" || smoke_failed $? ||
    { echo "=== no smoke run came back ok: stopping" | tee -a "$out/log.txt"; exit 1; }
fi
stop_s=20
optimizer_s=$(has bench && echo 45 || echo 0)  # the optimizer step benchmark's time, after the check
if has bench; then
  # two rounds of its 6 feeds at 2 sizes within 120 s; each size's results written as soon as they are measured,
  # 224 px first: if the time runs out, 128 px is what is missing
  bench_s=$(( $(left) - 5 )); (( bench_s > 120 )) && bench_s=120
  (( bench_s > 0 )) || bench_s=1
  timeout -k 5 "$bench_s" python3 bench/gpu_data_path.py /tmp/imagenette --sizes 224,128 --rounds 2 --steps 30 \
    --commit "$commit" --out "$out/data_path.json" 2>&1 | tee -a "$out/log.txt" || step gpu_data_path $?
fi
if has check; then
  check_s=$(( $(left) - optimizer_s - stop_s ))
  (( check_s > 0 )) || check_s=1  # `timeout 0` would be no limit at all
  budget_min=$(python3 -c "print(max(0, round(($check_s - 40) / 60, 2)))")  # 0: no run starts
  timeout -k "$stop_s" "$check_s" python3 scripts/gpu_check.py /tmp/imagenette --out "$out" \
    --budget-min "$budget_min" --lanes 3 --commit "$commit" 2>&1 | tee -a "$out/log.txt" || step gpu_check $?
  archive_lanes  # now: the call may yet be cut
fi
if has bench && (( $(left) > 45 )); then  # the CPU part (a) is measured anywhere: only the GPU's here
  timeout -k 5 40 python3 bench/optimizer_step.py --no-cpu --rounds 2 --out "$out/optimizer_step.json" 2>&1 |
    tee -a "$out/log.txt" || step optimizer_step $?
fi
