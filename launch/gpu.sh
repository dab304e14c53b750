#!/usr/bin/env bash
# Runs l2p-tf on this machine's GPUs (MirroredStrategy), or on several hosts (MultiWorkerMirroredStrategy, TF_CONFIG).
#
#   launch/gpu.sh [--flag=value ...] [--dry_run] [-- extra args for l2p_tf.main]
#
# One host, one or more GPUs (all visible GPUs unless --gpus is given):
#   launch/gpu.sh --model_dir=/tmp/l2p/cifar100 --gin_file=gin_configs/experiments/cifar100_l2p.gin --gpus=0,1
# Several hosts (each needs this repository at the same path, ./setup.sh done, and a --model_dir that every host can
# write, e.g. gs:// or a shared file system); either start each host yourself with its --task_index:
#   launch/gpu.sh --workers=host1:2222,host2:2222 --task_index=0 --model_dir=gs://b/runs/c100 --gin_file=...  # host1
#   launch/gpu.sh --workers=host1:2222,host2:2222 --task_index=1 --model_dir=gs://b/runs/c100 --gin_file=...  # host2
# or start all of them from one machine over ssh (output prefixed with the task index; fails if any host fails):
#   launch/gpu.sh --workers=host1:2222,host2:2222 --launch_all=1 --model_dir=gs://b/runs/c100 --gin_file=...
# A run that is started again resumes from the last checkpoint in --model_dir.
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE_HEAD="$(sed -n '2,/^# shellcheck/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//')"

opt model_dir MODEL_DIR "" "Run directory: checkpoints, summaries, results (required)."
list_opt gin_file GIN_FILES "Gin file relative to the repository root (repeat; later files override earlier ones)."
list_opt gin_bindings GIN_BINDINGS "Gin binding 'NAME = VALUE' (repeat)."
opt gpus GPUS "" "GPUs to use, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES; empty: every visible GPU)."
opt strategy STRATEGY "" "one_device, mirrored or multi_worker_mirrored (empty: mirrored, or multi_worker_mirrored with --workers)."
opt workers WORKERS "" "Comma-separated host:port of every worker, the same on each host (multi-host runs)."
opt task_index TASK_INDEX "" "This host's index in --workers (multi-host runs, unless --launch_all=1)."
opt launch_all LAUNCH_ALL "0" "1: start every worker of --workers over ssh from this machine."
opt ssh SSH "ssh" "ssh command for --launch_all=1 (e.g. 'ssh -i KEY')."
opt python L2P_PYTHON "" "Python interpreter (default: this repository's .venv/bin/python)."
opt tfds_data_dir TFDS_DATA_DIR "" "tfds data directory (empty: tfds default, ~/tensorflow_datasets)."
opt tfds_manual_dir TFDS_MANUAL_DIR "" "tfds manual_dir for datasets that need manual downloads (e.g. DomainNet)."
opt mode MODE "train" "l2p_tf.main --mode: train or eval."

