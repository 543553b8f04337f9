"""Sensors: `dood.sensors.container.DoodContainerSensor`, waiting for a container started with `wait=False`."""
