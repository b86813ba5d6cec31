"""Does a generated shape look like the class it was asked for? IoU of occupancy against each class's template.

Occupancy is read on a 32^3 grid of cells, a cell full when any of its SDF grid points is inside, so a chair leg
one voxel off still counts. A class's template holds the cells full in at least half of its shapes in a sample of
the data set drawn from another seed than training's.
"""

import io
import json
from dataclasses import dataclass

import numpy as np

from bernini.model import dataset
from bernini.model.diffusion import GUIDANCE, STEPS
from bernini.model.shapes import POINTS, SDF_SIZE

CELL = 2  # SDF grid points per cell side
# A generated shape is its class when its own template is the nearest, by MARGIN, and at least FLOOR close. Measured
# on 2026-12-05 (make weights): the model's shapes reach their own template at 0.50 (chairs) to 0.94 and beat the
# nearest other by 0.18 or more; the data set's own unseen shapes reach theirs at 0.59 or more and beat the others by
# 0.22 or more. One threshold between own and other would sit in a gap of 0.07: the mug's and the sphere's
# templates overlap at 0.43.
FLOOR = 0.4
MARGIN = 0.05


def _cells(inside: np.ndarray) -> np.ndarray:
    """(n, n, n) inside-or-not grid points -> (n/CELL,)*3 cells holding some of the inside."""
    cells = inside.shape[0] // CELL
    return inside.reshape(cells, CELL, cells, CELL, cells, CELL).any(axis=(1, 3, 5))


def occupancy(sdf: np.ndarray) -> np.ndarray:
    return _cells(np.asarray(sdf) < 0)


def mesh_occupancy(mesh, size: int = SDF_SIZE) -> np.ndarray:
    """The occupancy of a closed mesh as served (coordinates in [-1, 1]), read back on the SDF grid points: a ray
    up each grid column, a point inside when an odd number of faces lie above it."""
    step = 2 / (size - 1)
    inside = np.zeros((size * size, size), dtype=bool)
    triangles = np.asarray(mesh.triangles, dtype=np.float64)
    if len(triangles):
        # Rays a hair off the grid lines: marching cubes puts vertices exactly on them, where a ray would count twice.
        x0, z0 = -1 + 1e-4 * step, -1 + 1.7e-4 * step
        (ax, az), (bx, bz), (cx, cz) = (triangles[:, n][:, [0, 2]].T for n in range(3))
        area = (bx - ax) * (cz - az) - (cx - ax) * (bz - az)
        area = np.where(area == 0, np.nan, area)  # a face seen edge-on is never hit: every test on NaN is False
        first_i, last_i = np.ceil((triangles[:, :, 0].min(1) - x0) / step), np.floor((triangles[:, :, 0].max(1) - x0) / step)
        first_k, last_k = np.ceil((triangles[:, :, 2].min(1) - z0) / step), np.floor((triangles[:, :, 2].max(1) - z0) / step)
        columns, heights = [], []
        for di in range(int(max(0, (last_i - first_i).max())) + 1):
            for dk in range(int(max(0, (last_k - first_k).max())) + 1):
                i, k = first_i + di, first_k + dk
                px, pz = x0 + i * step, z0 + k * step
                u = ((bx - px) * (cz - pz) - (cx - px) * (bz - pz)) / area
                v = ((cx - px) * (az - pz) - (ax - px) * (cz - pz)) / area
                w = 1 - u - v
                hit = ((i <= last_i) & (k <= last_k) & (i >= 0) & (i < size) & (k >= 0) & (k < size)
                       & (u >= 0) & (v >= 0) & (w >= 0))
                columns.append((i[hit] * size + k[hit]).astype(np.int64))
                heights.append((u * triangles[:, 0, 1] + v * triangles[:, 1, 1] + w * triangles[:, 2, 1])[hit])
        above = np.zeros((size * size, size), dtype=np.int64)
        np.add.at(above, np.concatenate(columns), np.concatenate(heights)[:, None] > np.linspace(-1, 1, size)[None, :])
        inside = above % 2 == 1
    return _cells(inside.reshape(size, size, size).transpose(0, 2, 1))  # (x, z, y) -> (x, y, z), the SDF's order


def templates(per_class: int = 24, seed: int = 1) -> np.ndarray:
    """(classes, cells, cells, cells) bool: each class's template, from shapes the model never trained on."""
    sdfs, labels = dataset.dataset(per_class, seed)
    full = np.stack([occupancy(sdf) for sdf in sdfs])
    return np.stack([full[labels == label].mean(axis=0) >= 0.5 for label in range(len(dataset.CLASSES))])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def scores(cells: np.ndarray, class_templates: np.ndarray) -> dict[str, float]:
    return {name: iou(cells, template) for name, template in zip(dataset.CLASSES, class_templates)}


