#!/usr/bin/env bash
# Reruns the rows of docs/results.md's CIFAR-100 disjoint-classes table with the current (official) defaults, one
# run after the other, then prints the table. About 45 min on a 2-core CPU (the rows' wall times add up).
#
#   tools/rerun_disjoint_table.sh [OUT_DIR]        # default OUT_DIR=/tmp/r_official; run from the repository root
#
# Environment: PYTHON (default .venv/bin/python), DATA (default ../shared/data, the folder holding
# cifar-100-python/), NICE (default 10). A row whose OUT_DIR/<row>/results.json says complete is skipped, so a rerun
# after an interruption resumes (an interrupted row resumes from its own checkpoint).
# Learning rates are the ones docs/results.md chose on the validation hold-out.
set -euo pipefail

OUT=${1:-/tmp/r_official}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data}
NICE=${NICE:-10}
E=gin_configs/experiments/cifar100_disjoint_l2p.gin
M=gin_configs/methods

row() {  # row NAME LEARNING_RATE [extra --gin_file overlays...]
  local name=$1 lr=$2
  shift 2
  local dir="$OUT/$name"
  if [[ -f "$dir/results.json" ]] && grep -q '"complete": true' "$dir/results.json"; then
    echo "== $name: complete, skipped"
    return
  fi
  echo "== $name (LEARNING_RATE = $lr)"
  local overlays=()
  for f in "$@"; do overlays+=("--gin_file=$f"); done
  nice -n "$NICE" "$PYTHON" -m l2p_tf.main --model_dir="$dir" --gin_file="$E" "${overlays[@]}" \
    --gin_bindings="LEARNING_RATE = $lr" --tfds_manual_dir="$DATA"
}

row l2p 0.03
row l2p_paper 0.03 "$M/l2p_paper.gin"
row ft_seq_frozen 0.01 "$M/ft_seq_frozen.gin"
row ft_seq 0.003 "$M/ft_seq.gin"
row joint_linear 0.01 "$M/joint_linear.gin"
row joint_ft 0.003 "$M/joint_ft.gin"

"$PYTHON" -m l2p_tf.summarize "L2P=$OUT/l2p" "L2P paper=$OUT/l2p_paper" "ft_seq_frozen=$OUT/ft_seq_frozen" \
  "ft_seq=$OUT/ft_seq" "joint (linear)=$OUT/joint_linear" "joint (fine-tuned)=$OUT/joint_ft" \
  --lower=ft_seq_frozen --upper="joint (linear)"
