"""`bernini status` formatting: a worker's pull summary, read from its termination message, shows by the pod."""

import json

from bernini.report import pull_summary, report

BODY = {"metadata": {"namespace": "ml", "name": "bernini", "generation": 1},
        "spec": {"model": {"version": "1.0.0"}}, "status": {"observedGeneration": 1}}


def test_a_pull_summary_is_read_only_from_a_successful_pulls_message():
    summary = {"storeFiles": 2, "storeBytes": 3 << 20, "cacheFiles": 4, "cacheBytes": 5 << 20, "presentFiles": 0,
               "seconds": 1.26}
    assert pull_summary(json.dumps(summary)) == summary
    for other in (None, "", "bernini artifacts pull: s3://a/manifest.json does not exist (NoSuchKey)", "[1, 2]", "{}"):
        assert pull_summary(other) is None, other


def test_each_worker_line_says_where_its_artifacts_came_from():
    summary = {"storeFiles": 0, "storeBytes": 0, "cacheFiles": 6, "cacheBytes": 7549747, "presentFiles": 0,
               "seconds": 0.31}
    pods = [{"name": "w-1", "node": "inf2-a", "phase": "Running", "ready": True, "pulled": summary},
            {"name": "head", "node": "cpu-a", "phase": "Running", "ready": True, "pulled": None}]
    lines = report(BODY, pods).splitlines()
    worker = next(line for line in lines if "w-1" in line)
    assert worker.endswith("artifacts: 0.0 MiB from the store, 7.2 MiB from the node cache, in 0.3s"), worker
    head = next(line for line in lines if "head" in line)
    assert head.endswith("Running  ready"), repr(head)  # no pull column, and no trailing blanks
