"""`bernini status` formatting: a worker's pull summary, read from its termination message, shows by the pod."""

import copy
import json

import pytest

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


# Every kind of character a tenant could use to drive the admin's terminal: CSI (clear screen), OSC 8 (a link
# that hides its target), OSC 52 (set the clipboard), carriage return and backspace (overwrite a line), a C1
# control (8-bit CSI), bidi overrides and isolates (reorder what is shown), a newline (forge a whole line).
HOSTILE = "ok\x1b[2J\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\x1b]52;c;cm0gLXJm\x07\r\b\x9b31m\u202e\u2066\n!"


def _full_body(text: str = "fine") -> dict:
    condition = {"type": "Ready", "status": "False", "reason": "RayServiceNotReady", "message": text,
                 "lastTransitionTime": "2026-12-04T16:00:00Z"}
    stage = {"name": "Encoder", "status": "UNHEALTHY", "minReplicas": 1, "maxReplicas": 3, "message": text}
    return {
        "metadata": {"namespace": "ml", "name": "bernini", "generation": 2},
        "spec": {"model": {"version": text}},
        "status": {
            "observedGeneration": 1, "modelVersion": text, "serveEndpoint": text, "conditions": [condition],
            "stages": [stage],
            "artifacts": {"uri": text, "target": "inf2", "totalBytes": 3 << 20, "manifestSha256": text},
            "cost": {"currentDollarsPerHour": 1.5, "minDollarsPerHour": 0.75, "maxDollarsPerHour": 3.0, "workers": 2,
                     "instanceTypes": [{"instanceType": text, "workers": 2, "dollarsPerHour": 1.5}],
                     "unpricedInstanceTypes": [text], "priceSource": text, "pricesAsOf": text},
        },
    }


def _pods(text: str = "fine") -> list[dict]:
    summary = {"storeFiles": 1, "storeBytes": 1 << 20, "cacheFiles": 0, "cacheBytes": 0, "presentFiles": 0,
               "seconds": 0.5}
    return [{"name": text, "node": text, "phase": text, "ready": True, "pulled": summary},
            {"name": "w-2", "node": "", "phase": "Pending", "ready": False, "pulled": None}]


def _only_printable_lines(text: str) -> bool:
    return all(character.isprintable() for line in text.split("\n") for character in line)


def test_text_from_the_objects_reaches_the_terminal_escaped():
    shown = report(_full_body(HOSTILE), _pods(HOSTILE))
    assert _only_printable_lines(shown), repr(shown)
    assert shown.count("\n") == report(_full_body(), _pods()).count("\n")  # no line forged
    escaped = r"ok\x1b[2J\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\x1b]52;c;cm0gLXJm\x07\x0d\x08\x9b31m\u202e\u2066\x0a!"
    assert shown.count(escaped) == 14, shown  # the 14 fields that carried it, each escaped
    plain = "Ready  False  RayServiceNotReady  café, 3 × faster — «ok» 模型 ✓"
    assert plain in report(_full_body("café, 3 × faster — «ok» 模型 ✓"), []), "plain text must stay as it is"


def _summary(**changed) -> str:
    good = {"storeFiles": 1, "storeBytes": 1, "cacheFiles": 0, "cacheBytes": 0, "presentFiles": 0, "seconds": 1}
    return json.dumps({**good, **changed})  # NaN and Infinity as Python's json writes and reads them


MALFORMED_SUMMARIES = {
    "cacheBytes and the rest missing": '{"storeBytes": 1}',
    "a string": _summary(storeBytes="1"),
    "NaN": _summary(storeBytes=float("nan")),
    "infinity": _summary(storeBytes=float("inf")),
    "past float's range": _summary(storeBytes=10**400),
    "past 2**53": _summary(storeBytes=2**54),
    "negative": _summary(storeBytes=-1),
    "a bool": _summary(storeBytes=True),
    "a list": _summary(storeBytes=[1]),
    "a list, not an object": '["storeBytes"]',
    "a string, not an object": '"storeBytes"',
    "a number, not an object": "1e999",
    "arrays nested 5000 deep": "[" * 5000,
    "objects nested 5000 deep": '{"a": ' * 5000,
}


@pytest.mark.parametrize("message", MALFORMED_SUMMARIES.values(), ids=MALFORMED_SUMMARIES.keys())
def test_a_malformed_pull_summary_is_ignored(message):
    assert pull_summary(message) is None
    assert "artifacts:" not in report(BODY, [{"name": "w-1", "node": "n", "phase": "Running", "ready": True,
                                               "pulled": _loaded(message)}])


def _loaded(message: str):
    try:
        return json.loads(message)
    except RecursionError:
        return None


HOSTILE_VALUES = [None, "", HOSTILE, 0, -1, 10**30, 1e308, float("nan"), float("-inf"), True, [], {}, [None, 1, "x"],
                  {"type": 1, "message": None}]


def _paths(value, path=()):
    """Every path to a field, a list item or an object inside value."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


def _replaced(value, path, new):
    if not path:
        return new
    copied = copy.deepcopy(value)
    parent = copied
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return copied


def _removed(value, path):
    copied = copy.deepcopy(value)
    parent = copied
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return copied


def test_any_json_shaped_body_reads_and_never_raises():
    body, pods = _full_body(), _pods()
    hostile_bodies = [_replaced(body, path, new) for path in _paths(body) for new in HOSTILE_VALUES]
    hostile_bodies += [_removed(body, path) for path in _paths(body) if path]
    hostile_pods = [_replaced(pods, path, new) for path in _paths(pods) if path for new in HOSTILE_VALUES]
    hostile_pods += [_removed(pods, path) for path in _paths(pods) if path]
    assert len(hostile_bodies) > 500 and len(hostile_pods) > 150
    for hostile in hostile_bodies:
        assert _only_printable_lines(report(hostile, pods)), hostile
    for hostile in hostile_pods:
        assert _only_printable_lines(report(body, hostile)), hostile


def test_an_incremental_upgrade_shows_its_shares_of_traffic_and_capacity():
    body = copy.deepcopy(BODY)
    body["status"]["rayService"] = {"activeCluster": "bernini-old", "pendingCluster": "bernini-new",
                                    "pendingCapacityPercent": 50, "pendingTrafficPercent": 25}
    assert "upgrading to cluster bernini-new: 25% of traffic, 50% of capacity (serving: bernini-old)" in report(body, [])
    # A NewCluster upgrade has no shares; nothing pending, no line.
    del body["status"]["rayService"]["pendingCapacityPercent"], body["status"]["rayService"]["pendingTrafficPercent"]
    assert "upgrading to cluster bernini-new (serving: bernini-old)" in report(body, [])
    body["status"]["rayService"]["pendingSince"] = "2026-12-05T10:00:00Z"
    assert "(serving: bernini-old, since 2026-12-05T10:00:00Z)" in report(body, [])
    del body["status"]["rayService"]["pendingCluster"]
    assert "upgrading" not in report(body, [])


def test_an_upgrade_given_back_says_which_version_why_and_when():
    body = copy.deepcopy(BODY)
    body["status"]["abandonedUpgrade"] = {"generation": 3, "modelVersion": "1.1.0", "at": "2026-12-05T10:30:00Z",
                                          "message": "InitContainerFailed: sha256 mismatch"}
    assert ("upgrade to 1.1.0 given back at 2026-12-05T10:30:00Z: InitContainerFailed: sha256 mismatch"
            in report(body, []))
