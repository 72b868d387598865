"""The compute ops of ``docs/ops.md``: each reads its body, calls the driver, shapes the payload."""

from __future__ import annotations

from typing import Any

from ..registry import Op
from .driver import ComputeDriver
from .spec import MAX_GB, Fields, instance_spec

__all__ = ["CONSOLE_BYTES", "ops"]

#: how much of the console log ``instance.console`` answers by default, and at most
CONSOLE_BYTES = 64 << 10
MAX_CONSOLE_BYTES = 1 << 20
MAX_STOP_TIMEOUT_S = 3600.0


def ops(driver: ComputeDriver) -> list[Op]:
    def create(args: dict[str, Any]) -> dict[str, Any]:
        return {"power_state": driver.create(instance_spec(Fields(args))).value}

    def delete(args: dict[str, Any]) -> dict[str, Any]:
        driver.delete(Fields(args).uuid("instance_id"))
        return {}

    def start(args: dict[str, Any]) -> dict[str, Any]:
        return {"power_state": driver.start(Fields(args).uuid("instance_id")).value}

    def stop(args: dict[str, Any]) -> dict[str, Any]:
        body = Fields(args)
        timeout_s = body.number("timeout_s", 0, MAX_STOP_TIMEOUT_S, driver.settings.stop_timeout_s)
        return {"power_state": driver.stop(body.uuid("instance_id"), timeout_s).value}

    def reboot(args: dict[str, Any]) -> dict[str, Any]:
        return {"power_state": driver.reboot(Fields(args).uuid("instance_id")).value}

    def resize(args: dict[str, Any]) -> dict[str, Any]:
        body = Fields(args)
        state = driver.resize(body.uuid("instance_id"), body.integer("vcpus", 1, 1024),
                              body.integer("memory_mb", 16, 1 << 24), body.integer("disk_gb", 1, MAX_GB))
        return {"power_state": state.value}

    def volume_create(args: dict[str, Any]) -> dict[str, Any]:
        body = Fields(args)
        driver.create_volume(body.uuid("volume_id"), body.integer("size_gb", 1, MAX_GB))
        return {}

    def volume_delete(args: dict[str, Any]) -> dict[str, Any]:
        driver.delete_volume(Fields(args).uuid("volume_id"))
        return {}

    def volume_attach(args: dict[str, Any]) -> dict[str, Any]:
        body = Fields(args)
        return {"device": driver.attach_volume(body.uuid("volume_id"), body.uuid("instance_id"))}

    def volume_detach(args: dict[str, Any]) -> dict[str, Any]:
        body = Fields(args)
        driver.detach_volume(body.uuid("volume_id"), body.uuid("instance_id"))
        return {}

    def inventory(args: dict[str, Any]) -> dict[str, Any]:
        return {"instances": [{"id": instance_id, "power_state": state.value}
                              for instance_id, state in driver.inventory().items()]}

    def console(args: dict[str, Any]) -> dict[str, Any]:
        body = Fields(args)
        result = driver.console(body.uuid("instance_id"), body.integer("bytes", 1, MAX_CONSOLE_BYTES, CONSOLE_BYTES))
        return {"log": result.log, "vnc_port": result.vnc_port}

    durable = {"instance.create": create, "instance.delete": delete, "instance.start": start,
               "instance.stop": stop, "instance.reboot": reboot, "instance.resize": resize,
               "volume.create": volume_create, "volume.delete": volume_delete,
               "volume.attach": volume_attach, "volume.detach": volume_detach}
    # Reads: nothing to journal, and a replay must see the host as it is now.
    reads = {"compute.inventory": inventory, "instance.console": console}
    return ([Op(name, handler, durable=True) for name, handler in durable.items()]
            + [Op(name, handler, durable=False) for name, handler in reads.items()])
