"""The reference model's training set: procedural signed distance fields of a few classes that a prompt, a sketch
and a point cloud can all name, with proportions drawn per sample. Made here from a seed, never downloaded.

Coordinates span [-1, 1] on every axis with y up (the preview's camera and the triangulation use the same frame);
an SDF is negative inside and is sampled at the SDF_SIZE grid points the triangulation assumes.
"""

import numpy as np

from bernini.model.shapes import SDF_SIZE

CLASSES = ("chair", "table", "mug", "lamp", "sofa", "sphere", "cube")
# Far from the surface only the sign matters; clamping keeps the decoder's effort near it.
TRUNCATION = 0.2


def grid(size: int = SDF_SIZE) -> np.ndarray:
    """(size, size, size, 3) points, axis order x, y, z as triangulate() reads them."""
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)


def box(p: np.ndarray, center, half, rounding: float = 0.0) -> np.ndarray:
    q = np.abs(p - np.asarray(center, np.float32)) - (np.asarray(half, np.float32) - rounding)
    outside = np.linalg.norm(np.maximum(q, 0), axis=-1)
    return outside + np.minimum(q.max(axis=-1), 0) - rounding


def cylinder(p: np.ndarray, center, radius: float, half_height: float) -> np.ndarray:
    """Upright (along y)."""
    c = np.asarray(center, np.float32)
    radial = np.hypot(p[..., 0] - c[0], p[..., 2] - c[2]) - radius
    vertical = np.abs(p[..., 1] - c[1]) - half_height
    d = np.stack([radial, vertical], axis=-1)
    return np.linalg.norm(np.maximum(d, 0), axis=-1) + np.minimum(d.max(axis=-1), 0)


def torus_xy(p: np.ndarray, center, major: float, minor: float) -> np.ndarray:
    """A ring in the x-y plane (a mug's handle)."""
    q = p - np.asarray(center, np.float32)
    return np.hypot(np.hypot(q[..., 0], q[..., 1]) - major, q[..., 2]) - minor


def legs(p: np.ndarray, width: float, depth: float, top: float, bottom: float, thickness: float) -> np.ndarray:
    half = (thickness / 2, (top - bottom) / 2, thickness / 2)
    corners = [(sx * (width / 2 - thickness), (top + bottom) / 2, sz * (depth / 2 - thickness))
               for sx in (-1, 1) for sz in (-1, 1)]
    return np.minimum.reduce([box(p, corner, half) for corner in corners])


def chair(p, rng):
    width, depth, seat = rng.uniform(0.65, 0.75), rng.uniform(0.65, 0.75), rng.uniform(-0.1, 0.0)
    back_top = rng.uniform(0.75, 0.9)
    parts = [box(p, (0, seat, 0), (width / 2, 0.15, depth / 2)),
             legs(p, width, depth, seat, -0.9, rng.uniform(0.2, 0.23)),
             box(p, (0, (seat + back_top) / 2, -depth / 2 + 0.13), (width / 2, (back_top - seat) / 2, 0.13))]
    return np.minimum.reduce(parts)


def table(p, rng):
    width, depth, top = rng.uniform(1.5, 1.8), rng.uniform(0.9, 1.2), rng.uniform(0.2, 0.3)
    return np.minimum(box(p, (0, top, 0), (width / 2, 0.13, depth / 2)),
                      legs(p, width, depth, top, -0.6, rng.uniform(0.2, 0.23)))


def mug(p, rng):
    radius, half_height = rng.uniform(0.42, 0.5), rng.uniform(0.5, 0.6)
    wall = rng.uniform(0.14, 0.16)
    body = cylinder(p, (-0.15, 0, 0), radius, half_height)
    hollow = cylinder(p, (-0.15, wall, 0), radius - wall, half_height)
    handle = torus_xy(p, (-0.15 + radius, 0, 0), rng.uniform(0.25, 0.3), 0.09)
    return np.minimum(np.maximum(body, -hollow), np.maximum(handle, -body))


def lamp(p, rng):
    shade_radius, shade_bottom = rng.uniform(0.4, 0.5), rng.uniform(0.2, 0.35)
    base = cylinder(p, (0, -0.85, 0), rng.uniform(0.3, 0.4), 0.06)
    pole = cylinder(p, (0, (shade_bottom - 0.85) / 2, 0), 0.12, (shade_bottom + 0.85) / 2)
    shade_half = (0.85 - shade_bottom) / 2
    shade = cylinder(p, (0, shade_bottom + shade_half, 0), shade_radius, shade_half)
    return np.minimum.reduce([base, pole, shade])


