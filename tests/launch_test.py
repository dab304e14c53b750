"""launch/tpu.sh and launch/gpu.sh: the exact commands of --dry_run, options, errors, idempotence; shellcheck.

The scripts run on a copy of launch/ inside a temporary repository (with its own gin files), with a PATH whose
`gcloud`, `ssh`, `git` and `python` are fakes that record every call: dry runs must call none of them, and the
non-dry runs below only ever reach the fake gcloud.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'launch')
GIN = ['gin_configs/experiments/cifar100_l2p.gin', 'gin_configs/local_tiny.gin']
BINDING = "L2P.pool_size = 20"

FAKE = textwrap.dedent('''\
    #!/usr/bin/env bash
    # Fake {name}: records the call; gcloud answers `describe` from FAKE_TPU_STATE and fails the verb in FAKE_FAIL.
    printf '%s\\n' "{name} $*" >> "$FAKE_LOG"
    if [[ "{name}" == gcloud ]]; then
      if [[ "$*" == *" describe "* ]]; then
        [[ -n "${{FAKE_TPU_STATE:-}}" ]] || exit 1
        echo "$FAKE_TPU_STATE"
        exit 0
      fi
      if [[ -n "${{FAKE_FAIL:-}}" && "$*" == *" $FAKE_FAIL "* ]]; then
        echo "fake gcloud: $FAKE_FAIL failed" >&2
        exit 3
      fi
      exit 0
    fi
    exit 97
    ''')


@pytest.fixture()
def repo(tmp_path):
  """A throw-away repository: the launch scripts, two gin files and fake commands first on PATH."""
  root = tmp_path / 'repo'
  shutil.copytree(LAUNCH, root / 'launch', ignore=shutil.ignore_patterns('BUILD'))
  for g in GIN:
    (root / g).parent.mkdir(parents=True, exist_ok=True)
    (root / g).write_text('# test gin file\n')
  bindir = tmp_path / 'bin'
  bindir.mkdir()
  for name in ('gcloud', 'ssh', 'git', 'python', 'python3', 'nvidia-smi'):
    (bindir / name).write_text(FAKE.format(name=name))
    (bindir / name).chmod(0o755)
  return root


def run(repo, script, *args, env=None, check=True):
  full_env = {k: v for k, v in os.environ.items()
              if k not in ('ZONE', 'TPU_NAME', 'ACCELERATOR_TYPE', 'MODEL_DIR', 'TFDS_DATA_DIR', 'GIN_FILES',
                           'GIN_BINDINGS', 'DRY_RUN', 'PROJECT', 'WORKERS', 'MODE', 'STRATEGY', 'GPUS')}
  full_env['PATH'] = f'{repo.parent / "bin"}:{full_env.get("PATH", "/usr/bin:/bin")}'
  full_env['FAKE_LOG'] = str(repo.parent / 'calls.log')
  full_env.update(env or {})
  proc = subprocess.run(['bash', str(repo / 'launch' / script), *args], capture_output=True, text=True,
                        env=full_env, cwd=str(repo.parent), timeout=60)
  if check:
    assert proc.returncode == 0, f'rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}'
  return proc


def calls(repo) -> list[str]:
  log = repo.parent / 'calls.log'
  return log.read_text().splitlines() if log.exists() else []


def commands(stdout: str) -> list[list[str]]:
  """The printed commands, each split as a shell would (comment lines dropped)."""
  return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith('#')]


def remote(cmd: list[str]) -> str:
  """The --command=... of a gcloud ssh command."""
  [value] = [a[len('--command='):] for a in cmd if a.startswith('--command=')]
  return value


def tpu_flags(**over):
  flags = {
      'tpu_name': 'l2p-test', 'zone': 'us-central1-a', 'accelerator_type': 'v4-32',
      'tfds_data_dir': 'gs://bkt/tfds', 'model_dir': 'gs://bkt/runs/c100_run1',
  }
  flags.update(over)
  out = [f'--{k}={v}' for k, v in flags.items()]
  return out + [f'--gin_file={g}' for g in GIN] + [f'--gin_bindings={BINDING}']


# ------------------------------------------------------------------------------------------------------------------
# launch/tpu.sh

def test_tpu_create_prints_the_gcloud_command_for_the_type_and_zone(repo):
  out = run(repo, 'tpu.sh', 'create', '--dry_run', '--tpu_name=l2p-test', '--zone=us-central1-a',
            '--accelerator_type=v4-32').stdout
  lines = out.splitlines()
  assert ('gcloud compute tpus tpu-vm create l2p-test --zone=us-central1-a --accelerator-type=v4-32 '
          '--version=tpu-ubuntu2204-base') in lines
  # The existence check is shown, not run.
  assert lines[0].startswith('# gcloud compute tpus tpu-vm describe l2p-test --zone=us-central1-a')
  assert calls(repo) == []


def test_tpu_create_options_from_environment_and_flags(repo):
  env = {'ZONE': 'europe-west4-a', 'ACCELERATOR_TYPE': 'v3-8', 'TPU_NAME': 'from-env', 'PROJECT': 'my-proj'}
  out = run(repo, 'tpu.sh', 'create', '--dry_run', '--spot=1', '--version=tpu-vm-tf-2.16.1-pjrt',
            '--create_flags=--network=net1 --subnetwork=sub1', env=env).stdout
  assert out.splitlines()[-1] == (
      'gcloud compute tpus tpu-vm create from-env --zone=europe-west4-a --project=my-proj --accelerator-type=v3-8 '
      '--version=tpu-vm-tf-2.16.1-pjrt --spot --network=net1 --subnetwork=sub1')
  # A flag beats the environment.
  out = run(repo, 'tpu.sh', 'create', '--dry_run', '--zone', 'us-east1-d', env=env).stdout
  assert '--zone=us-east1-d ' in out.splitlines()[-1]


def test_tpu_up_runs_every_step_in_order_on_the_right_workers(repo):
  out = run(repo, 'tpu.sh', 'up', '--dry_run', *tpu_flags(), '--', '--alsologtostderr').stdout
  cmds = commands(out)
  assert [c[:5] for c in cmds] == [
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create'],
      ['git', '-C', str(repo), 'archive', '--format=tar.gz'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh'],
  ]
  create, archive, scp, setup, prepare, start = cmds
  assert create[5:] == ['l2p-test', '--zone=us-central1-a', '--accelerator-type=v4-32',
                        '--version=tpu-ubuntu2204-base']
  assert archive[-1] == 'HEAD'
  assert scp[5:] == [archive[-2], 'l2p-test:l2p-tf-src.tar.gz', '--zone=us-central1-a', '--worker=all']
  # Setup: on every worker, the pinned environment (./setup.sh, Python 3.11) plus TensorFlow's TPU build.
  assert setup[5:8] == ['l2p-test', '--zone=us-central1-a', '--worker=all']
  assert 'L2P_SKIP_APT=1 PYTHON=python3.11 ./setup.sh' in remote(setup)
  assert 'pip install -q tensorflow-tpu==2.20.0' in remote(setup)
  # Data: once, on worker 0, into the shared gs:// directory: the project's command, with the run's gin files (so it
  # prepares exactly the datasets the experiment reads; no `tfds build`, which needs Apache Beam).
  assert prepare[5:8] == ['l2p-test', '--zone=us-central1-a', '--worker=0']
  assert shlex.split(remote(prepare)) == [
      'cd', 'l2p-tf', '&&', '.venv/bin/python', '-m', 'l2p_tf.prepare_data', '--tfds_data_dir=gs://bkt/tfds',
      '--gin_file=gin_configs/experiments/cifar100_l2p.gin', '--gin_file=gin_configs/local_tiny.gin',
      f'--gin_bindings={BINDING}']
  # Run: on every worker, --strategy=tpu, every gin file in order, the binding as one argument.
  assert start[5:8] == ['l2p-test', '--zone=us-central1-a', '--worker=all']
  words = shlex.split(remote(start))
  main = words[words.index('nohup') + 1:words.index('>')]
  assert main == [
      'env', 'TFDS_DATA_DIR=gs://bkt/tfds', '.venv/bin/python', '-m', 'l2p_tf.main',
      '--model_dir=gs://bkt/runs/c100_run1',
      '--gin_file=gin_configs/experiments/cifar100_l2p.gin', '--gin_file=gin_configs/local_tiny.gin',
      f'--gin_bindings={BINDING}', '--strategy=tpu', '--tpu=local', '--tfds_data_dir=gs://bkt/tfds',
      '--mode=train', '--alsologtostderr']
  assert words[words.index('>') + 1] == 'logs/c100_run1.log'
  # Idempotent: a worker that still runs this run is left alone.
  assert 'kill -0 "$(cat logs/c100_run1.pid)"' in remote(start)
  assert calls(repo) == []


def test_tpu_prepare_data_options(repo):
  out = run(repo, 'tpu.sh', 'prepare_data', '--dry_run', '--tfds_data_dir=gs://bkt/tfds',
            '--gin_file=gin_configs/experiments/five_datasets_l2p.gin', '--datasets=svhn_cropped',
            '--tfds_manual_dir=gs://bkt/manual').stdout
  [cmd] = commands(out)
  assert shlex.split(remote(cmd))[3:] == [
      '.venv/bin/python', '-m', 'l2p_tf.prepare_data', '--tfds_data_dir=gs://bkt/tfds',
      '--gin_file=gin_configs/experiments/five_datasets_l2p.gin', '--datasets=svhn_cropped',
      '--tfds_manual_dir=gs://bkt/manual']
  out = run(repo, 'tpu.sh', 'prepare_data', '--dry_run', '--tfds_data_dir=gs://bkt/tfds', '--prepare_on=local',
            '--datasets=cifar100').stdout
  assert commands(out) == [
      ['cd', str(repo)],
      [f'{repo}/.venv/bin/python', '-m', 'l2p_tf.prepare_data', '--tfds_data_dir=gs://bkt/tfds',
       '--datasets=cifar100']]
  p = run(repo, 'tpu.sh', 'prepare_data', '--dry_run', '--tfds_data_dir=gs://bkt/tfds', check=False)
  assert p.returncode != 0 and 'prepare_data needs --gin_file (the experiment) or --datasets' in p.stderr


def test_tpu_logs_stop_delete(repo):
  base = ['--dry_run', '--tpu_name=l2p-test', '--zone=us-central1-a', '--model_dir=gs://bkt/runs/c100_run1/']
  [logs] = commands(run(repo, 'tpu.sh', 'logs', *base).stdout)
  assert logs[5:] == ['l2p-test', '--zone=us-central1-a', '--worker=0',
                      '--command=tail -n 200 -F l2p-tf/logs/c100_run1.log']
  [stop] = commands(run(repo, 'tpu.sh', 'stop', *base).stdout)
  assert '--worker=all' in stop and 'kill "$(cat l2p-tf/logs/c100_run1.pid)"' in remote(stop)
  out = run(repo, 'tpu.sh', 'delete', *base).stdout
  assert out.splitlines() == ['gcloud compute tpus tpu-vm delete l2p-test --zone=us-central1-a --quiet']
  assert calls(repo) == []


@pytest.mark.parametrize('args, message', [
    (['run', '--tfds_data_dir=gs://b/t', '--gin_file=' + GIN[0]], '--model_dir (or environment MODEL_DIR) is required'),
    (['run', '--model_dir=/local/dir', '--tfds_data_dir=gs://b/t', '--gin_file=' + GIN[0]],
     '--model_dir must be a gs:// path'),
    (['up', '--model_dir=gs://b/r', '--tfds_data_dir=gs://b/t'], 'at least one --gin_file is required'),
    (['up', '--model_dir=gs://b/r', '--tfds_data_dir=gs://b/t', '--gin_file=gin_configs/nope.gin'],
     'gin file not found in the repository: gin_configs/nope.gin'),
    (['create', '--zonee=x'], 'unknown flag --zonee'),
    ([], 'expected exactly one COMMAND'),
    (['launch'], "unknown COMMAND 'launch'"),
    (['create', '--spot=yes'], "--spot must be 0 or 1, got 'yes'"),
])
def test_tpu_errors_stop_before_any_command(repo, args, message):
  proc = run(repo, 'tpu.sh', *args, '--dry_run', check=False)
  assert proc.returncode == 1
  assert message in proc.stderr
  assert 'gcloud compute' not in proc.stdout  # `up` checks its inputs before creating anything.
  assert calls(repo) == []


def test_tpu_create_and_delete_are_idempotent(repo):
  # The VM exists: create is skipped, delete deletes.
  proc = run(repo, 'tpu.sh', 'create', '--tpu_name=t1', '--zone=z1', env={'FAKE_TPU_STATE': 'READY'})
  assert 'exists in z1 (state: READY)' in proc.stderr and 'skipping create' in proc.stderr
  assert [c.split()[:5] for c in calls(repo)] == [['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe']]
  run(repo, 'tpu.sh', 'delete', '--tpu_name=t1', '--zone=z1', env={'FAKE_TPU_STATE': 'READY'})
  assert calls(repo)[-1] == 'gcloud compute tpus tpu-vm delete t1 --zone=z1 --quiet'
  # It does not: create creates, delete is skipped.
  run(repo, 'tpu.sh', 'create', '--tpu_name=t1', '--zone=z1', '--accelerator_type=v3-8')
  assert calls(repo)[-1] == 'gcloud compute tpus tpu-vm create t1 --zone=z1 --accelerator-type=v3-8 ' \
                            '--version=tpu-ubuntu2204-base'
  n = len(calls(repo))
  proc = run(repo, 'tpu.sh', 'delete', '--tpu_name=t1', '--zone=z1')
  assert 'does not exist in z1; skipping delete' in proc.stderr
  assert len(calls(repo)) == n + 1  # only the describe


def test_tpu_stops_at_the_first_failing_command(repo):
  proc = run(repo, 'tpu.sh', 'up', *tpu_flags(), env={'FAKE_FAIL': 'create'}, check=False)
  assert proc.returncode == 1
  assert ('ERROR: command failed (exit 3): gcloud compute tpus tpu-vm create l2p-test --zone=us-central1-a '
          '--accelerator-type=v4-32') in proc.stderr
  assert not any(' scp ' in c or ' ssh ' in c for c in calls(repo))


def test_help_lists_every_option_with_its_default():
  for script, expected in (
      ('tpu.sh', ['--zone=VALUE  (env ZONE; default: us-central2-b;',
                  '--accelerator_type=VALUE  (env ACCELERATOR_TYPE; default: v4-8;',
                  '--version=VALUE  (env TPU_VERSION; default: tpu-ubuntu2204-base;',
                  '--gin_file=VALUE  (repeatable; env GIN_FILES', '--dry_run', 'Commands']),
      ('gpu.sh', ['--model_dir=VALUE  (env MODEL_DIR;', '--gpus=VALUE  (env GPUS;',
                  '--workers=VALUE  (env WORKERS;', '--task_index=VALUE', '--dry_run', 'TF_CONFIG'])):
    proc = subprocess.run(['bash', os.path.join(LAUNCH, script), '--help'], capture_output=True, text=True,
                          timeout=60, check=True)
    for text in expected:
      assert text in proc.stdout, (script, text)


# ------------------------------------------------------------------------------------------------------------------
# launch/gpu.sh

def test_gpu_one_host_mirrored(repo):
  out = run(repo, 'gpu.sh', '--dry_run', '--model_dir=/tmp/runs/c100', f'--gin_file={GIN[0]}',
            f'--gin_file={GIN[1]}', f'--gin_bindings={BINDING}', '--gpus=0,1', '--tfds_data_dir=/data/tfds').stdout
  assert commands(out) == [
      ['cd', str(repo)],
      ['env', 'CUDA_VISIBLE_DEVICES=0,1', 'TFDS_DATA_DIR=/data/tfds', f'{repo}/.venv/bin/python', '-m', 'l2p_tf.main',
       '--model_dir=/tmp/runs/c100', f'--gin_file={GIN[0]}', f'--gin_file={GIN[1]}', f'--gin_bindings={BINDING}',
       '--strategy=mirrored', '--mode=train', '--tfds_data_dir=/data/tfds']]
  out = run(repo, 'gpu.sh', '--dry_run', '--model_dir=/tmp/r', f'--gin_file={GIN[0]}', '--strategy=one_device',
            '--mode=eval', env={'L2P_PYTHON': '/opt/py/bin/python'}).stdout
  assert commands(out)[1] == ['/opt/py/bin/python', '-m', 'l2p_tf.main', '--model_dir=/tmp/r',
                              f'--gin_file={GIN[0]}', '--strategy=one_device', '--mode=eval']
  assert calls(repo) == []


def test_gpu_multi_worker_sets_tf_config(repo):
  out = run(repo, 'gpu.sh', '--dry_run', '--model_dir=gs://bkt/runs/mw', f'--gin_file={GIN[0]}',
            '--workers=host1:2222,host2:2222', '--task_index=1').stdout
  _, cmd = commands(out)
  assert cmd[0] == 'env' and cmd[1].startswith('TF_CONFIG=')
  assert json.loads(cmd[1][len('TF_CONFIG='):]) == {
      'cluster': {'worker': ['host1:2222', 'host2:2222']}, 'task': {'type': 'worker', 'index': 1}}
  assert cmd[3:] == ['-m', 'l2p_tf.main', '--model_dir=gs://bkt/runs/mw', f'--gin_file={GIN[0]}',
                     '--strategy=multi_worker_mirrored', '--mode=train']


def test_gpu_launch_all_starts_every_worker_over_ssh(repo):
  out = run(repo, 'gpu.sh', '--dry_run', '--model_dir=gs://bkt/runs/mw', f'--gin_file={GIN[0]}',
            f'--gin_bindings={BINDING}', '--workers=host1:2222,host2:2222', '--launch_all=1', '--ssh=ssh -p 22',
            '--', '--alsologtostderr').stdout
  cmds = commands(out)
  assert [c[:4] for c in cmds] == [['ssh', '-p', '22', 'host1'], ['ssh', '-p', '22', 'host2']]
  for i, c in enumerate(cmds):
    assert shlex.split(c[4]) == [
        'cd', str(repo), '&&', 'launch/gpu.sh', '--model_dir=gs://bkt/runs/mw', f'--gin_file={GIN[0]}',
        f'--gin_bindings={BINDING}', '--strategy=multi_worker_mirrored', '--workers=host1:2222,host2:2222',
        '--mode=train', f'--task_index={i}', '--', '--alsologtostderr']
  assert calls(repo) == []


@pytest.mark.parametrize('args, message', [
    (['--gin_file=' + GIN[0]], '--model_dir (or environment MODEL_DIR) is required'),
    (['--model_dir=/r'], 'at least one --gin_file is required'),
    (['--model_dir=/r', '--gin_file=' + GIN[0], '--workers=h1:1,h2:1'], '--task_index must be'),
    (['--model_dir=/r', '--gin_file=' + GIN[0], '--workers=h1,h2', '--task_index=0'], 'must be host:port'),
    (['--model_dir=/r', '--gin_file=' + GIN[0], '--strategy=tpu'], '--strategy must be one_device, mirrored'),
    (['--model_dir=/r', '--gin_file=' + GIN[0], '--gpus=a'], '--gpus must be'),
])
def test_gpu_errors(repo, args, message):
  proc = run(repo, 'gpu.sh', '--dry_run', *args, check=False)
  assert proc.returncode == 1 and message in proc.stderr, proc.stderr
  assert proc.stdout == ''


# ------------------------------------------------------------------------------------------------------------------
# shellcheck

def test_shellcheck_passes_on_every_script():
  shellcheck = shutil.which('shellcheck')
  if not shellcheck:
    pytest.skip('shellcheck is not installed (apt-get install shellcheck; ./setup.sh installs it)')
  scripts = sorted(os.path.join(LAUNCH, f) for f in os.listdir(LAUNCH) if f.endswith('.sh'))
  tools = sorted(os.path.join('tools', f) for f in os.listdir(os.path.join(REPO, 'tools')) if f.endswith('.sh'))
  for extra in ('tools/python/venv_python.sh', 'setup.sh', *tools):
    if os.path.exists(os.path.join(REPO, extra)):
      scripts.append(os.path.join(REPO, extra))
  assert len(scripts) >= 3
  proc = subprocess.run([shellcheck, '--external-sources', *scripts], capture_output=True, text=True, timeout=120,
                        cwd=REPO)
  assert proc.returncode == 0, proc.stdout + proc.stderr
