"""GET /v1/instances a page at a time (limit, offset), as the console lists them."""

from __future__ import annotations

from frontend.db.models import Flavor, Image, Instance
from frontend.services import Frontend
from tests.api.conftest import Api, error_of


def test_pages_neither_overlap_nor_skip(admin: Api, frontend: Frontend) -> None:
    tenant = admin.tenant("acme")
    with frontend.db.transaction() as session:
        flavor = Flavor(org_id=tenant.who["org_id"], name="small", vcpus=1, memory_mb=256, disk_gb=1, public=False,
                        status="active")
        image = Image(org_id=tenant.who["org_id"], name="tiny", format="qcow2", public=False, status="active")
        session.add_all([flavor, image])
        session.flush()
        # One instant for all of them: only the id orders them, and pages must still be stable.
        session.add_all(Instance(org_id=tenant.who["org_id"], name=f"i{n}", flavor_id=flavor.id, image_id=image.id,
                                 vcpus=1, memory_mb=256, disk_gb=1, status="active", created_at=image.created_at)
                        for n in range(25))
    everything = [i["id"] for i in tenant.ok("get", "/v1/instances")["items"]]
    pages = [tenant.ok("get", f"/v1/instances?limit=10&offset={offset}")["items"] for offset in (0, 10, 20)]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i["id"] for page in pages for i in page] == everything
    assert admin.ok("get", "/v1/instances?limit=10")["items"] == [], "another organization's are not listed"
    refused = tenant.get("/v1/instances?limit=0")
    assert refused.status_code == 422 and error_of(refused)["field"] == "limit"
