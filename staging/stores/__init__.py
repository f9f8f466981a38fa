"""Where bytes come from: the Source protocol and registry, the local directory, gs:// and s3://,
their checksums, and one object's verified download. Imports only staging.paths below it."""
