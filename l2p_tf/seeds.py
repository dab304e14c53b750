r"""Runs one experiment under several seeds, one after the other, then prints their mean ± std.

  python -m l2p_tf.seeds --model_dir=ROOT --seeds=0,1,2 --gin_file=gin_configs/experiments/cifar100_l2p.gin \
      [any other l2p_tf.main flag, e.g. --tfds_manual_dir=../shared/data --gin_bindings='EPOCHS = 1']

Seed s runs `python -m l2p_tf.main --model_dir=ROOT/seed_<s> ... --gin_bindings='SEED = <s>'` in its own process
(the SEED macro seeds initialisation, data order and augmentation; its binding comes last, so it wins). A seed whose
results.json is complete is skipped, and an interrupted one resumes from its checkpoint, so rerunning the same
command finishes what is left. At the end, `python -m l2p_tf.summarize ROOT` prints every metric as mean ± sample
standard deviation over the seeds. Exit code: 0, or the first failing seed's (2 bad input, 75 preempted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Optional, Sequence


def parse_seeds(text: str) -> list[int]:
  """'0,1,2' -> [0, 1, 2]; raises ValueError quoting the text on anything else (empty, repeated, not an int)."""
  try:
    seeds = [int(s) for s in text.split(',') if s.strip()]
  except ValueError:
    raise ValueError(f'--seeds={text!r}: give comma-separated integers, e.g. --seeds=0,1,2') from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f'--seeds={text!r}: give at least one seed, each once.')
  return seeds


def is_complete(model_dir: str) -> bool:
  path = os.path.join(model_dir, 'results.json')
  try:
    with open(path) as f:
      return bool(json.load(f).get('complete'))
  except (OSError, ValueError):
    return False


def seed_command(root: str, seed: int, main_args: Sequence[str]) -> list[str]:
  """The l2p_tf.main command line of one seed."""
  return [sys.executable, '-m', 'l2p_tf.main', f'--model_dir={os.path.join(root, f"seed_{seed}")}', *main_args,
          f'--gin_bindings=SEED = {seed}']


def main(argv: Optional[Sequence[str]] = None, run=subprocess.call) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model_dir', required=True, help='ROOT: seed s runs in ROOT/seed_<s>/')
  parser.add_argument('--seeds', required=True, help='comma-separated seeds, e.g. 0,1,2')
  args, main_args = parser.parse_known_args(argv)
  try:
    seeds = parse_seeds(args.seeds)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for seed in seeds:
    model_dir = os.path.join(args.model_dir, f'seed_{seed}')
    if is_complete(model_dir):
      print(f'seed {seed}: {model_dir} is complete; skipped', flush=True)
      continue
    print(f'== seed {seed} -> {model_dir}', flush=True)
    code = run(seed_command(args.model_dir, seed, main_args))
    if code:
      print(f'error: seed {seed} ended with exit code {code}; rerun the same command to resume it', file=sys.stderr)
      return code
  from l2p_tf import summarize  # pylint: disable=g-import-not-at-top
  return summarize.main([f'{os.path.basename(os.path.normpath(args.model_dir))}={args.model_dir}'])


if __name__ == '__main__':
  sys.exit(main())
