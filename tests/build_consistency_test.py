"""The Bazel BUILD files match the source tree.

Checks, over the real repository (also when run by `bazel test`, where it follows its own runfiles symlink back to
the source tree; the target is tagged `external` so Bazel never caches its result):
- every `*_test.py` (tests/ and elsewhere) has a py_test whose srcs hold it;
- every Python module of l2p_tf/ and datasets/ is in the srcs of a py_library (l2p_tf/main.py: of a py_binary);
- every src, data file and main of every target exists, and every label in deps / data names a real target;
- every target's deps (transitively) provide the project modules its sources import, with their packages'
  __init__.py files (what `bazel test` needs in the runfiles);
- the aggregate library //l2p_tf holds every l2p_tf module; gin files are data of the binary and of the tests.

The BUILD files are read by executing them as Python with stand-ins for the few Bazel functions they use (Starlark is
a subset of Python), so glob() and list comprehensions behave as in Bazel.

To print the BUILD stanza for a new module (deps inferred from its imports):
    .venv/bin/python tests/build_consistency_test.py --suggest l2p_tf/new_module.py
"""

from __future__ import annotations

import ast
import dataclasses
import glob as globlib
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PROJECT_PACKAGES = ('l2p_tf', 'datasets', 'tests')
LIBRARY_ROOTS = ('l2p_tf', 'datasets')
SKIP_DIRS = {'.git', '.venv', 'third_party', '__pycache__', '.pytest_cache', 'node_modules'}
RULES = ('py_library', 'py_test', 'py_binary', 'filegroup', 'py_runtime', 'py_runtime_pair', 'toolchain',
         'alias', 'sh_binary', 'sh_test')


@dataclasses.dataclass
class Target:
  kind: str
  package: str  # 'l2p_tf/models', '' for the root package
  name: str
  attrs: dict

  @property
  def label(self) -> str:
    return f'//{self.package}:{self.name}'

  def files(self, attr: str) -> list[str]:
    """Repository-relative paths of the plain-file entries of a label-list attribute (srcs, data)."""
    value = self.attrs.get(attr) or []
    if isinstance(value, str):
      value = [value]
    return [os.path.normpath(os.path.join(self.package, v)) for v in value
            if not v.startswith((':', '//', '@'))]

  def labels(self, attr: str) -> list[str]:
    value = self.attrs.get(attr) or []
    if isinstance(value, str):
      value = [value]
    return [normalize_label(v, self.package) for v in value if v.startswith((':', '//'))]


def normalize_label(label: str, package: str) -> str:
  if label.startswith(':'):
    return f'//{package}{label}'
  if ':' not in label:
    return f'{label}:{label.rsplit("/", 1)[-1]}'
  return label


def ignored_dirs() -> set[str]:
  out = set()
  path = os.path.join(REPO, '.bazelignore')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      out = {line.strip().rstrip('/') for line in f if line.strip() and not line.startswith('#')}
  return out


def walk_repo():
  """(dirpath relative to REPO, filenames) of the source tree, without ignored and Bazel output directories."""
  ignored = ignored_dirs()
  for dirpath, dirnames, filenames in os.walk(REPO):
    rel = os.path.relpath(dirpath, REPO)
    rel = '' if rel == '.' else rel
    dirnames[:] = sorted(d for d in dirnames
                         if d not in SKIP_DIRS and not d.startswith('bazel-')
                         and os.path.join(rel, d) not in ignored)
    yield rel, filenames


def build_packages() -> list[str]:
  return [rel for rel, files in walk_repo() if 'BUILD' in files or 'BUILD.bazel' in files]


def _glob(package: str, packages: set[str]):
  def glob(include, exclude=(), exclude_directories=1, allow_empty=True):  # pylint: disable=unused-argument
    base = os.path.join(REPO, package)
    found = set()
    for pattern in include:
      for path in globlib.glob(os.path.join(base, pattern), recursive=True):
        if os.path.isdir(path):
          continue
        rel = os.path.relpath(path, base)
        # Bazel's glob stops at subpackages (directories with their own BUILD file).
        parts = rel.split(os.sep)[:-1]
        if any(os.path.join(package, *parts[:i + 1]) in packages for i in range(len(parts))):
          continue
        found.add(rel)
    for pattern in exclude:
      found -= {os.path.relpath(p, base) for p in globlib.glob(os.path.join(base, pattern), recursive=True)}
    return sorted(found)
  return glob


