"""How the ingress answers a stage that fails: a defined status and message, never a traceback. The stage
handles are FAKES (a stage that fails on demand cannot be made from the real compiled model); the ingress
class and its request parsing are the real ones."""

import asyncio
import json

import numpy as np
import pytest
from ray.serve.exceptions import BackPressureError
from starlette.requests import Request

from bernini.serve import stages
from bernini.serve.app import BerniniIngress


class _FakeMethod:
    def __init__(self, outcome):
        self.outcome = outcome

    def remote(self, *args):
        async def call():
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return self.outcome
        return call()


class _FakeStage:
    def __init__(self, **methods):
        for name, outcome in methods.items():
            setattr(self, name, _FakeMethod(outcome))


def _ingress(triangulation_outcome, layout: str = "staged") -> object:
    if layout == "fused":
        neural = {"fused": _FakeStage(sdf=(np.zeros((8, 8, 8)), {"encoder": 0.1, "diffusion": 0.2, "decoder": 0.1}))}
    else:
        neural = {"encoder": _FakeStage(encode=np.zeros(4)), "diffusion": _FakeStage(sample=np.zeros(4)),
                  "decoder": _FakeStage(decode=np.zeros((8, 8, 8)))}
    return BerniniIngress.func_or_class(neural, _FakeStage(mesh=triangulation_outcome), "1.0.0")


def _post(ingress, body: bytes = b'{"prompt": "a chair"}'):
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    response = asyncio.run(ingress(Request(scope, receive)))
    return response.status_code, json.loads(response.body)


@pytest.mark.parametrize("failure, status, message", [
    (stages.NoSurface(stages.NO_SURFACE + "\nTraceback (most recent call last): ..."), 422, stages.NO_SURFACE),
    (RuntimeError("CUDA error: device-side assert at 0x7f00deadbeef"), 500, "a pipeline stage failed"),
    (BackPressureError(num_queued_requests=3, max_queued_requests=3), 503, "at capacity"),
])
@pytest.mark.parametrize("layout", ["fused", "staged"])
def test_a_failing_stage_is_a_defined_status_with_a_plain_message(failure, status, message, layout):
    code, answer = _post(_ingress(failure, layout))
    assert (code, answer["error"]) == (status, message) or (code == status and message in answer["error"])
    assert "Traceback" not in answer["error"] and "0x" not in answer["error"]


def test_an_sdf_that_never_crosses_zero_is_NoSurface():
    with pytest.raises(stages.NoSurface):
        stages.mesh_bytes(np.ones((16, 16, 16), dtype=np.float32), "glb")
