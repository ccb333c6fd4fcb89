"""The registry's HTTP API in process, against SQLite and PostgreSQL, with real Triton and Redis."""

from __future__ import annotations

import hashlib
import json

from services.common.errors import PROBLEM_JSON
from tests.registry.factories import model_name, upload_parts, version_metadata
from tests.registry.harness import new_key, running_registry


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    return body


async def create_model(client, name: str, *, headers: dict[str, str] | None = None, **extra) -> dict:
    response = await client.post("/v1/models", json={"name": name, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def register(client, name: str, onnx_bytes: bytes, *, headers: dict[str, str] | None = None, **metadata) -> dict:
    response = await client.post(f"/v1/models/{name}/versions", files=upload_parts(onnx_bytes, version_metadata(**metadata)),
                                 headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_round_trip(client, trained, trained_v2):
    name = model_name()
    alice, bob = await new_key(client, "alice", "scientist"), await new_key(client, "bob", "scientist")
    carol = await new_key(client, "carol", "deployer")
    created = await create_model(client, name, headers=alice, description="fraud scores")
    assert created["name"] == name
    assert created["gates"] == {"min_auc": 0.9, "min_accuracy": 0.85}

    assert (await client.get(f"/v1/models/{name}")).json() == created
    assert created in (await client.get("/v1/models")).json()["data"]

    v1 = await register(client, name, trained.onnx, headers=bob, description="first")
    assert v1["model"] == name
    assert v1["version"] == 1
    assert v1["status"] == "registered"
    assert v1["sha256"] == hashlib.sha256(trained.onnx).hexdigest()
    assert v1["size_bytes"] == len(trained.onnx)
    assert v1["metrics"] == {"auc": 0.95, "accuracy": 0.9}
    assert v1["lineage"] == {"dataset_hash": "abc123", "params": {"C": 1.0}, "code_revision": "deadbeef"}
    assert [i["name"] for i in v1["signature"]["inputs"]] == ["f0", "f1", "f2", "f3"]

    listed = (await client.get(f"/v1/models/{name}/versions")).json()
    assert listed == {"data": [{k: v for k, v in v1.items() if k != "reference_profile"}], "count": 1}
    assert (await client.get(f"/v1/models/{name}/versions/1")).json() == v1

    artifact = await client.get(f"/v1/models/{name}/versions/1/artifact")
    assert artifact.status_code == 200
    assert artifact.content == trained.onnx
    assert hashlib.sha256(artifact.content).hexdigest() == v1["sha256"]

    untouched = (await client.get(f"/v1/models/{name}/traffic")).json()
    assert untouched["stable"] is None and untouched["revision"] == 0

    traffic = await client.put(f"/v1/models/{name}/traffic", json={"stable": 1}, headers=carol)
    assert traffic.status_code == 200, traffic.text
    first = traffic.json()
    assert first["model"] == name and first["stable"] == 1 and first["canary"] is None and first["revision"] >= 1
    assert (await client.get(f"/v1/models/{name}/traffic")).json() == first

    v2 = await register(client, name, trained_v2.onnx, headers=bob)
    assert v2["version"] == 2
    canary = await client.put(f"/v1/models/{name}/traffic", json={"stable": 1, "canary": 2, "canary_percent": 12.5})
    assert canary.status_code == 200, canary.text
    second = canary.json()
    assert second["revision"] > first["revision"]
    assert (second["stable"], second["canary"], second["canary_percent"]) == (1, 2, 12.5)

    routes = (await client.get("/v1/routes")).json()
    route = next(m for m in routes["models"] if m["model"] == name)
    assert routes["revision"] >= second["revision"]
    assert route["revision"] == second["revision"]
    assert (route["stable"], route["canary"], route["canary_percent"], route["shadow"]) == (1, 2, 12.5, None)
    assert [v["version"] for v in route["versions"]] == [1, 2]
    assert route["versions"][0]["signature"] == v1["signature"]

    audit = (await client.get("/v1/audit", params={"model": name})).json()
    assert [(e["action"], e["actor"], e["version"]) for e in audit["data"]] == [
        ("traffic.set", "bootstrap-admin", 1),
        ("version.register", "bob", 2),
        ("traffic.set", "carol", 1),
        ("version.register", "bob", 1),
        ("model.create", "alice", None),
    ]
    assert audit["count"] == 5
    assert audit["data"][0]["detail"]["after"]["canary"] == 2
    assert audit["next_before_id"] is None, "the whole trail fit one page"

    def actions(page: dict) -> list[tuple[str, str]]:
        return [(e["action"], e["actor"]) for e in page["data"]]

    first = (await client.get("/v1/audit", params={"model": name, "limit": 2})).json()
    assert (actions(first), first["next_before_id"]) == ([("traffic.set", "bootstrap-admin"),
                                                           ("version.register", "bob")], first["data"][-1]["id"])
    rest = (await client.get("/v1/audit", params={"model": name, "limit": 3,
                                                  "before_id": first["next_before_id"]})).json()
    assert actions(rest) == [("traffic.set", "carol"), ("version.register", "bob"), ("model.create", "alice")]
    by_bob = (await client.get("/v1/audit", params={"model": name, "actor": "bob"})).json()
    assert actions(by_bob) == [("version.register", "bob")] * 2
    sets = (await client.get("/v1/audit", params={"model": name, "action": "traffic.set"})).json()
    assert actions(sets) == [("traffic.set", "bootstrap-admin"), ("traffic.set", "carol")]
    family = (await client.get("/v1/audit", params={"model": name, "action": "version."})).json()
    assert [a for a, _ in actions(family)] == ["version.register"] * 2
    assert (await client.get("/v1/audit", params={"model": name, "action": "traffic"})).json()["count"] == 0
    assert_problem(await client.get("/v1/audit", params={"action": "traffic.%"}), 422, "invalid-input")


async def test_promoting_keeps_the_previous_stable_loaded_for_rollback(client, trained, trained_v2):
    name = model_name()
    await create_model(client, name)
    await register(client, name, trained.onnx)
    await register(client, name, trained_v2.onnx)
    assert (await client.put(f"/v1/models/{name}/traffic", json={"stable": 1})).status_code == 200
    assert (await client.put(f"/v1/models/{name}/traffic", json={"stable": 2})).status_code == 200
    route = next(m for m in (await client.get("/v1/routes")).json()["models"] if m["model"] == name)
    assert route["stable"] == 2 and route["canary"] is None
    assert [v["version"] for v in route["versions"]] == [1, 2]


async def test_the_gate_refuses_a_weak_version(client, trained):
    name = model_name()
    await create_model(client, name)
    response = await client.post(f"/v1/models/{name}/versions",
                                 files=upload_parts(trained.onnx, version_metadata(auc=0.71, accuracy=None)))
    body = assert_problem(response, 422, "version-rejected")
    assert body["reasons"] == ["auc 0.71 < min_auc 0.90", "accuracy missing, required by min_accuracy 0.85"]
    assert (await client.get(f"/v1/models/{name}/versions")).json() == {"data": [], "count": 0}
    audit = (await client.get("/v1/audit", params={"model": name})).json()["data"]
    assert audit[0]["action"] == "version.reject" and audit[0]["detail"]["reasons"] == body["reasons"]


async def test_a_model_with_lower_gates_accepts_the_same_version(client, trained):
    name = model_name()
    await create_model(client, name, gates={"min_auc": 0.7, "min_accuracy": None})
    version = await register(client, name, trained.onnx, auc=0.71, accuracy=None)
    assert version["version"] == 1


async def test_a_duplicate_model_is_a_conflict(client):
    name = model_name()
    await create_model(client, name)
    assert_problem(await client.post("/v1/models", json={"name": name}), 409, "model-exists")


async def test_unknown_models_and_versions_are_404(client, trained):
    name = model_name()
    for path in [f"/v1/models/{name}", f"/v1/models/{name}/versions", f"/v1/models/{name}/traffic"]:
        assert_problem(await client.get(path), 404, "model-not-found")
    upload = await client.post(f"/v1/models/{name}/versions", files=upload_parts(trained.onnx, version_metadata()))
    assert_problem(upload, 404, "model-not-found")
    assert_problem(await client.put(f"/v1/models/{name}/traffic", json={"stable": 1}), 404, "model-not-found")
    await create_model(client, name)
    assert_problem(await client.get(f"/v1/models/{name}/versions/1"), 404, "version-not-found")
    assert_problem(await client.get(f"/v1/models/{name}/versions/1/artifact"), 404, "version-not-found")
    await register(client, name, trained.onnx)
    unknown = await client.put(f"/v1/models/{name}/traffic", json={"stable": 1, "canary": 9, "canary_percent": 5})
    assert "9" in assert_problem(unknown, 404, "version-not-found")["detail"]


async def test_bad_inputs_are_problems(client, trained):
    name = model_name()
    await create_model(client, name)
    versions = f"/v1/models/{name}/versions"

    malformed = assert_problem(await client.post(versions, files=upload_parts(trained.onnx, "{not json")), 422,
                               "invalid-metadata")
    assert malformed["errors"][0]["loc"][0] == "metadata"
    no_signature = {k: v for k, v in version_metadata().items() if k != "signature"}
    assert_problem(await client.post(versions, files=upload_parts(trained.onnx, no_signature)), 422, "invalid-metadata")
    assert_problem(await client.post(versions, files=upload_parts(b"not an onnx model", version_metadata())), 422,
                   "invalid-artifact")
    narrow = await client.post(versions, files=upload_parts(trained.onnx, version_metadata(n_features=3)))
    assert "signature lists 3 inputs" in assert_problem(narrow, 422, "invalid-artifact")["detail"]
    three_classes = version_metadata()
    three_classes["signature"]["output"] = {"classes": ["a", "b", "c"]}
    wider = await client.post(versions, files=upload_parts(trained.onnx, three_classes))
    assert "the signature's 3 classes need [1, 3]" in assert_problem(wider, 422, "invalid-artifact")["detail"]
    three_classes["signature"]["output"] = {"classes": [0, 1], "positive_class_index": 2}
    no_such_class = await client.post(versions, files=upload_parts(trained.onnx, three_classes))
    assert "names no class" in str(assert_problem(no_such_class, 422, "invalid-metadata")["errors"])
    assert_problem(await client.post(versions, data={"metadata": "{}"}), 422, "invalid-input")

    assert_problem(await client.post("/v1/models", json={"name": "Not A Name"}), 422, "invalid-input")
    assert_problem(await client.post("/v1/models", json={"name": "ok", "gates": {"min_auc": 2}}), 422, "invalid-input")
    assert_problem(await client.post("/v1/models", content=b"{", headers={"content-type": "application/json"}), 400,
                   "bad-request")
    traffic = f"/v1/models/{name}/traffic"
    assert_problem(await client.put(traffic, json={"stable": 1, "canary_percent": 5}), 422, "invalid-input")
    assert_problem(await client.get(f"/v1/models/{name}/versions/zero"), 422, "invalid-input")
    assert_problem(await client.get("/v1/audit", params={"limit": 0}), 422, "invalid-input")
    assert (await client.get(versions)).json()["count"] == 0


async def test_an_oversized_artifact_is_413(registry_settings, trained):
    settings = registry_settings.model_copy(update={"max_artifact_bytes": len(trained.onnx) - 1})
    async with running_registry(settings) as client:
        name = model_name()
        await create_model(client, name)
        response = await client.post(f"/v1/models/{name}/versions", files=upload_parts(trained.onnx, version_metadata()))
        assert_problem(response, 413, "payload-too-large")


async def test_the_metadata_of_a_model_with_a_thousand_inputs_fits_and_an_absurd_one_is_a_problem(client, trained):
    """A reference profile of ~1,000 inputs, 500 sampled values each, is several MiB: more than a form field's
    default limit (1 MiB), well under the upload's (16 MiB)."""
    name = model_name()
    await create_model(client, name)
    metadata = version_metadata()
    sample = [round(0.123456789 * i, 6) for i in range(500)]
    metadata["reference_profile"] = {"features": {f"x{i}": {"kind": "numeric", "sample": sample} for i in range(1000)}}
    text = json.dumps(metadata)
    assert 4 * 1024 * 1024 < len(text) < 16 * 1024 * 1024
    response = await client.post(f"/v1/models/{name}/versions", files=upload_parts(trained.onnx, text))
    assert response.status_code == 201, response.text[:500]
    stored = (await client.get(f"/v1/models/{name}/versions/1")).json()["reference_profile"]
    assert stored["features"]["x999"]["sample"] == sample
    listed = await client.get(f"/v1/models/{name}/versions")
    assert [v["version"] for v in listed.json()["data"]] == [1]
    assert "reference_profile" not in listed.json()["data"][0], "a list carries no profiles"
    assert len(listed.content) < 10_000

    huge = json.dumps({**metadata, "description": "x" * (17 * 1024 * 1024)})
    response = await client.post(f"/v1/models/{name}/versions", files=upload_parts(trained.onnx, huge))
    assert_problem(response, 400, "http-400")


async def test_an_admin_changes_a_models_gates_and_the_next_version_is_judged_by_them(client, trained):
    name = model_name()
    await create_model(client, name, description="fraud scores")
    scientist = await new_key(client, "sam", "scientist")
    weak = upload_parts(trained.onnx, version_metadata(auc=0.8))
    assert_problem(await client.post(f"/v1/models/{name}/versions", files=weak), 422, "version-rejected")
    assert_problem(await client.patch(f"/v1/models/{name}", json={"gates": {"min_auc": 0.75}}, headers=scientist),
                   403, "forbidden")

    updated = await client.patch(f"/v1/models/{name}", json={"gates": {"min_auc": 0.75, "min_accuracy": None}})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["gates"], updated.json()["description"]) == (
        {"min_auc": 0.75, "min_accuracy": None}, "fraud scores"), "a field left out is kept"
    assert (await client.post(f"/v1/models/{name}/versions", files=weak)).status_code == 201
    described = (await client.patch(f"/v1/models/{name}", json={"description": "v2 of the scores"})).json()
    assert (described["description"], described["gates"]["min_auc"]) == ("v2 of the scores", 0.75)
    one_gate = (await client.patch(f"/v1/models/{name}", json={"gates": {"min_auc": 0.7}})).json()
    assert one_gate["gates"] == {"min_auc": 0.7, "min_accuracy": None}, "a gate left out keeps its value"
    change = (await client.get("/v1/audit", params={"model": name, "action": "model.update"})).json()["data"][-1]
    assert (await client.patch(f"/v1/models/{name}", json={"gates": {"min_auc": 0.7}})).status_code == 200
    assert len((await client.get("/v1/audit", params={"model": name, "action": "model.update"})).json()["data"]) == 3, \
        "setting what is already set leaves no entry"
    assert change["detail"]["before"]["gates"] == {"min_auc": 0.90, "min_accuracy": 0.85}
    assert change["detail"]["after"]["gates"] == {"min_auc": 0.75, "min_accuracy": None}

    assert_problem(await client.patch(f"/v1/models/{model_name()}", json={"description": "x"}), 404, "model-not-found")
    assert_problem(await client.patch(f"/v1/models/{name}", json={"name": "renamed"}), 422, "invalid-input")
    assert_problem(await client.patch(f"/v1/models/{name}", json={"gates": {"min_auc": 2}}), 422, "invalid-input")
    for nothing in ({}, {"gates": {}}):
        assert "nothing to change" in str(assert_problem(await client.patch(f"/v1/models/{name}", json=nothing), 422,
                                                         "invalid-input")["errors"])
