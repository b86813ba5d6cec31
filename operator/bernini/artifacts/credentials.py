"""The init container's AWS credentials, resolved the way botocore's default chain resolves them in a pod.

A pod on EKS gets its role one of three ways, all read here without botocore (whose import cost more start-up
than the smaller artifacts take to download): keys in the environment, IRSA (a projected service-account token
exchanged with STS by AssumeRoleWithWebIdentity) and EKS Pod Identity (a token presented to the node's agent).
Anything else a machine may use (shared config and credentials files, profiles, SSO, ECS, the instance role)
goes to botocore's own chain, imported only then. The order is botocore's: environment keys, then what config
files name, then the web identity variables, then the container endpoint, then the instance.
"""

import datetime
import http.client
import json
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from bernini.artifacts.sigv4 import Credentials

REFRESH_BEFORE_SECONDS = 900  # botocore's advisory refresh window; a failed refresh keeps what is still valid
HTTP_TIMEOUT_SECONDS = 5
ATTEMPTS = 3
# The container endpoint may be plain HTTP only on the node itself: the EKS Pod Identity Agent and ECS addresses,
# or loopback. Anywhere else the pod's token would travel in the clear.
RETRIED_STS_CODES = frozenset({"Throttling", "IDPCommunicationError"})  # as botocore retries them
CONTAINER_HOSTS = frozenset({"169.254.170.2", "169.254.170.23", "fd00:ec2::23", "localhost"})
CONFIG_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


class CredentialsError(Exception):
    """No credentials could be had; the message says from where and why (never a secret)."""


