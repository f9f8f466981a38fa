"""Test harnesses for staging: the GCS emulator, moto's S3 server (one shared server helper) and
the fault proxy. Never imported by product code; never shipped."""
