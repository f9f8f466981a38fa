"""The tests' fault proxy: it lives in staging/proxy.py because ``invoke bench staging`` runs it
too (with a latency option); the tests keep importing it from here."""

from staging.proxy import FaultProxy, Record, Rule

__all__ = ["FaultProxy", "Record", "Rule"]
