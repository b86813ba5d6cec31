"""The platform team's policy (set by the chart, one per operator): what a BerniniDeployment may choose. Pure.

Checked before the preflight, so a refused store endpoint is never dialled."""

from dataclasses import dataclass

from bernini.api.spec import BerniniDeploymentSpec
from bernini.endpoints import EndpointRefused, parse_endpoint


@dataclass(frozen=True)
class Policy:
    image_prefixes: tuple[str, ...] = ()
    """Serving images must start with one of these (e.g. "123456789012.dkr.ecr.us-east-1.amazonaws.com/"); empty: any."""

    require_image_digest: bool = False
    """Serving images must be pinned by @sha256 digest."""

    artifacts_prefixes: tuple[str, ...] = ()
    """artifactsUri must lie under one of these s3:// prefixes; empty: any."""

    endpoints: tuple[str, ...] = ()
    """s3.endpointUrl must be one of these (scheme://host[:port][/path]; a "*" label of the host stands for any one
    label, e.g. https://s3.*.amazonaws.com); empty: any endpoint of the allowed schemes."""

    allow_http_endpoints: bool = False
    """Plain-http endpointUrl (signed requests and artifacts in clear text); off: https only."""

    allow_prewarm: bool = True
    """spec.artifactsCache.prewarm: a DaemonSet running the tenant's image on every node of its allowed types."""

    service_accounts: tuple[str, ...] = ()
    """serviceAccountName may name only these; empty: any ServiceAccount of the namespace."""

    max_total_replicas: int = 256
    """Sum of maxReplicas over the layout's stages and the ingress of one deployment (what a typo could cost)."""

    def violations(self, spec: BerniniDeploymentSpec) -> list[str]:
        found = []
        image = spec.runtime.image
        if self.image_prefixes and not any(_image_under(image, prefix) for prefix in self.image_prefixes):
            found.append(f"spec.runtime.image {image} is not under an allowed prefix ({', '.join(self.image_prefixes)})")
        if self.require_image_digest and "@sha256:" not in image:
            found.append(f"spec.runtime.image {image} must be pinned by digest (@sha256:...)")
        uri = spec.model.artifacts_uri
        if self.artifacts_prefixes and not _under(uri, self.artifacts_prefixes):
            found.append(f"spec.model.artifactsUri {uri} is not under an allowed prefix ({', '.join(self.artifacts_prefixes)})")
        endpoint = spec.s3.endpoint_url
        if endpoint:
            if not endpoint.startswith("https://") and not self.allow_http_endpoints:
                found.append(f"spec.s3.endpointUrl {endpoint} must use https")
            if self.endpoints and not any(_endpoint_under(endpoint, allowed) for allowed in self.endpoints):
                found.append(f"spec.s3.endpointUrl {endpoint} is not an allowed endpoint ({', '.join(self.endpoints)})")
        if spec.artifacts_cache and spec.artifacts_cache.prewarm and not self.allow_prewarm:
            found.append("spec.artifactsCache.prewarm is not allowed here (the operator's policy: allowPrewarm)")
        account = spec.service_account_name
        if account and self.service_accounts and account not in self.service_accounts:
            found.append(f"spec.serviceAccountName {account} is not allowed ({', '.join(self.service_accounts)})")
        total = sum(replicas.max_replicas for _, replicas in spec.serve_deployments())
        if total > self.max_total_replicas:
            found.append(f"maxReplicas add up to {total} over the stages and the ingress; the limit is "
                         f"{self.max_total_replicas}")
        return found


def _under(uri: str, prefixes: tuple[str, ...]) -> bool:
    """s3://bucket/a/ is under s3://bucket/ and s3://bucket/a/, not under s3://bucket/ab/ nor s3://buck/; a
    URI with . or .. segments is under nothing (a store or proxy might resolve them)."""
    folder = uri if uri.endswith("/") else uri + "/"
    if any(part in (".", "..") for part in folder.removeprefix("s3://").split("/")):
        return False
    return any(folder.startswith(prefix if prefix.endswith("/") else prefix + "/") for prefix in prefixes)


def _image_under(image: str, prefix: str) -> bool:
    """registry/team/ allows registry/team/x:1; registry/team/x allows registry/team/x:1 and @sha256:..., and
    neither allows registry/team-evil/x."""
    if not image.startswith(prefix):
        return False
    return prefix.endswith(("/", ":", "@")) or image[len(prefix):][:1] in ("", "/", ":", "@")


_ANY_LABEL = "any--label"  # stands for "*" while the allowed entry is parsed like an endpoint


def _endpoint_under(endpoint: str, allowed: str) -> bool:
    """Both read as addresses (bernini.endpoints): the same scheme, port and path, and the same host, where a
    "*" label of the allowed entry stands for exactly one label of a name (never of an address). The path must
    be equal, not a prefix: with path-style addressing the next segment is the bucket. So
    https://s3.*.amazonaws.com allows https://s3.us-east-1.amazonaws.com but not a bucket's own virtual host
    (bucket.s3.us-east-1.amazonaws.com), nor s3.internal.example.com for https://s3.internal."""
    try:
        given = parse_endpoint(endpoint)
        permitted = parse_endpoint(allowed.replace("*", _ANY_LABEL))
    except EndpointRefused:
        return False
    given_labels, permitted_labels = given.host.split("."), permitted.host.split(".")
    host_allowed = len(given_labels) == len(permitted_labels) and all(
        mine == theirs or (theirs == _ANY_LABEL and given.address is None)
        for mine, theirs in zip(given_labels, permitted_labels))
    return (given.scheme, given.port, given.path) == (permitted.scheme, permitted.port, permitted.path) and host_allowed
