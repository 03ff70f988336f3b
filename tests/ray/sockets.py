"""The IP sockets a process holds, read from ``/proc`` (Linux): where each listens and whom it talks to.

For tests that must prove a set of processes (a Ray cluster, the server's front) reaches only
loopback: a listening socket bound to ``0.0.0.0``, ``::`` or the machine's own address would
accept traffic from other machines, and a connected socket's peer says where traffic went.
"""
import ipaddress
import os
import socket
from typing import Dict, Iterable, List, NamedTuple, Tuple

# /proc/net/{tcp,udp}[6] state column
TCP_LISTEN, TCP_ESTABLISHED, UDP_UNCONNECTED = "0A", "01", "07"
TABLES = (("tcp", False), ("tcp6", True), ("udp", False), ("udp6", True))


class IPSocket(NamedTuple):
    pid: int
    proto: str  # tcp, tcp6, udp, udp6
    listening: bool  # a TCP socket in LISTEN or an unconnected UDP socket: it accepts traffic
    local: Tuple[str, int]
    remote: Tuple[str, int]

    def describe(self, command: str = "") -> str:
        where = "listens on %s" % _endpoint(self.local) if self.listening else "%s -> %s" % (
            _endpoint(self.local), _endpoint(self.remote))
        return "pid %d %s %s  (%s)" % (self.pid, self.proto, where, command[:100])


def _endpoint(address: Tuple[str, int]) -> str:
    host, port = address
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ``::1``, or an IPv4-mapped loopback (``::ffff:127.0.0.1``, how a dual-stack
    socket bound to 127.0.0.1 shows)."""
    ip = ipaddress.ip_address(host)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _decode(hex_address: str, v6: bool) -> Tuple[str, int]:
    hex_ip, hex_port = hex_address.split(":")
    raw = bytes.fromhex(hex_ip)
    if v6:  # four 32-bit words, each in host (little-endian) order
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, raw), int(hex_port, 16)
    return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(hex_port, 16)


def _socket_table(pid: int) -> Dict[str, Tuple[str, bool, Tuple[str, int], Tuple[str, int]]]:
    """inode -> (proto, listening, local, remote) for every IP socket of the process's network namespace."""
    table = {}
    for proto, v6 in TABLES:
        try:
            with open("/proc/%d/net/%s" % (pid, proto)) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            state, inode = fields[3], fields[9]
            listening = state == TCP_LISTEN if proto.startswith("tcp") else state == UDP_UNCONNECTED
            table[inode] = (proto, listening, _decode(fields[1], v6), _decode(fields[2], v6))
    return table


def sockets_of(pid: int) -> List[IPSocket]:
    """The IP sockets among the process's open files (none if it is gone)."""
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return []
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    if not inodes:
        return []
    table = _socket_table(pid)
    return sorted(IPSocket(pid, *table[inode]) for inode in inodes if inode in table)


def command_line(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def process_tree(roots: Iterable[int]) -> Dict[int, str]:
    """The running processes among ``roots`` and all their descendants, ``{pid: command line}``."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                after_name = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if after_name[0] != "Z":
            children.setdefault(int(after_name[1]), []).append(int(entry))
    found, stack = {}, [pid for pid in roots if os.path.exists("/proc/%d" % pid)]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found[pid] = command_line(pid)
            stack.extend(children.get(pid, []))
    return found


def off_loopback(processes: Dict[int, str]) -> List[str]:
    """Every socket of these processes that listens on, or talks to, an address other than loopback."""
    offenders = []
    for pid, command in sorted(processes.items()):
        for sock in sockets_of(pid):
            hosts = [sock.local[0]]
            if not sock.listening and sock.remote[1] != 0:  # connected (a bound, unconnected one has no peer)
                hosts.append(sock.remote[0])
            if not all(is_loopback(host) for host in hosts):
                offenders.append(sock.describe(command))
    return offenders
