"""A KServe v2 inference request checked at the gateway, and forwarded to Triton in the form that was checked.

The pass-through used to forward bodies unchanged, so Triton's own parser was the first to
read them, and it trusts a tensor's ``shape``: one request declaring a shape of 10¹² elements
with a single value made Triton allocate for the shape and abort (``std::bad_alloc``), taking
every model down until it restarted. Malformed bodies came back as Triton's 500s, which the
gateway reported as 502s, and ``NaN`` (which JSON does not have) was passed to the model.

Here each input's ``shape`` must match the values it carries (JSON ``data``, or its
``binary_data_size`` bytes after the JSON header), so a request can declare no more than its
body holds, and the caller's mistakes are answered 400, 413, 415 or 422 like ``/v1``'s. What
goes to Triton is the JSON header as this module parsed it, re-serialized (then the binary
tensors, inflated when the request was compressed): two parsers must not read one body two
ways — with a key repeated, orjson keeps the last value and Triton's parser the first.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType

BINARY_HEADER = "inference-header-content-length"
ELEMENT_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
                 "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8, "BF16": 2}
DATATYPES = frozenset(ELEMENT_BYTES) | {"BYTES"}
DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""``Content-Encoding`` → zlib's window bits (what ``tritonclient.http`` compresses requests with)."""
INTEGER_RANGES = {"INT8": (-2**7, 2**7 - 1), "INT16": (-2**15, 2**15 - 1), "INT32": (-2**31, 2**31 - 1),
                  "INT64": (-2**63, 2**63 - 1), "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1),
                  "UINT32": (0, 2**32 - 1), "UINT64": (0, 2**64 - 1)}
COUNTS = frozenset({"classification", "priority", "timeout", "sequence_id", "binary_data_size"})
"""Parameters Triton reads as non-negative integers (a negative one made it answer 500)."""
REPLACED_HEADERS = ("content-type", "content-encoding", BINARY_HEADER)
"""The caller's headers that :class:`CheckedRequest` replaces (its body is re-serialized, never compressed)."""


@dataclass(frozen=True)
class CheckedRequest:
    """What to send Triton: the checked request and the headers that describe it."""

    body: bytes
    headers: dict[str, str]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def leaf_check(datatype: str) -> Callable[[Any], bool]:
    """Whether a JSON value may be an element of a ``datatype`` tensor (an integer type's: an integer in its range)."""
    if datatype == "BYTES":
        return lambda value: isinstance(value, str)
    if datatype == "BOOL":
        return lambda value: isinstance(value, bool)
    if datatype in INTEGER_RANGES:
        low, high = INTEGER_RANGES[datatype]
        return lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    return _is_number


def _checked_parameters(parameters: Any, where: str) -> dict[str, Any]:
    """``parameters``: an object of scalar values, those Triton counts with non-negative integers."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}.parameters must be an object")
    for name, value in parameters.items():
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidInput(f"{where}.parameters.{name:.40} must be a string, number or boolean")
        if name in COUNTS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise InvalidInput(f"{where}.parameters.{name} must be a non-negative integer")
    return parameters


def _check_request_fields(request: dict[str, Any]) -> None:
    """What Triton reads besides the inputs: the id, the request's parameters and the outputs asked for."""
    if "id" in request and not isinstance(request["id"], str):
        raise InvalidInput("`id` must be a string")
    _checked_parameters(request.get("parameters"), "request")
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list):
        raise InvalidInput("`outputs` must be a list of objects with a `name`")
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInput(f"outputs[{index}] must be an object with a `name`")
        _checked_parameters(output.get("parameters"), f"outputs[{index}]")


def checked_infer_request(body: bytes, headers: Mapping[str, str], *, max_bytes: int) -> CheckedRequest:
    """The request to forward, or the caller's error for one Triton must not be handed. A compressed body is checked
    as it inflates, refused (413) past ``max_bytes``. The content type is not checked (Triton reads the body as JSON
    whatever it says, and ``tritonclient.http.aio`` sends JSON as ``application/octet-stream``)."""
    body = _decoded(body, headers.get("content-encoding"), max_bytes)
    header_length = _binary_header_length(headers, len(body))
    document = body if header_length is None else body[:header_length]
    try:
        request = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InvalidInput("an inference request is an object with a non-empty list of `inputs`")
    _check_request_fields(request)
    binary_bytes = sum(_checked_input(tensor, index, max_bytes) for index, tensor in enumerate(request["inputs"]))
    carried = 0 if header_length is None else len(body) - header_length
    if binary_bytes != carried:
        raise InvalidInput(f"the inputs' binary_data_size add up to {binary_bytes} bytes, the body carries {carried} "
                           f"after the JSON header")
    try:
        canonical = orjson.dumps(request)
    except orjson.JSONEncodeError as exc:  # e.g. nested deeper than orjson writes, in a field Triton ignores
        raise InvalidInput(f"the inference request cannot be forwarded: {exc}") from None
    if header_length is None:
        return CheckedRequest(canonical, {"content-type": "application/json"})
    return CheckedRequest(canonical + body[header_length:], {"content-type": "application/octet-stream",
                                                             BINARY_HEADER: str(len(canonical))})


