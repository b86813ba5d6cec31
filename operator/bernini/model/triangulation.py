"""Marching cubes on the SDF grid to a triangle mesh (a CPU stage; nothing to compile)."""

import numpy as np
import trimesh
from skimage import measure


def triangulate(sdf: np.ndarray, level: float = 0.0) -> trimesh.Trimesh:
    size = sdf.shape[0]
    spacing = 2 / (size - 1)
    # One layer of outside around the grid, so a shape that reaches the grid's edge still closes. np.pad also copies:
    # Ray hands numpy arrays over zero-copy and read-only, and skimage needs a writable buffer.
    sdf = np.pad(np.asarray(sdf, dtype=np.float32), 1, constant_values=level + spacing)
    # skimage's default winding gives outward normals (positive volume) for an SDF that is negative inside.
    vertices, faces, _, _ = measure.marching_cubes(sdf, level=level, spacing=(spacing,) * 3)
    return trimesh.Trimesh(vertices=vertices - 1.0 - spacing, faces=faces, process=True)
