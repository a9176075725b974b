"""`lossbench ui`'s binding: whether the address MLflow's server listens on reaches beyond this machine.

MLflow's server has no login: whoever can connect reads and changes the whole store, artifacts
included. Its "Security middleware enabled with default settings (localhost-only)" line is about the
Host and Origin headers of requests (which any client but a browser sets as it likes, and which
admit private networks by default), not about who can connect; so `lossbench ui` says so itself.
"""

from __future__ import annotations

import ipaddress
import socket


def beyond_loopback(host: str) -> bool:
    """Whether a server bound to `host` can be reached from other machines: an address that is not
    loopback (0.0.0.0 and :: are every address of the machine), or a name that resolves to one or
    does not resolve at all."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return not _loopback(name)
    except ValueError:  # a name: what it resolves to
        pass
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return True
    return not infos or any(not _loopback(info[4][0].split("%")[0]) for info in infos)


def _loopback(address: str) -> bool:
    """A loopback address, an IPv4-mapped IPv6 one (::ffff:127.0.0.1) included."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def warning(host: str, port: int) -> str:
    """The line `lossbench ui` prints on stderr when `beyond_loopback(host)`."""
    return (
        f"warning: the UI listens on {host}:{port}, beyond this machine: anyone who can reach that port reads "
        f"and changes the whole store, artifacts included, with no login (MLflow's 'localhost-only' below "
        f"checks request headers, not who connects); use --host 127.0.0.1 to keep it local"
    )
