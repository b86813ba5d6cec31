"""The trained reference weights, cached outside the repository under a key of the code that makes them."""

import hashlib
import os
import tempfile
from pathlib import Path

import torch

MODEL_PACKAGE = Path(__file__).parent
# The modules whose code decides the weights; quality.py judges them and is not among them.
TRAINING_CODE = ("shapes.py", "dataset.py", "encoders.py", "diffusion.py", "wavelet.py", "training.py")


def cache_root() -> Path:
    return Path(os.environ.get("BERNINI_CACHE") or Path.home() / ".cache" / "bernini")


def code_key() -> str:
    """A digest of the training code: changing any of it retrains."""
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        digest.update(name.encode() + b"\0" + (MODEL_PACKAGE / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def weights_file() -> Path:
    return cache_root() / f"weights-{code_key()}" / "reference.pt"


def load(path: Path) -> dict:
    # weights_only: a cache file is data, never code to unpickle (safe from torch 2.6; the model extra pins newer).
    return torch.load(path, map_location="cpu", weights_only=True)


def trained(log=print) -> dict:
    """The trained state (state dicts by stage or encoder artifact, and the training's timings), training first
    when this code has none cached yet or the cached file does not load."""
    path = weights_file()
    if path.exists():
        try:
            return load(path)
        except Exception as error:  # a truncated or foreign file: train again rather than fail forever
            log(f"{path} does not load ({type(error).__name__}): training again")
    from bernini.model.training import train

    log(f"no trained reference weights for this code in {path.parent}: training (minutes, once)")
    state = train(log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        try:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)  # atomic: a reader sees the old name missing or the whole file
    return state