def _decoded(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    if encoding is None or encoding.strip().lower() == "identity":
        return body
    window = DECODERS.get(encoding.strip().lower())
    if window is None:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported (gzip, deflate or none)")
    inflater = zlib.decompressobj(window)
    try:
        decoded = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {encoding}: {exc}") from None
    if len(decoded) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the body inflates beyond the limit of {max_bytes} bytes", limit=max_bytes)
    if not inflater.eof or inflater.unused_data:
        raise BadRequest(f"the body is not one whole {encoding} stream")
    return decoded


def _binary_header_length(headers: Mapping[str, str], body_length: int) -> int | None:
    declared = headers.get(BINARY_HEADER)
    if declared is None:
        return None
    if not (declared.isascii() and declared.isdigit()) or int(declared) > body_length:
        raise BadRequest(f"{BINARY_HEADER} must be the length of the JSON header, at most the body's {body_length} "
                         f"bytes; got {declared[:40]!r}")
    return int(declared)


def short(shape: list[int]) -> str:
    """A shape for a message: its first dimensions."""
    return str(shape) if len(shape) <= 8 else f"[{', '.join(map(str, shape[:8]))}, … ({len(shape)} dimensions)]"


def _elements(shape: list[int], where: str, limit: int) -> int:
    """The values ``shape`` holds; refused once past ``limit`` (no body under the limit carries more)."""
    if 0 in shape:
        return 0
    count = 1
    for dimension in shape:
        count *= dimension
        if count > limit:
            raise InvalidInput(f"{where}.shape {short(shape)} declares more values than a request body of at most "
                               f"{limit} bytes can carry")
    return count


def _checked_input(tensor: Any, index: int, max_bytes: int) -> int:
    """Check one input; the bytes of binary data it takes from after the JSON header (0 for JSON ``data``)."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InvalidInput(f"{where} must be an object with a `name`")
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"{where}.datatype must be one of {', '.join(sorted(DATATYPES))}; got {datatype!r:.40}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InvalidInput(f"{where}.shape must be a list of non-negative integers")
    elements = _elements(shape, where, max_bytes)
    binary_size = _checked_parameters(tensor.get("parameters"), where).get("binary_data_size")
    if binary_size is not None:
        if datatype != "BYTES" and binary_size != elements * ELEMENT_BYTES[datatype]:
            raise InvalidInput(f"{where}: shape {short(shape)} of {datatype} is {elements * ELEMENT_BYTES[datatype]} bytes, "
                               f"binary_data_size says {binary_size}")
        if datatype == "BYTES" and elements * 4 > binary_size:  # each element is a 4-byte length, then its bytes
            raise InvalidInput(f"{where}: shape {short(shape)} of BYTES needs at least {elements * 4} bytes, "
                               f"binary_data_size says {binary_size}")
        return binary_size
    if "data" not in tensor:
        raise InvalidInput(f"{where} has neither `data` nor `parameters.binary_data_size`")
    values = _count_values(tensor["data"], where, leaf_check(datatype), datatype, max_depth=max(len(shape), 1))
    if values != elements:
        raise InvalidInput(f"{where}: shape {short(shape)} holds {elements} values, `data` has {values}")
    return 0


def _count_values(data: Any, where: str, is_element: Callable[[Any], bool], datatype: str, *,
                  max_depth: int) -> int:
    """The values of ``data``, flat or nested row-major (no deeper than the shape), each one a ``datatype``
    element."""
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data must be a list of values")
    count, stack = 0, [(data, 1)]
    while stack:
        values, depth = stack.pop()
        for item in values:
            if isinstance(item, list):
                if depth >= max_depth:
                    raise InvalidInput(f"{where}.data is nested deeper than its shape's {max_depth} dimensions")
                stack.append((item, depth + 1))
            elif is_element(item):
                count += 1
            else:
                raise InvalidInput(f"{where}.data holds {item!r:.40}, not a {datatype} value")
    return count
