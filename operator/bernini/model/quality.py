"""Does a generated shape look like the class it was asked for? IoU of occupancy against each class's template.

Occupancy is read on a 32^3 grid of cells, a cell full when any of its SDF grid points is inside, so a chair leg
one voxel off still counts. A class's template holds the cells full in at least half of its training shapes.
"""

import io
import json
from dataclasses import dataclass

import numpy as np

from bernini.model import dataset
from bernini.model.diffusion import GUIDANCE, STEPS
from bernini.model.shapes import POINTS, SDF_SIZE

CELL = 2  # SDF grid points per cell side
# Measured on the training set (make weights prints it): every class's shapes reach their template at a median
# IoU of 0.57 or more while no shape reaches another class's template at 0.36. A generated shape passes when its
# own class's template is at least this close and every other class's is not.
THRESHOLD = 0.45


def occupancy(sdf: np.ndarray) -> np.ndarray:
    """(n, n, n) SDF -> (n/CELL,)*3 cells holding some of the inside."""
    cells = sdf.shape[0] // CELL
    return (np.asarray(sdf) < 0).reshape(cells, CELL, cells, CELL, cells, CELL).any(axis=(1, 3, 5))


def mesh_occupancy(mesh, size: int = SDF_SIZE) -> np.ndarray:
    """The occupancy of a mesh as served (coordinates in [-1, 1]), read back on the SDF grid points."""
    points = dataset.grid(size).reshape(-1, 3)
    filled = mesh.voxelized(pitch=2 / (size - 1)).fill()
    inside = filled.is_filled(points).reshape((size,) * 3)
    return occupancy(np.where(inside, -1.0, 1.0))


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


def verdict(asked: str, class_scores: dict[str, float], threshold: float = THRESHOLD) -> str | None:
    """None when the shape is its class; otherwise what is wrong with it."""
    if class_scores[asked] < threshold:
        return f"IoU with the {asked} template is {class_scores[asked]:.2f}, below {threshold}"
    others = {name: score for name, score in class_scores.items() if name != asked and score >= threshold}
    if others:
        return f"also reaches {', '.join(f'{name} ({score:.2f})' for name, score in others.items())}"
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


def check(state: dict, seed: int = 0) -> list[Generation]:
    """Every class through every input kind, on graphs traced from the trained weights and run as the Serve
    replicas run them (bernini.serve.stages), at the Serve defaults."""
    import torch

    from bernini.model.reference import reference_stages
    from bernini.serve import stages

    graphs = {}
    with torch.no_grad():
        for stage in reference_stages(weights=state):
            graphs[stage.artifact] = stages.StageGraph(
                torch.jit.trace(stage.module, tuple(tensor for _, tensor in stage.inputs)), "cpu")
    class_templates = np.asarray(state["templates"])
    rows = []
    for label in dataset.CLASSES:
        for kind, content_type, body in request_bodies(label):
            modality, tensor = stages.parse_input(content_type, body)
            condition = stages.encode(graphs[f"encoder-{modality}"], tensor)
            latent = stages.sample_latent(graphs["diffusion"], condition, STEPS, GUIDANCE, seed)
            sdf = stages.decode_batch({1: graphs["decoder"]}, [latent])[0]
            rows.append(judge(label, kind, occupancy(sdf), class_templates))
    return rows


def table(rows: list[Generation]) -> str:
    lines = [f"{'asked':8} {'input':11} {'IoU own':>8} {'best other':>18}  verdict"]
    for row in rows:
        other = max((name for name in row.scores if name != row.asked), key=row.scores.get)
        lines.append(f"{row.asked:8} {row.kind:11} {row.scores[row.asked]:8.2f} "
                     f"{other + f' {row.scores[other]:.2f}':>18}  {row.problem or 'ok'}")
    return "\n".join(lines)
