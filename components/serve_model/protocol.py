"""The server's wire formats: a request's body read into the rows the model answers, and the
answer written back, for KServe's v1 protocol (also Vertex AI's) and the Open Inference
Protocol v2, in JSON and in its binary tensor extension.

A row is one video: its file's bytes, still to be decoded and sampled, or its clips, uint8
``[clips, frames, height, width, 3]``. Everything a client sends is checked here, and anything
wrong is an ``InvalidInput`` (answered 400) naming the field and the problem: bodies that are
not JSON, wrong types anywhere, ragged or out-of-range clips, shapes the model does not take,
bad base64, unknown inputs, outputs or parameters, and a ``top_k`` that is not a class count.
The v2 binary extension (``Inference-Header-Content-Length``: a JSON header, then each binary
input's bytes in order) is read here as a view of the body, never as a Python list: KServe
0.21's own reader (``InferRequest.from_bytes`` in ``kserve/protocol/infer_type.py``) turns
each tensor into a list of numbers, which costs more than the model.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass

import numpy as np
import orjson
from kserve.errors import InvalidInput

V1_KEYS = {"instances", "parameters"}
V2_KEYS = {"id", "model_name", "model_version", "parameters", "inputs", "outputs"}
V2_INPUTS = {"video": "BYTES", "clips": "UINT8"}
V2_OUTPUTS = ("classes", "probabilities")
INFERENCE_HEADER = "inference-header-content-length"
B64_CHUNK = 1 << 20  # base64 characters decoded at a time, so other threads get the GIL between


@dataclass
class Parsed:
    """A request read: its rows, its own ``top_k``, and for v2 its id and the outputs it asks for."""

    rows: list[bytes | np.ndarray]
    where: list[str]  # each row's name in error messages: "instance 1", "video 0", "clips 2"
    top_k: int
    request_id: str | None = None
    outputs: tuple[str, ...] = V2_OUTPUTS


@dataclass(frozen=True)
class ModelShape:
    """What the model takes: one clip's shape, and how many classes it tells apart."""

    clip: tuple[int, ...]
    classes: int
    default_top_k: int


def loads(body: bytes, what: str = "the request") -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{what} is not JSON: {e}") from e


def top_k(parameters: object, shape: ModelShape) -> int:
    """The request's ``top_k``, checked: the only parameter there is."""
    if parameters is None:
        return min(shape.default_top_k, shape.classes)
    if not isinstance(parameters, dict):
        raise InvalidInput(f"\"parameters\" is {type_name(parameters)}: it is an object, {{\"top_k\": 3}}")
    if unknown := sorted(set(parameters) - {"top_k"}):
        raise InvalidInput(f"unknown parameter {', '.join(map(repr, unknown))}: the one parameter is top_k")
    k = parameters.get("top_k", min(shape.default_top_k, shape.classes))
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= shape.classes:
        raise InvalidInput(f"top_k is {orjson.dumps(k).decode()}: it is a whole number from 1 to "
                           f"{shape.classes}, the model's classes")
    return k


def type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def b64decode(text: object, where: str, what: str = "the video") -> bytes:
    """A base64 string's bytes, decoded a chunk at a time."""
    if not isinstance(text, str | bytes) or not text:
        raise InvalidInput(f"{where}: {what} is {type_name(text)}, not a base64 string")
    try:
        return b"".join(base64.b64decode(text[i:i + B64_CHUNK], validate=True)
                        for i in range(0, len(text), B64_CHUNK))
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{where}: {what} is not base64: {e}") from e


def numbers(data: object, where: str) -> np.ndarray:
    """Nested lists of numbers as an array."""
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: the clips are {type_name(data)}, not a list of numbers")
    try:
        return np.asarray(data)
    except (ValueError, OverflowError) as e:  # ragged lists
        raise InvalidInput(f"{where}: the clips are not a regular array of numbers: "
                           f"{str(e).split(';')[0]}") from e


def checked_clips(clips: np.ndarray, shape: ModelShape, where: str) -> np.ndarray:
    """Clips as the model takes them, ``[clips, *shape.clip]`` uint8; one clip may come without
    the first axis."""
    if clips.shape == shape.clip:
        clips = clips[None]
    if clips.shape[1:] != shape.clip or len(clips) == 0:
        raise InvalidInput(f"{where}: clips of shape {list(clips.shape)}, but the model takes "
                           f"[clips, {', '.join(map(str, shape.clip))}]")
    if clips.dtype != np.uint8:
        if clips.dtype.kind not in "iu":
            raise InvalidInput(f"{where}: clip values must be whole numbers from 0 to 255, not {clips.dtype}")
        if clips.min() < 0 or clips.max() > 255:
            raise InvalidInput(f"{where}: clip values must be uint8, 0 to 255 (found {clips.min()} to "
                               f"{clips.max()})")
        clips = clips.astype(np.uint8)
    return clips


