"""What a person sees of a local run: the console and its progress bars, the predictions preview,
the curves picture. Imports nothing of the trial but itself."""
