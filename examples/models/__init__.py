"""Custom RLModules of the examples, by the name a ``custom_model`` hyperparameter selects."""
