"""Experiment -> mmengine Config, pure: the config builder, its override keys, the experiment's
hyperparameters, the preflight checks both paths share, the local profile, the pretrained weights a
config loads, TensorBoard's config. Imports the engine (its types register as the config names them)."""
