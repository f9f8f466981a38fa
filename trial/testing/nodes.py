"""Separate "nodes" on one machine, for tests and ``invoke bench trial``: network namespaces on a
private bridge (root only; iproute2's ``ip``).

    with node_network(2) as net:        # 198.18.X.1 on the host side, nodes at .2 and .3
        proc = net.nodes[0].popen(["python3", "-c", "..."])

Each node is a network namespace with its own loopback and one veth whose peer sits on a bridge
in the host's namespace; the host side of the bridge has ``net.host_address``, where services the
nodes need (a GCS emulator, a master stand-in) listen. Addresses come only from the benchmarking
range 198.18.0.0/15 (RFC 2544), one unused /24 per network; the namespaces get no default route,
so nothing they send can leave them but to each other and the bridge. Names carry a per-run
prefix; ``node_network`` kills every process left in its namespaces and deletes them, the veths
and the bridge, whatever happened inside the block.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

SUBNETS = tuple(f"198.{a}.{b}" for a in (18, 19) for b in range(1, 255))  # 198.18.0.0/15
IP = "ip"
IP_TIMEOUT_S = 10.0


class NodesUnavailable(RuntimeError):
    """This machine cannot make namespaces (not root, no iproute2): the caller skips with this."""


@dataclass(frozen=True)
class Node:
    """One node: a network namespace with one address."""

    index: int
    namespace: str
    address: str
    veth_host: str  # on the bridge, in the host's namespace
    veth_node: str  # inside the namespace

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this node's network namespace."""
        return [IP, "netns", "exec", self.namespace, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` in this node, in a new session (so its process group can be killed)."""
        return subprocess.Popen(self.command(argv), start_new_session=True, **kwargs)

    def pids(self) -> list[int]:
        """Every process in this node's network namespace."""
        out = _ip("netns", "pids", self.namespace, check=False).stdout
        return [int(pid) for pid in out.split()]

    def kill(self) -> int:
        """SIGKILL every process in the node (a node failure); returns how many were killed."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def set_link(self, *, up: bool) -> None:
        """Connect or cut the node's only link (the host end of its veth)."""
        _ip("link", "set", self.veth_host, "up" if up else "down")


@dataclass(frozen=True)
class Network:
    """A bridge with its host address and the nodes on it."""

    prefix: str
    bridge: str
    host_address: str
    nodes: tuple[Node, ...]


def plan_network(count: int, *, prefix: str, subnet: str) -> Network:
    """Names and addresses of a ``count``-node network (pure). ``subnet``: ``198.18.X``."""
    if not 1 <= count <= 200:
        raise ValueError(f"count must be 1..200, got {count}")
    if subnet not in SUBNETS:
        raise ValueError(f"subnet {subnet!r} is not a /24 of 198.18.0.0/15")
    if len(prefix) > 8:  # interface names stop at 15 characters: prefix + "h" + index
        raise ValueError(f"prefix {prefix!r} is longer than 8 characters")
    nodes = tuple(
        Node(i, f"{prefix}-node{i}", f"{subnet}.{i + 2}", f"{prefix}h{i}", f"{prefix}n{i}")
        for i in range(count)
    )
    return Network(prefix, f"{prefix}br", f"{subnet}.1", nodes)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs and a bridge)"
    for tool in (IP, "unshare"):
        if not shutil.which(tool):
            return f"needs `{tool}` (iproute2 / util-linux; ci/install-system.sh installs them)"
    return None


@contextlib.contextmanager
def node_network(count: int) -> Iterator[Network]:
    """Create a ``count``-node network; always tear it down (processes, namespaces, links)."""
    reason = unavailable_reason()
    if reason:
        raise NodesUnavailable(reason)
    net = plan_network(count, prefix="mn" + uuid.uuid4().hex[:6], subnet=_free_subnet())
    try:
        _create(net)
        yield net
    finally:
        _destroy(net)


def leftovers(net: Network) -> list[str]:
    """Namespaces or links of ``net`` that still exist (empty after teardown)."""
    names = set(_ip("netns", "list", check=False).stdout.split())
    links = _ip("-o", "link", "show", check=False).stdout
    left = [n.namespace for n in net.nodes if n.namespace in names]
    return left + [
        link for link in _link_names(net) if f" {link}:" in links or f" {link}@" in links
    ]


def _create(net: Network) -> None:
    _ip("link", "add", net.bridge, "type", "bridge")
    _ip("addr", "add", f"{net.host_address}/24", "dev", net.bridge)
    _ip("link", "set", net.bridge, "up")
    for node in net.nodes:
        _ip("netns", "add", node.namespace)
        _ip("link", "add", node.veth_host, "type", "veth", "peer", "name", node.veth_node)
        _ip("link", "set", node.veth_node, "netns", node.namespace)
        _ip("link", "set", node.veth_host, "master", net.bridge)
        _ip("link", "set", node.veth_host, "up")
        inside = ("-n", node.namespace)
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{node.address}/24", "dev", node.veth_node)
        _ip(*inside, "link", "set", node.veth_node, "up")


def _destroy(net: Network) -> None:
    for node in net.nodes:
        node.kill()
    for node in net.nodes:
        _ip("netns", "delete", node.namespace, check=False)  # takes its veth pair along
    for link in _link_names(net):
        _ip("link", "delete", link, check=False)


def _link_names(net: Network) -> list[str]:
    return [net.bridge, *(n.veth_host for n in net.nodes)]


def _free_subnet() -> str:
    used = _ip("-4", "-o", "addr", "show", check=False).stdout
    free = [s for s in SUBNETS if f" {s}." not in used]
    if not free:
        raise NodesUnavailable("every /24 of 198.18.0.0/15 is in use on this machine")
    return random.choice(free)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [IP, *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc
