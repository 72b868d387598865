"""Op arguments are checked against each op's declared schema before any handler runs."""

from __future__ import annotations

import copy
import gc
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import libvirt
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import compute
from backend.argcheck import (
    IPV4,
    MAC,
    NAME,
    SHA256,
    UUID,
    ArgError,
    Bytes,
    Check,
    FilePath,
    Int,
    ListOf,
    Number,
    OneOf,
    Pattern,
    Record,
    Text,
    Url,
    nullable,
    optional,
)
from backend.compute.exceptions import BadRequest
from backend.compute.spec import ARGS, instance_spec
from backend.ops import system
from backend.registry import Op, OpRegistry
from frontend import hostops
from frontend.db.models import Image, Instance, Keypair, Port, Volume
from frontend.imagelinks import ImageLinks
from sci import Result, Status
from service.config import BackendConfig, ComputeSection
from tests.support import sideeffect_ops

ID = "0e6f1b1a-3c1d-4b7e-9a55-2f0c9d1e8b7a"
ID2 = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
SUM = "ab" * 32
TMP = str(Path(tempfile.gettempdir()).resolve())


def refusal(check: Check, value: Any) -> str | None:
    """The error ``check`` gives ``value`` (as a field named ``f``), or None if it passes."""
    try:
        check.check(value, "f")
    except ArgError as exc:
        assert str(exc) == f"{exc.field}: {exc.reason}"
        return str(exc)
    return None


@pytest.mark.parametrize("check, value, error", [
    (Int(1, 10), 1, None),
    (Int(1, 10), 10, None),
    (Int(1, 10), 0, "f: must be a whole number from 1 to 10 (got 0)"),
    (Int(1, 10), 11, "f: must be a whole number from 1 to 10 (got 11)"),
    (Int(1, 10), True, "f: must be a whole number, not a boolean"),
    (Int(1, 10), 2.0, "f: must be a whole number, not a number"),
    (Int(1, 10), "2", "f: must be a whole number, not text"),
    (Int(1, 10), None, "f: must be a whole number, not null"),
    (Int(1, 10), 1 << 100, "f: must be a whole number from 1 to 10 (got a number beyond 64 bits)"),
    (Number(0, 5), 2.5, None),
    (Number(0, 5), 5, None),
    (Number(0, 5), -0.1, "f: must be a number from 0 to 5 (got -0.1)"),
    (Number(0, 5), float("nan"), "f: must be a number from 0 to 5 (got nan)"),
    (Number(0, 5), float("inf"), "f: must be a number from 0 to 5 (got inf)"),
    (Number(0, 5), False, "f: must be a number, not a boolean"),
    (Number(0, 5), b"1", "f: must be a number, not bytes"),
    (Text(5), "", None),
    (Text(5), "a\nb", None),
    (Text(5), "abcdef", "f: must be at most 5 characters (got 6)"),
    (Text(5), 5, "f: must be text, not a whole number"),
    (Text(5, nonempty=True), "", "f: must not be empty"),
    (Text(5, one_line=True), "a\nb", "f: must be one line without control characters"),
    (Text(5, one_line=True), "a\x00", "f: must be one line without control characters"),
    (Text(5, one_line=True), "a\u2028b", "f: must be one line without control characters"),
    (NAME, "web-1.a_b", None),
    (NAME, "a" * 64, None),
    (NAME, "a" * 65, "f: not a name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                     "(it has 65 characters, at most 64)"),
    (NAME, "-web", "f: not a name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    (NAME, "", "f: not a name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    (NAME, "web\n", "f: not a name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    (NAME, ["web"], "f: must be a name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
                    "not a list"),
    (UUID, ID, None),
    (UUID, ID.upper(), "f: not a lowercase UUID"),
    (UUID, ID.replace("-", ""), "f: not a lowercase UUID"),
    (UUID, ID[:-1] + "\u0430", "f: not a lowercase UUID"),  # Cyrillic a
    (MAC, "52:54:00:AB:cd:0f", None),
    (MAC, "52-54-00-ab-cd-0f", "f: not a MAC address like 52:54:00:12:34:56"),
    (MAC, "52:54:00:ab:cd:0", "f: not a MAC address like 52:54:00:12:34:56"),
    (MAC, "52:54:00:ab:cd:\u0660\u0661", "f: not a MAC address like 52:54:00:12:34:56"),  # Arabic-Indic digits
    (SHA256, SUM, None),
    (SHA256, SUM.upper(), "f: not a sha256 in lowercase hex"),
    (SHA256, SUM[:-1], "f: not a sha256 in lowercase hex"),
    (IPV4, "10.0.0.5", None),
    (IPV4, "10.0.0.256", "f: not an IPv4 address"),
    (IPV4, "010.0.0.5", "f: not an IPv4 address"),
    (IPV4, "::1", "f: not an IPv4 address"),
    (IPV4, "\uff11\uff10.0.0.5", "f: not an IPv4 address"),  # fullwidth digits
    (IPV4, 167772165, "f: not an IPv4 address"),
    (OneOf(("qcow2", "raw")), "raw", None),
    (OneOf(("qcow2", "raw")), "RAW", "f: must be one of qcow2, raw"),
    (OneOf(("qcow2", "raw")), None, "f: must be one of qcow2, raw"),
    (Url(), "http://10.0.0.1:8080/v1/images/x/file?expires=1&signature=ab", None),
    (Url(), "https://frontend.example/f", None),
    (Url(), "http://[::1]:9/f", None),
    (Url(), "ftp://frontend/f", "f: not an http:// or https:// link"),
    (Url(), "file:///etc/passwd", "f: not an http:// or https:// link"),
    (Url(), "http:///etc/passwd", "f: not an http:// or https:// link"),
    (Url(), "/v1/images/x/file", "f: not an http:// or https:// link"),
    (Url(), "http://user:pw@frontend/f", "f: not an http:// or https:// link"),
    (Url(), "http://frontend:99999/f", "f: not an http:// or https:// link"),
    (Url(), "http://-x/f", "f: not an http:// or https:// link"),
    (Url(), "http://.../f", "f: not an http:// or https:// link"),
    (Url(), "http://[fe80::1%25eth0]/f", "f: not an http:// or https:// link"),
    (Url(), "http://[::1/f", "f: not an http:// or https:// link"),
    (Url(), "http://fr\u043ent/f", "f: not an http:// or https:// link (it holds spaces, control or non-ASCII "
                                   "characters)"),
    (Url(), "http://frontend/f\nHost: evil", "f: not an http:// or https:// link (it holds spaces, control or "
                                             "non-ASCII characters)"),
    (Url(max_len=10), "http://frontend/f", "f: not an http:// or https:// link (it has 17 characters, at most 10)"),
    (FilePath(("/srv/data",)), "/srv/data/a/b.log", None),
    (FilePath(("/srv/data",)), "/srv/data", None),
    (FilePath(("/srv/data",)), "/srv/data/../../etc/passwd", "f: must not climb out with '..'"),
    (FilePath(("/srv/data",)), "../../etc/passwd", "f: must be an absolute path"),
    (FilePath(("/srv/data",)), "a.log", "f: must be an absolute path"),
    (FilePath(("/srv/data",)), "/srv/database/x", "f: must be a path under /srv/data"),
    (FilePath(("/srv/data", "/tmp")), "/etc/passwd", "f: must be a path under /srv/data or /tmp"),
    (FilePath(("/srv/data",)), "/srv/data/a\x00b", "f: must be a path without control characters"),
    (FilePath(("/srv/data",)), 7, "f: must be a path, not a whole number"),
    (ListOf(Int(0, 9), 2), [1, 2], None),
    (ListOf(Int(0, 9), 2), [], None),
    (ListOf(Int(0, 9), 2), [1, 2, 3], "f: must hold at most 2 items (got 3)"),
    (ListOf(Int(0, 9), 2), [1, 10], "f[1]: must be a whole number from 0 to 9 (got 10)"),
    (ListOf(Int(0, 9), 2), (1, 2), "f: must be a list, not tuple"),
    (ListOf(Int(0, 9), 2), {"0": 1}, "f: must be a list, not a mapping"),
])
def test_each_check(check: Check, value: Any, error: str | None) -> None:
    assert refusal(check, value) == error


NESTED = Record({
    "name": NAME,
    "nics": ListOf(Record({"mac": MAC, "ip": optional(IPV4)}), 4),
    "kernel": nullable(Record({"id": UUID})),
    "timeout_s": optional(Number(0, 60)),
})


@pytest.mark.parametrize("value, error", [
    ({"name": "web", "nics": [], "kernel": None}, None),
    ({"name": "web", "nics": [{"mac": "52:54:00:12:34:56", "ip": "10.0.0.1"}], "kernel": {"id": ID},
      "timeout_s": 2}, None),
    ({"name": "web", "nics": [{"mac": "52:54:00:12:34:56"}, {"mac": "nope"}], "kernel": None},
     "args.nics[1].mac: not a MAC address like 52:54:00:12:34:56"),
    ({"name": "web", "nics": [], "kernel": {"id": ID, "path": "/boot/vmlinuz"}}, "args.kernel: unknown key 'path'"),
    ({"name": "web", "nics": [], "kernel": {}}, "args.kernel.id: missing"),
    ({"name": "web", "nics": []}, "args.kernel: missing"),
    ({"nics": [], "kernel": None}, "args.name: missing"),
    ({"name": "web", "nics": None, "kernel": None}, "args.nics: must be a list, not null"),
    ({"name": "web", "nics": [], "kernel": None, "timeout_s": None}, "args.timeout_s: must be a number, not null"),
    ({"name": "web", "nics": [None], "kernel": None}, "args.nics[0]: must be a mapping, not null"),
    ({"name": "web", "nics": [], "kernel": None, "x" * 41: 1}, "args: unknown key, not shown: not a field name"),
    ({"name": "web", "nics": [], "kernel": None, "a b": 1}, "args: unknown key, not shown: not a field name"),
    ({"name": "web", "nics": [], "kernel": None, b"name": 1}, "args: unknown key, not shown: not a field name"),
    ({"name": "web", "nics": [], "kernel": None, 7: 1}, "args: unknown key, not shown: not a field name"),
    (["web"], "args: must be a mapping, not a list"),
    ("web", "args: must be a mapping, not text"),
])
def test_records_name_the_field_by_its_path(value: Any, error: str | None) -> None:
    try:
        NESTED.check(value)
    except ArgError as exc:
        assert str(exc) == error
    else:
        assert error is None


def test_reasons_never_show_text() -> None:
    secret = "#cloud-config\npassword: hunter2-" + "z" * 100
    checks: list[Check] = [Int(0, 1), Number(0, 1), Text(10), Text(200, one_line=True), NAME, UUID, MAC, SHA256, IPV4,
                           OneOf(("a",)), Url(), Url(max_len=10), FilePath(("/srv",)), ListOf(Int(0, 1), 1),
                           Record({}), Record({"a": Int(0, 1)})]
    for check in checks:
        for value in (secret, [secret], {"a": secret}, {secret: 1}):
            error = refusal(check, value)
            assert error is not None and "hunter2" not in error, (check, error)


def test_a_schema_only_walks_what_it_declares() -> None:
    deep: Any = []
    for _ in range(100_000):  # far deeper than Python's recursion limit
        deep = [deep]
    assert refusal(Record({"a": optional(Int(0, 1))}), {"a": deep}) == "f.a: must be a whole number, not a list"
    assert refusal(ListOf(Int(0, 1), 3), [deep]) == "f[0]: must be a whole number, not a list"


# --- every op's schema, against what the frontend really sends ---------------------------------

PORT = {"id": ID2, "mac": "fa:16:3e:12:34:56", "ip": "10.0.0.5", "subnet_id": ID, "network_id": ID2}
IMAGE_FILE = {"id": ID, "format": "qcow2", "checksum": SUM, "size_bytes": 4096,
              "url": "http://10.0.0.1:8080/v1/images/x/file?expires=1&signature=ab"}
SPEC: dict[str, Any] = {"instance_id": ID, "name": "web-1", "vcpus": 2, "memory_mb": 512, "disk_gb": 10, "image": IMAGE_FILE,
        "kernel": {**IMAGE_FILE, "format": "raw"}, "initrd": {**IMAGE_FILE, "format": "raw", "size_bytes": None},
        "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBadKey alice@example"], "user_data": "#!/bin/sh\necho hi\n",
        "ports": [PORT], "volumes": [{"id": ID2, "size_gb": 5}]}
#: op -> a body that uses every field of its schema
VALID: dict[str, dict[str, Any]] = {
    "ping": {"round": "warm-1"},
    "info": {},
    "instance.create": {"instance": SPEC},
    "instance.delete": {"instance_id": ID},
    "instance.start": {"instance_id": ID},
    "instance.stop": {"instance_id": ID, "timeout_s": 60},
    "instance.reboot": {"instance_id": ID},
    "instance.resize": {"instance_id": ID, "vcpus": 4, "memory_mb": 1024, "disk_gb": 20},
    "instance.console": {"instance_id": ID, "bytes": 65536},
    "instance.image": {"instance_id": ID, "image_id": ID2, "url": IMAGE_FILE["url"]},
    "volume.create": {"volume_id": ID, "size_gb": 5, "snapshot_id": ID2},
    "volume.delete": {"volume_id": ID},
    "volume.attach": {"volume_id": ID, "instance_id": ID2},
    "volume.detach": {"volume_id": ID, "instance_id": ID2},
    "volume.snapshot": {"volume_id": ID, "snapshot_id": ID2},
    "snapshot.delete": {"snapshot_id": ID},
    "compute.inventory": {},
    "console.open": {"instance_id": ID, "session": ID2, "lease_s": 30},
    "console.write": {"session": ID2, "data": b"ls -l\r"},
    "console.close": {"session": ID2},
    "test.append": {"path": f"{TMP}/side.log", "line": "abc123", "sleep_before": 0.5, "sleep_after": 1},
}
SCHEMAS: dict[str, Record] = {"ping": system.PING_ARGS, "info": system.INFO_ARGS, **ARGS,
                              "test.append": sideeffect_ops.APPEND_ARGS}


def test_the_frontends_launch_spec_passes_and_converts() -> None:
    instance = Instance(id=ID, name="web-1", vcpus=2, memory_mb=512, disk_gb=10, user_data=None)
    image = Image(id=ID2, format="qcow2", checksum=SUM, size_bytes=4096)
    kernel = Image(id=ID, format="raw", checksum=SUM, size_bytes=None)
    port = Port(id=ID2, mac_address="fa:16:3e:AB:cd:ef", ip_address="10.0.0.5", subnet_id=ID, network_id=ID2)
    body = {"instance": hostops.instance_spec(
        instance, image, kernel, None, Keypair(public_key=SPEC["ssh_keys"][0]), [port],
        [Volume(id=ID, size_gb=3)], ImageLinks(b"k" * 32, "http://10.0.0.1:8080/", 600))}
    ARGS["instance.create"].check(body)
    spec = instance_spec(body["instance"])
    assert (spec.name, spec.kernel and spec.kernel.format, spec.initrd, spec.user_data) == ("web-1", "raw", None, "")
    assert [(p.id, p.mac) for p in spec.ports] == [(ID2, "fa:16:3e:ab:cd:ef")] and spec.volume_ids == (ID,)


def test_an_initrd_needs_a_kernel() -> None:
    body = {"instance": {**SPEC, "kernel": None}}
    ARGS["instance.create"].check(body)
    with pytest.raises(BadRequest, match="args.instance.initrd: an initrd needs a kernel") as caught:
        instance_spec(body["instance"])
    assert caught.value.exit_status == 64


def counting_registry() -> tuple[OpRegistry, dict[str, int]]:
    """Every op's real schema, each with a handler that counts its calls."""
    registry = OpRegistry(2)
    calls = dict.fromkeys(SCHEMAS, 0)

    def handler(op: str) -> Any:
        def count(args: dict[str, Any]) -> dict[str, Any]:
            calls[op] += 1
            return {}
        return count

    for op, schema in SCHEMAS.items():
        registry.register(Op(op, handler(op), schema, durable=False, inline=True))
    return registry, calls


def run(registry: OpRegistry, op: str, args: Any) -> Result:
    answered = threading.Event()
    results: list[Result] = []

    def answer(result: Result) -> None:
        results.append(result)
        answered.set()

    registry.execute(op, args, answer)
    assert answered.wait(10), f"{op} did not answer"
    return results[0]


def leaves(check: Check, value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Check]]:
    """Each scalar field of ``value`` with its check, by its path."""
    if isinstance(check, Record):
        for name, key in check.fields.items():
            if value.get(name) is not None:
                yield from leaves(key.check, value[name], (*path, name))
    elif isinstance(check, ListOf):
        for index, item in enumerate(value):
            yield from leaves(check.item, item, (*path, index))
    else:
        yield path, check


def field_name(path: tuple[str | int, ...]) -> str:
    return "args" + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)


def replaced(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    parent: Any = changed
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return changed


def test_every_ops_full_body_passes() -> None:
    registry, calls = counting_registry()
    for op, body in VALID.items():
        assert run(registry, op, body).ok, op
    registry.close()
    assert calls == dict.fromkeys(SCHEMAS, 1)
    assert set(leaves(SCHEMAS["instance.create"], VALID["instance.create"])) >= {
        (("instance", "ports", 0, "mac"), MAC), (("instance", "kernel", "url"), Url()),
        (("instance", "initrd", "checksum"), SHA256), (("instance", "volumes", 0, "id"), UUID)}


INJECTIONS = ["; rm -rf /", "$(reboot)", "`reboot`", "\n", "web\nreboot", "../../etc/passwd", "/etc/passwd",
              "%2e%2e%2fetc", "\x00", "' OR 1=1 --", "<domain>"]
TEN_MB = "A" * (10 << 20)


def lookalike(text: str) -> str:
    """``text`` with its first character swapped for its fullwidth form (a for ａ, / for ／)."""
    return chr(ord(text[0]) + 0xFEE0) + text[1:]


def bad_values(check: Check, valid: str) -> list[str]:
    """What each name, id, link or path field must refuse, whatever else is in the body."""
    values = [*INJECTIONS, lookalike(valid), TEN_MB]
    if isinstance(check, FilePath):
        values += [f"{check.roots[0]}/../../etc/passwd", f"{check.roots[0]}/x\nreboot", f"{check.roots[0]}\x00/x"]
    elif isinstance(check, Url):
        values += [valid + "\n", valid + " ; rm -rf /", valid.replace("http", "file", 1)]
    else:  # closed formats: not one character may be added
        values += [valid + injection for injection in INJECTIONS] + [valid + "\u200b"]
    return values


CLOSED = (Pattern, OneOf, Url, FilePath, type(IPV4))


@pytest.mark.parametrize("op", sorted(VALID))
def test_injections_in_every_name_id_link_and_path_field_are_refused(op: str) -> None:
    registry, calls = counting_registry()
    try:
        fields = list(leaves(SCHEMAS[op], VALID[op]))
        tried = 0
        for path, check in fields:
            valid: Any = VALID[op]
            for step in path:
                valid = valid[step]
            if isinstance(check, CLOSED):
                candidates = bad_values(check, valid)
            elif isinstance(check, Text):
                candidates = [TEN_MB] + (["a\nb", "a\x00b"] if check.one_line else [])
            else:
                candidates = [TEN_MB, "1"]
            for value in candidates:
                result = run(registry, op, replaced(VALID[op], path, value))
                assert (result.status, result.exit_status) == (Status.ERROR, 64), (op, path, value[:40] if value else value)
                assert result.message.startswith(f"{op}: {field_name(path)}: "), result.message
                assert TEN_MB[:100] not in result.message
                tried += 1
        assert calls[op] == 0
        assert tried >= len(fields)
    finally:
        registry.close()


# --- arbitrary bodies against the real ops, on libvirt's test driver -----------------------------

MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | st.binary(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12)


def near(schema: Record) -> st.SearchStrategy[Any]:
    """Mappings with the schema's own keys (and maybe others) holding anything: past the first check."""
    keys = st.sampled_from(sorted(schema.fields)) if schema.fields else st.text(max_size=8)
    return st.dictionaries(keys | st.text(max_size=8), MSGPACK_VALUES, max_size=len(schema.fields) + 1)


def conforming(check: Check) -> st.SearchStrategy[Any]:
    """Values that pass ``check``: they reach the real handlers."""
    if isinstance(check, Record):
        required = {name: conforming(key.check) | st.none() if key.nullable else conforming(key.check)
                    for name, key in check.fields.items() if key.required}
        optional_ = {name: conforming(key.check) for name, key in check.fields.items() if not key.required}
        return st.fixed_dictionaries(required, optional=optional_)
    if isinstance(check, ListOf):
        return st.lists(conforming(check.item), max_size=min(check.max_items, 2))
    if isinstance(check, Int):
        return st.integers(check.low, check.high)
    if isinstance(check, Number):
        # Short: a stop's timeout is waited out in full on the test driver.
        high = max(check.low, min(check.high, 0.5))
        return st.floats(check.low, high) | st.integers(int(check.low), max(int(check.low), 0))
    if isinstance(check, Text):
        chars = st.characters(exclude_categories=["Cs"])
        text = st.text(chars, min_size=int(check.nonempty), max_size=min(check.max_len, 40))
        return text.filter(str.isprintable) if check.one_line else text
    if isinstance(check, Pattern):
        return st.from_regex(check.regex, fullmatch=True)
    if isinstance(check, OneOf):
        return st.sampled_from(check.choices)
    if isinstance(check, Url):  # nothing listens there: a fetch fails at once
        return st.sampled_from(["http://127.0.0.1:9/f?signature=ab", "https://[::1]:9/f"])
    if check is IPV4:
        return st.ip_addresses(v=4).map(str)
    if isinstance(check, Bytes):
        return st.binary(max_size=min(check.max_len, 64))
    raise AssertionError(f"no strategy for {check!r}")


def as_received(value: Any) -> Any:
    """What a leaf would hand the registry after the body crossed the wire."""
    return msgpack.unpackb(msgpack.packb(value), raw=False)


@pytest.fixture(scope="module")
def real_ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpRegistry]:
    conn = libvirt.open("test:///default")  # keeps the test driver's state for the module
    registry = OpRegistry(workers=2)
    system.register(registry, data_dir=str(tmp_path_factory.mktemp("system")))
    compute.register(registry, BackendConfig(node_id="hv1", data_dir=str(tmp_path_factory.mktemp("compute")),
                                             compute=ComputeSection(uri="test:///default", domain_type="qemu",
                                                                    stop_timeout_s=0.1)))
    yield registry
    registry.close()
    conn.close()
    gc.collect()


