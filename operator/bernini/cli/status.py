"""`bernini status NAME`: one BerniniDeployment for people: conditions, stages, pods by node, artifacts, cost."""

import argparse
import sys


def add_to(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser("status", help="one BerniniDeployment: conditions, stages, pods by node, artifacts, cost")
    status.add_argument("name")
    status.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    status.set_defaults(handler=run)


def _context_namespace() -> str:
    """The kubeconfig context's namespace, as kubectl would pick it."""
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts()
    except config.ConfigException:  # in a pod: no kubeconfig
        return "default"
    return active.get("context", {}).get("namespace") or "default"


def run(args: argparse.Namespace) -> int:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from bernini.api import GROUP, PLURAL, VERSION
    from bernini.reconcile.kube import api_client
    from bernini.report import pull_summary, report

    api = api_client()
    api.user_agent = "bernini-cli"
    args.namespace = args.namespace or _context_namespace()
    try:
        body = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, args.name)
    except ApiException as error:
        print(f"bernini status: {args.namespace}/{args.name}: {error.status} {error.reason}", file=sys.stderr)
        return 1
    pods = []
    selector = f"bernini.dev/deployment={args.name}"  # every Ray pod the operator rendered, of every cluster
    for pod in client.CoreV1Api(api).list_namespaced_pod(args.namespace, label_selector=selector).items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        pulled = next((pull_summary(s.state.terminated.message) for s in pod.status.init_container_statuses or []
                       if s.name == "pull-artifacts" and s.state.terminated), None)
        pods.append({"name": pod.metadata.name, "node": pod.spec.node_name or "", "phase": pod.status.phase,
                     "ready": ready, "pulled": pulled})
    print(report(body, pods))
    return 0