class CredentialChain:
    """Current credentials, fetched on first use and again within REFRESH_BEFORE_SECONDS of their expiry."""

    def __init__(self, region: str, environ: dict[str, str] | None = None):
        self._region = region
        self._environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._current: Credentials | None = None
        self._fetch: Callable[[], Credentials] | None = None
        self._refreshes_itself = False  # botocore's credentials: asked every time, they refresh themselves
        self.source = ""  # where the credentials came from, for the log

    def current(self) -> Credentials:
        with self._lock:
            expires = self._current and self._current.expires_at
            if self._current is None or self._refreshes_itself or (
                    expires and expires - time.time() < REFRESH_BEFORE_SECONDS):
                try:
                    self._fetch = self._fetch or self._choose()
                    self._current = self._fetch()
                except Exception as error:  # also a token file unreadable, an answer unparsable, botocore failing
                    if expires and expires > time.time() + 60:
                        return self._current  # still valid: the next signing tries again
                    if isinstance(error, CredentialsError):
                        raise
                    raise CredentialsError(f"reading credentials failed ({type(error).__name__})") from None
            return self._current

    def _choose(self) -> Callable[[], Credentials]:
        env = self._environ
        if bool(env.get("AWS_ACCESS_KEY_ID")) != bool(env.get("AWS_SECRET_ACCESS_KEY")):
            raise CredentialsError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")
        if env.get("AWS_ACCESS_KEY_ID"):
            self.source = "environment"
            keys = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                               env.get("AWS_SECURITY_TOKEN") or env.get("AWS_SESSION_TOKEN") or None)
            return lambda: keys
        if any(env.get(name) for name in CONFIG_VARIABLES) or (Path.home() / ".aws").exists():
            return self._botocore()  # profiles may name roles, SSO or processes ahead of the variables below
        if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
            self.source = "IRSA web identity"
            return self._web_identity
        if env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
            self.source = "container endpoint (EKS Pod Identity)"
            return self._container
        return self._botocore()

    def _web_identity(self) -> Credentials:
        env = self._environ
        token = Path(env["AWS_WEB_IDENTITY_TOKEN_FILE"]).read_text()  # as is, as botocore sends it
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or self._region
        domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        endpoint = env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL") or f"https://sts.{region}.{domain}"
        form = urllib.parse.urlencode({
            "Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": env["AWS_ROLE_ARN"],
            "RoleSessionName": env.get("AWS_ROLE_SESSION_NAME") or f"botocore-session-{int(time.time())}",
            "WebIdentityToken": token,
        })
        for attempt in range(1, ATTEMPTS + 1):
            status, body = _exchange("POST", endpoint, {"Content-Type": "application/x-www-form-urlencoded"}, form)
            if _xml_field(body, "Code") not in RETRIED_STS_CODES or attempt == ATTEMPTS:
                break
            time.sleep(random.uniform(0.5, 1.0) * 2**attempt)  # many pods starting at once: spread them
        if status != 200:
            raise CredentialsError(f"STS refused the web identity of {env['AWS_ROLE_ARN']} "
                                   f"(HTTP {status} {_xml_field(body, 'Code') or ''}): "
                                   f"{_xml_field(body, 'Message') or 'no message'}")
        fields = [_xml_field(body, name) for name in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")]
        if not all(fields):
            raise CredentialsError("STS answered AssumeRoleWithWebIdentity without credentials")
        return Credentials(fields[0], fields[1], fields[2], _epoch(fields[3]))

    def _container(self) -> Credentials:
        env = self._environ
        url = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" and not _node_local(parts.hostname or ""):
            raise CredentialsError(f"AWS_CONTAINER_CREDENTIALS_FULL_URI {parts.hostname!r} is neither https, "
                                   f"loopback nor one of {', '.join(sorted(CONTAINER_HOSTS))}")
        headers = {"Accept": "application/json"}
        if env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"):
            headers["Authorization"] = Path(env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]).read_text()
        elif env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"):
            headers["Authorization"] = env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        if any(c in headers.get("Authorization", "") for c in "\r\n"):
            raise CredentialsError("the container authorization token is not a legal header value")
        status, body = _exchange("GET", url, headers, None)
        if status != 200:
            raise CredentialsError(f"the container credentials endpoint answered HTTP {status}: {body[:200]!r}")
        try:
            document = json.loads(body)
            return Credentials(document["AccessKeyId"], document["SecretAccessKey"], document["Token"],
                               _epoch(document["Expiration"]))
        except (ValueError, KeyError, TypeError):
            raise CredentialsError("the container credentials endpoint answered without credentials") from None

    def _botocore(self) -> Callable[[], Credentials]:
        import botocore.session

        found = botocore.session.get_session().get_credentials()
        if found is None:
            raise CredentialsError("no AWS credentials found: give the pod an IAM role (IRSA or EKS Pod Identity)")
        self.source, self._refreshes_itself = f"botocore ({found.method})", True

        def frozen() -> Credentials:
            keys = found.get_frozen_credentials()
            return Credentials(keys.access_key, keys.secret_key, keys.token)
        return frozen


def _exchange(method: str, url: str, headers: dict[str, str], body: str | None) -> tuple[int, str]:
    """One small HTTP request, retried on transport errors and 5xx (as botocore's fetchers do)."""
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    for attempt in range(1, ATTEMPTS + 1):
        if parts.scheme == "https":
            from bernini.artifacts.ranged import tls_context

            connection = http.client.HTTPSConnection(parts.netloc, timeout=HTTP_TIMEOUT_SECONDS,
                                                     context=tls_context())
        else:
            connection = http.client.HTTPConnection(parts.netloc, timeout=HTTP_TIMEOUT_SECONDS)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            status, text = response.status, response.read(1 << 20).decode(errors="replace")
        except (OSError, http.client.HTTPException) as error:
            if attempt == ATTEMPTS:
                raise CredentialsError(f"cannot reach {parts.scheme}://{parts.netloc} for credentials: {error}") from None
        else:
            if status < 500 or attempt == ATTEMPTS:
                return status, text
        finally:
            connection.close()
        time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _node_local(host: str) -> bool:
    if host in CONTAINER_HOSTS:
        return True
    import ipaddress  # only a container endpoint on plain HTTP needs it

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _xml_field(document: str, name: str) -> str | None:
    """One element's text from STS's small XML answers (a full XML parser costs start-up for four fields)."""
    found = re.search(rf"<{name}>([^<]*)</{name}>", document)
    if not found:
        return None
    text = found.group(1)
    for entity, character in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&")):
        text = text.replace(entity, character)
    return text


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
