"""The training process: train (Runner + DetCoreHook), where the data is, staged weights, the work
directory and its readers, metrics.jsonl, local rank supervision, the built-in shapes set."""
