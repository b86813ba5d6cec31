"""Compiled stage artifacts: the manifest, S3 access, the verified puller and the operator's preflight."""
