"""Preflight judgement of a manifest against a spec, and manifest parsing."""

import json

import pytest

from bernini.artifacts.manifest import Manifest
from bernini.artifacts.manifest import UnsupportedManifestVersion, parse_manifest
from bernini.artifacts.preflight import judge
from tests.unit.specs import make_manifest, make_spec


def test_matching_manifest_is_verified():
    result = judge(make_spec(), make_manifest(), "f" * 64)
    assert (result.ok, result.cause.reason, result.manifest_sha256) == (True, "Verified", "f" * 64)


@pytest.mark.parametrize(
    "spec, manifest, reason",
    [
        (make_spec(model={"version": "2.0.0"}), make_manifest("1.0.0"), "ModelMismatch"),
        (make_spec(), make_manifest(target="cpu"), "TargetMismatch"),
        (make_spec(stages={"encoder": {"neuronCores": 1}}, layout="staged"), make_manifest(cores=2), "NeuronCoresTooFew"),
        (make_spec(stages={"fused": {"accelerators": 1}}), make_manifest(cores=2), "NeuronCoresTooFew"),
        (make_spec(runtime={"neuronCompilerVersion": "3.0.1"}), make_manifest(neuronx_cc="2.21.0"), "CompilerIncompatible"),
    ],
)
def test_mismatches_have_specific_reasons(spec, manifest, reason):
    result = judge(spec, manifest, "f" * 64)
    assert (result.ok, result.cause.reason) == (False, reason)
    assert result.cause.message


def test_compiler_majors_compare_as_numbers():
    spec = make_spec(runtime={"neuronCompilerVersion": "2.21.0"})
    assert judge(spec, make_manifest(neuronx_cc="02.21.0"), "f" * 64).ok
    assert judge(spec, make_manifest(neuronx_cc="10.0.0"), "f" * 64).cause.reason == "CompilerIncompatible"


def test_missing_neural_stage():
    manifest = make_manifest()
    partial = Manifest.model_validate({**manifest.model_dump(), "stages": {"encoder": manifest.stages["encoder"].model_dump()}})
    assert judge(make_spec(), partial, "f" * 64).cause.reason == "StageMissing"


def test_parse_refuses_duplicate_keys_shared_files_and_the_pullers_own_names():
    document = make_manifest().model_dump(by_alias=True)
    encoder = json.dumps(document["stages"]["encoder"])
    text = json.dumps(document)
    twice = text.replace('"stages": {', f'"stages": {{"encoder": {encoder}, ', 1)
    with pytest.raises(ValueError, match="key 'encoder' appears twice"):
        parse_manifest(twice.encode())
    shared = json.loads(text)
    shared["stages"]["decoder"]["file"] = shared["stages"]["encoder"]["file"]
    with pytest.raises(ValueError, match="two stages share the file"):
        parse_manifest(json.dumps(shared).encode())
    for name in ("manifest.json", "decoder.pt.partial"):
        colliding = json.loads(text)
        colliding["stages"]["decoder"]["file"] = name
        with pytest.raises(ValueError, match="collides with the puller's own files"):
            parse_manifest(json.dumps(colliding).encode())


def test_parse_refuses_unknown_versions_and_escaping_keys():
    document = make_manifest().model_dump()
    with pytest.raises(UnsupportedManifestVersion, match="manifestVersion 9"):
        parse_manifest(json.dumps({**document, "manifestVersion": 9}).encode())
    document["stages"]["encoder"]["file"] = "../../etc/passwd"
    with pytest.raises(ValueError, match="must be a plain relative path"):
        parse_manifest(json.dumps(document).encode())
    with pytest.raises(ValueError, match="not JSON"):
        parse_manifest(b"{")


def _with_graphs_of(gib: int, **manifest_args):
    body = make_manifest(**manifest_args).model_dump(by_alias=True)
    for artifact in body["stages"].values():
        artifact["size"] = gib * 2**30
    return Manifest.model_validate(body)


def test_a_fused_replica_whose_graphs_exceed_its_share_is_refused_where_staged_fits():
    # inf2: 16 GiB of device memory per NeuronCore. Three 6 GiB graphs fit one core each, not one core together.
    manifest = _with_graphs_of(6)
    fused = judge(make_spec(), manifest, "f" * 64)
    assert (fused.ok, fused.cause.reason) == (False, "GraphsDoNotFit")
    assert "fused's compiled graphs take 18.0 GiB; spec.stages.fused's 1 NeuronCores hold 16.0 GiB" in fused.cause.message
    assert judge(make_spec(stages={"fused": {"accelerators": 2}}), manifest, "f" * 64).ok
    assert judge(make_spec(layout="staged"), manifest, "f" * 64).ok
    # A quarter of a 24 GiB A10G holds 6 GiB: one 6 GiB graph, not two.
    gpu = {"accelerator": {"kind": "nvidia"}, "layout": "staged"}
    cuda = _with_graphs_of(6, target="cuda")
    assert judge(make_spec(**gpu, stages={"encoder": {"accelerators": 0.25}}), cuda, "f" * 64).ok
    assert judge(make_spec(**gpu, stages={"diffusion": {"accelerators": 0.2}}), cuda, "f" * 64).cause.reason == \
        "GraphsDoNotFit"
    zero = judge(make_spec(**gpu, stages={"encoder": {"accelerators": 0}}), cuda, "f" * 64).cause
    assert zero.reason == "GraphsDoNotFit" and "encoder loads cuda graphs, but spec.stages.encoder asks no GPUs" in \
        zero.message
