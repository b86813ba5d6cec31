"""A hostile manifest.json (anyone who can write the artifacts prefix writes it) costs the operator and the puller
little: caps on what it may list, a clean ValueError for anything unreadable, and time linear in its size."""

import json
import time

import pytest

from bernini.artifacts.manifest import MAX_STAGES, Manifest, UnsupportedManifestVersion, parse_manifest
from tests.unit.specs import make_manifest

KiB, MiB = 1 << 10, 1 << 20
DIGEST = "0" * 64


def _document() -> dict:
    return make_manifest().model_dump(by_alias=True, mode="json", exclude_none=True)


def _stage(number: int, **fields) -> dict:
    return {"stage": "encoder", "file": f"encoder-{number}.pt", "sha256": DIGEST, "size": 1, **fields}


def _with_stages(count: int) -> bytes:
    return json.dumps({**_document(), "stages": {f"encoder-{i}": _stage(i) for i in range(count)}}).encode()


def _with_stage_fields(**fields) -> bytes:
    document = _document()
    document["stages"]["encoder"].update(fields)
    return json.dumps(document).encode()


def test_a_real_manifest_is_well_inside_the_caps():
    # What `bernini compile` writes: three encoders, the diffusion, two decoder batch buckets (model/reference.py).
    inputs = {"encoder-image": [[1, 3, 224, 224]], "encoder-pointcloud": [[1, 25000, 3]], "encoder-text": [[1, 77]],
              "diffusion": [[2, 4, 12, 12, 12], [2], [2, 128]], "decoder": [[1, 4, 12, 12, 12]],
              "decoder-b4": [[4, 4, 12, 12, 12]]}
    stages = {name: {**_stage(number), "stage": name.split("-")[0], "neuronCores": 1,
                     "inputs": [{"name": f"x{i}", "shape": shape, "dtype": "float32"} for i, shape in enumerate(shapes)],
                     "compilerArgs": ["--model-type=generic", "--optlevel=2", "--auto-cast=none"]}
              for number, (name, shapes) in enumerate(inputs.items())}
    manifest = parse_manifest(json.dumps({**_document(), "stages": stages}).encode())
    assert len(manifest.stages) == 6 < MAX_STAGES


def test_ten_thousand_stages_are_refused_naming_the_cap():
    started = time.perf_counter()
    with pytest.raises(ValueError, match="stages: Dictionary should have at most 64 items"):
        parse_manifest(_with_stages(10_000))
    assert time.perf_counter() - started < 1
    assert len(parse_manifest(_with_stages(MAX_STAGES)).stages) == MAX_STAGES


@pytest.mark.parametrize("fields, problem", [
    ({"inputs": [{"name": "x", "shape": [1], "dtype": "float32"}] * 17}, "inputs: List should have at most 16 items"),
    ({"inputs": [{"name": "x", "shape": [1] * 17, "dtype": "float32"}]}, "shape: List should have at most 16 items"),
    ({"compilerArgs": ["--optlevel=2"] * 65}, "compilerArgs: List should have at most 64 items"),
    ({"compilerArgs": ["-" * 257]}, "at most 256 characters"),
    ({"file": "a" * 1025}, "file: String should have at most 1024 characters"),
    ({"stage": "e" * 257}, "stage: String should have at most 256 characters"),
    ({"size": 6 << 40}, "size: Input should be less than or equal to"),
])
def test_the_lists_and_strings_inside_a_stage_are_capped(fields, problem):
    with pytest.raises(ValueError, match=problem):
        parse_manifest(_with_stage_fields(**fields))


def test_names_and_versions_are_capped():
    document = _document()
    document["stages"]["e" * 257] = _stage(9)
    with pytest.raises(ValueError, match="at most 256 characters"):
        parse_manifest(json.dumps(document).encode())
    with pytest.raises(ValueError, match="model.version: String should have at most 256 characters"):
        parse_manifest(json.dumps({**_document(), "model": {"name": "bernini", "version": "1" * 257}}).encode())


