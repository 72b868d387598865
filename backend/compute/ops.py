"""The compute ops of ``docs/ops.md``: each reads its checked body, calls the driver, shapes the payload.

The registry has checked every body against the op's schema (``spec.ARGS``) before a handler
runs: handlers read their fields without checking them again.
"""

from __future__ import annotations

from typing import Any

from ..registry import Op
from .driver import ComputeDriver
from .liveconsole import LiveConsoles
from .spec import ARGS, instance_spec

__all__ = ["CONSOLE_BYTES", "ops"]

#: how much of the console log ``instance.console`` answers when the body does not say
CONSOLE_BYTES = 64 << 10


def ops(driver: ComputeDriver, consoles: LiveConsoles) -> list[Op]:
    def create(args: dict[str, Any]) -> dict[str, Any]:
        return {"power_state": driver.create(instance_spec(args["instance"])).value}

    def delete(args: dict[str, Any]) -> dict[str, Any]:
        driver.delete(args["instance_id"])
        return {}

    def start(args: dict[str, Any]) -> dict[str, Any]:
        return {"power_state": driver.start(args["instance_id"]).value}

    def stop(args: dict[str, Any]) -> dict[str, Any]:
        timeout_s = float(args.get("timeout_s", driver.settings.stop_timeout_s))
        return {"power_state": driver.stop(args["instance_id"], timeout_s).value}

    def reboot(args: dict[str, Any]) -> dict[str, Any]:
        return {"power_state": driver.reboot(args["instance_id"]).value}

    def resize(args: dict[str, Any]) -> dict[str, Any]:
        state = driver.resize(args["instance_id"], args["vcpus"], args["memory_mb"], args["disk_gb"])
        return {"power_state": state.value}

    def image(args: dict[str, Any]) -> dict[str, Any]:
        sent = driver.make_image(args["instance_id"], args["image_id"], args["url"])
        return {"checksum": sent.checksum, "size_bytes": sent.size_bytes}

    def volume_create(args: dict[str, Any]) -> dict[str, Any]:
        driver.create_volume(args["volume_id"], args["size_gb"], args.get("snapshot_id"))
        return {}

    def volume_snapshot(args: dict[str, Any]) -> dict[str, Any]:
        return {"consistency": driver.snapshot_volume(args["volume_id"], args["snapshot_id"]).value}

    def snapshot_delete(args: dict[str, Any]) -> dict[str, Any]:
        driver.delete_snapshot(args["snapshot_id"])
        return {}

    def volume_delete(args: dict[str, Any]) -> dict[str, Any]:
        driver.delete_volume(args["volume_id"])
        return {}

    def volume_attach(args: dict[str, Any]) -> dict[str, Any]:
        return {"device": driver.attach_volume(args["volume_id"], args["instance_id"])}

    def volume_detach(args: dict[str, Any]) -> dict[str, Any]:
        driver.detach_volume(args["volume_id"], args["instance_id"])
        return {}

    def inventory(args: dict[str, Any]) -> dict[str, Any]:
        return {"instances": [{"id": instance_id, "power_state": state.value}
                              for instance_id, state in driver.inventory().items()]}

    def console(args: dict[str, Any]) -> dict[str, Any]:
        result = driver.console(args["instance_id"], args.get("bytes", CONSOLE_BYTES))
        return {"log": result.log, "vnc_port": result.vnc_port}

    def console_open(args: dict[str, Any]) -> dict[str, Any]:
        consoles.open(args["instance_id"], args["session"], args["lease_s"])
        return {}

    def console_write(args: dict[str, Any]) -> dict[str, Any]:
        consoles.write(args["session"], args["data"])
        return {}

    def console_close(args: dict[str, Any]) -> dict[str, Any]:
        consoles.close(args["session"])
        return {}

    durable = {"instance.create": create, "instance.delete": delete, "instance.start": start,
               "instance.stop": stop, "instance.reboot": reboot, "instance.resize": resize, "instance.image": image,
               "volume.create": volume_create, "volume.delete": volume_delete,
               "volume.attach": volume_attach, "volume.detach": volume_detach,
               "volume.snapshot": volume_snapshot, "snapshot.delete": snapshot_delete}
    # Reads: nothing to journal, and a replay must see the host as it is now.
    # Live consoles too: a session lives only as long as this process (a write delivered twice
    # is answered from the leaf's memory of finished commands, not typed twice).
    reads = {"compute.inventory": inventory, "instance.console": console,
             "console.open": console_open, "console.write": console_write, "console.close": console_close}
    # Gone is gone: a delete cut short by a restart of the backend is simply run again.
    idempotent = {"instance.delete", "volume.delete", "snapshot.delete"}
    return ([Op(name, handler, ARGS[name], durable=True, idempotent=name in idempotent)
             for name, handler in durable.items()]
            + [Op(name, handler, ARGS[name], durable=False) for name, handler in reads.items()])
