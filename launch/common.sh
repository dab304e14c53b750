# shellcheck shell=bash
# Shared helpers for the launch scripts (sourced, not run): options with environment defaults, --help, --dry_run,
# printing commands exactly as they would run, and stopping at the first error with a message.
#
# A script declares its options with `opt NAME VAR DEFAULT HELP` (or `list_opt` for repeatable ones) and then calls
# `parse_flags "$@"`. Precedence: --NAME=VALUE flag > environment variable VAR > DEFAULT. `--help` prints every option
# with its variable, default and current value. With --dry_run (or DRY_RUN=1) `run` prints each command on stdout,
# one per line, quoted so that it can be pasted into a shell, and runs nothing; otherwise it echoes `+ COMMAND` to
# stderr and runs it, stopping the script with a message naming the command if it fails.

set -euo pipefail

L2P_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
L2P_SCRIPT="launch/$(basename "$0")"
DRY_RUN="${DRY_RUN:-0}"
USAGE_HEAD=""
OPT_NAMES=()
OPT_VARS=()
OPT_DEFAULTS=()
OPT_HELPS=()
OPT_LISTS=()
POSITIONAL=()
PASSTHROUGH=()

log() { printf '[%s] %s\n' "$L2P_SCRIPT" "$*" >&2; }
die() {
  printf '[%s] ERROR: %s\n' "$L2P_SCRIPT" "$*" >&2
  exit 1
}

# Quotes one word for a POSIX shell only when it needs it, so that printed commands stay readable; in a
# --flag=value word only the value is quoted (--command='cd x && y').
quote() {
  local a="$1" safe='^[A-Za-z0-9_./:=@%+,-]+$'
  if [[ -n "$a" && "$a" =~ $safe ]]; then
    printf '%s' "$a"
  elif [[ "$a" =~ ^(--[A-Za-z0-9_-]+=)(.+)$ ]]; then
    printf '%s%s' "${BASH_REMATCH[1]}" "$(quote "${BASH_REMATCH[2]}")"
  else
    printf "'%s'" "${a//\'/\'\\\'\'}"
  fi
}

# Prints a whole command (each word quoted as needed), without a trailing newline.
quote_cmd() {
  local out="" w
  for w in "$@"; do
    out+="${out:+ }$(quote "$w")"
  done
  printf '%s' "$out"
}

# Runs a command, or prints it under --dry_run. Fails the script with a message if the command fails.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$(quote_cmd "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  local rc=0
  "$@" || rc=$?
  ((rc == 0)) || die "command failed (exit $rc): $(quote_cmd "$@")"
}

# opt NAME VAR DEFAULT HELP: a --NAME=VALUE option stored in VAR (environment VAR overrides DEFAULT).
opt() {
  OPT_NAMES+=("$1")
  OPT_VARS+=("$2")
  OPT_DEFAULTS+=("$3")
  OPT_HELPS+=("$4")
  OPT_LISTS+=(0)
  printf -v "$2" '%s' "${!2-$3}"
}

# list_opt NAME VAR HELP: a repeatable --NAME=VALUE option collected in the array VAR. The environment variable VAR,
# if set, gives the initial values, one per line (so values may hold spaces, e.g. gin bindings).
list_opt() {
  OPT_NAMES+=("$1")
  OPT_VARS+=("$2")
  OPT_DEFAULTS+=("")
  OPT_HELPS+=("$3")
  OPT_LISTS+=(1)
  local init="${!2-}"
  eval "$2=()"
  if [[ -n "$init" ]]; then
    mapfile -t "$2" <<<"$init"
  fi
}

usage() {
  local i name var val
  printf '%s\n\nOptions (flag, environment variable, default, current value):\n' "$USAGE_HEAD"
  for i in "${!OPT_NAMES[@]}"; do
    name="${OPT_NAMES[$i]}"
    var="${OPT_VARS[$i]}"
    if [[ "${OPT_LISTS[$i]}" == 1 ]]; then
      eval "val=\"\${${var}[*]-}\""
      printf '  --%s=VALUE  (repeatable; env %s, one per line; now: %s)\n      %s\n' \
        "$name" "$var" "${val:-none}" "${OPT_HELPS[$i]}"
    else
      printf '  --%s=VALUE  (env %s; default: %s; now: %s)\n      %s\n' \
        "$name" "$var" "${OPT_DEFAULTS[$i]:-<empty>}" "${!var:-<empty>}" "${OPT_HELPS[$i]}"
    fi
  done
  printf '  --dry_run  (env DRY_RUN=1; default: 0)\n      Print the exact commands (gcloud, ssh, python) instead of running them.\n'
  printf '  --help     Print this help.\n'
  printf '  -- ARGS    Everything after -- is passed on to python -m l2p_tf.main unchanged.\n'
}

# Parses --NAME=VALUE / --NAME VALUE flags of the declared options, --dry_run, --help; the rest is POSITIONAL.
parse_flags() {
  local arg name value i found
  while (($#)); do
    arg="$1"
    shift
    case "$arg" in
      --help | -h)
        usage
        exit 0
        ;;
      --dry_run | --dry-run | --dry_run=1 | --dry_run=true)
        DRY_RUN=1
        continue
        ;;
      --dry_run=0 | --dry_run=false)
        DRY_RUN=0
        continue
        ;;
      --)
        PASSTHROUGH+=("$@")
        break
        ;;
      --*) ;;
      *)
        POSITIONAL+=("$arg")
        continue
        ;;
    esac
    name="${arg#--}"
    if [[ "$name" == *=* ]]; then
      value="${name#*=}"
      name="${name%%=*}"
    else
      (($#)) || die "flag --$name needs a value (see --help)"
      value="$1"
      shift
    fi
    name="${name//-/_}"
    found=""
    for i in "${!OPT_NAMES[@]}"; do
      if [[ "${OPT_NAMES[$i]}" == "$name" ]]; then
        found=1
        if [[ "${OPT_LISTS[$i]}" == 1 ]]; then
          eval "${OPT_VARS[$i]}+=(\"\$value\")"
        else
          printf -v "${OPT_VARS[$i]}" '%s' "$value"
        fi
      fi
    done
    [[ -n "$found" ]] || die "unknown flag --$name (see $L2P_SCRIPT --help)"
  done
}

# require VAR FLAG: stops with a message when a needed option is empty.
require() {
  [[ -n "${!1:-}" ]] || die "--$2 (or environment $1) is required; see $L2P_SCRIPT --help"
}

# Checks that every gin file exists in this repository (so a typo stops the launch before any machine is created).
check_gin_files() {
  local f
  (($#)) || die "at least one --gin_file is required (e.g. --gin_file=gin_configs/experiments/cifar100_l2p.gin)"
  for f in "$@"; do
    [[ -f "$L2P_REPO/$f" ]] || die "gin file not found in the repository: $f (paths are relative to the repository root)"
  done
}
