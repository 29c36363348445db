"""Which hosts a build may fetch from: never the service's own network.

Git sources and npm registries follow the same rule: a host that is (or resolves to) a
loopback, private, link-local, cloud metadata or otherwise non-public address is refused.
"""

import ipaddress
import socket

LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def resolve_host(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return []  # the tool reports the failed lookup itself
    return [str(info[4][0]).split("%")[0] for info in infos]


def private_host(host: str, *, resolve: bool) -> bool:
    """True when ``host`` names a local or private place (resolved now when ``resolve``)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(LOCAL_SUFFIXES):
        return True
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return False
        addresses = [ipaddress.ip_address(address) for address in resolve_host(host)]
    for address in addresses:
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            return True
    return False
