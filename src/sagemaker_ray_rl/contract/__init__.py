"""The SageMaker container contract, and nothing above it: where ``/opt/ml`` is and what is in it
(`environment`: hyperparameters, resource config, channels, ``SM_*`` variables, serving settings),
the names of those variables and files (`names`), hyperparameter value checks (`validation`),
errors (`errors`), the failure file (`failure`), metric lines (`metrics`) and the config files a
``docker run`` outside SageMaker lacks (`standalone`).

Imports no Ray, RLlib or torch (checked by import-linter), so every other layer may use it.
"""
