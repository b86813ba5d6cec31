"""The trained reference weights, cached outside the repository under a key of the code that makes them."""

import hashlib
import os
import tempfile
from pathlib import Path

import torch

MODEL_PACKAGE = Path(__file__).parent


def cache_root() -> Path:
    return Path(os.environ.get("BERNINI_CACHE") or Path.home() / ".cache" / "bernini")


def code_key() -> str:
    """A digest of every module of the model package: changing any of them retrains."""
    digest = hashlib.sha256()
    for source in sorted(MODEL_PACKAGE.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def weights_file() -> Path:
    return cache_root() / f"weights-{code_key()}" / "reference.pt"


def load(path: Path) -> dict:
    # weights_only: a cache file is data, never code to unpickle.
    return torch.load(path, map_location="cpu", weights_only=True)


def trained(log=print) -> dict:
    """The trained state (state dicts by artifact, the class templates, the training timings), training first
    when this code has none cached yet."""
    path = weights_file()
    if not path.exists():
        from bernini.model import quality
        from bernini.model.training import train

        log(f"no trained reference weights for this code in {path.parent}: training (minutes, once)")
        state = train(log=log)
        state["templates"] = torch.as_tensor(quality.templates())
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            torch.save(state, handle)
        Path(handle.name).rename(path)  # atomic: a run killed mid-save leaves no half file under the real name
    return load(path)
