"""Marching cubes on the SDF grid to a triangle mesh (a CPU stage; nothing to compile)."""

import numpy as np
import trimesh
from skimage import measure


def triangulate(sdf: np.ndarray, level: float = 0.0) -> trimesh.Trimesh:
    size = sdf.shape[0]
    # Ray hands numpy arrays over zero-copy and read-only; skimage needs a writable buffer.
    sdf = np.array(sdf, dtype=np.float32, copy=True)
    # skimage's default winding gives outward normals (positive volume) for an SDF that is negative inside.
    vertices, faces, _, _ = measure.marching_cubes(sdf, level=level, spacing=(2 / (size - 1),) * 3)
    return trimesh.Trimesh(vertices=vertices - 1.0, faces=faces, process=True)
