"""Analysis tools that treat a layer as the linear system it (nearly) is: Lipschitz bounds of convolutions,
effective receptive fields, re-parameterization, the exact input-dependent linear system of a ReLU network,
cost accounting, first-layer energy profiles, and the error of conv → recurrence distillation.

One module per tool (import them directly, e.g. `from tokenmix.analysis.lipschitz import network_lipschitz`);
`tokenmix analyze ...` (analysis/command.py) runs them from the command line."""