parse_flags "$@"
((${#POSITIONAL[@]} == 0)) || die "unexpected argument(s): ${POSITIONAL[*]} (flags are --name=value; see --help)"
require MODEL_DIR model_dir
check_gin_files "${GIN_FILES[@]}"
[[ "$MODE" == train || "$MODE" == eval ]] || die "--mode must be train or eval, got '$MODE'"
[[ "$LAUNCH_ALL" == 0 || "$LAUNCH_ALL" == 1 ]] || die "--launch_all must be 0 or 1, got '$LAUNCH_ALL'"
[[ -z "$GPUS" || "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must be comma-separated GPU indices, got '$GPUS'"
PYTHON_BIN="${L2P_PYTHON:-$L2P_REPO/.venv/bin/python}"

WORKER_LIST=()
if [[ -n "$WORKERS" ]]; then
  IFS=',' read -r -a WORKER_LIST <<<"$WORKERS"
  for w in "${WORKER_LIST[@]}"; do
    [[ "$w" =~ ^[A-Za-z0-9_.-]+:[0-9]+$ ]] || die "--workers entries must be host:port, got '$w'"
  done
  STRATEGY="${STRATEGY:-multi_worker_mirrored}"
  [[ "$STRATEGY" == multi_worker_mirrored ]] || die "--workers needs --strategy=multi_worker_mirrored, got '$STRATEGY'"
else
  STRATEGY="${STRATEGY:-mirrored}"
  [[ "$LAUNCH_ALL" == 0 ]] || die "--launch_all=1 needs --workers"
  [[ -z "$TASK_INDEX" ]] || die "--task_index needs --workers"
fi
case "$STRATEGY" in
  one_device | mirrored) ;;
  multi_worker_mirrored) [[ -n "$WORKERS" ]] || die "--strategy=multi_worker_mirrored needs --workers=host:port,..." ;;
  *) die "--strategy must be one_device, mirrored or multi_worker_mirrored, got '$STRATEGY'" ;;
esac

# The options of this run as flags (every option with a value, environment ones included), for another host.
forwarded_flags() {
  local i name var v vals
  for i in "${!OPT_NAMES[@]}"; do
    name="${OPT_NAMES[$i]}"
    var="${OPT_VARS[$i]}"
    case "$name" in launch_all | task_index | ssh) continue ;; esac
    if [[ "${OPT_LISTS[$i]}" == 1 ]]; then
      eval "vals=(\"\${${var}[@]}\")"
      for v in "${vals[@]}"; do printf '%s\0' "--$name=$v"; done
    elif [[ -n "${!var}" ]]; then
      printf '%s\0' "--$name=${!var}"
    fi
  done
}

# Starts this script on every worker over ssh, in parallel, and waits for all of them.
launch_all() {
  local i host pids=() cmd ssh_cmd flags
  read -r -a ssh_cmd <<<"$SSH"
  mapfile -d '' -t flags < <(forwarded_flags)
  for i in "${!WORKER_LIST[@]}"; do
    host="${WORKER_LIST[$i]%:*}"
    cmd="cd $(quote "$L2P_REPO") && launch/gpu.sh $(quote_cmd "${flags[@]}" "--task_index=$i")"
    ((${#PASSTHROUGH[@]} == 0)) || cmd+=" -- $(quote_cmd "${PASSTHROUGH[@]}")"
    if [[ "$DRY_RUN" == 1 ]]; then
      run "${ssh_cmd[@]}" "$host" "$cmd"
      continue
    fi
    printf '+ %s\n' "$(quote_cmd "${ssh_cmd[@]}" "$host" "$cmd")" >&2
    "${ssh_cmd[@]}" -n "$host" "$cmd" 2>&1 | sed -u "s/^/[worker $i] /" &
    pids+=($!)
  done
  local failed=0
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || {
      log "worker $i (${WORKER_LIST[$i]}) failed"
      failed=1
    }
  done
  ((failed == 0)) || die "at least one worker failed; see the [worker N] lines above"
}

if [[ "$LAUNCH_ALL" == 1 ]]; then
  launch_all
  exit 0
fi

ENVS=()
[[ -z "$GPUS" ]] || ENVS+=("CUDA_VISIBLE_DEVICES=$GPUS")
if [[ -n "$WORKERS" ]]; then
  if [[ ! "$TASK_INDEX" =~ ^[0-9]+$ ]] || ((TASK_INDEX >= ${#WORKER_LIST[@]})); then
    die "--task_index must be this host's index in --workers (0..$((${#WORKER_LIST[@]} - 1))), got '$TASK_INDEX'"
  fi
  cluster=""
  for w in "${WORKER_LIST[@]}"; do cluster+="${cluster:+, }\"$w\""; done
  ENVS+=("TF_CONFIG={\"cluster\": {\"worker\": [$cluster]}, \"task\": {\"type\": \"worker\", \"index\": $TASK_INDEX}}")
fi
[[ -z "$TFDS_DATA_DIR" ]] || ENVS+=("TFDS_DATA_DIR=$TFDS_DATA_DIR")

MAIN=("$PYTHON_BIN" -m l2p_tf.main "--model_dir=$MODEL_DIR")
for f in "${GIN_FILES[@]}"; do MAIN+=("--gin_file=$f"); done
for b in "${GIN_BINDINGS[@]}"; do MAIN+=("--gin_bindings=$b"); done
MAIN+=("--strategy=$STRATEGY" "--mode=$MODE")
[[ -z "$TFDS_DATA_DIR" ]] || MAIN+=("--tfds_data_dir=$TFDS_DATA_DIR")
[[ -z "$TFDS_MANUAL_DIR" ]] || MAIN+=("--tfds_manual_dir=$TFDS_MANUAL_DIR")
MAIN+=("${PASSTHROUGH[@]}")

if [[ "$DRY_RUN" != 1 ]]; then
  [[ -x "$PYTHON_BIN" ]] || die "no Python at $PYTHON_BIN; run ./setup.sh first (or set --python)"
  command -v nvidia-smi >/dev/null || log "warning: nvidia-smi not found; TensorFlow may see no GPU and run on the CPU"
fi
run cd "$L2P_REPO"
if ((${#ENVS[@]})); then
  run env "${ENVS[@]}" "${MAIN[@]}"
else
  run "${MAIN[@]}"
fi
