"""The shape of l2p_tf/ that docs/architecture.md describes, checked on the source tree.

- Layers: a module imports only modules of its own layer or of layers below it (foundation < data < models <
  methods < engine < tools); every module of l2p_tf/ belongs to exactly one layer.
- No production module imports the tests (test machinery such as fault injection is installed by the tests).
- Small functions: none longer than 80 lines; the continual loop module under 300 lines.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# Layer name -> path prefixes (relative to the repository root), lowest layer first.
LAYERS = (
    ('foundation', ('l2p_tf/__init__.py', 'l2p_tf/results.py', 'l2p_tf/gin_utils.py', 'l2p_tf/cl_metrics.py',
                    'l2p_tf/losses.py', 'l2p_tf/optimizers.py', 'l2p_tf/quiet.py', 'l2p_tf/resources.py')),
    ('data', ('l2p_tf/data/',)),
    ('models', ('l2p_tf/models/', 'l2p_tf/checkpoints/__init__.py', 'l2p_tf/checkpoints/npz_loader.py',
                'l2p_tf/checkpoints/npz_writer.py', 'l2p_tf/flops.py')),
    ('methods', ('l2p_tf/methods/',)),
    ('engine', ('l2p_tf/engine/',)),
    ('tools', ('l2p_tf/main.py', 'l2p_tf/pretrain.py', 'l2p_tf/export.py', 'l2p_tf/predict.py', 'l2p_tf/summarize.py',
               'l2p_tf/seeds.py', 'l2p_tf/cli.py', 'l2p_tf/prepare_data.py', 'l2p_tf/console.py', 'l2p_tf/checkpoints/inspect_npz.py')),
)
MAX_FUNCTION_LINES = 80
MAX_LOOP_LINES = 300


def modules():
  out = []
  for root, _, files in os.walk(os.path.join(REPO, 'l2p_tf')):
    out += [os.path.relpath(os.path.join(root, f), REPO) for f in files if f.endswith('.py')]
  return sorted(out)


def layer_of(path):
  for rank, (name, prefixes) in enumerate(LAYERS):
    if any(path == p or (p.endswith('/') and path.startswith(p)) for p in prefixes):
      return rank, name
  return None


def module_path(dotted):
  """'l2p_tf.engine.loop' -> 'l2p_tf/engine/loop.py' (or the package's __init__.py)."""
  base = os.path.join(*dotted.split('.'))
  for candidate in (base + '.py', os.path.join(base, '__init__.py')):
    if os.path.exists(os.path.join(REPO, candidate)):
      return candidate
  return None


def imports(path):
  """Project modules `path` imports (anywhere in the file, function-level imports included)."""
  tree = ast.parse(open(os.path.join(REPO, path)).read())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out |= {f'{node.module}.{a.name}' for a in node.names}
  return {m for m in out if m.split('.')[0] in ('l2p_tf', 'tests')}


def test_every_module_has_a_layer():
  assert [p for p in modules() if layer_of(p) is None] == []


def test_no_module_imports_a_layer_above_it_or_the_tests():
  bad = []
  for path in modules():
    rank, name = layer_of(path)
    for dotted in imports(path):
      if dotted.split('.')[0] == 'tests':
        bad.append(f'{path} imports {dotted} (test code)')
        continue
      target = module_path(dotted)
      if target is None or layer_of(target) is None:
        continue
      other_rank, other = layer_of(target)
      if other_rank > rank:
        bad.append(f'{path} ({name}) imports {target} ({other})')
  assert bad == []


@pytest.mark.parametrize('path', modules())
def test_functions_are_short(path):
  tree = ast.parse(open(os.path.join(REPO, path)).read())
  long = [f'{node.name} ({node.end_lineno - node.lineno + 1} lines)' for node in ast.walk(tree)
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
          and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
  assert long == []


def test_the_continual_loop_module_is_small():
  with open(os.path.join(REPO, 'l2p_tf', 'engine', 'loop.py')) as f:
    assert len(f.read().splitlines()) < MAX_LOOP_LINES


def test_production_code_has_no_fault_injection():
  hits = [p for p in modules() if 'L2P_FAULT_INJECTION' in open(os.path.join(REPO, p)).read()
          or any('faults' in m for m in imports(p))]
  assert hits == []


def test_every_package_is_installed_by_pyproject():
  text = open(os.path.join(REPO, 'pyproject.toml')).read()
  packages = {os.path.relpath(root, REPO).replace(os.sep, '.')
              for root, _, files in os.walk(os.path.join(REPO, 'l2p_tf')) if '__init__.py' in files}
  assert sorted(p for p in packages if f'"{p}"' not in text) == []
