"""Fixtures of the operator tests against the real control plane."""

import pytest

from tests.operator_process import OperatorProcess


@pytest.fixture
def scoped_operator(kubeconfig, bernini_crd, local_s3, namespace, tmp_path):
    """The only operator running: one watching just this test's namespace, so its write counter counts every
    write to the test's objects (a second operator's writes would move resourceVersions uncounted)."""
    with OperatorProcess.paused():
        process = OperatorProcess(kubeconfig, local_s3.credentials_env, tmp_path / "operator.log", namespaces=(namespace,))
        process.start()
        try:
            yield process
        finally:
            process.stop()
