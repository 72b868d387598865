"""Server groups: anti-affinity groups, their members, and who may see and delete them."""

from __future__ import annotations

from frontend.db.models import Flavor, Image, Instance
from frontend.services import Frontend
from tests.api.conftest import Api, error_of


def _add_instances(frontend: Frontend, org_id: str, group_id: str, count: int) -> list[str]:
    with frontend.db.transaction() as session:
        flavor = Flavor(org_id=org_id, name="tiny", vcpus=1, memory_mb=128, disk_gb=1, status="active")
        image = Image(org_id=org_id, name="img", format="raw", status="active")
        session.add_all([flavor, image])
        session.flush()
        instances = [Instance(org_id=org_id, name=f"vm{i}", flavor_id=flavor.id, image_id=image.id,
                              server_group_id=group_id, vcpus=1, memory_mb=128, disk_gb=1, status="active")
                     for i in range(count)]
        session.add_all(instances)
        session.flush()
        return [i.id for i in instances]


def test_create_list_show_delete(admin: Api) -> None:
    member = admin.tenant("acme", role="member")
    group = member.ok("post", "/v1/server-groups", 201, json={"name": "web", "policy": "anti-affinity"})
    assert group["policy"] == "anti-affinity" and group["members"] == [] and group["status"] == "active"
    assert group["org_id"] == member.who["org_id"]
    member.ok("post", "/v1/server-groups", 201, json={"name": "db", "policy": "anti-affinity"})
    assert [g["name"] for g in member.ok("get", "/v1/server-groups")["items"]] == ["db", "web"]
    assert member.ok("get", "/v1/server-groups/web") == group
    assert member.ok("get", f"/v1/server-groups/{group['id']}") == group
    member.ok("delete", "/v1/server-groups/web", 204)
    assert member.get(f"/v1/server-groups/{group['id']}").status_code == 404


def test_only_anti_affinity_and_good_names(admin: Api) -> None:
    response = admin.post("/v1/server-groups", json={"name": "web", "policy": "affinity"})
    error = error_of(response)
    assert response.status_code == 422 and error["field"] == "policy" and "'anti-affinity'" in error["reason"]
    response = admin.post("/v1/server-groups", json={"name": "web"})
    assert response.status_code == 422 and error_of(response)["field"] == "policy"
    response = admin.post("/v1/server-groups", json={"name": "-web", "policy": "anti-affinity"})
    assert response.status_code == 422 and error_of(response)["field"] == "name"
    response = admin.post("/v1/server-groups", json={"name": "web", "policy": "anti-affinity", "rules": {}})
    assert response.status_code == 422 and error_of(response)["reason"] == "unknown field"
    admin.ok("post", "/v1/server-groups", 201, json={"name": "web", "policy": "anti-affinity"})
    response = admin.post("/v1/server-groups", json={"name": "web", "policy": "anti-affinity"})
    assert response.status_code == 409 and error_of(response)["field"] == "name"


def test_members_are_shown_and_keep_the_group(admin: Api, frontend: Frontend) -> None:
    member = admin.tenant("acme", role="member")
    group = member.ok("post", "/v1/server-groups", 201, json={"name": "web", "policy": "anti-affinity"})
    other = member.ok("post", "/v1/server-groups", 201, json={"name": "db", "policy": "anti-affinity"})
    ids = _add_instances(frontend, member.who["org_id"], group["id"], 2)
    assert sorted(member.ok("get", "/v1/server-groups/web")["members"]) == sorted(ids)
    listed = {g["name"]: g["members"] for g in member.ok("get", "/v1/server-groups")["items"]}
    assert sorted(listed["web"]) == sorted(ids) and listed["db"] == []
    response = member.delete("/v1/server-groups/web")
    assert response.status_code == 409 and "2 instances are members" in error_of(response)["reason"]
    member.ok("delete", f"/v1/server-groups/{other['id']}", 204)
    with frontend.db.transaction() as session:
        for instance_id in ids:
            session.delete(session.get(Instance, instance_id))
    member.ok("delete", "/v1/server-groups/web", 204)


def test_other_organizations_groups_are_invisible(admin: Api) -> None:
    a, b = admin.tenant("acme"), admin.tenant("initech")
    group = a.ok("post", "/v1/server-groups", 201, json={"name": "web", "policy": "anti-affinity"})
    assert b.ok("get", "/v1/server-groups")["items"] == []
    for path in (f"/v1/server-groups/{group['id']}", "/v1/server-groups/web"):
        assert b.get(path).status_code == 404
        response = b.delete(path)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert b.get("/v1/server-groups/no-such-group").status_code == 404
    b.ok("post", "/v1/server-groups", 201, json={"name": "web", "policy": "anti-affinity"})
    assert a.ok("get", "/v1/server-groups/web")["id"] == group["id"]


def test_reader_may_look_but_not_create_or_delete(admin: Api) -> None:
    boss = admin.tenant("acme")
    boss.ok("post", "/v1/server-groups", 201, json={"name": "web", "policy": "anti-affinity"})
    boss.ok("post", "/v1/users", 201, json={"name": "rita", "password": "long-enough", "role": "reader"})
    reader = boss.login("rita", "long-enough")
    response = reader.post("/v1/server-groups", json={"name": "db", "policy": "anti-affinity"})
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    assert reader.delete("/v1/server-groups/web").status_code == 403
    assert [g["name"] for g in reader.ok("get", "/v1/server-groups")["items"]] == ["web"]
