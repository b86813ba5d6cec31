"""The trained reference model draws what it is asked for, judged by IoU against each class's template, on graphs
traced from its weights and run as Serve's replicas run them; a mis-wired stage fails the same judgement."""

import shutil

import numpy as np
import pytest
import torch

from bernini.model import dataset, quality, weights
from bernini.model.training import Plan, train
from bernini.model.wavelet import SUBBANDS


@pytest.fixture(scope="module")
def trained_state() -> dict:
    # `make test` trains first (make weights); run alone, this trains here, in minutes, once per code change.
    return weights.trained()


@pytest.fixture(scope="module")
def class_templates() -> np.ndarray:
    return quality.templates()


def test_every_class_is_drawn_as_asked_from_a_prompt_a_sketch_and_a_scan(trained_state, class_templates):
    rows = quality.check(trained_state, class_templates)
    print("\n" + quality.table(rows))
    assert len(rows) == len(dataset.CLASSES) * 3
    assert not [row for row in rows if row.problem], quality.table(rows)


def test_a_decoder_that_swaps_two_wavelet_bands_draws_the_wrong_shapes(trained_state, class_templates):
    """The coarse shape read from a detail band. (Two detail bands swapped, aad and daa, move each class's IoU by
    0.06 at most and pass: the check judges the coarse shape, which the approximation carries.)"""
    kernel = trained_state["decoder"]["kernel"]
    first, second = SUBBANDS.index("aaa"), SUBBANDS.index("aad")
    swapped = kernel.clone()
    swapped[[first, second]] = kernel[[second, first]]
    miswired = {**trained_state, "decoder": {**trained_state["decoder"], "kernel": swapped}}
    rows = quality.check(miswired, class_templates)
    print("\n" + quality.table(rows))
    assert sum(1 for row in rows if row.problem) >= len(rows) // 2, quality.table(rows)


def test_the_data_sets_own_shapes_pass_the_check_by_a_wide_margin(class_templates):
    """What FLOOR and MARGIN rest on, measured on shapes neither the templates nor training saw."""
    sdfs, labels = dataset.dataset(per_class=6, seed=23)
    margins = []
    for sdf, label in zip(sdfs, labels):
        scores = quality.scores(quality.occupancy(sdf), class_templates)
        asked = dataset.CLASSES[label]
        assert quality.verdict(asked, scores) is None, (asked, scores)
        margins.append(scores[asked] - max(score for name, score in scores.items() if name != asked))
    medians = quality.class_shapes(class_templates)
    print(f"\nmedian IoU with the own template by class: {medians}; smallest margin over another: {min(margins):.2f}")
    assert min(medians.values()) > quality.FLOOR + 0.2 and min(margins) > 3 * quality.MARGIN


@pytest.mark.parametrize("label", dataset.CLASSES)
def test_a_served_mesh_is_read_back_as_the_occupancy_of_its_sdf(label):
    """The Serve path judges the GLB it is sent, the in-process path the SDF: both must read the same cells."""
    import io

    import trimesh

    from bernini.serve.stages import mesh_bytes

    sdf = dataset.sample_sdf(label, np.random.default_rng(3))
    glb, _ = mesh_bytes(sdf, "glb")
    served = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")
    assert quality.iou(quality.mesh_occupancy(served), quality.occupancy(sdf)) > 0.99


def test_a_shape_cut_by_the_grids_edge_is_closed_and_read_back():
    from bernini.model.triangulation import triangulate

    sdf = dataset.box(dataset.grid(), (0, 0, 0), (1.2, 0.5, 0.5))  # wider than the grid
    mesh = triangulate(sdf)
    assert mesh.is_watertight
    assert quality.iou(quality.mesh_occupancy(mesh), quality.occupancy(sdf)) > 0.99
    assert not quality.mesh_occupancy(trimesh_with_no_faces()).any()


def trimesh_with_no_faces():
    import trimesh

    return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64))


TINY = dict(per_class=1, decoder_steps=2, decoder_batch=2, denoiser_steps=2, denoiser_batch=2, encoder_steps=2,
            encoder_batch=2, text_steps=2)


def test_training_is_reproducible_from_its_seed():
    first, second = train(Plan(**TINY), log=lambda _: None), train(Plan(**TINY), log=lambda _: None)
    for stage in ("decoder", "diffusion", "encoder-image", "encoder-pointcloud", "encoder-text"):
        for name, tensor in first[stage].items():
            assert torch.equal(tensor, second[stage][name]), f"{stage}.{name}"


def test_the_weights_cache_is_keyed_by_the_model_code(tmp_path, monkeypatch):
    package = tmp_path / "model"
    shutil.copytree(weights.MODEL_PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(weights, "MODEL_PACKAGE", package)
    before = weights.code_key()
    (package / "quality.py").write_text("THRESHOLD = 0.1\n")
    assert weights.code_key() == before  # judging the weights does not retrain them
    (package / "dataset.py").write_text((package / "dataset.py").read_text().replace("0.2", "0.25"))
    assert weights.code_key() != before
    monkeypatch.setenv("BERNINI_CACHE", str(tmp_path / "cache"))
    assert weights.weights_file().parent == tmp_path / "cache" / f"weights-{weights.code_key()}"


@pytest.mark.parametrize("prompt, label", [("a coffee mug", "mug"), ("a couch", "sofa"), ("a desk lamp", "lamp"),
                                           ("a round ball", "sphere")])
def test_a_synonym_names_its_class(trained_state, class_templates, prompt, label):
    from bernini.model.diffusion import ddim_sample
    from bernini.model.encoders import tokenize
    from bernini.model.reference import reference_stages

    modules = {stage.artifact: stage.module for stage in reference_stages(weights=trained_state)}
    with torch.no_grad():
        latent = ddim_sample(modules["diffusion"], modules["encoder-text"](tokenize(prompt)))
        sdf = modules["decoder"](latent)[0, 0].numpy()
    judged = quality.judge(label, "text", quality.occupancy(sdf), class_templates)
    assert judged.problem is None, (prompt, judged)


def test_compile_trains_when_nothing_is_cached_then_compiles_the_cached_weights(tmp_path, monkeypatch, capsys):
    import json

    from bernini.cli import main
    from bernini.model import training

    monkeypatch.setenv("BERNINI_CACHE", str(tmp_path / "cache"))
    trainings = []
    monkeypatch.setattr(training, "train", lambda log: trainings.append(1) or train(Plan(**TINY), log=log))
    for out in ("first", "second"):
        assert main(["compile", "--version", "1.0.0", "--out", str(tmp_path / out), "--target", "cpu"]) == 0
    assert trainings == [1] and weights.weights_file().is_relative_to(tmp_path / "cache")
    # The second compile loaded what the first trained (the archives' bytes differ: TorchScript numbers its classes).
    for artifact in json.loads((tmp_path / "first" / "manifest.json").read_text())["stages"]:
        first, second = (torch.jit.load(str(tmp_path / out / f"{artifact}.pt")).state_dict() for out in ("first", "second"))
        assert all(torch.equal(first[name], second[name]) for name in first), artifact
    with pytest.raises(SystemExit, match="--weights random"):
        main(["compile", "--version", "1.0.0", "--out", str(tmp_path / "third"), "--seed", "3"])
