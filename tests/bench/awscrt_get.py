"""The AWS Common Runtime's S3 client as a bench-pull peer: every file of a manifest fetched with
`expected_checksum`, so the CRT checks each file's SHA-256 in C while it streams (a mismatch fails the run).

Runs in a venv of its own with only awscrt, like a lean init container would:
    python awscrt_get.py ENDPOINT BUCKET PREFIX DEST   (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)
"""

import base64
import json
import os
import sys
import urllib.parse
from pathlib import Path

from awscrt import auth, http, io, s3

PART_SIZE = 8 << 20


def main(endpoint: str, bucket: str, prefix: str, dest: str) -> None:
    parts = urllib.parse.urlsplit(endpoint)
    loop = io.EventLoopGroup()
    bootstrap = io.ClientBootstrap(loop, io.DefaultHostResolver(loop))
    credentials = auth.AwsCredentialsProvider.new_static(os.environ["AWS_ACCESS_KEY_ID"],
                                                         os.environ["AWS_SECRET_ACCESS_KEY"])
    client = s3.S3Client(bootstrap=bootstrap, region="us-east-1", part_size=PART_SIZE, throughput_target_gbps=10,
                         signing_config=s3.create_default_s3_signing_config(region="us-east-1",
                                                                            credential_provider=credentials),
                         tls_mode=s3.S3RequestTlsMode.ENABLED if parts.scheme == "https" else s3.S3RequestTlsMode.DISABLED)

    def get(key: str, target: Path, sha256: str | None = None) -> s3.S3Request:
        target.parent.mkdir(parents=True, exist_ok=True)
        request = http.HttpRequest("GET", f"/{bucket}/{prefix}{key}", http.HttpHeaders([("Host", parts.netloc)]))
        checksum = None if sha256 is None else s3.S3ChecksumConfig(
            expected_checksum=base64.b64encode(bytes.fromhex(sha256)).decode(),
            expected_checksum_algorithm=s3.S3ChecksumAlgorithm.SHA256)
        return client.make_request(type=s3.S3RequestType.GET_OBJECT, request=request, recv_filepath=str(target),
                                   checksum_config=checksum)

    root = Path(dest)
    get("manifest.json", root / "manifest.json").finished_future.result()
    manifest = json.loads((root / "manifest.json").read_text())
    requests = [get(a["file"], root / a["file"], a["sha256"]) for a in manifest["stages"].values()]
    for request in requests:
        request.finished_future.result()


if __name__ == "__main__":
    main(*sys.argv[1:])