def load_targets() -> dict[str, Target]:
  """Every target of every BUILD file in the repository, by label."""
  packages = build_packages()
  package_set = set(packages)
  targets: dict[str, Target] = {}
  for package in packages:
    path = os.path.join(REPO, package, 'BUILD')
    if not os.path.exists(path):
      path += '.bazel'
    with open(path, encoding='utf-8') as f:
      source = f.read()

    def rule(kind, package=package):
      def make(name, **attrs):
        t = Target(kind, package, name, attrs)
        assert t.label not in targets, f'duplicate target {t.label}'
        targets[t.label] = t
      return make

    env = {kind: rule(kind) for kind in RULES}

    def exports_files(files, package=package, **_):
      for f in files:
        targets.setdefault(f'//{package}:{f}', Target('exported_file', package, f, {'srcs': [f]}))

    env.update(glob=_glob(package, package_set), exports_files=exports_files,
               load=lambda *a, **k: None, package=lambda **k: None, select=lambda d: d['//conditions:default'])
    exec(compile(source, path, 'exec'), env)  # pylint: disable=exec-used
  return targets


# ---------------------------------------------------------------------------------------------------------------
# Imports

def module_file(module: str) -> str | None:
  """Repository-relative file of a project module ('l2p_tf.models.vit' -> 'l2p_tf/models/vit.py'), or None."""
  parts = module.split('.')
  if parts[0] not in PROJECT_PACKAGES:
    return None
  base = os.path.join(*parts)
  for candidate in (base + '.py', os.path.join(base, '__init__.py')):
    if os.path.isfile(os.path.join(REPO, candidate)):
      return candidate
  return None


def package_inits(path: str) -> list[str]:
  """The __init__.py files that Python runs before a module of this file's package (ancestors included)."""
  out = []
  parts = path.split('/')[:-1]
  for i in range(1, len(parts) + 1):
    init = '/'.join(parts[:i] + ['__init__.py'])
    if os.path.isfile(os.path.join(REPO, init)):
      out.append(init)
  return out


