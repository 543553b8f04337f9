"""Reaching a Docker engine: one way for every process that talks to one.

- `client_tls`: `tls_config`, an endpoint's client TLS built one way for every process (a CA alone is TLS too),
  as `EndpointTLS`: the session's environment ignored (no $REQUESTS_CA_BUNDLE replacing the endpoint's CA).
- `target`: `DockerTarget`, an endpoint as plain strings (the teardown's command line, the triggers' key, the
  UI's readers), and its client.
- `reconnect`: a daemon that stops answering: why, waiting for it with backoff (`Backoff`), what its restart
  did to the container.
- `security`: what the engine adds to containment (`GET /info`), and user-namespace remapping's host ids.

The hook that owns the connection for task code is `dood.hooks.dood.DoodHook`; the triggers' async session is
`dood.hooks.async_docker`; the server side of TLS is `dood.proxy.server_tls`.
"""
