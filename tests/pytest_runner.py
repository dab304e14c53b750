"""Runs pytest test files as a Bazel py_test (the `main` of every py_test in tests/BUILD and datasets/BUILD).

    python tests/pytest_runner.py tests/losses_test.py [more files] [-- extra pytest args]

Bazel starts a test in its runfiles directory, which mirrors the repository, so the paths in `args` (relative to the
repository root) and tests/conftest.py work as in a plain `pytest` run. The runner adds what Bazel's test protocol
expects from a test binary:
- sharding: with `shard_count = N` Bazel runs N copies; copy i runs the tests whose index in collection order is i
  modulo N, and touches TEST_SHARD_STATUS_FILE to say it understands sharding;
- `--test_filter=EXPR` becomes `pytest -k EXPR`;
- a JUnit XML report in XML_OUTPUT_FILE, and no .pytest_cache (the runfiles tree is read-only).
"""

from __future__ import annotations

import os
import sys


class _ShardPlugin:
  """Keeps the tests of one Bazel shard (round-robin over the collected tests)."""

  def __init__(self, index: int, total: int):
    self.index = index
    self.total = total

  def pytest_collection_modifyitems(self, config, items):
    keep = [item for i, item in enumerate(items) if i % self.total == self.index]
    drop = [item for i, item in enumerate(items) if i % self.total != self.index]
    if drop:
      config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_args(argv: list[str], env: dict[str, str]) -> tuple[list[str], list[object]]:
  """Turns the runner's arguments and Bazel's test environment into pytest arguments and plugins."""
  args = ['-p', 'no:cacheprovider', '-rs', '--tb=short', '-q']
  if '--' in argv:
    split = argv.index('--')
    files, extra = argv[:split], argv[split + 1:]
  else:
    files, extra = argv, []
  if not files:
    raise SystemExit('pytest_runner: no test file given (expected e.g. tests/losses_test.py)')
  xml = env.get('XML_OUTPUT_FILE')
  if xml:
    args += [f'--junitxml={xml}', '-o', 'junit_family=xunit2']
  if env.get('TESTBRIDGE_TEST_ONLY'):
    args += ['-k', env['TESTBRIDGE_TEST_ONLY']]
  plugins: list[object] = []
  total = int(env.get('TEST_TOTAL_SHARDS', '0') or 0)
  if total > 1:
    index = int(env.get('TEST_SHARD_INDEX', '0'))
    if not 0 <= index < total:
      raise SystemExit(f'pytest_runner: TEST_SHARD_INDEX={index!r} is outside [0, {total})')
    plugins.append(_ShardPlugin(index, total))
    status = env.get('TEST_SHARD_STATUS_FILE')
    if status:
      with open(status, 'a', encoding='utf-8'):
        pass
  return args + extra + files, plugins


def main(argv: list[str]) -> int:
  import pytest  # pylint: disable=g-import-not-at-top
  args, plugins = pytest_args(argv, dict(os.environ))
  code = pytest.main(args, plugins=plugins)
  if code == pytest.ExitCode.NO_TESTS_COLLECTED and plugins:
    return 0  # A shard with nothing left to run (more shards than tests) is not a failure.
  return int(code)


if __name__ == '__main__':
  # Bazel puts the runner's own directory first on sys.path; the repository root (the runfiles root, or the parent
  # of tests/ in a plain run) must come first so `import tests.test_util` and `import l2p_tf` resolve there.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.exit(main(sys.argv[1:]))