def test_the_real_ops_are_the_schemas_tested_here(real_ops: OpRegistry) -> None:
    assert set(real_ops.names()) == set(SCHEMAS) - {"test.append"}


def answered_without_crashing(result: Result) -> bool:
    # 70 is a handler that raised something unexpected: arguments it was not written for.
    return result.status in (Status.OK, Status.ERROR) and result.exit_status != 70


OPS = sorted(set(SCHEMAS) - {"test.append"})


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_arbitrary_bodies_are_answered_never_crash(real_ops: OpRegistry, op: str, data: st.DataObject) -> None:
    body = data.draw(MSGPACK_VALUES | near(SCHEMAS[op]))
    result = run(real_ops, op, as_received(body))
    assert answered_without_crashing(result), (result.exit_status, result.message)
    if result.status is Status.ERROR and result.exit_status == 64:
        assert re.match(rf"{re.escape(op)}: args[.\[:]", result.message), result.message


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_conforming_bodies_reach_the_real_handlers_and_never_crash(real_ops: OpRegistry, op: str,
                                                                    data: st.DataObject) -> None:
    body = data.draw(conforming(SCHEMAS[op]))
    result = run(real_ops, op, as_received(body))
    assert answered_without_crashing(result), (result.exit_status, result.message)
    assert not result.message.startswith(f"{op}: args"), result.message
