"""Write a docker-save archive (what `ctr images import` reads) from ready layer tars, with no engine."""

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 << 20):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    parser.add_argument("reference", help="name:tag the import gives the image")
    parser.add_argument("layers", type=Path, nargs="+", help="uncompressed layer tars, lowest first")
    parser.add_argument("--entrypoint", action="append", default=[])
    parser.add_argument("--user", default="")
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--also", metavar="REFERENCE USER ENTRYPOINT...", action="append", default=[],
                        help="a second image on the same layers, with its own user and entrypoint (one import)")
    args = parser.parse_args()

    diff_ids = [_digest(layer) for layer in args.layers]
    images = [(args.reference, args.user, args.entrypoint)] + [
        (words[0], words[1], words[2:]) for words in (also.split() for also in args.also)]
    layer_names = [f"{diff.removeprefix('sha256:')}/layer.tar" for diff in diff_ids]
    files, manifest = {}, []
    for reference, user, entrypoint in images:
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint or None, "User": user, "WorkingDir": args.workdir,
                       "Env": args.env or ["PATH=/usr/local/bin:/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_bytes = json.dumps(config).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        files[config_name] = config_bytes
        manifest.append({"Config": config_name, "RepoTags": [reference], "Layers": layer_names})
    files["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(args.output, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, layer in zip(layer_names, args.layers):
            archive.add(layer, arcname=name)


if __name__ == "__main__":
    main()