def _sized(head: bytes, unit: bytes, tail: bytes, size: int) -> bytes:
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


def _many_keys(size: int) -> bytes:
    keys = (f'"key-{i:07d}": 0' for i in range(size // 16))
    return ("{" + ", ".join(keys) + "}").encode()


# Each the worst of its kind that fits in `size` bytes.
HOSTILE = {
    "arrays nested to the end": lambda size: b"[" * size,
    "objects nested to the end": lambda size: _sized(b"", b'{"a": ', b"", size),
    "arrays nested in a field": lambda size: _sized(b'{"manifestVersion": 1, "model": ', b"[", b"", size),
    "one integer of every digit": lambda size: _sized(b'{"manifestVersion": ', b"1", b"}", size),
    "integers of 4300 digits": lambda size: _sized(b'{"manifestVersion": 1, "x": [0', b", " + b"9" * 4300, b"]}", size),
    "floats of a thousand digits": lambda size: _sized(b'{"manifestVersion": 1, "x": [0', b", 0." + b"9" * 1000, b"]}",
                                                       size),
    "an object of distinct keys": _many_keys,
    "one key over and over": lambda size: _sized(b'{"k": 0', b', "k": 0', b"}", size),
    "stages": lambda size: _with_stages(size // 120),
    "unknown fields": lambda size: _with_stage_fields(**{f"field{i:07d}": 0 for i in range(size // 17)}),
    "a long file name": lambda size: _with_stage_fields(file="a" * size),
    "a long string of escapes": lambda size: _with_stage_fields(file="\u202e" * (size // 6)),
    "a long version": lambda size: _sized(b'{"manifestVersion": "', b"9", b'"}', size),
}


def _refusal_seconds(raw: bytes) -> float:
    """The fastest of three parses of raw, each of which must end in a ValueError."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        with pytest.raises(ValueError):
            parse_manifest(raw)
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.parametrize("shape", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_manifest_is_refused_quickly_in_time_linear_in_its_size(shape):
    small = _refusal_seconds(shape(256 * KiB))
    assert small < 0.5, f"{small:.3f}s for 256 KiB"
    large = _refusal_seconds(shape(MiB))
    assert large < 2, f"{large:.3f}s for 1 MiB"  # about 0.5 s at most on a 2-core machine (unknown fields)
    # Four times the bytes: about four times the time when linear, sixteen when quadratic. The 10 ms absorb the
    # noise of runs too short to time.
    assert large < 8 * small + 0.01, f"256 KiB in {small:.4f}s, 1 MiB in {large:.4f}s"


def test_nesting_deeper_than_python_reads_is_a_value_error_that_says_so():
    with pytest.raises(ValueError, match="nested too deep") as error:
        parse_manifest(b"[" * MiB)
    assert not isinstance(error.value, RecursionError)


def test_a_900k_digit_integer_is_a_value_error_that_says_so():
    with pytest.raises(ValueError, match="not JSON: Exceeds the limit"):
        parse_manifest(_sized(b'{"manifestVersion": ', b"1", b"}", MiB))


def test_an_unsupported_version_is_named_short_whatever_it_is():
    with pytest.raises(UnsupportedManifestVersion, match=r"manifestVersion of type list is not supported"):
        parse_manifest(b'{"manifestVersion": [[[1]]]}')
    for version in ("9" * MiB, [0] * 100_000, {"a": "9" * MiB}):
        with pytest.raises(UnsupportedManifestVersion) as error:
            parse_manifest(json.dumps({"manifestVersion": version}).encode())
        assert len(str(error.value)) < 200


def test_a_key_given_twice_is_still_refused():
    with pytest.raises(ValueError, match="key 'k' appears twice"):
        parse_manifest(HOSTILE["one key over and over"](KiB))
    assert Manifest.model_validate(_document()).stages  # the document the other tests start from is valid