def raw_clips(clips: dict, shape: ModelShape, where: str) -> np.ndarray:
    """``{"b64": ...}``: clips as their uint8 bytes, base64, ``[clips, *shape.clip]`` in C order."""
    if set(clips) != {"b64"}:
        raise InvalidInput(f"{where}: clips are a list of numbers, or "
                           "{\"b64\": \"<their uint8 bytes, base64>\"}")
    data = b64decode(clips["b64"], where, "clips")
    size = math.prod(shape.clip)
    if len(data) % size:
        raise InvalidInput(f"{where}: {len(data)} bytes of clips, not a whole number of clips of "
                           f"{' x '.join(map(str, shape.clip))} = {size} bytes")
    return np.frombuffer(data, np.uint8).reshape(-1, *shape.clip)


def parse_v1(body: bytes, shape: ModelShape) -> Parsed:
    """``{"instances": [{"video": {"b64": ...}}, {"clips": [...]} or {"clips": {"b64": ...}}, ...],
    "parameters": {...}}``."""
    request = loads(body)
    instances = request.get("instances") if isinstance(request, dict) else None
    if not instances or not isinstance(instances, list):
        raise InvalidInput("the request is not {\"instances\": [...]} with at least one instance")
    if unknown := sorted(set(request) - V1_KEYS):
        raise InvalidInput(f"unknown field {', '.join(map(repr, unknown))}: a request has \"instances\" "
                           "and \"parameters\"")
    k = top_k(request.get("parameters"), shape)
    rows, where = [], []
    for n, instance in enumerate(instances):
        name = f"instance {n}"
        if not isinstance(instance, dict) or len(instance) != 1 or not set(instance) & {"video", "clips"}:
            raise InvalidInput(f"{name}: an instance is {{\"video\": {{\"b64\": ...}}}} or "
                               "{\"clips\": [...]}")
        if "video" in instance:
            video = instance["video"]
            if isinstance(video, dict):
                if set(video) != {"b64"}:
                    raise InvalidInput(f"{name}: a video is {{\"b64\": \"<the file, base64>\"}}")
                video = video["b64"]
            rows.append(b64decode(video, name))
        elif isinstance(instance["clips"], dict):
            rows.append(raw_clips(instance["clips"], shape, name))
        else:
            rows.append(checked_clips(numbers(instance["clips"], name), shape, name))
        where.append(name)
    return Parsed(rows, where, k)


