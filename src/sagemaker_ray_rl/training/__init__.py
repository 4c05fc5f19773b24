"""Online training: hyperparameters -> RLlib config -> Tune experiment -> checkpoint -> export.

- `hyperparameters`: the built-in experiment's keys -> a checked `ExperimentSpec` (`legacy`: old-stack
  names translated); `algorithm_config`: the spec -> an RLlib `AlgorithmConfig`, before Ray starts;
- `api`: `build_experiment` / `build_config` / `train_and_export` for user entry points;
- `builtin`: the built-in experiment's job (prepare before Ray starts, train on the cluster, export);
- `experiment`: one Tune run with checkpoints and resume;
- `graceful_stop`: how a training process stops: SIGTERM -> checkpoint, then stop Tune; SIGTERM passed
  on to a user entry point; a user entry point's Tune run that can never be placed stopped;
- `reporting`: metric and progress lines; `evaluation`: greedy episodes of the exported policy;
  `outputs`: the trial table, curves and TensorBoard files;
- `user_script`: a user entry point run with the training toolkit's own functions; `image_pins`: its
  ``requirements.txt`` checked against the image's pinned packages before pip runs.
"""
