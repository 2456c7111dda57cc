"""StatsD push backend: every recorded event as a StatsD line, over UDP.

Lines, for the default prefix ``tamma_`` and ``tags=True`` (DogStatsD tags)::

    tamma_ai_requests:1|c|#provider:openai,model:gpt-4o,request_type:chat,outcome:success
    tamma_ai_request_duration_seconds:2500|ms|#provider:openai,...   (2.5 s as milliseconds)
    tamma_custom_sizes:3|h|#...                                       (a histogram not in seconds)
    tamma_active_connections:+1|g|#connection_type:websocket,provider:github
    tamma_backlog_size:42|g|#platform:github                          (gauge set)

Counters drop ``_total``: in StatsD the type travels in the line and every server adds
its own suffix or type (statsd_exporter, Datadog, collectd's ``*_derive_total``), so
``_total`` would be said twice. With ``tags=False`` (plain StatsD, Graphite, collectd)
label values follow the name in the catalogue's label order, Graphite style:
``tamma_ai_requests.openai.gpt-4o.chat.success``; characters other than letters,
digits, ``_`` and ``-`` in a value become ``_`` (a ``.`` would add a Graphite level).

The socket is UDP, non-blocking and connected: a send never waits, and a connected
socket learns from the ICMP "port unreachable" that nobody listens, so a dead server
is reported (at once on the same host, on a later batch for a remote one) instead of
silently swallowing every packet.
"""

from __future__ import annotations

import errno
import math
import os
import re
import socket
from collections.abc import Iterable, Sequence

from . import Backend, Sample

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def _number(value: float) -> str:
    """Shortest exact text: ``3`` rather than ``3.0``, ``0.021`` rather than ``2.1e-02``."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class StatsdBackend(Backend):
    """Send events to a StatsD server (statsd, statsd_exporter, Datadog agent, collectd).

    ``max_packet`` bounds each datagram (1432 fits an Ethernet MTU with IP and UDP
    headers); several lines share a datagram up to it. ``tags`` chooses DogStatsD tags
    (``|#key:value``) or label values in the name (plain StatsD).
    """

    name = "statsd"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8125,
        prefix: str = "",
        max_packet: int = 1432,
        tags: bool = True,
    ) -> None:
        if not 0 < int(port) < 65536:
            raise ValueError(f"statsd port must be 1-65535, got {port!r}")
        if int(max_packet) < 64:
            raise ValueError(f"statsd max_packet must be at least 64 bytes, got {max_packet!r}")
        self.host, self.port = host, int(port)
        self.prefix, self.max_packet, self.tags = prefix, int(max_packet), bool(tags)
        self._names: dict[tuple[str, str], str] = {}
        # Created on the dispatcher thread at the first send: resolving the host
        # must not happen on the caller's thread.
        self._sock: socket.socket | None = None

    # -- formatting ---------------------------------------------------------------------

    def _name(self, sample: Sample) -> str:
        key = (sample.name, sample.kind)
        name = self._names.get(key)
        if name is None:
            name = _NAME_UNSAFE.sub("_", self.prefix + sample.family.metric_name)
            self._names[key] = name
        return name

    def line(self, sample: Sample) -> str | None:
        """The StatsD text of one event (two lines for a negative gauge set), or None
        for a value StatsD cannot carry (not finite)."""
        value = sample.value
        if not math.isfinite(value):
            return None
        name = self._name(sample)
        suffix = ""
        if sample.labels:
            if self.tags:
                suffix = "|#" + ",".join(f"{k}:{v}" for k, v in sample.labels.items())
            else:
                name += "".join("." + _VALUE_UNSAFE.sub("_", v) for v in sample.labels.values())
        if sample.kind == "counter":
            return f"{name}:{_number(value)}|c{suffix}"
        if sample.kind == "histogram":
            if sample.family.unit == "seconds":
                # Timers are milliseconds in StatsD; keep microsecond precision.
                return f"{name}:{_number(round(value * 1000, 3))}|ms{suffix}"
            return f"{name}:{_number(value)}|h{suffix}"
        if sample.operation in ("inc", "dec"):
            delta = value if sample.operation == "inc" else -value
            sign = "-" if delta < 0 else "+"
            return f"{name}:{sign}{_number(abs(delta))}|g{suffix}"
        if value < 0:
            # A leading sign means a delta in StatsD: reach a negative value from 0.
            return f"{name}:0|g{suffix}\n{name}:{_number(value)}|g{suffix}"
        return f"{name}:{_number(value)}|g{suffix}"

    def packets(self, samples: Iterable[Sample]) -> list[bytes]:
        """Lines joined by newlines into datagrams of at most ``max_packet`` bytes.

        A line longer than ``max_packet`` on its own (only with a tiny ``max_packet``)
        travels alone rather than being cut.
        """
        packets: list[bytes] = []
        current = b""
        for sample in samples:
            text = self.line(sample)
            if text is None:
                continue
            line = text.encode("utf-8")
            if current and len(current) + 1 + len(line) <= self.max_packet:
                current += b"\n" + line
            else:
                if current:
                    packets.append(current)
                current = line
        if current:
            packets.append(current)
        return packets

    # -- sending ------------------------------------------------------------------------

    def _socket(self) -> socket.socket:
        if self._sock is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.connect(address)  # UDP: no handshake, only fixes the peer
            self._sock = sock
        return self._sock

    def send(self, samples: Sequence[Sample]) -> None:
        packets = self.packets(samples)
        if not packets:
            return
        sock = self._socket()
        refused = False
        try:
            for packet in packets:
                try:
                    sock.send(packet)
                except ConnectionRefusedError:
                    # The refusal of an earlier datagram surfaced here; the error is
                    # now cleared, so this one gets a second chance.
                    refused = True
                    sock.send(packet)
        except ConnectionRefusedError:
            raise
        except OSError:
            self.close()  # a new socket (and a new lookup of the host) next time
            raise
        # Nobody listening on this host: the ICMP answer is already here.
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or (
            errno.ECONNREFUSED if refused else 0
        )
        if error:  # OSError picks the subclass, e.g. ConnectionRefusedError
            raise OSError(error, f"statsd {self.host}:{self.port}: {os.strerror(error)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
