"""The engine: everything that runs a method through a benchmark, and nothing about any one method.

  config.py        small run-setting classes bound in gin (Training, Evaluation, Cadence)
  experiment.py    the build recipe: gin -> benchmark, backbone, method, optimizer, run state (used by every tool)
  strategies.py    tf.distribute strategies: make one, the chief, host counts, stop agreement across workers
  precision.py     dtype policy and XLA switches per device type
  run_dir.py       the model_dir: lock, config comparison, move-aside, partial-file clean-up
  checkpointing.py checkpoint manager (never rewrites in place, falls back past damaged files), run state
  preemption.py    SIGTERM / SIGINT -> stop request; the errors a run ends with
  trainer.py       one training step of any method (orbit.StandardTrainer)
  evaluator.py     accuracy and prompt selections of any method on distributed evaluation sets
  reporting.py     progress lines, results files, TensorBoard summaries
  loop.py          the continual loop: for each task, train -> evaluate -> record
"""