def nearest_other(asked: str, class_scores: dict[str, float]) -> str:
    return max((name for name in class_scores if name != asked), key=class_scores.get)


def verdict(asked: str, class_scores: dict[str, float]) -> str | None:
    """None when the shape is its class; otherwise what is wrong with it."""
    own = class_scores[asked]
    other = nearest_other(asked, class_scores)
    if own < FLOOR:
        return f"IoU with the {asked} template is {own:.2f}, below {FLOOR}"
    if own < class_scores[other] + MARGIN:
        return f"the {other} template is as near ({class_scores[other]:.2f} against {own:.2f})"
    return None


@dataclass(frozen=True)
class Generation:
    asked: str
    kind: str
    scores: dict
    problem: str | None


def request_bodies(label: str, seed: int = 11) -> list[tuple[str, str, bytes]]:
    """(kind, content type, body) of one request per input kind naming `label`: a prompt, a sketch of a shape the
    model never trained on, and a scan of that shape. The same bodies go to Serve and to the in-process graphs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sdf = dataset.sample_sdf(label, rng)
    picture = io.BytesIO()
    Image.fromarray((dataset.sketch(sdf[None])[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(picture, "PNG")
    points = np.round(dataset.surface_points(sdf, POINTS, rng), 4).tolist()
    return [("text", "application/json", json.dumps({"prompt": f"a {label}"}).encode()),
            ("image", "image/png", picture.getvalue()),
            ("pointcloud", "application/json", json.dumps({"points": points}).encode())]


def judge(asked: str, kind: str, cells: np.ndarray, class_templates: np.ndarray) -> Generation:
    class_scores = scores(cells, class_templates)
    return Generation(asked, kind, class_scores, verdict(asked, class_scores))


def judge_mesh(asked: str, kind: str, data: bytes, file_format: str, class_templates: np.ndarray) -> Generation:
    """judge() of a mesh file as Serve answers it."""
    import trimesh

    return judge(asked, kind, mesh_occupancy(trimesh.load(io.BytesIO(data), file_type=file_format, force="mesh")),
                 class_templates)


def check(state: dict, class_templates: np.ndarray, seed: int = 0) -> list[Generation]:
    """Every class through every input kind, on graphs traced from the trained weights and run as the Serve
    replicas run them (bernini.serve.stages), at the Serve defaults."""
    import torch

    from bernini.model.reference import reference_stages
    from bernini.serve import stages

    graphs = {}
    with torch.no_grad():
        for stage in reference_stages(weights=state):
            if stage.stage != "decoder" or stage.artifact == "decoder":  # one decoder graph: batch 1
                graphs[stage.artifact] = stages.StageGraph(
                    torch.jit.trace(stage.module, tuple(tensor for _, tensor in stage.inputs)), "cpu")
    rows = []
    for label in dataset.CLASSES:
        for kind, content_type, body in request_bodies(label):
            modality, tensor = stages.parse_input(content_type, body)
            condition = stages.encode(graphs[f"encoder-{modality}"], tensor)
            latent = stages.sample_latent(graphs["diffusion"], condition, STEPS, GUIDANCE, seed)
            sdf = stages.decode_batch({1: graphs["decoder"]}, [latent])[0]
            rows.append(judge(label, kind, occupancy(sdf), class_templates))
    return rows


def class_shapes(class_templates: np.ndarray, per_class: int = 6, seed: int = 23) -> dict[str, float]:
    """The peer of a generated shape: the median IoU that the data set's own shapes of each class, unseen by
    training and by the templates, reach with their template."""
    sdfs, labels = dataset.dataset(per_class, seed)
    own = {name: [] for name in dataset.CLASSES}
    for sdf, label in zip(sdfs, labels):
        name = dataset.CLASSES[label]
        own[name].append(scores(occupancy(sdf), class_templates)[name])
    return {name: float(np.median(values)) for name, values in own.items()}


def table(rows: list[Generation], peers: dict[str, float] | None = None) -> str:
    lines = [f"{'asked':8} {'input':11} {'IoU own':>8} {'class shapes':>13} {'best other':>18}  verdict"]
    for row in rows:
        other = nearest_other(row.asked, row.scores)
        peer = f"{peers[row.asked]:.2f}" if peers else "-"
        lines.append(f"{row.asked:8} {row.kind:11} {row.scores[row.asked]:8.2f} {peer:>13} "
                     f"{other + f' {row.scores[other]:.2f}':>18}  {row.problem or 'ok'}")
    return "\n".join(lines)
