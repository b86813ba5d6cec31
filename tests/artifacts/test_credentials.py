"""The init container's own SigV4 signing and credential chain, against botocore's and against a real store.

No STS and no EKS Pod Identity Agent can run here, so both are FAKES on loopback (FakeSts, FakePodIdentityAgent):
each answers in the documented wire format and records what it was asked. Every test resolves the same environment
through botocore's chain too and requires the same answer and the same requests. URLs signed with a session token
are compared with botocore's to the signature: versitygw, the real store here, refuses session tokens (InvalidToken).
"""

import datetime
import http.server
import json
import threading
import time
import urllib.parse

import botocore.auth
import botocore.session
import pytest
from botocore.config import Config

from bernini.artifacts.credentials import CredentialChain, CredentialsError
from bernini.artifacts.pull import AccessDenied, Puller
from bernini.artifacts.sigv4 import Credentials, object_url, presign_get

CHAIN_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
                   "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                   "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                   "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
                   "AWS_EC2_METADATA_DISABLED")
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDL+token/with=signs&more"


@pytest.fixture
def pod_environment(monkeypatch, tmp_path):
    """A pod's environment: no keys, no config files, no home ~/.aws; the instance role is off (never dialled)."""
    for name in CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return monkeypatch


class _Recording(http.server.BaseHTTPRequestHandler):
    requests: list

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: str, content_type: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def serve():
    servers = []

    def start(handler: type) -> tuple[str, list]:
        handler.requests = []
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    yield start
    for server in servers:
        server.shutdown()


