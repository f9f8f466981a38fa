"""A small TCP proxy (on 127.0.0.1 by default) between google-cloud-storage and the emulator (tests, bench).

It records every request line (and Range header) and injects faults into media downloads:
``cut`` closes the connection after ``at`` body bytes, ``flip`` inverts the body byte at ``at``,
``slow`` sleeps ``delay`` seconds per 16 kB. ``latency_s`` delays every request before it is
forwarded (a fixed first-byte wait, like a same-region GCS request: about 20 ms) and
``bandwidth`` caps each response's bytes/s, so parallel downloads can show what they buy.
The emulator answers HTTP/1.0 (one request per connection), so one connection is one request.
All loops are bounded by socket timeouts.

    python -m staging.testing.fault_proxy --upstream 8123 --latency-ms 20   # prints its URL, runs until killed
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CHUNK = 16 * 1024
TIMEOUT_S = 30.0


@dataclass
class Rule:
    kind: str  # "cut" | "flip" | "slow"
    match: str = "alt=media"  # a GCS media download; for S3 name the key and method="GET"
    method: str = ""  # only requests with this method ("" = any)
    times: int = 1  # how many matching requests it hits (-1: all)
    at: int = 1000
    delay: float = 0.05


@dataclass
class Record:
    line: str
    range: str = ""
    fault: str = ""
    client: str = ""  # the caller's IP address


@dataclass
class FaultProxy:
    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    latency_s: float = 0.0  # added before every request is forwarded
    bandwidth: float = 0.0  # bytes/s per response; 0 = no cap
    host: str = HOST  # where it listens (e.g. the host side of a test network's bridge)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_server((self.host, 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def media_requests(self, name_part: str = "") -> list[Record]:
        """GCS object downloads (``alt=media``) whose request line holds ``name_part``."""
        with self._lock:
            return [r for r in self.records if "alt=media" in r.line and name_part in r.line]

    def object_gets(self, name_part: str = "") -> list[Record]:
        """S3 object GETs (not listings) whose path holds ``name_part``."""
        with self._lock:
            return [r for r in self.records if r.line.startswith("GET ")
                    and "list-type=" not in r.line and "?versions" not in r.line
                    and name_part in r.line.split()[1].split("?")[0]]  # fmt: skip

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, (address, *_) = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, address), daemon=True).start()

    def _pick(self, line: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.match in line and line.startswith(rule.method) and rule.times != 0:
                    rule.times -= 1 if rule.times > 0 else 0
                    return rule
        return None

    def _handle(self, client: socket.socket, address: str = "") -> None:
        client.settimeout(TIMEOUT_S)
        try:
            head, body = _read_head(client)
            if not head:
                return
            lines = head.decode("latin-1").split("\r\n")
            rng = next(
                (h.split(":", 1)[1].strip() for h in lines if h.lower().startswith("range:")), ""
            )
            rule = self._pick(lines[0])
            with self._lock:
                self.records.append(Record(lines[0], rng, rule.kind if rule else "", address))
            length = next(
                (int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:")),
                0,
            )
            body = bytearray(body)  # appended in place: a 40 MB upload is not copied 2500 times
            while len(body) < length:
                more = client.recv(CHUNK)
                if not more:
                    break
                body += more
            if self.latency_s:
                time.sleep(self.latency_s)
            with socket.create_connection((HOST, self.upstream_port), timeout=TIMEOUT_S) as up:
                up.sendall(head + body)
                _relay(up, client, rule, bandwidth=self.bandwidth)
        except OSError:
            pass
        finally:
            client.close()


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 1 << 20:
        more = sock.recv(CHUNK)
        if not more:
            return b"", b""
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _relay(
    up: socket.socket, client: socket.socket, rule: Rule | None, *, bandwidth: float = 0.0
) -> None:
    buf = b""
    body_seen = -1  # -1 until the response headers are complete
    t0 = time.monotonic()
    while True:
        data = up.recv(CHUNK)
        if not data:
            return
        if body_seen < 0:
            buf += data
            if b"\r\n\r\n" not in buf:
                continue
            head, _, data = buf.partition(b"\r\n\r\n")
            client.sendall(head + b"\r\n\r\n")
            body_seen = 0
        data = _apply(rule, data, body_seen)
        if rule and rule.kind == "cut" and body_seen + len(data) >= rule.at:
            client.sendall(data[: max(0, rule.at - body_seen)])
            client.shutdown(socket.SHUT_RDWR)
            return
        client.sendall(data)
        body_seen += len(data)
        if rule and rule.kind == "slow":
            time.sleep(rule.delay)
        if bandwidth:  # pace the body: body_seen bytes may not arrive before body_seen/bandwidth
            time.sleep(max(0.0, t0 + body_seen / bandwidth - time.monotonic()))


def _apply(rule: Rule | None, data: bytes, offset: int) -> bytes:
    if rule and rule.kind == "flip" and offset <= rule.at < offset + len(data):
        i = rule.at - offset
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    return data


def main(argv: list[str] | None = None) -> None:
    """Run a proxy in its own process (so its CPU does not compete with the measured client)."""
    p = argparse.ArgumentParser(prog="python -m staging.testing.fault_proxy", description=__doc__)
    p.add_argument("--upstream", type=int, required=True, help="emulator port on 127.0.0.1")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay per request")
    p.add_argument("--bandwidth-mbps", type=float, default=0.0, help="MB/s per response cap")
    args = p.parse_args(argv)
    proxy = FaultProxy(args.upstream, latency_s=args.latency_ms / 1000,
                       bandwidth=args.bandwidth_mbps * 1e6)  # fmt: skip
    print(proxy.url, flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or exits)
    finally:
        proxy.close()


if __name__ == "__main__":
    main()