def parse_v2(body: bytes, headers: dict[str, str], shape: ModelShape) -> Parsed:
    """An inference request, JSON or with its tensors' bytes after a JSON header: a ``BYTES``
    input ``video`` (one file a row: base64 in JSON, the file's bytes in binary) or a ``UINT8``
    input ``clips`` (one clip a row)."""
    header_length = headers.get(INFERENCE_HEADER)
    if header_length is None:
        request, binary = loads(body), b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length is {header_length!r}, but the body is "
                               f"{len(body)} bytes")
        json_length = int(header_length)
        request, binary = loads(body[:json_length], "the JSON header"), memoryview(body)[json_length:]
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InvalidInput("the request is not {\"inputs\": [...]}")
    if unknown := sorted(set(request) - V2_KEYS):
        raise InvalidInput(f"unknown field {', '.join(map(repr, unknown))}: a request has "
                           f"{', '.join(sorted(V2_KEYS))}")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"\"id\" is {type_name(request_id)}, not a string")
    k = top_k(request.get("parameters"), shape)
    outputs = requested_outputs(request.get("outputs"))
    if len(request["inputs"]) != 1 or not isinstance(request["inputs"][0], dict):
        raise InvalidInput(f"the request has {len(request['inputs'])} inputs: send one, \"video\" (BYTES) "
                           "or \"clips\" (UINT8)")
    tensor = request["inputs"][0]
    name, datatype, dims = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if name not in V2_INPUTS:
        raise InvalidInput(f"unknown input {orjson.dumps(name).decode()}: send \"video\" (BYTES) or "
                           "\"clips\" (UINT8)")
    if datatype != V2_INPUTS[name]:
        raise InvalidInput(f"input {name}: datatype {orjson.dumps(datatype).decode()}, but {name} is "
                           f"{V2_INPUTS[name]}")
    if not isinstance(dims, list) or not dims or not all(isinstance(d, int) and not isinstance(d, bool)
                                                         and d >= 0 for d in dims):
        raise InvalidInput(f"input {name}: shape {orjson.dumps(dims).decode()} is not a list of sizes")
    size = binary_size(tensor, name)
    if size is None:
        if "data" not in tensor:
            raise InvalidInput(f"input {name}: no \"data\", and no binary_data_size")
        if binary:
            raise InvalidInput(f"{len(binary)} bytes follow the JSON header, but no input is binary")
    elif len(binary) != size:
        raise InvalidInput(f"input {name}: binary_data_size is {size}, but {len(binary)} bytes follow the "
                           "JSON header")
    if name == "video":
        rows = (binary_strings(binary, name) if size is not None else
                [b64decode(v, f"video {n}") for n, v in enumerate(flat_strings(tensor["data"]))])
        if math.prod(dims) != len(rows) or len(dims) > 2 or dims[1:] not in ([], [1]):
            raise InvalidInput(f"input video: shape {dims} for {len(rows)} videos: give [{len(rows)}]")
        return Parsed(rows, [f"video {n}" for n in range(len(rows))], k, request_id, outputs)
    if size is None:
        clips = numbers(tensor["data"], "input clips")
    elif math.prod(dims) != size:
        raise InvalidInput(f"input clips: shape {dims} holds {math.prod(dims)} bytes, but binary_data_size "
                           f"is {size}")
    else:
        clips = np.frombuffer(binary, np.uint8)
    if clips.size != math.prod(dims):
        raise InvalidInput(f"input clips: shape {dims} holds {math.prod(dims)} values, but \"data\" has "
                           f"{clips.size}")
    clips = checked_clips(clips.reshape(dims), shape, "input clips")
    return Parsed(list(clips[:, None]), [f"clips {n}" for n in range(len(clips))], k, request_id, outputs)


def flat_strings(data: object) -> list:
    """A BYTES tensor's JSON data, one element a row: flat, or rows of one."""
    if not isinstance(data, list):
        raise InvalidInput(f"input video: \"data\" is {type_name(data)}, not a list of base64 strings")
    return [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]


def binary_size(tensor: dict, name: str) -> int | None:
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"input {name}: \"parameters\" is {type_name(parameters)}, not an object")
    size = parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InvalidInput(f"input {name}: binary_data_size is {orjson.dumps(size).decode()}, "
                           "not a byte count")
    return size


def binary_strings(data: memoryview, name: str) -> list[bytes]:
    """The elements of a binary ``BYTES`` tensor: each a 4-byte little-endian length, then its bytes."""
    rows, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            raise InvalidInput(f"input {name}: the binary data ends inside an element's length")
        length = int.from_bytes(data[at:at + 4], "little")
        if at + 4 + length > len(data):
            raise InvalidInput(f"input {name}: element {len(rows)} declares {length} bytes, but "
                               f"{len(data) - at - 4} remain")
        rows.append(bytes(data[at + 4:at + 4 + length]))
        at += 4 + length
    return rows


def requested_outputs(outputs: object) -> tuple[str, ...]:
    if outputs is None:
        return V2_OUTPUTS
    if not isinstance(outputs, list):
        outputs = [outputs]
    names = [o.get("name") if isinstance(o, dict) else None for o in outputs]
    if not names or any(n not in V2_OUTPUTS for n in names):
        raise InvalidInput(f"outputs {orjson.dumps(outputs).decode()}: the outputs are "
                           f"{', '.join(V2_OUTPUTS)}, as [{{\"name\": \"classes\"}}, ...]")
    return tuple(names)


def v1_answer(tops: list[list[dict]]) -> dict:
    return {"predictions": [{"top": top} for top in tops]}


def v2_answer(tops: list[list[dict]], parsed: Parsed, model_name: str, request_id: str) -> dict:
    """The outputs ``classes`` (BYTES) and ``probabilities`` (FP32), ``[rows, top_k]``."""
    data = {"classes": ("BYTES", [t["class"] for top in tops for t in top]),
            "probabilities": ("FP32", [t["probability"] for top in tops for t in top])}
    return {"model_name": model_name, "id": request_id,
            "outputs": [{"name": name, "shape": [len(tops), parsed.top_k], "datatype": data[name][0],
                         "data": data[name][1]} for name in parsed.outputs]}
