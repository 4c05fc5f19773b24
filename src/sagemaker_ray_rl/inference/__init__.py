"""A trained policy restored in-process, without Ray or HTTP: `policy.Policy` (the checkpoint's
RLModules) over `pipelines` (its env-to-module and module-to-env connector pipelines, frozen for
serving).

This package's ``__init__`` imports nothing heavy, so the serving codecs can name the outputs
without importing RLlib or torch.
"""

#: Outputs a request may ask for besides ``action`` (`policy.Policy.compute`).
OPTIONAL_OUTPUTS = ("action_logp", "action_prob", "action_dist_inputs", "vf_preds")
