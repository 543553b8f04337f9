"""GPUs of a Docker host, claimed through its engine: the engine's containers are the only record.

- `holdings`: who holds which GPU (read from the engine's container list: label `dood.gpus`, state), what a
  create body asks for, the claim lock's name and label. dood-proxy imports it: it imports no Airflow and no
  docker SDK, and this `__init__` imports nothing.
- `claims`: `GpuClaims`, the one way dood claims GPUs on the raw socket: look at the holdings and create under
  the engine-wide lock (`lock`), first come first served through the queue.
- `queue`: the queue of waiters (tickets in the engine, whose turn it is; pure); `ticket`: one waiter's ticket
  (`QueuePlace`: placed, renewed, removed); `wakeup`: when a waiter looks again, from the engine's events.
- `lock`: the engine-wide mutex (a container name the daemon reserves atomically).
- `discovery`: a host's GPUs found through the engine when the config lists none (a probe container).
- `engine_clock`: the daemon's clock (tickets are keyed by it).
- `cli`: `dood-gpus`, each GPU free or held by which task.

The inventory itself (`gpus:` in the config) is `dood.config.gpu_inventory`; the referee in front of the
socket is `dood.proxy.gpus`; deferral while GPUs are busy is `dood.operators.gpu_waiting` and
`dood.triggers.gpus`. Docs: docs/gpus.md.
"""
