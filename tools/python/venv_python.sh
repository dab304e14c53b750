#!/usr/bin/env bash
# The interpreter of the Bazel Python toolchain (//tools/python:venv_toolchain): runs the project's virtual
# environment, <repository>/.venv/bin/python, wherever the repository is cloned. Bazel runs this file through a
# runfiles symlink; `readlink -f` follows it back to the source tree, whose .venv is the one ./setup.sh made.
# L2P_PYTHON (an absolute path) overrides it, e.g. bazel test --test_env=L2P_PYTHON=/opt/py/bin/python //...
set -euo pipefail
if [[ -n "${L2P_PYTHON:-}" ]]; then
  exec "$L2P_PYTHON" "$@"
fi
here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
python="$here/../../.venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "venv_python.sh: no virtual environment at $(readlink -m "$here/../../.venv"); run ./setup.sh first" >&2
  exit 1
fi
exec "$python" "$@"
