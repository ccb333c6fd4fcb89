"""API keys over the registry's HTTP API: roles per route, rotation, revocation, bootstrap, audit."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from services.registry.rollout import CONTROLLER
from services.registry.settings import RegistrySettings
from services.registry.traffic import RECONCILER
from tests.conftest import write_key_file
from tests.registry.factories import model_name, upload_parts, version_metadata
from tests.registry.harness import bearer, new_key, running_registry
from tests.registry.test_api import assert_problem


@pytest.fixture
async def admin(sqlite_settings):
    async with running_registry(sqlite_settings) as client:
        yield client


async def test_missing_unknown_and_malformed_keys_are_401(admin):
    for headers in ({"Authorization": ""}, bearer("mlf_unknown"), {"Authorization": "Basic YWxhZGRpbjpvcGVu"}):
        response = await admin.get("/v1/models", headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == 'Bearer realm="mlfleet"'
    assert (await admin.get("/healthz", headers={"Authorization": ""})).status_code == 200
    assert (await admin.get("/v1/routes", headers={"Authorization": ""})).status_code == 200


async def test_each_role_can_do_its_own_and_the_smaller_roles_work_only(admin, trained):
    name = model_name()
    viewer, scientist = await new_key(admin, "ana", "viewer"), await new_key(admin, "sam", "scientist")
    deployer = await new_key(admin, "dee", "deployer")
    assert (await admin.get("/v1/auth/whoami", headers=scientist)).json() == {"name": "sam", "role": "scientist"}

    assert_problem(await admin.post("/v1/models", json={"name": name}, headers=viewer), 403, "forbidden")
    assert (await admin.post("/v1/models", json={"name": name}, headers=scientist)).status_code == 201
    upload = await admin.post(f"/v1/models/{name}/versions", files=upload_parts(trained.onnx, version_metadata()),
                              headers=scientist)
    assert upload.status_code == 201, upload.text
    assert (await admin.get(f"/v1/models/{name}/versions", headers=viewer)).json()["count"] == 1
    assert (await admin.get("/v1/audit", headers=viewer)).status_code == 200

    refused = assert_problem(await admin.put(f"/v1/models/{name}/traffic", json={"stable": 1}, headers=scientist),
                             403, "forbidden")
    assert refused["required_role"] == "deployer" and refused["role"] == "scientist"
    assert (await admin.put(f"/v1/models/{name}/traffic", json={"stable": 1}, headers=deployer)).status_code == 200
    assert_problem(await admin.post(f"/v1/models/{name}/rollback", headers=viewer), 403, "forbidden")
    assert_problem(await admin.post("/v1/keys", json={"name": "x", "role": "viewer"}, headers=deployer), 403, "forbidden")
    assert_problem(await admin.get("/v1/keys", headers=deployer), 403, "forbidden")

    audit = (await admin.get("/v1/audit", params={"model": name})).json()["data"]
    assert [(e["action"], e["actor"]) for e in audit] == [("traffic.set", "dee"), ("version.register", "sam"),
                                                          ("model.create", "sam")]


async def test_rotation_keeps_two_keys_valid_until_the_old_one_is_revoked(admin):
    old = (await admin.post("/v1/keys", json={"name": "ci", "role": "deployer"})).json()
    new = (await admin.post("/v1/keys", json={"name": "ci", "role": "deployer"})).json()
    assert old["key"] != new["key"] and old["name"] == new["name"] == "ci"
    for created in (old, new):
        assert (await admin.get("/v1/auth/whoami", headers=bearer(created["key"]))).json()["name"] == "ci"
    revoked = await admin.delete(f"/v1/keys/{old['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_problem(await admin.get("/v1/auth/whoami", headers=bearer(old["key"])), 401, "unauthorized")
    assert (await admin.get("/v1/auth/whoami", headers=bearer(new["key"]))).status_code == 200
    listed = {k["id"]: k for k in (await admin.get("/v1/keys")).json()["data"]}
    assert listed[new["id"]]["revoked_at"] is None and listed[old["id"]]["prefix"] == old["key"][:8]
    assert all("key" not in k for k in listed.values())
    assert_problem(await admin.delete("/v1/keys/999999"), 404, "not-found")
    actions = [(e["action"], e["actor"], e["detail"].get("name")) for e in (await admin.get("/v1/audit")).json()["data"]]
    assert ("key.revoke", "bootstrap-admin", "ci") in actions and ("key.create", "bootstrap-admin", "ci") in actions


async def test_bad_key_requests_are_422(admin):
    assert_problem(await admin.post("/v1/keys", json={"name": "x", "role": "root"}), 422, "invalid-input")
    assert_problem(await admin.post("/v1/keys", json={"name": "", "role": "viewer"}), 422, "invalid-input")
    assert_problem(await admin.delete("/v1/keys/zero"), 422, "invalid-input")
    for system_actor in (CONTROLLER, RECONCILER, "registry", "Controller"):  # what the registry's own writes use
        refused = await admin.post("/v1/keys", json={"name": system_actor, "role": "deployer"})
        assert_problem(refused, 422, "invalid-input")
        assert "audited under" in refused.text


async def test_keys_are_stored_hashed_and_never_logged(sqlite_settings, admin_key, capsys):
    async with running_registry(sqlite_settings.model_copy(update={"log_level": "debug"})) as client:
        created = (await client.post("/v1/keys", json={"name": "hidden", "role": "viewer"})).json()
        await client.get("/v1/models", headers=bearer(created["key"]))
        await client.get("/v1/models", headers=bearer(created["key"] + "typo"))
    engine = create_engine(sqlite_settings.database_url)
    with engine.connect() as connection:
        stored = " ".join(str(row) for row in connection.execute(text("SELECT * FROM api_keys")))
    engine.dispose()
    logs = capsys.readouterr().err
    assert "bootstrap admin key registered" in logs, "the registry's logs were not captured"
    for key in (created["key"], admin_key):
        assert key not in stored
        assert key not in logs


async def test_the_bootstrap_key_comes_from_a_secret_file_and_its_revocation_sticks(tmp_path, triton, redis_url,
                                                                                    admin_key):
    settings = RegistrySettings(home=tmp_path, triton_grpc_url=triton.grpc_url, redis_url=redis_url,
                                bootstrap_admin_key_file=write_key_file(tmp_path / "admin.key", admin_key))
    async with running_registry(settings) as client:
        me = (await client.get("/v1/auth/whoami")).json()
        assert me == {"name": "bootstrap-admin", "role": "admin"}
        bootstrap = next(k for k in (await client.get("/v1/keys")).json()["data"] if k["name"] == "bootstrap-admin")
        last = await client.delete(f"/v1/keys/{bootstrap['id']}")
        assert_problem(last, 409, "conflict")  # the only admin: nobody could manage keys any more
        assert "last admin key" in last.json()["detail"]
        other = (await client.post("/v1/keys", json={"name": "root2", "role": "admin"})).json()
        assert (await client.delete(f"/v1/keys/{bootstrap['id']}", headers=bearer(other["key"]))).status_code == 200
        assert_problem(await client.delete(f"/v1/keys/{other['id']}", headers=bearer(other["key"])), 409, "conflict")
    async with running_registry(settings) as client:
        assert_problem(await client.get("/v1/auth/whoami"), 401, "unauthorized")
        assert (await client.get("/v1/auth/whoami", headers=bearer(other["key"]))).json()["role"] == "admin"


async def test_without_any_key_configured_nothing_is_allowed(tmp_path, triton, redis_url):
    settings = RegistrySettings(home=tmp_path, triton_grpc_url=triton.grpc_url, redis_url=redis_url)
    async with running_registry(settings) as client:
        assert_problem(await client.get("/v1/models"), 401, "unauthorized")
