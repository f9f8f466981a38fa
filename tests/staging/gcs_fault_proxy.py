"""The tests' fault proxy, for the GCS emulator and the S3 server alike: it lives in
staging/testing/fault_proxy.py because ``invoke bench staging`` runs it too (with a latency option); the tests
keep importing it from here. GCS downloads are ``media_requests``, S3 ones ``object_gets``; a
``Rule`` with ``method="GET"`` hits only S3 object GETs of the key it names."""

from staging.testing.fault_proxy import FaultProxy, Record, Rule

__all__ = ["FaultProxy", "Record", "Rule"]
