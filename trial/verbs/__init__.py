"""The user's verbs, as tasks.py calls them: invoke train (local, --cluster), export, eval,
predict, and what they share (the export artifact, option parsing, all-or-nothing outputs)."""
