"""Endpoint URLs are judged as addresses, not text: every spelling of a refused address is refused, and names
that resolve to one are refused when dialled."""

import socket

import pytest

from bernini.endpoints import EndpointRefused, parse_endpoint, resolve

METADATA_SPELLINGS = [
    "http://169.254.169.254/latest", "http://2852039166/", "http://0xa9fea9fe/", "http://0251.0376.0251.0376/",
    "http://169.254.43518/", "http://0xa9.0xfe.0xa9.0xfe/", "http://169.254.169.254./", "http://user@169.254.169.254/",
    "http://s3.example.com@169.254.169.254/", "http://[::ffff:a9fe:a9fe]/", "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/", "http://[FD00:EC2::254]/", "http://[fd00:ec2:0::254]/", "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::]/", "http://[::a9fe:a9fe]/",
    "http://169.254.170.2/v2/credentials", "http://169.254.170.23/v1/credentials", "http://[fd00:ec2::23]/",
    "http://0.0.0.0:9000/", "http://0/", "http://[::]/",
]


@pytest.mark.parametrize("url", METADATA_SPELLINGS)
def test_every_spelling_of_a_refused_address_is_refused(url):
    with pytest.raises(EndpointRefused):
        parse_endpoint(url)


@pytest.mark.parametrize("url, problem", [
    ("https://[::1", "not a URL"), ("https://exa_mple.com", "not a DNS name"), ("ftp://s3.example.com", "https://"),
    ("https://s3.example.com/a/../b", "no . or .. segments"), ("https://s3.example.com/a%2e%2e/b", "percent"),
    ("https://s3.example.com/?x=1", "query"), ("https://s3.example.com:99999/", "not a URL"), ("https://", "no host"),
])
def test_a_malformed_endpoint_is_a_specific_error_never_a_crash(url, problem):
    with pytest.raises(EndpointRefused, match=problem):
        parse_endpoint(url)


@pytest.mark.parametrize("url, host, port, path", [
    ("https://S3.US-East-1.amazonaws.com", "s3.us-east-1.amazonaws.com", 443, ""),
    ("http://127.0.0.1:9000/", "127.0.0.1", 9000, ""),
    ("https://[2600:1f18::1]:8443/store/", "2600:1f18::1", 8443, "/store"),
    ("https://minio.storage.svc.cluster.local:9000", "minio.storage.svc.cluster.local", 9000, ""),
])
def test_an_ordinary_endpoint_is_normalised(url, host, port, path):
    endpoint = parse_endpoint(url)
    assert (endpoint.host, endpoint.port, endpoint.path) == (host, port, path)


def test_a_name_that_resolves_to_a_refused_address_is_refused_when_dialled(monkeypatch):
    """The resolver is replaced (a stand-in: no test may depend on a real DNS answer)."""
    answers = {"rebind.example.com": "169.254.169.254", "six.example.com": "fd00:ec2::254",
               "fine.example.com": "127.0.0.1"}

    def getaddrinfo(host, port, *args, **kwargs):
        address = answers[host]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in ("rebind.example.com", "six.example.com"):
        with pytest.raises(EndpointRefused, match="resolves to"):
            resolve(parse_endpoint(f"https://{name}/"))
    assert resolve(parse_endpoint("https://fine.example.com/")) == [(socket.AF_INET, ("127.0.0.1", 443))]
