"""`bernini generate URL`: POST an input to a deployment's endpoint; write the mesh and a PNG preview."""

import argparse
import json
import sys
import threading
from pathlib import Path


def add_to(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser("generate", help="POST an input to a deployment's endpoint; write the mesh and a PNG preview")
    generate.add_argument("url", help="the Serve endpoint (status.serveEndpoint in the cluster, or a port-forward)")
    given = generate.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", help="text prompt")
    given.add_argument("--image", type=Path, help="PNG or JPEG file")
    given.add_argument("--points", type=Path, help='JSON file {"points": [[x, y, z], ...]}')
    generate.add_argument("--format", choices=("glb", "obj", "ply"), default="glb")
    generate.add_argument("-o", "--output", type=Path, help="mesh file (default mesh.FORMAT); the preview goes beside it")
    generate.add_argument("--timeout", type=float, default=300.0)
    generate.set_defaults(handler=run)


def _request_body(args: argparse.Namespace) -> tuple[bytes, str]:
    if args.prompt is not None:
        return json.dumps({"prompt": args.prompt}).encode(), "application/json"
    if args.points:
        return args.points.read_bytes(), "application/json"
    kinds = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
    return args.image.read_bytes(), kinds.get(args.image.suffix.lower(), "image/png")


def run(args: argparse.Namespace) -> int:
    import time
    import urllib.error
    import urllib.request

    body, content_type = _request_body(args)
    output = args.output or Path(f"mesh.{args.format}")
    request = urllib.request.Request(f"{args.url.rstrip('/')}/?format={args.format}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    started, done = time.monotonic(), threading.Event()
    if sys.stderr.isatty():
        def progress():
            while not done.wait(0.5):
                print(f"\rwaiting for the mesh: {time.monotonic() - started:.1f}s", end="", file=sys.stderr, flush=True)
        threading.Thread(target=progress, daemon=True).start()
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            mesh, info = response.read(), json.loads(response.headers.get("X-Bernini-Mesh", "{}"))
    except urllib.error.HTTPError as error:
        print(f"\nbernini generate: {error.code}: {error.read().decode(errors='replace')[:500]}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"\nbernini generate: {args.url}: {error}", file=sys.stderr)
        return 1
    finally:
        done.set()
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)  # clear the progress line
    output.write_bytes(mesh)
    print(f"wrote {output} ({info.get('vertices', '?')} vertices, "
          f"{info.get('faces', '?')} faces) in {time.monotonic() - started:.1f}s")
    try:
        from bernini.preview import render_png
    except ImportError:
        print("no preview: it needs the model extra (pip install 'bernini-operator[model]')", file=sys.stderr)
        return 0
    preview = output.with_suffix(".png")
    preview.write_bytes(render_png(mesh, args.format))
    print(f"wrote {preview}")
    return 0