def _imported_modules(path: str) -> set[str]:
  """Absolute names of the modules a Python file imports (`from a.b import c` gives a.b and a.b.c)."""
  with open(os.path.join(REPO, path), encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  modules = set()
  package = path.split('/')[:-1]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package[:len(package) - node.level + 1]
        prefix = '.'.join(base + ([node.module] if node.module else []))
      else:
        prefix = node.module or ''
      modules.add(prefix)
      modules.update(f'{prefix}.{a.name}' for a in node.names)
  return modules


def imported_files(path: str) -> set[str]:
  """Project files a Python file needs at import time: imported modules and every package __init__ on the way."""
  needed = set(package_inits(path))
  for module in _imported_modules(path):
    parts = module.split('.')
    for i in range(1, len(parts) + 1):  # `import a.b.c` runs a/__init__, a/b/__init__ and a/b/c.
      f = module_file('.'.join(parts[:i]))
      if f:
        needed.add(f)
        needed.update(package_inits(f))
  needed.discard(path)
  return needed


def direct_files(path: str) -> set[str]:
  """The files whose targets a BUILD target for `path` should name in deps: the modules it imports and the nearest
  package __init__.py, less the __init__.py files that those bring in anyway."""
  inits = [i for i in package_inits(path) if i != path]
  direct = {f for f in map(module_file, _imported_modules(path)) if f} | set(inits[-1:])
  direct.discard(path)
  implied = {i for f in direct for i in package_inits(f) if i != f}
  return direct - implied


def transitive_srcs(label: str, targets: dict[str, Target], seen: set[str] | None = None) -> set[str]:
  seen = set() if seen is None else seen
  if label in seen or label not in targets:
    return set()
  seen.add(label)
  t = targets[label]
  out = set(t.files('srcs'))
  for dep in t.labels('deps') + t.labels('srcs'):
    out |= transitive_srcs(dep, targets, seen)
  return out


def _target_name(filename: str) -> str:
  """The conventional target of a file: the module name; `init` for a package's __init__.py."""
  return 'init' if filename == '__init__.py' else filename[:-3]


def suggest(path: str, targets: dict[str, Target] | None = None) -> str:
  """A py_library (py_test for *_test.py) stanza for a file, deps from its imports; for the package's BUILD file."""
  targets = load_targets() if targets is None else targets
  package, filename = os.path.split(path)
  name = _target_name(filename)
  owners = {}
  for t in targets.values():
    if t.kind == 'py_library':
      for f in t.files('srcs'):
        owners.setdefault(f, t.label)
  deps = set()
  for f in sorted(direct_files(path)):
    owner = owners.get(f)
    if owner is None:
      owner = f'//{os.path.dirname(f)}:{_target_name(os.path.basename(f))}  # not yet a target: {f}'
    deps.add(owner.replace(f'//{package}:', ':'))
  deps_text = ''.join(f'        "{d}",\n' if '#' not in d else f'        "{d.split("  #")[0]}",  #{d.split("  #")[1]}\n'
                      for d in sorted(deps))
  kind = 'py_test' if name.endswith('_test') else ('py_binary' if name == 'main' else 'py_library')
  return f'{kind}(\n    name = "{name}",\n    srcs = ["{filename}"],\n    deps = [\n{deps_text}    ],\n)\n'


# ---------------------------------------------------------------------------------------------------------------
# Tests

@pytest.fixture(scope='module')
def targets():
  return load_targets()


def _python_files():
  for rel, files in walk_repo():
    for f in files:
      if f.endswith('.py'):
        yield os.path.join(rel, f) if rel else f


def test_found_the_build_files(targets):
  assert {'', 'l2p_tf', 'tests', 'gin_configs'} <= set(build_packages()), build_packages()
  assert '//l2p_tf:main' in targets and targets['//l2p_tf:main'].kind == 'py_binary'


def test_every_test_file_has_a_py_test(targets):
  tested = {f for t in targets.values() if t.kind == 'py_test' for f in t.files('srcs')}
  missing = sorted(f for f in _python_files() if f.endswith('_test.py') and f not in tested)
  assert not missing, ('test files without a py_test (tests/BUILD makes one for each tests/*_test.py; elsewhere '
                       f'add one to the package BUILD file): {missing}')


def test_every_module_has_a_library(targets):
  covered = {f for t in targets.values() if t.kind in ('py_library', 'py_binary') for f in t.files('srcs')}
  missing = [f for f in _python_files()
             if f.split('/')[0] in LIBRARY_ROOTS and not f.endswith('_test.py') and f not in covered]
  hints = '\n'.join(f'# {f}: add to {os.path.dirname(f)}/BUILD\n{suggest(f, targets)}' for f in sorted(missing))
  assert not missing, f'modules without a py_library: {sorted(missing)}\n\n{hints}'


def test_main_is_a_binary_with_the_gin_files(targets):
  main = targets['//l2p_tf:main']
  assert main.files('srcs') == ['l2p_tf/main.py']
  assert '//gin_configs:gin_configs' in main.labels('data')


def test_every_source_exists(targets):
  missing = []
  for t in targets.values():
    for attr in ('srcs', 'data', 'main'):
      for f in t.files(attr):
        if not os.path.exists(os.path.join(REPO, f)):
          missing.append(f'{t.label} {attr}: {f}')
  assert not missing, f'targets name files that do not exist: {missing}'


def test_every_label_names_a_target(targets):
  local = set(targets)
  file_labels = set()
  for t in targets.values():
    for f in t.files('srcs') + t.files('data'):
      file_labels.add(f'//{t.package}:{os.path.relpath(f, t.package) if t.package else f}')
  dangling = []
  for t in targets.values():
    for attr in ('deps', 'data', 'srcs', 'main', 'actual', 'toolchain', 'py3_runtime'):
      value = t.attrs.get(attr)
      if value is None:
        continue
      for label in t.labels(attr):
        if label.startswith('//') and label not in local and label not in file_labels:
          dangling.append(f'{t.label} {attr}: {label}')
  assert not dangling, f'labels that name no target: {dangling}'


def test_deps_cover_imports(targets):
  problems = []
  for t in targets.values():
    if t.kind not in ('py_library', 'py_test', 'py_binary'):
      continue
    provided = transitive_srcs(t.label, targets)
    for src in t.files('srcs'):
      if not src.endswith('.py') or not os.path.exists(os.path.join(REPO, src)):
        continue
      for needed in sorted(imported_files(src) - provided):
        problems.append(f'{t.label}: {src} imports {needed}, which no dep provides')
  assert not problems, 'missing deps (bazel test would fail with ImportError):\n' + '\n'.join(problems)


def test_aggregate_library_holds_every_module(targets):
  provided = transitive_srcs('//l2p_tf:l2p_tf', targets)
  missing = [f for f in _python_files()
             if f.startswith('l2p_tf/') and not f.endswith('_test.py') and f != 'l2p_tf/main.py'
             and f not in provided]
  assert not missing, f'add the libraries of these modules to deps of //l2p_tf:l2p_tf: {sorted(missing)}'


def test_gin_files_are_data_of_tests(targets):
  gin = targets['//gin_configs:gin_configs']
  on_disk = sorted(f for f in (os.path.join(r, n) for r, files in walk_repo() for n in files)
                   if f.startswith('gin_configs/') and f.endswith('.gin'))
  assert sorted(gin.files('srcs')) == on_disk
  tests = [t for t in targets.values() if t.kind == 'py_test' and t.package == 'tests']
  assert tests
  without = [t.label for t in tests if '//gin_configs:gin_configs' not in t.labels('data')]
  assert not without, f'tests without the gin files as data: {without}'


def test_test_targets_use_the_runner(targets):
  for t in targets.values():
    if t.kind == 'py_test':
      assert t.attrs.get('main') in ('pytest_runner.py', '//tests:pytest_runner.py'), t.label
      test_files = [f for f in t.files('srcs') if f.endswith('_test.py')]
      assert t.attrs.get('args') == test_files, (t.label, t.attrs.get('args'))


def test_suggest_names_the_deps_of_a_module(targets):
  text = suggest('l2p_tf/checkpoints/npz_loader.py', targets)
  assert text.startswith('py_library(\n    name = "npz_loader",\n    srcs = ["npz_loader.py"],')
  assert '"//l2p_tf/models:vit"' in text and '":init"' in text



# ---------------------------------------------------------------------------------------------------------------
# tests/pytest_runner.py, the main of every py_test

_SAMPLE = """
def test_a(): pass
def test_b(): pass
def test_c(): pass
def test_d_fails_only_when_selected(): assert False
"""


def _run_runner(tmp_path, **env):
  sample = tmp_path / 'sample_test.py'
  sample.write_text(_SAMPLE)
  xml = tmp_path / 'out.xml'
  full_env = {k: v for k, v in os.environ.items() if not k.startswith(('TEST_', 'TESTBRIDGE_', 'XML_OUTPUT'))}
  full_env.update(XML_OUTPUT_FILE=str(xml), **env)
  runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pytest_runner.py')
  proc = subprocess.run([sys.executable, runner, str(sample)], capture_output=True, text=True, env=full_env,
                        cwd=str(tmp_path), timeout=120)
  ran = sorted(re.findall(r'<testcase [^>]*name="(\w+)"', xml.read_text())) if xml.exists() else []
  return proc, ran


def test_runner_runs_the_file_and_writes_junit_xml(tmp_path):
  proc, ran = _run_runner(tmp_path, TESTBRIDGE_TEST_ONLY='not fails')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert ran == ['test_a', 'test_b', 'test_c']
  proc, ran = _run_runner(tmp_path)
  assert proc.returncode == 1 and 'test_d_fails_only_when_selected' in proc.stdout


def test_runner_shards_round_robin(tmp_path):
  status = tmp_path / 'shard_status'
  proc, ran = _run_runner(tmp_path, TEST_TOTAL_SHARDS='2', TEST_SHARD_INDEX='0', TEST_SHARD_STATUS_FILE=str(status))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert ran == ['test_a', 'test_c'] and status.exists()
  proc, ran = _run_runner(tmp_path, TEST_TOTAL_SHARDS='2', TEST_SHARD_INDEX='1')
  assert proc.returncode == 1 and ran == ['test_b', 'test_d_fails_only_when_selected']
  proc, ran = _run_runner(tmp_path, TEST_TOTAL_SHARDS='6', TEST_SHARD_INDEX='5')
  assert proc.returncode == 0 and ran == []  # More shards than tests: an empty shard passes.


if __name__ == '__main__':
  if len(sys.argv) >= 3 and sys.argv[1] == '--suggest':
    for p in sys.argv[2:]:
      print(f'# {p}\n{suggest(os.path.relpath(os.path.abspath(p), REPO))}')
  else:
    sys.exit(pytest.main([__file__, '-q']))
