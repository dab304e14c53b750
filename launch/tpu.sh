#!/usr/bin/env bash
# Runs l2p-tf on a Cloud TPU VM (single host, e.g. v3-8 / v4-8, or a multi-host slice, e.g. v4-32).
#
#   launch/tpu.sh COMMAND [--flag=value ...] [--dry_run] [-- extra args for l2p_tf.main]
#
# Commands (each is idempotent; `up` runs create, setup, prepare_data and run in that order):
#   create        create the TPU VM (skipped if it exists)
#   setup         copy this repository (git HEAD) to every worker and install the pinned environment there
#                 (./setup.sh with Python 3.11, plus the TPU build of TensorFlow)
#   prepare_data  prepare the datasets the gin files' experiment reads, once (on worker 0, or locally), into the
#                 shared --tfds_data_dir (gs://), with python -m l2p_tf.prepare_data
#   run           start python -m l2p_tf.main --strategy=tpu with the gin files on every worker, in the background
#                 (skipped on a worker where the same run is still alive); a restarted run resumes from --model_dir
#   logs          follow the log of the run on one worker
#   stop          stop the run on every worker
#   delete        delete the TPU VM (skipped if it does not exist)
#   up            create + setup + prepare_data + run
#
# Example:
#   launch/tpu.sh up --tpu_name=l2p-v4 --zone=us-central2-b --accelerator_type=v4-32 \
#     --tfds_data_dir=gs://my-bucket/tfds --model_dir=gs://my-bucket/runs/cifar100_l2p \
#     --gin_file=gin_configs/experiments/cifar100_l2p.gin
#   launch/tpu.sh logs --tpu_name=l2p-v4 --zone=us-central2-b --model_dir=gs://my-bucket/runs/cifar100_l2p
#   launch/tpu.sh delete --tpu_name=l2p-v4 --zone=us-central2-b
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE_HEAD="$(sed -n '2,/^# shellcheck/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//')"

opt project PROJECT "" "Google Cloud project (empty: gcloud's configured project)."
opt tpu_name TPU_NAME "l2p-tpu" "Name of the TPU VM."
opt zone ZONE "us-central2-b" "Zone of the TPU VM (v4: us-central2-b; v3: europe-west4-a, us-central1-a)."
opt accelerator_type ACCELERATOR_TYPE "v4-8" "TPU type and size, e.g. v3-8, v4-8, v4-32."
opt version TPU_VERSION "tpu-ubuntu2204-base" "TPU VM runtime (software) version."
opt spot SPOT "0" "1: create a Spot TPU VM (cheaper, may be preempted; runs resume from --model_dir)."
opt create_flags CREATE_FLAGS "" "Extra flags for 'gcloud compute tpus tpu-vm create', space-separated (e.g. --network=N)."
opt remote_dir REMOTE_DIR "l2p-tf" "Directory of the repository on each worker, relative to the home directory."
opt python REMOTE_PYTHON "python3.11" "Python on the workers for ./setup.sh (installed with apt if missing)."
opt tpu_pip TPU_PIP "tensorflow-tpu==2.20.0 -f https://storage.googleapis.com/libtpu-tf-releases/index.html" \
  "pip arguments that add TPU support to the pinned TensorFlow on the workers (empty: skip)."
opt tfds_data_dir TFDS_DATA_DIR "" "Shared tfds data directory, gs://BUCKET/tfds (prepare_data, run)."
opt tfds_manual_dir TFDS_MANUAL_DIR "" "tfds manual_dir for datasets that need manual downloads (e.g. DomainNet)."
opt datasets DATASETS "" "Comma-separated tfds datasets prepare_data prepares besides those of the gin files (e.g. cifar10,mnist)."
opt prepare_on PREPARE_ON "worker0" "Where prepare_data builds the datasets: worker0 or local (this machine's .venv)."
opt model_dir MODEL_DIR "" "Run directory on gs:// shared by all workers: checkpoints, summaries, results (run, logs, stop)."
list_opt gin_file GIN_FILES "Gin file relative to the repository root (repeat; later files override earlier ones)."
list_opt gin_bindings GIN_BINDINGS "Gin binding 'NAME = VALUE' (repeat)."
opt mode MODE "train" "l2p_tf.main --mode: train or eval."
opt tpu_address TPU_ADDRESS "local" "l2p_tf.main --tpu on each worker ('local': the TPU VM's own chips)."
opt workers WORKERS "all" "Workers that run l2p_tf.main: all (every host of the slice) or a worker index."
opt run_name RUN_NAME "" "Name of the run's log and pid files on the workers (default: last part of --model_dir)."
opt log_worker LOG_WORKER "0" "Worker whose log 'logs' follows."