def _expiry(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(time.time() + seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_sts(access_key: str, secret_key: str, lifetime: float = 3600, status: int = 200) -> type:
    class FakeSts(_Recording):
        """FAKE AWS STS: AssumeRoleWithWebIdentity only, in STS's XML."""

        def do_POST(self):
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.requests.append({name: values[0] for name, values in form.items()})
            if status != 200:
                body = ("<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to "
                        "perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>")
                return self._reply(status, body, "text/xml")
            body = (f'<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                    f"<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{access_key}</AccessKeyId>"
                    f"<SecretAccessKey>{secret_key}</SecretAccessKey><SessionToken>"
                    f"{SESSION_TOKEN.replace('&', '&amp;')}</SessionToken><Expiration>{_expiry(lifetime)}</Expiration>"
                    f"</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")
            self._reply(200, body, "text/xml")
    return FakeSts


def fake_pod_identity_agent(access_key: str, secret_key: str, lifetime: float = 3600) -> type:
    class FakePodIdentityAgent(_Recording):
        """FAKE EKS Pod Identity Agent: GET /v1/credentials with the pod's token as Authorization, JSON back."""

        def do_GET(self):
            self.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            self._reply(200, json.dumps({"AccessKeyId": access_key, "SecretAccessKey": secret_key,
                                         "Token": SESSION_TOKEN, "Expiration": _expiry(lifetime),
                                         "AccountId": "123456789012"}), "application/json")
    return FakePodIdentityAgent


def botocore_credentials() -> Credentials:
    found = botocore.session.get_session().get_credentials().get_frozen_credentials()
    return Credentials(found.access_key, found.secret_key, found.token)


def _same(ours: Credentials, theirs: Credentials) -> bool:
    return (ours.access_key, ours.secret_key, ours.token) == (theirs.access_key, theirs.secret_key, theirs.token)


@pytest.mark.parametrize("key", ["plain/encoder.pt", "with space/and+plus=equals~tilde.pt", "ünïcode/ø.bin"])
@pytest.mark.parametrize("region,endpoint", [("eu-west-1", None), ("us-east-1", None), ("cn-north-1", None),
                                             ("us-east-1", "http://127.0.0.1:7070"),
                                             ("us-east-1", "http://127.0.0.1:7070/store(1)!")])
@pytest.mark.parametrize("token", [None, SESSION_TOKEN])
def test_presigned_urls_are_botocores_to_the_signature(monkeypatch, key, region, endpoint, token):
    now = datetime.datetime(2026, 12, 5, 6, 30, 15)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: now)
    config = Config(signature_version="s3v4", region_name=region,
                    s3={"addressing_style": "path" if endpoint else "virtual", "us_east_1_regional_endpoint": "regional"})
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, config=config, aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", aws_session_token=token)
    theirs = client.generate_presigned_url("get_object", Params={"Bucket": "artifacts", "Key": key}, ExpiresIn=3600)
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    ours = presign_get(object_url("artifacts", key, region, endpoint), region, credentials, 3600,
                       now.replace(tzinfo=datetime.timezone.utc))
    split = [urllib.parse.urlsplit(url) for url in (ours, theirs)]
    assert (split[0].netloc, split[0].path) == (split[1].netloc, split[1].path)
    assert urllib.parse.parse_qs(split[0].query) == urllib.parse.parse_qs(split[1].query)


def test_environment_keys_come_first_and_are_used_as_given(pod_environment, serve):
    endpoint, asked = serve(fake_pod_identity_agent("AGENT", "agent-secret"))
    pod_environment.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{endpoint}/v1/credentials")
    pod_environment.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    pod_environment.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    pod_environment.setenv("AWS_SESSION_TOKEN", "env-token")
    chain = CredentialChain("us-east-1")
    assert _same(chain.current(), botocore_credentials())
    assert (chain.current().access_key, chain.source, asked) == ("ENVKEY", "environment", [])


def test_irsa_exchanges_the_projected_token_with_sts_as_botocore_does(pod_environment, serve, tmp_path):
    endpoint, asked = serve(fake_sts("ASIASTS", "sts-secret"))
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.projected.service-account-token\n")
    pod_environment.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    pod_environment.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/bernini-artifacts")
    pod_environment.setenv("AWS_ROLE_SESSION_NAME", "bernini-pull")
    pod_environment.setenv("AWS_ENDPOINT_URL_STS", endpoint)
    chain = CredentialChain("us-east-1")
    ours = chain.current()
    assert chain.source == "IRSA web identity" and ours.token == SESSION_TOKEN
    assert _same(ours, botocore_credentials())
    assert asked[0] == asked[1], "botocore asked STS for something else"
    assert asked[0]["Action"] == "AssumeRoleWithWebIdentity"
    assert asked[0]["WebIdentityToken"] == "eyJhbGciOiJSUzI1NiJ9.projected.service-account-token\n"


def test_a_role_sts_refuses_is_access_denied_with_stss_reason(pod_environment, serve, tmp_path):
    endpoint, _ = serve(fake_sts("unused", "unused", status=403))
    (tmp_path / "token").write_text("token")
    pod_environment.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "token"))
    pod_environment.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/other")
    pod_environment.setenv("AWS_ENDPOINT_URL_STS", endpoint)
    with pytest.raises(AccessDenied, match=r"STS refused the web identity of arn:aws:iam::123456789012:role/other "
                                           r"\(HTTP 403 AccessDenied\): Not authorized"):
        Puller("s3://artifacts/x/", tmp_path / "pulled", endpoint_url="http://127.0.0.1:9", log=lambda _: None).pull()


def test_pod_identity_presents_the_token_file_as_botocore_does(pod_environment, serve, tmp_path):
    endpoint, asked = serve(fake_pod_identity_agent("ASIAAGENT", "agent-secret"))
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("pod-identity-token")
    pod_environment.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{endpoint}/v1/credentials")
    pod_environment.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token))
    chain = CredentialChain("us-east-1")
    assert _same(chain.current(), botocore_credentials())
    assert asked == [{"path": "/v1/credentials", "authorization": "pod-identity-token"}] * 2


def test_credentials_near_expiry_are_fetched_again_and_long_lived_ones_are_not(pod_environment, serve, tmp_path):
    short, asked_short = serve(fake_pod_identity_agent("SHORT", "secret", lifetime=120))
    pod_environment.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{short}/v1/credentials")
    chain = CredentialChain("us-east-1")
    chain.current(), chain.current()
    assert len(asked_short) == 2  # within the 5-minute window: every signing asks again
    long, asked_long = serve(fake_pod_identity_agent("LONG", "secret", lifetime=3600))
    pod_environment.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{long}/v1/credentials")
    chain = CredentialChain("us-east-1")
    chain.current(), chain.current()
    assert len(asked_long) == 1


