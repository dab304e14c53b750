"""Console-script entry points of the installed package (pyproject.toml `[project.scripts]`).

Each runs the same code as `python -m l2p_tf.<module>`: l2p-train (l2p_tf.main), l2p-pretrain, l2p-export,
l2p-predict, l2p-summarize, l2p-inspect-npz (l2p_tf.checkpoints.inspect_npz) and l2p-prepare-data. Modules are
imported when the command runs, so importing this one is cheap and defines no flags.
"""

from __future__ import annotations

import sys

from absl import app

import l2p_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)


def train() -> None:
  from l2p_tf import main as main_lib  # pylint: disable=g-import-not-at-top  (defines the flags)
  main_lib.run()


def pretrain() -> None:
  from l2p_tf import pretrain as pretrain_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()
  pretrain_lib._define_flags()  # pylint: disable=protected-access  (its __main__ block does the same)
  app.run(pretrain_lib.main)


def export() -> None:
  from l2p_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()
  export_lib.define_flags()
  app.run(export_lib.main)


def predict() -> None:
  from l2p_tf import predict as predict_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()
  predict_lib.define_flags()
  app.run(predict_lib.main)


def summarize() -> None:
  from l2p_tf import summarize as summarize_lib  # pylint: disable=g-import-not-at-top
  sys.exit(summarize_lib.main(sys.argv[1:]))


def seeds() -> None:
  from l2p_tf import seeds as seeds_lib  # pylint: disable=g-import-not-at-top
  sys.exit(seeds_lib.main(sys.argv[1:]))


def inspect_npz() -> None:
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()
  from l2p_tf.checkpoints import inspect_npz as inspect_lib  # pylint: disable=g-import-not-at-top  (imports TF)
  app.run(inspect_lib.main)


def prepare_data() -> None:
  from l2p_tf import prepare_data as prepare_lib  # pylint: disable=g-import-not-at-top
  prepare_lib.run()
