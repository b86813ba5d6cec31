"""The worker groups' bounds a running RayCluster must carry (render/bounds.py)."""

from bernini.render.bounds import bounds_patch

LIVE = {"metadata": {"resourceVersion": "41"}, "spec": {"workerGroupSpecs": [
    {"groupName": "inf2-xlarge", "replicas": 3, "minReplicas": 1, "maxReplicas": 4},
    {"groupName": "retired", "replicas": 1, "minReplicas": 1, "maxReplicas": 1},
    {"groupName": "inf2-8xlarge", "replicas": 0},
]}}


def test_only_the_bounds_that_differ_are_set_after_a_test_of_the_resource_version():
    wanted = {"inf2-xlarge": (1, 9), "inf2-8xlarge": (0, 2)}
    assert bounds_patch(LIVE, wanted) == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
        {"op": "add", "path": "/spec/workerGroupSpecs/0/maxReplicas", "value": 9},
        {"op": "add", "path": "/spec/workerGroupSpecs/2/minReplicas", "value": 0},
        {"op": "add", "path": "/spec/workerGroupSpecs/2/maxReplicas", "value": 2},
    ]


def test_bounds_that_agree_need_no_patch_and_replicas_are_never_touched():
    assert bounds_patch(LIVE, {"inf2-xlarge": (1, 4)}) == []
    assert all("replicas" != op["path"].rsplit("/", 1)[-1] for op in bounds_patch(LIVE, {"inf2-xlarge": (2, 5)}))