def sofa(p, rng):
    width, depth, seat = rng.uniform(1.5, 1.8), rng.uniform(0.7, 0.85), rng.uniform(-0.35, -0.2)
    arm = rng.uniform(0.14, 0.2)
    parts = [box(p, (0, (seat - 0.6) / 2, 0), (width / 2, (seat + 0.6) / 2, depth / 2), 0.04),
             box(p, (0, 0.05, -depth / 2 + 0.1), (width / 2, 0.4, 0.1), 0.04)]
    parts += [box(p, (side * (width / 2 - arm / 2), seat + 0.12, 0), (arm / 2, 0.18, depth / 2), 0.04) for side in (-1, 1)]
    return np.minimum.reduce(parts)


def sphere(p, rng):
    return np.linalg.norm(p, axis=-1) - rng.uniform(0.6, 0.7)


def cube(p, rng):
    half = rng.uniform(0.75, 0.85)
    return box(p, (0, 0, 0), (half,) * 3, rng.uniform(0.0, 0.06))


MAKERS = {"chair": chair, "table": table, "mug": mug, "lamp": lamp, "sofa": sofa, "sphere": sphere, "cube": cube}


def sample_sdf(label: str, rng: np.random.Generator, size: int = SDF_SIZE) -> np.ndarray:
    sdf = MAKERS[label](grid(size), rng)
    return np.clip(sdf, -TRUNCATION, TRUNCATION).astype(np.float32)


def dataset(per_class: int, seed: int = 0, size: int = SDF_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, size) clamped SDFs and their (N,) class indices, classes interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(len(CLASSES)), per_class)
    return np.stack([sample_sdf(CLASSES[label], rng, size) for label in labels]), labels


# The three ways a request names a class. Templates and synonyms vary the prompt; the class word is always there.
SYNONYMS = {"chair": ("chair", "dining chair", "wooden chair", "side chair"),
            "table": ("table", "dining table", "kitchen table", "desk"),
            "mug": ("mug", "coffee mug", "cup", "tea mug"),
            "lamp": ("lamp", "table lamp", "desk lamp", "floor lamp"),
            "sofa": ("sofa", "couch", "settee", "three-seat sofa"),
            "sphere": ("sphere", "ball", "round ball", "globe"),
            "cube": ("cube", "box", "block", "square box")}
TEMPLATES = ("{}", "a {}", "the {}", "one {}", "a 3d model of a {}", "make a {}", "a simple {}", "A {}", "{}s")


def prompt(label: str, rng: np.random.Generator) -> str:
    return rng.choice(TEMPLATES).format(rng.choice(SYNONYMS[label]))


def surface_points(sdf: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3) points within a voxel of the surface, as a scanner would return them."""
    size = sdf.shape[0]
    voxel = 2 / (size - 1)
    near = np.argwhere(np.abs(sdf) < voxel)
    chosen = near[rng.integers(0, len(near), count)]
    return (chosen * voxel - 1 + rng.uniform(-voxel / 2, voxel / 2, (count, 3))).astype(np.float32)


def view(yaw: float = np.radians(35), pitch: float = np.radians(-25)) -> np.ndarray:
    """The three-quarter camera of the sketches and of bernini.preview: world to view rotation, looking down -z."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    return np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])


def sketch(sdfs, image_size: int = 224, depth_samples: int = 96):
    """(B, 3, image_size, image_size) grey depth-shaded drawings of (B, n, n, n) SDFs from the preview's angle,
    near surfaces dark on a white page: the kind of picture a user sends as image/png."""
    import torch

    sdfs = torch.as_tensor(sdfs, dtype=torch.float32)
    axis = torch.linspace(-1.3, 1.3, image_size)
    depth = torch.linspace(1.3, -1.3, depth_samples)  # near to far
    w, v, u = torch.meshgrid(depth, -axis, axis, indexing="ij")  # image rows run top (y up) to bottom
    world = torch.stack([u, v, w], dim=-1) @ torch.tensor(view(), dtype=torch.float32)  # view -> world
    # grid_sample's last dimension indexes (W, H, D) = the SDF's (z, y, x).
    grid = world.flip(-1)[None].expand(len(sdfs), -1, -1, -1, -1)
    inside = torch.nn.functional.grid_sample(sdfs[:, None], grid, align_corners=True, padding_mode="border")[:, 0] < 0
    hit = inside.any(dim=1)
    first = inside.float().argmax(dim=1).float() / (depth_samples - 1)
    grey = torch.where(hit, 0.15 + 0.7 * first, torch.ones_like(first))
    return grey[:, None].expand(-1, 3, -1, -1).contiguous()
