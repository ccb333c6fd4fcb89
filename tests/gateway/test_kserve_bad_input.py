"""A tensor the model cannot take is the caller's error: 400 problem+json with KServe's ``error``, never a 5xx."""

from __future__ import annotations

import gzip

import httpx
import orjson
import pytest

from tests.gateway.conftest import MODEL


@pytest.mark.parametrize("body", [
    {"inputs": [{"name": "input", "shape": [1, 0], "datatype": "FP32", "data": []}]},
    {"inputs": [{"name": "input", "shape": [1, 7], "datatype": "FP32", "data": [1.0] * 7}]},
])
def test_a_tensor_of_the_wrong_width_is_a_client_error(fleet, body):
    response = httpx.post(f"{fleet.gateway.url}/v2/models/{MODEL}/infer", json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "triton-rejected"
    assert problem["error"] == problem["detail"] and "input" in problem["detail"].lower()


def test_an_empty_body_is_a_client_error(fleet):
    response = httpx.post(f"{fleet.gateway.url}/v2/models/{MODEL}/infer", content=b"", timeout=10)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"


def infer(fleet, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{fleet.gateway.url}/v2/models/{MODEL}/infer", content=content,
                      headers={"content-type": "application/json", **headers}, timeout=10)


def test_a_shape_larger_than_its_data_is_refused_before_triton_sees_it(fleet, triton):
    """One such request used to make Triton allocate for the shape and abort, taking every model down."""
    body = b'{"inputs":[{"name":"input","shape":[1000000000000,1],"datatype":"FP32","data":[1.0]}]}'
    response = infer(fleet, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "declares more values than a request body of at most" in response.json()["detail"]
    assert httpx.get(f"http://{triton.http_url}/v2/health/live", timeout=5).status_code == 200
    fine = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [[12.5, 40.0, 3.0]]}]}
    assert infer(fleet, orjson.dumps(fine)).status_code == 200


@pytest.mark.parametrize(("content", "headers", "status", "words"), [
    (b'{"inputs": [', {}, 400, "not valid JSON"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[NaN,1,2]}]}', {}, 400, "not valid JSON"),
    (b"{}", {}, 422, "non-empty list of `inputs`"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":[],"data":[1,2,3]}]}', {}, 422, "datatype"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}',
     {"inference-header-content-length": b"\xb2"}, 400, "length of the JSON header"),
    (b'{"inputs":[{"name":"input","shape":' + orjson.dumps([2**62] * 600) + b',"datatype":"FP32","data":[1]}]}',
     {}, 422, "600 dimensions"),
    (gzip.compress(b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}', mtime=0) + b"more",
     {"content-encoding": "gzip"}, 400, "one whole gzip stream"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":' + b"[" * 300 + b"1" + b"]" * 300 + b"}]}",
     {}, 422, "nested deeper than its shape"),
    (b'{"junk":' + b"[" * 300 + b"]" * 300 + b',"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",'
     b'"data":[1,2,3]}]}', {}, 422, "cannot be forwarded"),
    (b'{"id":{"a":1},"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}', {}, 422,
     "`id` must be a string"),
    (b'{"outputs":{"a":1},"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}', {}, 422,
     "`outputs` must be a list"),
    (b'{"outputs":[{"name":"probabilities","parameters":{"classification":-1}}],"inputs":[{"name":"input",'
     b'"shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}', {}, 422, "classification must be a non-negative"),
    (b'{"parameters":{"priority":-5},"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}',
     {}, 422, "priority must be a non-negative"),
    (b'{"inputs":[{"name":"input","shape":[1,1],"datatype":"INT64","data":[18446744073709551615]}]}', {}, 422,
     "not a INT64 value"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":["a","b","c"]}]}', {}, 422, "not a FP32"),
    (b'{"inputs":[{"name":"input","shape":[1,-3],"datatype":"FP32","data":[1,2,3]}]}', {}, 422, "non-negative"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP99","data":[1,2,3]}]}', {}, 422, "datatype"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":12}}]}'
     + b"\0" * 8, {"inference-header-content-length": "98"}, 422, "add up to 12 bytes"),
    (b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}',
     {"content-encoding": "br"}, 415, "Content-Encoding"),
])
def test_malformed_requests_are_the_callers_error_not_a_502(fleet, content, headers, status, words):
    response = infer(fleet, content, **headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert words in problem["detail"] and problem["error"] == problem["detail"]


def test_triton_reads_the_request_the_gateway_checked(fleet, triton):
    """With a key repeated, orjson keeps the last value and Triton's parser the first: the gateway forwards what it
    parsed, so Triton never sees the huge shape it did not check."""
    body = b'{"inputs":[{"name":"input","shape":[1000000000000,3],"shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}'
    assert infer(fleet, body).status_code == 200
    assert httpx.get(f"http://{triton.http_url}/v2/health/live", timeout=5).status_code == 200


def test_json_sent_as_octet_stream_is_accepted_as_triton_does(fleet):
    fine = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [12.5, 40.0, 3.0]}]}
    assert infer(fleet, orjson.dumps(fine), **{"content-type": "application/octet-stream"}).status_code == 200


def test_a_gzip_request_is_checked_as_it_inflates(fleet):
    fine = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [12.5, 40.0, 3.0]}]})
    assert infer(fleet, gzip.compress(fine), **{"content-encoding": "gzip"}).status_code == 200
    bomb = gzip.compress(b" " * (fleet.gateway_settings["max_body_bytes"] + 1))
    assert infer(fleet, bomb, **{"content-encoding": "gzip"}).status_code == 413