def test_the_pod_token_never_goes_in_clear_text_off_the_node(pod_environment, tmp_path):
    # TEST-NET-1 (RFC 5737): refused before any connection, so nothing is dialled.
    pod_environment.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://192.0.2.10/v1/credentials")
    pod_environment.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "secret-pod-token")
    with pytest.raises(CredentialsError, match="neither https, loopback nor one of") as refused:
        CredentialChain("us-east-1").current()
    assert "secret-pod-token" not in str(refused.value)


def test_config_files_go_to_botocores_chain(pod_environment, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = file-secret\n")
    pod_environment.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    chain = CredentialChain("us-east-1")
    assert chain.current() == Credentials("FILEKEY", "file-secret")
    assert chain.source == "botocore (shared-credentials-file)"


def test_no_credentials_anywhere_is_access_denied_naming_the_role(pod_environment, tmp_path):
    with pytest.raises(AccessDenied, match="no AWS credentials found: give the pod an IAM role"):
        Puller("s3://artifacts/x/", tmp_path / "pulled", endpoint_url="http://127.0.0.1:9", log=lambda _: None).pull()


def test_credentials_never_print_their_secret_or_token():
    shown = repr(Credentials("AKID", "the-secret", "the-token", 1.0))
    assert "the-secret" not in shown and "the-token" not in shown and "AKID" in shown


def test_the_init_path_imports_neither_botocore_nor_pydantic_nor_other_commands():
    import subprocess
    import sys

    probe = ("import sys, bernini.cli, bernini.artifacts.pull, bernini.artifacts.node_cache;"
             "bernini.cli.build_parser('artifacts');"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'botocore', 'boto3', 'pydantic', 'urllib3'}"
             " | {m for m in sys.modules if m.startswith('bernini.cli.')}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['bernini.cli.artifacts']", result.stdout


def test_half_a_key_pair_is_refused_not_passed_over(pod_environment):
    pod_environment.setenv("AWS_ACCESS_KEY_ID", "ONLYKEY")
    with pytest.raises(CredentialsError, match="must be set together"):
        CredentialChain("us-east-1").current()


def test_sts_throttling_is_retried_as_botocore_retries_it(pod_environment, serve, tmp_path):
    throttled = []

    class ThrottlingOnce(fake_sts("ASIAAFTER", "after-secret")):
        """FAKE STS that throttles the first call (HTTP 400 Throttling, as STS does)."""

        def do_POST(self):
            if not throttled:
                throttled.append(self.rfile.read(int(self.headers["Content-Length"])))
                return self._reply(400, "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded"
                                        "</Message></Error></ErrorResponse>", "text/xml")
            super().do_POST()
    endpoint, asked = serve(ThrottlingOnce)
    (tmp_path / "token").write_text("token")
    pod_environment.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "token"))
    pod_environment.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/bernini-artifacts")
    pod_environment.setenv("AWS_ENDPOINT_URL_STS", endpoint)
    assert CredentialChain("us-east-1").current().access_key == "ASIAAFTER"
    assert len(throttled) == 1 and len(asked) == 1


def test_a_failed_refresh_keeps_credentials_that_are_still_valid(pod_environment, serve, tmp_path):
    endpoint, asked = serve(fake_pod_identity_agent("STILLVALID", "secret", lifetime=600))
    token = tmp_path / "token"
    token.write_text("pod-identity-token")
    pod_environment.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{endpoint}/v1/credentials")
    pod_environment.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token))
    chain = CredentialChain("us-east-1")
    assert chain.current().access_key == "STILLVALID"
    token.unlink()  # the next refresh (within 15 minutes of expiry) cannot read its token
    assert chain.current().access_key == "STILLVALID" and len(asked) == 1


@pytest.mark.parametrize("setting,region,bucket,host", [
    ({"AWS_USE_FIPS_ENDPOINT": "true"}, "us-east-1", "artifacts", "s3-fips"),
    ({}, "us-iso-east-1", "artifacts", "c2s.ic.gov"),
    ({}, "us-east-1", "artifacts--use1-az4--x-s3", "s3express"),
])
def test_endpoints_it_does_not_know_are_signed_by_botocore(pod_environment, tmp_path, setting, region, bucket, host):
    pod_environment.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    pod_environment.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    for name, value in setting.items():
        pod_environment.setenv(name, value)
    url = Puller(f"s3://{bucket}/set/", tmp_path, region=region, log=lambda _: None)._presign("manifest.json")
    assert host in urllib.parse.urlsplit(url).netloc, url

