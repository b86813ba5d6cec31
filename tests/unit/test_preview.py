"""The headless PNG preview `bernini generate` and `make demo` write beside a mesh."""

import io

import numpy as np
import trimesh
from PIL import Image

from bernini.preview import BACKGROUND, render_png


def _pixels(mesh: trimesh.Trimesh, file_format: str = "glb") -> np.ndarray:
    data = mesh.export(file_type=file_format)
    png = render_png(data if isinstance(data, bytes) else data.encode(), file_format, size=256)
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (256, 256))
    return np.asarray(image)


def test_the_preview_draws_the_mesh_shaded_and_centred():
    pixels = _pixels(trimesh.creation.icosphere(subdivisions=3))
    drawn = np.any(pixels != BACKGROUND, axis=2)
    assert 0.2 < drawn.mean() < 0.8, drawn.mean()  # the sphere fills the middle, background around it
    rows, columns = np.nonzero(drawn)
    assert abs(rows.mean() - 128) < 8 and abs(columns.mean() - 128) < 8
    assert len(np.unique(pixels[drawn].reshape(-1, 3), axis=0)) > 20  # shaded, not one flat colour


def test_different_meshes_and_formats_give_their_own_pictures():
    sphere, box = trimesh.creation.icosphere(subdivisions=2), trimesh.creation.box()
    assert not np.array_equal(_pixels(sphere), _pixels(box))
    assert np.array_equal(_pixels(box, "obj"), _pixels(box, "ply"))
