"""Marching cubes on the SDF grid to a triangle mesh (a CPU stage; nothing to compile)."""

import numpy as np
import trimesh
from skimage import measure


def triangulate(sdf: np.ndarray, level: float = 0.0) -> trimesh.Trimesh:
    size = sdf.shape[0]
    # Ray hands numpy arrays over zero-copy and read-only; skimage needs a writable buffer.
    sdf = np.array(sdf, dtype=np.float32, copy=True)
    vertices, faces, normals, _ = measure.marching_cubes(sdf, level=level, spacing=(2 / (size - 1),) * 3)
    # skimage orders faces for the gradient direction; flip so normals point out of the solid (SDF < 0 inside).
    return trimesh.Trimesh(vertices=vertices - 1.0, faces=faces[:, ::-1], vertex_normals=-normals, process=True)
