"""The one vocabulary of reasons: each defined once, well formed, explained, and spelled nowhere else."""

import ast
import re
from pathlib import Path

from bernini.api import reasons
from bernini.api.status import CONDITION_REASON

PACKAGE = Path(reasons.__file__).parents[1]
# S3's own error codes (AccessDenied) and the store client's failure codes share some names with reasons.
STORE_CLIENTS = {"reasons.py", "guarded_store.py", "store.py", "pull.py"}


def test_each_reason_is_defined_once_well_formed_and_explained():
    names = [str(reason) for reason in reasons.ALL]
    assert len(names) == len(set(names)), "a reason is defined twice"
    for reason in reasons.ALL:
        assert re.fullmatch(CONDITION_REASON, reason) and reason[0].isupper(), reason
        assert reason.meaning.endswith("."), reason
        assert set(reason.conditions) <= {*reasons.CONDITIONS, reasons.EVENT}, reason
        if reason.kind in (reasons.Kind.FAILURE, reasons.Kind.TRANSIENT):
            assert reason.action, f"{reason} needs an action: what the reader should do"
    assert reasons.by_name("StoreUnreachable") is reasons.STORE_UNREACHABLE and reasons.by_name("Nope") is None


def test_no_product_module_spells_a_reason_of_its_own():
    defined = {str(reason) for reason in reasons.ALL}
    spelled = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in STORE_CLIENTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in defined:
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value}")
    assert spelled == [], "use bernini.api.reasons instead of the literal"


def test_transient_and_unknown_reasons_warn_and_waiting_ones_do_not():
    assert reasons.is_failure("StoreUnreachable") and reasons.is_failure("SomethingKubeRaySaid")
    assert not reasons.is_failure("RayServiceNotReady") and not reasons.is_failure("BlockedByPreflight")
    assert reasons.is_transient("StoreError") and not reasons.is_transient("AccessDenied")


def test_the_argo_cd_health_script_waits_on_exactly_the_reasons_that_are_false_without_a_failure():
    # The reasons a False Rendered or Ready can carry while nothing is wrong; RayServiceReady mirrors KubeRay
    # and the script does not read it, and PodsHealthy's NotCreated is Unknown, never False.
    expected = {str(reason) for reason in reasons.ALL if reason.kind in (reasons.Kind.WAITING, reasons.Kind.CONSEQUENCE)
                and {reasons.RENDERED, reasons.READY} & set(reason.conditions)}
    examples = PACKAGE.parents[1] / "examples" / "argocd"
    for script in (examples / "health.lua", examples / "argocd-cm-health.yaml"):
        spelled = re.search(r"local waiting = \{([^}]*)\}", script.read_text()).group(1)
        assert set(re.findall(r"(\w+) = true", spelled)) == expected, script
