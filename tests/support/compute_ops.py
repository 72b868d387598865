"""The compute ops of ``frontend/hostops.py`` answered from memory, for the frontend's own tests.

The frontend's tests exercise placement, retries, tasks and reconciliation; what a hypervisor
really does with an instance is the libvirt driver's business and is tested there, on real
guests.  This stand-in keeps each host's instances in a dict and appends every op it runs to
a log file, so a test can prove an op ran exactly once.  Failures are injected per host.
Its ops declare the real driver's schemas (``backend.compute.spec.ARGS``): every body the
frontend sends in these tests is checked as a hypervisor would check it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from backend.compute.spec import ARGS
from backend.registry import Op, OpError, OpRegistry
from tests.support.qcow2 import fake_qcow2


class RecordingCompute:
    def __init__(self, host: str, log_path: Path | None = None) -> None:
        self.host = host
        self.log_path = log_path
        self.instances: dict[str, str] = {}  # id -> power state
        self.volumes: dict[str, str | None] = {}  # id -> instance it is attached to
        self.snapshots: dict[str, str] = {}  # id -> the volume it was taken of
        #: the consistency volume.snapshot answers
        self.consistency = "offline"
        #: op -> message: that op fails on this host with the message
        self.fail: dict[str, str] = {}
        #: seconds instance.create takes
        self.create_delay = 0.0
        #: how instance.image sends its file to the frontend: (signed upload link, file) -> (HTTP status,
        #: answer); None: this host cannot reach the frontend, and the op fails
        self.upload: Callable[[str, bytes], tuple[int, str]] | None = None
        #: the file instance.image sends: what the driver's flattened root disk would be
        self.image_file = fake_qcow2(virtual_size=1 << 30)
        self._lock = threading.Lock()

    def _record(self, op: str, args: dict[str, Any]) -> None:
        if op in self.fail:
            raise OpError(self.fail[op], 1)
        if self.log_path is not None:
            ident = args.get("instance", {}).get("instance_id") or args.get("instance_id") or args.get("volume_id")
            with self._lock, open(self.log_path, "a") as f:
                f.write(json.dumps({"host": self.host, "op": op, "id": ident, "pid": os.getpid()}) + "\n")

    def create(self, args: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.create_delay)
        self._record("instance.create", args)
        self.instances[args["instance"]["instance_id"]] = "running"
        return {"power_state": "running"}

    def delete(self, args: dict[str, Any]) -> dict[str, Any]:
        self._record("instance.delete", args)
        self.instances.pop(args["instance_id"], None)
        return {}

    def power(self, op: str, state: str) -> Any:
        def handler(args: dict[str, Any]) -> dict[str, Any]:
            self._record(op, args)
            if args["instance_id"] not in self.instances:
                raise OpError(f"no instance {args['instance_id']} on {self.host}", 2)
            self.instances[args["instance_id"]] = state
            return {"power_state": state}
        return handler

    def image(self, args: dict[str, Any]) -> dict[str, Any]:
        self._record("instance.image", args)
        state = self.instances.get(args["instance_id"])
        if state is None:
            raise OpError(f"no instance {args['instance_id']} on {self.host}", 2)
        if state != "shutoff":
            raise OpError(f"instance {args['instance_id']} is {state}; stop it first", 1)
        if self.upload is None:
            raise OpError(f"{self.host} cannot reach the frontend to upload", 1)
        status, answer = self.upload(args["url"], self.image_file)
        if status != 200:
            raise OpError(f"the frontend refused the upload: {status} {answer}", 1)
        return {"checksum": hashlib.sha256(self.image_file).hexdigest(), "size_bytes": len(self.image_file)}

    def volume(self, op: str) -> Any:
        def handler(args: dict[str, Any]) -> dict[str, Any]:
            self._record(op, args)
            if op == "volume.create":
                snapshot = args.get("snapshot_id")
                if snapshot is not None and snapshot not in self.snapshots:
                    raise OpError(f"snapshot {snapshot} is not on {self.host}", 1)
                self.volumes[args["volume_id"]] = None
            elif op == "volume.delete":
                self.volumes.pop(args["volume_id"], None)
            elif args["volume_id"] not in self.volumes:
                raise OpError(f"volume {args['volume_id']} is not on {self.host}", 1)
            elif op == "volume.attach":
                if args["instance_id"] not in self.instances:
                    raise OpError(f"no instance {args['instance_id']} on {self.host}", 2)
                self.volumes[args["volume_id"]] = args["instance_id"]
                return {"device": "vdb"}
            elif op == "volume.snapshot":
                self.snapshots[args["snapshot_id"]] = args["volume_id"]
                return {"consistency": self.consistency}
            else:
                self.volumes[args["volume_id"]] = None
            return {}
        return handler

    def delete_snapshot(self, args: dict[str, Any]) -> dict[str, Any]:
        self._record("snapshot.delete", args)
        self.snapshots.pop(args["snapshot_id"], None)
        return {}

    def console(self, args: dict[str, Any]) -> dict[str, Any]:
        if args["instance_id"] not in self.instances:
            raise OpError(f"no instance {args['instance_id']} on {self.host}", 2)
        log = f"console of {args['instance_id']} on {self.host}\n"
        return {"log": log[-args["bytes"]:], "vnc_port": 5900}

    def inventory(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"instances": [{"id": i, "power_state": s} for i, s in sorted(self.instances.items())]}

    def register(self, registry: OpRegistry) -> None:
        registry.register(Op("instance.create", self.create, ARGS["instance.create"], durable=True))
        # Gone is gone: the deletes run again after an interruption, as the real driver's do.
        registry.register(Op("instance.delete", self.delete, ARGS["instance.delete"], durable=True,
                             idempotent=True))
        registry.register(Op("instance.image", self.image, ARGS["instance.image"], durable=True))
        for op, state in (("instance.start", "running"), ("instance.stop", "shutoff"),
                          ("instance.reboot", "running"), ("instance.resize", "running")):
            registry.register(Op(op, self.power(op, state), ARGS[op], durable=True))
        for op in ("volume.create", "volume.delete", "volume.attach", "volume.detach", "volume.snapshot"):
            registry.register(Op(op, self.volume(op), ARGS[op], durable=True, idempotent=op == "volume.delete"))
        registry.register(Op("snapshot.delete", self.delete_snapshot, ARGS["snapshot.delete"], durable=True,
                             idempotent=True))
        registry.register(Op("compute.inventory", self.inventory, ARGS["compute.inventory"], durable=False))
        registry.register(Op("instance.console", self.console, ARGS["instance.console"], durable=False))


def register(registry: OpRegistry, config: Any) -> None:
    """For backends run as processes: the log file and the launch delay come from the environment."""
    log = os.environ.get("CLOUDLAND_TEST_COMPUTE_LOG")
    compute = RecordingCompute(f"pid{os.getpid()}", Path(log) if log else None)
    compute.create_delay = float(os.environ.get("CLOUDLAND_TEST_CREATE_DELAY", "0"))
    compute.register(registry)
