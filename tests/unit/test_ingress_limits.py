"""What one request may cost the ingress: image sides, aspect and pixels read from the header, JSON containers
and elements counted before json.loads builds them, parses bounded per replica, and overload answered in JSON
by the ingress itself. Memory is the peak RSS growth of a parse, measured in a fresh process (Pillow's pixels are
malloc'd where tracemalloc cannot see them). The stage handles are fakes; the ingress and its parsing are real."""

import asyncio
import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest
from PIL import Image
from ray.serve.exceptions import BackPressureError
from starlette.requests import Request

from bernini.serve import app, stages
from bernini.serve.app import BerniniIngress

MiB = 1 << 20


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _black_rows(width: int, height: int, channels: int) -> bytes:
    """Zlib-compressed rows of 8-bit zeros, a block of rows at a time: a 1 x 16,777,216 image is 64 KiB."""
    row = b"\x00" + bytes(width * channels)  # filter byte, then the pixels
    rows_per_block = max(1, MiB // len(row))
    compressor = zlib.compressobj(9)
    blocks = [compressor.compress(row * rows_per_block) for _ in range(height // rows_per_block)]
    return b"".join([*blocks, compressor.compress(row * (height % rows_per_block)), compressor.flush()])


def _png(width: int, height: int, color_type: int = 2, rows: bool = True, texts: int = 0) -> bytes:
    """A black 8-bit PNG made by hand, since a header can declare any size; without rows it is a header alone,
    which Pillow opens. Each of `texts` zTXt chunks is 1 KiB that Pillow inflates to 1 MiB as it reads the header."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
    text = b"".join(_chunk(b"zTXt", b"note%d\x00\x00" % index + zlib.compress(bytes(MiB), 9)) for index in range(texts))
    pixels = _chunk(b"IDAT", _black_rows(width, height, {2: 3, 6: 4}[color_type])) if rows else b""
    return b"\x89PNG\r\n\x1a\n" + header + text + pixels + _chunk(b"IEND", b"")


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def _empty_lists(count: int) -> bytes:
    return b'{"points": [' + b",".join([b"[]"] * count) + b"]}"


def _points(count: int) -> bytes:
    return json.dumps({"points": [[0.25, -0.5, 1]] * count}).encode()


class _Stage:
    """FAKE stage handle (no Ray here): every method answers `result`, or raises it."""

    def __init__(self, result):
        self.result = result

    def __getattr__(self, name):
        return self

    def remote(self, *args):
        async def call():
            if isinstance(self.result, Exception):
                raise self.result
            return self.result
        return call()


def _ingress(latent="latent"):
    return BerniniIngress.func_or_class(
        {"encoder": _Stage("condition"), "diffusion": _Stage(latent), "decoder": _Stage("sdf")},
        _Stage((b"mesh", {"faces": 1})), "1.0.0")


def _request(body: bytes, content_type: str, reads: list | None = None) -> Request:
    async def receive():
        if reads is not None:
            reads.append(len(body))
        return {"type": "http.request", "body": body, "more_body": False}
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]}
    return Request(scope, receive)


def _post(body: bytes, content_type: str) -> tuple[int, dict | bytes]:
    response = asyncio.run(_ingress()(_request(body, content_type)))
    is_json = response.headers["content-type"] == "application/json"
    return response.status_code, json.loads(response.body) if is_json else response.body


# -- images: every side, the aspect and the pixels checked from the header ------------------------------------------

def test_a_png_one_pixel_wide_and_16_million_tall_is_refused_from_its_header():
    body = _png(1, 16_777_216)
    assert len(body) < 96 * 1024
    status, answer = _post(body, "image/png")
    assert status == 400
    assert answer["error"] == f"image of 1x16777216 pixels: a side exceeds {stages.MAX_IMAGE_SIDE} pixels"


def test_an_image_past_4_to_1_is_refused():
    status, answer = _post(_png(4096, 1000), "image/png")
    assert (status, answer["error"]) == (400, "image of 4096x1000 pixels: its aspect ratio exceeds 4:1")


def test_a_header_past_pillows_own_bomb_limit_names_our_limit():
    status, answer = _post(_png(20_000, 20_000, rows=False), "image/png")
    assert (status, answer["error"]) == (400, f"image exceeds {stages.MAX_IMAGE_SIDE} pixels a side")


def test_a_png_with_megabytes_of_text_metadata_is_refused():
    body = _png(224, 224, texts=64)
    assert len(body) < 96 * 1024
    assert _post(body, "image/png") == (400, {"error": "not a readable PNG image"})


def test_a_phones_default_photo_passes_the_limits_and_a_larger_one_does_not():
    for width, height in ((4032, 3024), (3024, 4032), (4080, 3072), (4000, 3000), (4096, 1024)):
        stages.check_image_size(width, height)
    with pytest.raises(stages.InputError, match="a side exceeds 4096 pixels"):
        stages.check_image_size(4624, 3472)  # 16 MP
    with pytest.raises(stages.InputError, match="exceeds 12582912 pixels"):
        stages.check_image_size(3600, 3600)


@pytest.mark.parametrize("body, content_type", [(_png(224, 224), "image/png"), (_jpeg(224, 224), "image/jpeg"),
                                                (_jpeg(4080, 3072), "image/jpeg")], ids=["png", "jpeg", "camera-jpeg"])
def test_a_legal_image_still_passes(body, content_type):
    assert _post(body, content_type) == (200, b"mesh")


# -- JSON: containers and elements counted in the raw bytes ----------------------------------------------------------

def test_5_million_empty_lists_are_refused_before_json_loads():
    status, answer = _post(_empty_lists(5_000_000), "application/json")
    assert (status, answer["error"]) == (400, "more than 204000 JSON lists and objects (at most 200000 points)")


def test_a_long_list_of_numbers_is_refused_by_its_commas():
    body = b'{"points": [[' + b",".join([b"1"] * 700_000) + b"]]}"
    assert _post(body, "application/json")[1]["error"] == "more than 604000 JSON elements (at most 200000 points)"


def test_a_long_non_ascii_json_body_is_refused_before_decoding():
    body = ('{"prompt": "' + "a" * (4 * MiB) + '\U0001F600"}').encode()
    assert "must be ASCII" in _post(body, "application/json")[1]["error"]


@pytest.mark.parametrize("body, content_type", [
    (_points(25_000), "application/json"),
    (_points(stages.MAX_POINTS), "application/json"),  # the largest legal document fits the counts exactly
    (json.dumps({"prompt": "a chair [oak, {walnut}], four legs, 1,000 mm; " * 20}).encode(), "application/json"),
    (json.dumps({"prompt": "[{,}]" * 200}).encode(), "application/json"),  # 1000 brackets and commas in a prompt
    ("une chaise en chêne, «{[,]}»".encode(), "text/plain"),
], ids=["25000-points", "200000-points", "prompt", "prompt-of-brackets", "text"])
def test_legal_json_and_prompts_still_pass(body, content_type):
    assert _post(body, content_type) == (200, b"mesh")


def test_one_point_over_the_largest_cloud_is_refused():
    assert _post(_points(stages.MAX_POINTS + 1), "application/json")[1]["error"] == "at most 200000 points, got 200001"


def test_a_long_text_prompt_is_refused_before_decoding():
    assert _post(b"a" * 4001, "text/plain") == (400, {"error": "prompt longer than 1000 characters"})


# -- memory: the peak a parse adds, in a fresh process ---------------------------------------------------------------

_MEASURE = r"""
import json, re, sys
from bernini.serve import stages

def kib(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1))

stages.parse_input("image/png", open(sys.argv[1], "rb").read())  # warm: Pillow's plugins, numpy, torch
stages.parse_input("application/json", b'{"points": [[1, 2, 3]]}')
for path, content_type in json.loads(sys.argv[2]):
    body = open(path, "rb").read()
    before = kib("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM, the peak RSS
    try:
        stages.parse_input(content_type, body)
        outcome = "accepted"
    except stages.InputError as error:
        outcome = str(error)
    print(json.dumps([path, (kib("VmHWM") - before) / 1024, outcome]), flush=True)
    del body
"""


@pytest.fixture(scope="module")
def parse_peaks(tmp_path_factory) -> dict[str, tuple[float, str]]:
    """Peak MiB each body's parse adds, and what became of it."""
    folder = tmp_path_factory.mktemp("bodies")
    bodies = {
        "1x16777216.png": (_png(1, 16_777_216), "image/png"),
        "5M-empty-lists.json": (_empty_lists(5_000_000), "application/json"),
        "64-text-chunks.png": (_png(224, 224, texts=64), "image/png"),
        "astral-prompt.json": (('{"prompt": "' + "a" * (15 * MiB) + '\U0001F600"}').encode(), "application/json"),
        "4096x3072-rgba.png": (_png(4096, 3072, color_type=6), "image/png"),
        "200000-points.json": (_points(stages.MAX_POINTS), "application/json"),
    }
    (folder / "warm.png").write_bytes(_png(224, 224))
    for name, (body, _) in bodies.items():
        (folder / name).write_bytes(body)
    cases = json.dumps([[str(folder / name), content_type] for name, (_, content_type) in bodies.items()])
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(folder / "warm.png"), cases],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = map(json.loads, result.stdout.splitlines())
    return {path.rpartition("/")[2]: (mib, outcome) for path, mib, outcome in lines}


@pytest.mark.parametrize("name", ["1x16777216.png", "64-text-chunks.png", "5M-empty-lists.json", "astral-prompt.json"])
def test_a_refused_body_costs_next_to_nothing(parse_peaks, name):
    mib, outcome = parse_peaks[name]
    assert outcome != "accepted"
    assert mib < 8, f"{name}: {mib:.1f} MiB"  # before: 896, 65, 359 and 128 MiB


def test_the_largest_legal_inputs_stay_within_the_stated_peak(parse_peaks):
    # stages: a decode holds ~8 bytes a pixel; app.PARSE_SLOTS of them are the most one replica holds at once.
    bound = 8 * stages.MAX_IMAGE_PIXELS * 1.1 / MiB
    for name in ("4096x3072-rgba.png", "200000-points.json"):
        mib, outcome = parse_peaks[name]
        assert outcome == "accepted" and mib < bound, f"{name}: {mib:.1f} MiB, bound {bound:.0f}"


# -- a replica's own bounds: parses at once, requests in hand --------------------------------------------------------

def test_a_replica_parses_at_most_PARSE_SLOTS_bodies_at_once(monkeypatch):
    running, most, lock = 0, 0, threading.Lock()

    def slow_parse(content_type, body):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return "text", None
    monkeypatch.setattr(app.stages, "parse_input", slow_parse)
    ingress = _ingress()

    async def post_six():
        return await asyncio.gather(*(ingress(_request(b"a chair", "text/plain")) for _ in range(6)))
    assert [response.status_code for response in asyncio.run(post_six())] == [200] * 6
    assert most == app.PARSE_SLOTS


def test_a_stage_refusing_for_backpressure_is_a_503_in_json_with_retry_after():
    ingress = _ingress(latent=BackPressureError(num_queued_requests=4, max_queued_requests=4))
    response = asyncio.run(ingress(_request(b"a chair", "text/plain")))
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert json.loads(response.body) == {"error": "the pipeline is at capacity; retry shortly"}
