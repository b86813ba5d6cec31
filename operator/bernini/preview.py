"""A PNG preview of a mesh, drawn headless (no display, no GL): flat-shaded faces painted far to near from a
three-quarter view. Needs the model extra (numpy, trimesh, Pillow)."""

import io

import numpy as np
import trimesh
from PIL import Image, ImageDraw

from bernini.model.dataset import view

BACKGROUND = (245, 245, 242)
SURFACE = np.array([96, 130, 180])
LIGHT = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])


def render_png(mesh_data: bytes, file_format: str, size: int = 512) -> bytes:
    mesh = trimesh.load(io.BytesIO(mesh_data), file_type=file_format, force="mesh")
    rotation = view()
    vertices = (mesh.vertices - mesh.bounds.mean(axis=0)) @ rotation.T
    normals = mesh.face_normals @ rotation.T
    facing = normals[:, 2] > 0  # the camera looks down -z: faces turned away are hidden
    faces, normals = mesh.faces[facing], normals[facing]
    scale = 0.42 * size / max(float(np.abs(vertices[:, :2]).max()), 1e-9)
    screen = vertices[:, :2] * scale * np.array([1, -1]) + size / 2
    shades = 0.25 + 0.75 * np.clip(normals @ LIGHT, 0, 1)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for index in np.argsort(vertices[faces, 2].mean(axis=1)):  # far first, near painted over it
        colour = tuple(int(c) for c in SURFACE * shades[index])
        draw.polygon([tuple(point) for point in screen[faces[index]]], fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
