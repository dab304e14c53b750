#!/usr/bin/env bash
# Turns a fresh machine into a working one: system packages (apt), a virtual environment in .venv with the pinned
# stack of requirements.txt. Safe to re-run: a second run checks a stamp and returns in seconds.
#
#   ./setup.sh            # everything
#   L2P_SKIP_APT=1 ./setup.sh   # skip the apt-get step (no root, or packages already present)
#   PYTHON=python3.12 ./setup.sh
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv
# System packages: Fashion-MNIST files (5-datasets, offline), Bazel (offline test targets), shellcheck (lint).
APT_PACKAGES=(dataset-fashion-mnist bazel-bootstrap shellcheck)

say() { printf '[setup] %s\n' "$*"; }

if [[ -z "${L2P_SKIP_APT:-}" ]] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    say "installing system packages: ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >/dev/null || { say "apt-get install ${missing[*]} failed; re-run with L2P_SKIP_APT=1 to skip"; exit 1; }
  fi
fi

stamp="$VENV/.l2p_setup_stamp"
want="$("$PYTHON" -c 'import sys; print(sys.version)' | head -1) $(cat requirements.txt requirements.lock | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  say "environment up to date ($VENV)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
say "installing pinned packages from requirements.txt (first run: about a minute, 3.3 GB)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2> >(grep -v 'is ignored' >&2)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt -c requirements.lock 2> >(grep -v 'is ignored' >&2)
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
echo "$want" > "$stamp"
say "done: $("$VENV/bin/python" -c 'import tensorflow as tf; print("tensorflow", tf.__version__)' 2>/dev/null)"