parse_flags "$@"
((${#POSITIONAL[@]} == 1)) || die "expected exactly one COMMAND (create, setup, prepare_data, run, logs, stop, delete, up); got: ${POSITIONAL[*]:-none}"
COMMAND="${POSITIONAL[0]}"
[[ "$SPOT" == 0 || "$SPOT" == 1 ]] || die "--spot must be 0 or 1, got '$SPOT'"
[[ "$PREPARE_ON" == worker0 || "$PREPARE_ON" == local ]] || die "--prepare_on must be worker0 or local, got '$PREPARE_ON'"
[[ "$MODE" == train || "$MODE" == eval ]] || die "--mode must be train or eval, got '$MODE'"
[[ "$WORKERS" == all || "$WORKERS" =~ ^[0-9]+$ ]] || die "--workers must be 'all' or a worker index, got '$WORKERS'"
[[ "$REMOTE_DIR" =~ ^[A-Za-z0-9_./-]+$ && "$REMOTE_DIR" != /* ]] ||
  die "--remote_dir must be a plain path relative to the home directory, got '$REMOTE_DIR'"

GCLOUD_TPU=(gcloud compute tpus tpu-vm)
LOCATION=("--zone=$ZONE")
[[ -z "$PROJECT" ]] || LOCATION+=("--project=$PROJECT")

# ssh WORKER COMMAND: runs a shell command on one worker (an index) or on all of them.
tpu_ssh() {
  run "${GCLOUD_TPU[@]}" ssh "$TPU_NAME" "${LOCATION[@]}" "--worker=$1" "--command=$2"
}

# Whether the TPU VM exists (under --dry_run: assume it does not, so the dry run shows every command).
tpu_exists() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '# %s\n' "$(quote_cmd "${GCLOUD_TPU[@]}" describe "$TPU_NAME" "${LOCATION[@]}" '--format=value(state)') (existence check)"
    return 1
  fi
  command -v gcloud >/dev/null || die "gcloud not found; install the Google Cloud CLI (https://cloud.google.com/sdk)"
  local state
  state="$("${GCLOUD_TPU[@]}" describe "$TPU_NAME" "${LOCATION[@]}" '--format=value(state)' 2>/dev/null)" || return 1
  log "TPU VM $TPU_NAME exists in $ZONE (state: ${state:-unknown})"
}

need_gs() {
  require "$1" "$2"
  [[ "${!1}" == gs://* ]] || die "--$2 must be a gs:// path shared by all TPU workers, got '${!1}'"
}

cmd_create() {
  if tpu_exists; then
    log "skipping create"
    return 0
  fi
  local flags=(--accelerator-type="$ACCELERATOR_TYPE" --version="$TPU_VERSION")
  [[ "$SPOT" == 0 ]] || flags+=(--spot)
  local extra=()
  [[ -z "$CREATE_FLAGS" ]] || read -r -a extra <<<"$CREATE_FLAGS"
  run "${GCLOUD_TPU[@]}" create "$TPU_NAME" "${LOCATION[@]}" "${flags[@]}" "${extra[@]}"
}

cmd_setup() {
  local archive="${TMPDIR:-/tmp}/l2p-tf-src.tar.gz"
  if [[ "$DRY_RUN" != 1 ]]; then
    git -C "$L2P_REPO" rev-parse --verify HEAD >/dev/null 2>&1 || die "$L2P_REPO is not a git checkout with a commit"
    [[ -z "$(git -C "$L2P_REPO" status --porcelain --untracked-files=no)" ]] ||
      log "warning: uncommitted changes are not copied (the workers get git HEAD)"
  fi
  run git -C "$L2P_REPO" archive --format=tar.gz -o "$archive" HEAD
  run "${GCLOUD_TPU[@]}" scp "$archive" "$TPU_NAME:l2p-tf-src.tar.gz" "${LOCATION[@]}" --worker=all
  local py
  py="$(quote "$REMOTE_PYTHON")"
  local remote="set -e; mkdir -p $REMOTE_DIR && tar -xzf l2p-tf-src.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR"
  remote+=" && { command -v $py >/dev/null || { sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive"
  remote+=" apt-get install -y -qq $py $py-venv; }; }"
  remote+=" && L2P_SKIP_APT=1 PYTHON=$py ./setup.sh"
  [[ -z "$TPU_PIP" ]] || remote+=" && .venv/bin/python -m pip install -q $TPU_PIP"
  remote+=" && .venv/bin/python -c 'import tensorflow as tf; print(tf.__version__)'"
  tpu_ssh all "$remote"
}

cmd_prepare_data() {
  need_gs TFDS_DATA_DIR tfds_data_dir
  ((${#GIN_FILES[@]} > 0)) || [[ -n "$DATASETS" ]] || die "prepare_data needs --gin_file (the experiment) or --datasets"
  # l2p_tf.prepare_data reads the experiment's gin files and prepares each dataset it needs with the builders'
  # download_and_prepare (no Apache Beam, unlike `tfds build`); datasets already prepared are skipped.
  local args=(-m l2p_tf.prepare_data "--tfds_data_dir=$TFDS_DATA_DIR")
  local f b
  for f in "${GIN_FILES[@]}"; do args+=("--gin_file=$f"); done
  for b in "${GIN_BINDINGS[@]}"; do args+=("--gin_bindings=$b"); done
  [[ -z "$DATASETS" ]] || args+=("--datasets=$DATASETS")
  [[ -z "$TFDS_MANUAL_DIR" ]] || args+=("--tfds_manual_dir=$TFDS_MANUAL_DIR")
  if [[ "$PREPARE_ON" == local ]]; then
    [[ "$DRY_RUN" == 1 || -x "$L2P_REPO/.venv/bin/python" ]] || die "no $L2P_REPO/.venv/bin/python; run ./setup.sh first"
    run cd "$L2P_REPO"
    run "$L2P_REPO/.venv/bin/python" "${args[@]}"
  else
    tpu_ssh 0 "cd $REMOTE_DIR && .venv/bin/python $(quote_cmd "${args[@]}")"
  fi
}

run_name() {
  local name="${RUN_NAME:-${MODEL_DIR%/}}"
  name="${name##*/}"
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "cannot derive a run name from '$name'; set --run_name"
  printf '%s' "$name"
}

cmd_run() {
  need_gs MODEL_DIR model_dir
  need_gs TFDS_DATA_DIR tfds_data_dir
  check_gin_files "${GIN_FILES[@]}"
  local name
  name="$(run_name)"
  local main=(env "TFDS_DATA_DIR=$TFDS_DATA_DIR" .venv/bin/python -m l2p_tf.main "--model_dir=$MODEL_DIR")
  local f b
  for f in "${GIN_FILES[@]}"; do main+=("--gin_file=$f"); done
  for b in "${GIN_BINDINGS[@]}"; do main+=("--gin_bindings=$b"); done
  main+=(--strategy=tpu "--tpu=$TPU_ADDRESS" "--tfds_data_dir=$TFDS_DATA_DIR" "--mode=$MODE")
  [[ -z "$TFDS_MANUAL_DIR" ]] || main+=("--tfds_manual_dir=$TFDS_MANUAL_DIR")
  main+=("${PASSTHROUGH[@]}")
  local pid="logs/$name.pid" out="logs/$name.log"
  tpu_ssh "$WORKERS" "cd $REMOTE_DIR && mkdir -p logs && if [ -f $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null;\
 then echo \"run $name is already running on \$(hostname)\"; else nohup $(quote_cmd "${main[@]}") > $out 2>&1 < /dev/null &\
 echo \$! > $pid; echo \"started run $name on \$(hostname): ~/$REMOTE_DIR/$out\"; fi"
}

cmd_logs() {
  local name
  name="$(run_name)"
  tpu_ssh "$LOG_WORKER" "tail -n 200 -F $REMOTE_DIR/logs/$name.log"
}

cmd_stop() {
  local name
  name="$(run_name)"
  local pid="$REMOTE_DIR/logs/$name.pid"
  tpu_ssh all "if [ -f $pid ] && kill \"\$(cat $pid)\" 2>/dev/null; then echo \"stopped run $name on \$(hostname)\"; fi; rm -f $pid"
}

cmd_delete() {
  if [[ "$DRY_RUN" != 1 ]] && ! tpu_exists; then
    log "TPU VM $TPU_NAME does not exist in $ZONE; skipping delete"
    return 0
  fi
  run "${GCLOUD_TPU[@]}" delete "$TPU_NAME" "${LOCATION[@]}" --quiet
}

case "$COMMAND" in
  create) cmd_create ;;
  setup) cmd_setup ;;
  prepare_data) cmd_prepare_data ;;
  run) cmd_run ;;
  logs) cmd_logs ;;
  stop) cmd_stop ;;
  delete) cmd_delete ;;
  up)
    # Check what `run` needs before creating anything.
    need_gs MODEL_DIR model_dir
    need_gs TFDS_DATA_DIR tfds_data_dir
    check_gin_files "${GIN_FILES[@]}"
    cmd_create
    cmd_setup
    cmd_prepare_data
    cmd_run
    log "follow the logs: launch/tpu.sh logs --tpu_name=$TPU_NAME --zone=$ZONE --model_dir=$MODEL_DIR"
    ;;
  *) die "unknown COMMAND '$COMMAND' (create, setup, prepare_data, run, logs, stop, delete, up)" ;;
esac
