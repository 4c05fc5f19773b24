"""The Ray cluster over a SageMaker training job's hosts.

- `settings`: the ``ray.*`` hyperparameters;
- `auth`: Ray token authentication (on by default) and where every host gets the token;
- `network`: DNS with retries, this host's IP;
- `node`: ``ray start`` for one host (resources, object store);
- `placement`: instance groups -> RLlib resource settings; who ran where;
- `launcher`: the master and worker roles, and `ray_cluster` for scripts with their own driver.
"""

from sagemaker_ray_rl.cluster.launcher import Cluster, ray_cluster
from sagemaker_ray_rl.cluster.settings import ClusterSettings

__all__ = ["Cluster", "ClusterSettings", "ray_cluster"]
