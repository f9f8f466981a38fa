"""Pure parts of the multi-node support: the test network's plan, gloo's interface choice, the
collective timeout (the harness itself is test_trial_multinode.py, root only)."""

from __future__ import annotations

import ipaddress

import pytest

from errors import ConfigError
from trial.engine.distributed import (
    GLOO,
    apply_distributed,
    dist_timeout,
    route_interface,
    use_routed_interface,
)
from trial.testing.nodes import SUBNETS, plan_network


def test_plan_network_stays_in_the_benchmarking_range_with_short_unique_names():
    net = plan_network(2, prefix="mnab12cd", subnet="198.19.7")
    bench = ipaddress.ip_network("198.18.0.0/15")
    addresses = [net.host_address, *(n.address for n in net.nodes)]
    assert addresses == ["198.19.7.1", "198.19.7.2", "198.19.7.3"]
    assert all(ipaddress.ip_address(a) in bench for a in addresses)
    links = [net.bridge, *(n.veth_host for n in net.nodes), *(n.veth_node for n in net.nodes)]
    assert len(set(links)) == 5 and all(len(name) <= 15 for name in links)
    assert all(ipaddress.ip_network(f"{s}.0/24").subnet_of(bench) for s in SUBNETS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(prefix="mn1", subnet="10.0.0"), "198.18.0.0/15"),
        (dict(prefix="much-too-long", subnet="198.18.1"), "longer than 8"),
    ],
)
def test_plan_network_refuses_other_addresses_and_long_names(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_network(2, **kwargs)


def test_gloo_interface_is_the_route_to_the_chief_only_across_nodes(monkeypatch):
    assert route_interface("127.0.0.1") == "lo"
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # one node: gloo's own choice stands
    assert use_routed_interface() is None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # two nodes: the interface towards the chief
    assert use_routed_interface() == "lo"
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")  # a user's choice wins
    assert use_routed_interface() == "eth7"


def test_dist_timeout_is_checked_and_reaches_mmengine_dist_cfg():
    assert dist_timeout({}) is None
    assert dist_timeout({"dist_timeout": 20}) == 20
    with pytest.raises(ConfigError, match=r"hyperparameters\.dist_timeout"):
        dist_timeout({"dist_timeout": "20s"})
    cfg = {"env_cfg": {"cudnn_benchmark": False}}
    apply_distributed(cfg, dist_backend=GLOO, timeout_s=20)
    assert cfg["env_cfg"] == {
        "cudnn_benchmark": False,
        "dist_cfg": {"backend": GLOO, "timeout": 20},
    }
