"""Hooks: `dood.hooks.dood.DoodHook` (the provider's DockerHook plus self-inspection, the stack, what dood-proxy
says of itself) and `async_docker` (the triggers' aiodocker sessions)."""
