#!/usr/bin/env bash
# Runs the rows of docs/results.md's tables: every method on one protocol, under several seeds, then prints the
# table of mean ± std. Seeds run seed-major (seed 0 of every row first), so an interrupted run still has whole
# seeds; a finished seed is skipped and an interrupted one resumes, so rerunning the same command finishes the rest.
#
#   tools/results_runs.sh disjoint|four_domains|validation [OUT_DIR]     # from the repository root
#
# disjoint: CIFAR-100 classes 0-49 in 5 tasks; four_domains: CIFAR-100 0-9, MNIST, notMNIST, Fashion-MNIST.
# validation: the learning-rate sweep of the prompt methods (0.003 and 0.03) on the disjoint protocol's validation
# hold-out (10 % of each class's training images; no test image is read), over its first VALIDATION_TASKS tasks
# (default 2) to fit a 2-core machine. four_domains also runs the row l2p_task_mask
# (experiments/four_domains_l2p_task_mask.gin).
#
# Environment: PYTHON (default .venv/bin/python), DATA (default ../shared/data), SEEDS (default 0,1,2), ROWS (default
# every row of the protocol, space-separated names), TRAIN_CAP (default 2500 training images per task), EVAL_CAP
# (default 500 test images per task), CPUS (taskset CPU list, e.g. 0 to pin the runs to one core; default none),
# NICE (default 10). Learning rates: the ones docs/results.md chose on the validation hold-out (the prompt methods'
# from DUAL_LR, CODA_LR, PLUS_LR; default 0.03).
set -euo pipefail

PROTOCOL=${1:?usage: tools/results_runs.sh disjoint|four_domains|validation [OUT_DIR]}
OUT=${2:-/tmp/results_$PROTOCOL}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data}
SEEDS=${SEEDS:-0,1,2}
TRAIN_CAP=${TRAIN_CAP:-2500}
EVAL_CAP=${EVAL_CAP:-500}
VALIDATION_TASKS=${VALIDATION_TASKS:-2}
NICE=${NICE:-10}
X=gin_configs/experiments
M=gin_configs/methods

PREFIX=(nice -n "$NICE")
if [[ -n "${CPUS:-}" ]]; then PREFIX=(taskset -c "$CPUS" "${PREFIX[@]}"); fi
CAPS=(--gin_bindings="benchmarks.Limits.max_train_examples_per_task = $TRAIN_CAP"
      --gin_bindings="benchmarks.Limits.max_eval_examples_per_task = $EVAL_CAP")

# Each row: NAME LEARNING_RATE EXPERIMENT [overlay ...] (the overlay paths relative to the repository root).
case "$PROTOCOL" in
  disjoint|validation) L2P=$X/cifar100_disjoint_l2p.gin; DUAL=$X/cifar100_disjoint_dualprompt.gin
                       CODA=$X/cifar100_disjoint_coda_prompt.gin; PLUS=$X/cifar100_disjoint_l2p_plus_plus.gin ;;
  four_domains) L2P=$X/four_domains_l2p.gin; DUAL=$X/four_domains_dualprompt.gin
                CODA=$X/four_domains_coda_prompt.gin; PLUS=$X/four_domains_l2p_plus_plus.gin ;;
  *) echo "error: unknown protocol '$PROTOCOL' (disjoint, four_domains or validation)" >&2; exit 2 ;;
esac
ALL_ROWS=(
  "l2p 0.03 $L2P"
  "simplecil 0.03 $L2P $M/simplecil.gin"
  "ft_seq_frozen 0.01 $L2P $M/ft_seq_frozen.gin"
  "ft_seq 0.003 $L2P $M/ft_seq.gin"
  "joint_linear 0.01 $L2P $M/joint_linear.gin"
  "dualprompt ${DUAL_LR:-0.03} $DUAL"
  "coda_prompt ${CODA_LR:-0.03} $CODA"
  "l2p_plus_plus ${PLUS_LR:-0.03} $PLUS"
)
if [[ "$PROTOCOL" == four_domains ]]; then  # Each domain owns its prompts: does a test image's query find them?
  ALL_ROWS=("${ALL_ROWS[0]}" "l2p_task_mask 0.03 $X/four_domains_l2p_task_mask.gin" "${ALL_ROWS[@]:1}")
fi
if [[ "$PROTOCOL" == validation ]]; then
  ALL_ROWS=()
  for lr in 0.003 0.03; do
    ALL_ROWS+=("dualprompt_$lr $lr $DUAL" "coda_prompt_$lr $lr $CODA" "l2p_plus_plus_$lr $lr $PLUS")
  done
  SEEDS=0
  CAPS+=(--gin_bindings="benchmarks.split_cifar100.holdout = 'validation'"
         --gin_bindings="benchmarks.Limits.max_tasks = $VALIDATION_TASKS")
fi
WANTED=${ROWS:-}

run_row() {  # run_row SEEDS NAME LEARNING_RATE EXPERIMENT [overlay ...]
  local seeds=$1 name=$2 lr=$3 experiment=$4
  shift 4
  local files=(--gin_file="$experiment")
  for f in "$@"; do files+=(--gin_file="$f"); done
  echo "== $(date +%H:%M:%S) $PROTOCOL/$name seeds $seeds (LEARNING_RATE = $lr)"
  "${PREFIX[@]}" "$PYTHON" -m l2p_tf.seeds --model_dir="$OUT/$name" --seeds="$seeds" "${files[@]}" \
    --gin_bindings="LEARNING_RATE = $lr" "${CAPS[@]}" --tfds_manual_dir="$DATA" > "$OUT/$name.log" 2>&1 \
    || { echo "error: $PROTOCOL/$name failed; its output: $OUT/$name.log" >&2; return 1; }
}

mkdir -p "$OUT"
IFS=, read -r -a seed_list <<< "$SEEDS"
labels=()
for ((i = 1; i <= ${#seed_list[@]}; i++)); do
  prefix=$(IFS=,; echo "${seed_list[*]:0:i}")
  for row in "${ALL_ROWS[@]}"; do
    read -r -a fields <<< "$row"
    if [[ -n "$WANTED" && " $WANTED " != *" ${fields[0]} "* ]]; then continue; fi
    run_row "$prefix" "${fields[@]}"
  done
done
for row in "${ALL_ROWS[@]}"; do
  read -r -a fields <<< "$row"
  if [[ -d "$OUT/${fields[0]}" ]]; then labels+=("${fields[0]}=$OUT/${fields[0]}"); fi
done
bounds=()
if [[ -d "$OUT/ft_seq_frozen" && -d "$OUT/joint_linear" ]]; then bounds=(--lower=ft_seq_frozen --upper=joint_linear); fi
"$PYTHON" -m l2p_tf.summarize "${labels[@]}" "${bounds[@]}"
