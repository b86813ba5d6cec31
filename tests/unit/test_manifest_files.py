"""The init container's manifest reader (no pydantic) against the operator's full model: whatever the operator
accepts, the pull reads as the same files; whatever is wrong in what a pull uses, both refuse."""

import copy
import json

import pytest

from bernini.artifacts.manifest import parse_manifest
from bernini.artifacts.manifest_files import MAX_STAGES, UNSAFE_KEY, FileEntry, UnsupportedManifestVersion, files_of

DIGEST = "ab" * 32
VALID = {
    "manifestVersion": 1, "model": {"name": "bernini", "version": "1.0.0"}, "target": "inf2",
    "toolchain": {"torch": "2.9.0"},
    "stages": {
        "encoder-text": {"stage": "encoder", "file": "encoder/text.pt", "sha256": DIGEST, "size": 10},
        "diffusion": {"stage": "diffusion", "file": "diffusion.pt", "sha256": "cd" * 32, "size": 0},
    },
}


def _with(path: str, value) -> dict:
    document = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[part]
    node[last] = value
    return document


REFUSED_BY_BOTH = {
    "unsafe key": _with("stages.diffusion.file", "../escape.pt"),
    "absolute key": _with("stages.diffusion.file", "/etc/passwd"),
    "empty segment": _with("stages.diffusion.file", "a//b.pt"),
    "the manifest's own name": _with("stages.diffusion.file", "manifest.json"),
    "a .partial name": _with("stages.diffusion.file", "diffusion.pt.partial"),
    "empty key": _with("stages.diffusion.file", ""),
    "key past S3's limit": _with("stages.diffusion.file", "k" * 1025),
    "key not a string": _with("stages.diffusion.file", 7),
    "uppercase digest": _with("stages.diffusion.sha256", "AB" * 32),
    "short digest": _with("stages.diffusion.sha256", "ab"),
    "negative size": _with("stages.diffusion.size", -1),
    "size past 5 TiB": _with("stages.diffusion.size", (5 << 40) + 1),
    "size as text": _with("stages.diffusion.size", "10"),
    "size as bool": _with("stages.diffusion.size", True),
    "size as float": _with("stages.diffusion.size", 10.5),
    "two stages, one file": _with("stages.diffusion.file", "encoder/text.pt"),
    "stages not an object": _with("stages", ["diffusion.pt"]),
    "a stage not an object": _with("stages.diffusion", "diffusion.pt"),
    "digest with a trailing newline": _with("stages.diffusion.sha256", "cd" * 32 + "\n"),
    "a NUL in a key": _with("stages.diffusion.file", "diff\x00usion.pt"),
    "a newline in a key": _with("stages.diffusion.file", "diffusion\n.pt"),
    "a file that is another's folder": _with("stages.diffusion.file", "encoder/text.pt/inner.pt"),
    "too many stages": _with("stages", {f"s{i}": {"stage": "s", "file": f"{i}.pt", "sha256": DIGEST, "size": 1}
                                        for i in range(MAX_STAGES + 1)}),
}


def test_what_the_operator_accepts_the_pull_reads_as_the_same_files():
    raw = json.dumps(VALID).encode()
    expected = [FileEntry(a.file, a.sha256, a.size) for a in parse_manifest(raw).stages.values()]
    assert files_of(raw) == expected


@pytest.mark.parametrize("case", sorted(REFUSED_BY_BOTH))
def test_what_a_pull_relies_on_is_refused_by_both_readers(case):
    raw = json.dumps(REFUSED_BY_BOTH[case]).encode()
    with pytest.raises(ValueError) as by_operator:
        parse_manifest(raw)
    with pytest.raises(ValueError) as by_pull:
        files_of(raw)
    if UNSAFE_KEY in str(by_operator.value):  # the puller exits 7 on exactly these
        assert UNSAFE_KEY in str(by_pull.value)


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"manifestVersion": 2, "stages": {}}',
                                 b'{"manifestVersion": 1, "manifestVersion": 1}'])
def test_json_and_version_problems_read_the_same_in_both(raw):
    with pytest.raises(ValueError) as by_operator:
        parse_manifest(raw)
    with pytest.raises(ValueError) as by_pull:
        files_of(raw)
    assert (str(by_pull.value), type(by_pull.value)) == (str(by_operator.value), type(by_operator.value))
    if raw.startswith(b'{"manifestVersion": 2'):
        assert isinstance(by_pull.value, UnsupportedManifestVersion)
