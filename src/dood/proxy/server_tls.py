"""Mutual TLS for a dood-proxy reached over a network (another Docker host's proxy, docs/hosts.md).

Only mutual TLS: the proxy proves itself with its certificate, and every client must present a certificate
signed by the deployment's CA (`scripts/make-host-certs.sh`), or the handshake fails before a single HTTP
byte is read. The client side is the docker SDK's own TLS (`DockerHook` / `DoodHook` with `tls_*`), as for
a Docker daemon listening with `--tlsverify`.
"""

from __future__ import annotations

import ssl


def server_context(*, cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    """TLS 1.2 or later, the proxy's certificate, and client certificates required and checked against
    `client_ca`. A missing or unreadable file raises ValueError naming it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: cannot load the proxy's certificate: {exc}") from None
    try:
        context.load_verify_locations(cafile=client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--tls-ca-cert {client_ca}: cannot load the clients' CA: {exc}") from None
    return context
