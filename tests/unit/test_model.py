"""The reference model keeps the production data flow: real inverse DWT, static shapes, traceable stages."""

import numpy as np
import pytest
import pywt
import torch

from bernini.model.diffusion import ddim_sample
from bernini.model.reference import reference_stages
from bernini.model.shapes import SDF_SIZE
from bernini.model.triangulation import triangulate
from bernini.model.wavelet import SUBBANDS, _synthesis_kernel, inverse_haar_3d, sphere_sdf


def test_inverse_haar_matches_pywavelets():
    rng = np.random.default_rng(0)
    coefficients = {subband: rng.normal(size=(4, 4, 4)) for subband in SUBBANDS}
    expected = pywt.idwtn(coefficients, "haar")
    stacked = torch.tensor(np.stack([coefficients[s] for s in SUBBANDS])[None], dtype=torch.float64)
    ours = inverse_haar_3d(stacked, _synthesis_kernel().double())[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_every_stage_traces_and_matches_eager():
    for stage in reference_stages(seed=0):
        example = tuple(tensor for _, tensor in stage.inputs)
        with torch.no_grad():
            traced = torch.jit.trace(stage.module, example)
            torch.testing.assert_close(traced(*example), stage.module(*example))


def test_pipeline_from_noise_to_a_closed_mesh():
    stages = {stage.artifact: stage.module for stage in reference_stages(seed=0)}
    with torch.no_grad():
        condition = stages["encoder-pointcloud"](torch.rand(1, 25_000, 3))
        latent = ddim_sample(stages["diffusion"], condition, steps=4)
        sdf = stages["decoder"](latent)[0, 0].numpy()
    assert sdf.shape == (SDF_SIZE,) * 3 and np.isfinite(sdf).all()
    mesh = triangulate(sdf)
    assert mesh.is_watertight and mesh.volume > 0


def test_guidance_changes_the_sample():
    denoiser = {stage.artifact: stage.module for stage in reference_stages(seed=0)}["diffusion"]
    condition = torch.randn(1, 128)
    with torch.no_grad():
        guided = ddim_sample(denoiser, condition, steps=3, guidance=5.0)
        unguided = ddim_sample(denoiser, condition, steps=3, guidance=0.0)
    assert not torch.allclose(guided, unguided)


def test_mean_shape_is_a_sphere_sdf():
    sdf = sphere_sdf(32).numpy()
    assert sdf[16, 16, 16] < 0 < sdf[0, 0, 0]
    assert triangulate(sdf).is_watertight


@pytest.mark.parametrize("prompt", ["", "a chair"])
def test_tokenizer_has_the_static_length(prompt):
    from bernini.model.encoders import tokenize

    assert tokenize(prompt).shape == (1, 77)


def test_batched_decoding_pads_to_a_compiled_bucket_and_matches_single_decodes():
    from bernini.serve.stages import decode_batch

    decoder = {stage.artifact: stage for stage in reference_stages(seed=0)}
    graphs = {}
    with torch.no_grad():
        for name in ("decoder", "decoder-b4"):
            example = decoder[name].inputs[0][1]
            graphs[example.shape[0]] = torch.jit.trace(decoder[name].module, (example,))
    latents = [torch.randn(1, 4, 12, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    batched = decode_batch(graphs, latents)  # 4 + 2 (padded to 4)
    singles = [decode_batch(graphs, [latent])[0] for latent in latents]
    assert len(batched) == 6
    for one, other in zip(batched, singles):
        np.testing.assert_allclose(one, other, atol=1e-5)
