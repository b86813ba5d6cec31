"""A real Argo CD (application-controller, repo-server, Redis) as host processes against a LocalCluster, and
the local git repositories it syncs from. Built by hack/argocd/build.sh; no argocd-server, dex or UI: the
Application objects are the interface, as they are for a GitOps user."""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from localdev import processes
from localdev.cluster import REPO_ROOT, LocalCluster
from localdev.waiting import wait_for

ARGOCD_DIR = REPO_ROOT / ".local" / "argocd"
NAMESPACE = "argocd"
EXAMPLES = REPO_ROOT / "examples" / "argocd"
# The destinations of examples/argocd/applications.yaml.
MODEL_NAMESPACE, OPERATOR_NAMESPACE = "models", "bernini-system"


class ArgoCDError(RuntimeError):
    pass


@dataclass
class LocalArgoCD:
    cluster: LocalCluster
    root: Path
    tied_to_parent: bool = False
    pids: dict[int, str] = field(default_factory=dict)

    @property
    def binary(self) -> str:
        path = ARGOCD_DIR / "bin" / "argocd"
        if not path.exists():
            raise ArgoCDError(f"{path} is missing: run `make argocd` first")
        return str(path.resolve())

    def up(self) -> None:
        """Argo CD's CRDs and config (the stock argocd-cm plus examples/argocd/argocd-cm-health.yaml, the way
        users install the health checks), the default AppProject (argocd-server would create it), then the
        three processes on loopback."""
        redis = shutil.which("redis-server")
        if redis is None:
            raise ArgoCDError("redis-server is missing: `make node-packages` installs it (Debian redis-server)")
        argocd = self.binary
        crds = ARGOCD_DIR / "crds"
        self.cluster.kubectl("apply", "--server-side", "--field-manager=bernini-localargocd",
                             "-f", str(crds / "application-crd.yaml"), "-f", str(crds / "appproject-crd.yaml"))
        self.cluster.wait_established("crd/applications.argoproj.io", "crd/appprojects.argoproj.io")
        self.cluster.kubectl("apply", "--server-side", "--field-manager=bernini-localargocd", "-f", "-",
                             input=json.dumps({"apiVersion": "v1", "kind": "List", "items": self._config()}))

        for name in ("tmp", "tls", "ssh", "gpg"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        redis_port, repo_port = processes.free_port(), processes.free_port()
        env = {
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            "TMPDIR": str(self.root / "tmp"),  # the repo-server clones into $TMPDIR/_argocd-repo
            "ARGOCD_TLS_DATA_PATH": str(self.root / "tls"),
            "ARGOCD_SSH_DATA_PATH": str(self.root / "ssh"),
            "ARGOCD_GNUPGHOME": str(self.root / "gpg"),
            "ARGOCD_GPG_ENABLED": "false",
            # git-verify-wrapper.sh (next to the binary) and helm (the control plane's) are looked up on PATH.
            "PATH": f"{ARGOCD_DIR / 'bin'}:{self.cluster.bin_dir}:{os.environ['PATH']}",
        }
        self._start("redis", [redis, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                              "--appendonly", "no", "--protected-mode", "yes"], env)
        self._start("repo-server", [argocd, "--address", "127.0.0.1", "--port", str(repo_port),
                                    "--metrics-address", "127.0.0.1", "--metrics-port", str(processes.free_port()),
                                    "--redis", f"127.0.0.1:{redis_port}"], {**env, "ARGOCD_BINARY_NAME": "argocd-repo-server"})
        # Its metrics listener has no address flag (0.0.0.0 in v3.6); nothing is ever sent from it.
        self._start("application-controller", [
            argocd, "--namespace", NAMESPACE, "--repo-server", f"127.0.0.1:{repo_port}", "--redis", f"127.0.0.1:{redis_port}",
            "--metrics-port", str(processes.free_port()), "--app-resync", "5", "--app-resync-jitter", "0",
            # Argo CD 3 keeps each resource's health in Redis only; this writes it (and the Lua's message) to
            # the Application's status, where kubectl and these tests read it.
            "--persist-resource-health",
        ], {**env, "ARGOCD_BINARY_NAME": "argocd-application-controller"})

    def down(self) -> None:
        processes.stop(self.pids)
        self.pids.clear()

    def log_tail(self, lines: int = 20) -> str:
        tails = []
        for log in sorted((self.root / "logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(tails)

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = self.root / "logs" / f"{name}.log"
        pid = processes.start(argv, log, env=env, tied_to_parent=self.tied_to_parent)
        self.pids[pid] = argv[0]
        wait_for(lambda: processes.is_running(pid, argv[0]) or self._died(name, log), f"argocd {name}", timeout=5)

    @staticmethod
    def _died(name: str, log: Path) -> bool:
        raise ArgoCDError(f"argocd {name} exited:\n{log.read_text(errors='replace')[-2000:]}")

    def _config(self) -> list[dict]:
        stock = [yaml.safe_load((ARGOCD_DIR / f"{name}.yaml").read_text())
                 for name in ("argocd-cm", "argocd-rbac-cm", "argocd-secret", "argocd-cmd-params-cm")]
        health = yaml.safe_load((EXAMPLES / "argocd-cm-health.yaml").read_text())
        for item in stock:
            item["metadata"]["namespace"] = NAMESPACE
            if item["metadata"]["name"] == "argocd-cm":
                item["data"] = {**(item.get("data") or {}), **health["data"]}
        project = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
                   "metadata": {"name": "default", "namespace": NAMESPACE},
                   "spec": {"sourceRepos": ["*"], "destinations": [{"namespace": "*", "server": "*"}],
                            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}}
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        return [namespace, *stock, project]

    def application(self, name: str) -> dict:
        return json.loads(self.cluster.kubectl("get", "applications.argoproj.io", "-n", NAMESPACE, name, "-o", "json"))

    def applications(self) -> list[dict]:
        listed = json.loads(self.cluster.kubectl("get", "applications.argoproj.io", "-n", NAMESPACE, "-o", "json"))
        return listed["items"]

    def refresh(self, name: str) -> None:
        """What a git webhook does: re-read the branch now rather than at the next poll."""
        self.cluster.kubectl("annotate", "applications.argoproj.io", "-n", NAMESPACE, name,
                             "argocd.argoproj.io/refresh=hard", "--overwrite")


def state(application: dict) -> tuple[str, str, str]:
    """(sync status, health status, message) of an Application; the message is that of the resource whose
    health the Application reports (a BerniniDeployment's comes from its Lua), else the Application's own."""
    status = application.get("status", {})
    health = status.get("health", {})
    message = health.get("message", "")
    for resource in status.get("resources", []):
        resource_health = resource.get("health") or {}
        if resource_health.get("status") == health.get("status") and resource_health.get("message"):
            message = resource_health["message"]
            break
    return status.get("sync", {}).get("status", ""), health.get("status", ""), message


@dataclass
class GitRepository:
    """A plain working repository Argo CD reads through a file:// URL (no git daemon)."""

    path: Path

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def init(self) -> "GitRepository":
        self.path.mkdir(parents=True, exist_ok=True)
        self._git("init", "--quiet", "--initial-branch=main")
        return self

    def write(self, relative: str, content: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)

    def copy(self, source: Path, relative: str) -> None:
        shutil.copytree(source, self.path / relative, dirs_exist_ok=True)

    def commit(self, message: str) -> str:
        self._git("add", "--all")
        self._git("commit", "--quiet", "--allow-empty", "-m", message)
        return self._git("rev-parse", "HEAD").strip()

    def revert_last(self) -> str:
        self._git("revert", "--no-edit", "HEAD")
        return self._git("rev-parse", "HEAD").strip()

    def _git(self, *args: str) -> str:
        identity = ["-c", "user.name=bernini-tests", "-c", "user.email=tests@bernini.invalid",
                    "-c", "commit.gpgsign=false"]
        result = subprocess.run(["git", *identity, "-C", str(self.path), *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise ArgoCDError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


EXAMPLE_OPERATOR_REPO = "https://example.com/your-org/bernini-operator.git"
EXAMPLE_PLATFORM_REPO = "https://example.com/your-org/ml-platform.git"
MODEL_PATH = "models/bernini"


@dataclass
class ExampleRepositories:
    """examples/argocd as a user runs it, with local repositories in place of the two example URLs: the
    operator's (crds/, the chart, examples/argocd/ with applications.yaml) and the platform team's (the
    model's objects under models/bernini)."""

    operator: GitRepository
    platform: GitRepository

    @classmethod
    def create(cls, root: Path, model_objects: list[dict], operator_values: dict | None = None) -> "ExampleRepositories":
        repositories = cls(GitRepository(root / "bernini-operator").init(), GitRepository(root / "ml-platform").init())
        operator = repositories.operator
        operator.copy(REPO_ROOT / "crds", "crds")
        operator.copy(REPO_ROOT / "charts" / "bernini-operator", "charts/bernini-operator")
        applications = list(yaml.safe_load_all((EXAMPLES / "applications.yaml").read_text()))
        for application in applications:
            if operator_values is not None and application["metadata"]["name"] == "bernini-operator":
                application["spec"]["source"]["helm"]["valuesObject"] = operator_values
        operator.write("examples/argocd/applications.yaml", repositories.localised(yaml.safe_dump_all(applications)))
        operator.commit("bernini-operator: CRDs, chart and the Argo CD Applications")
        repositories.commit_model(model_objects, "bernini: the first version")
        return repositories

    def localised(self, text: str) -> str:
        return text.replace(EXAMPLE_OPERATOR_REPO, self.operator.url).replace(EXAMPLE_PLATFORM_REPO, self.platform.url)

    def root_application(self) -> dict:
        return yaml.safe_load(self.localised((EXAMPLES / "root-application.yaml").read_text()))

    def commit_model(self, model_objects: list[dict], message: str) -> str:
        self.platform.write(f"{MODEL_PATH}/bernini.yaml", yaml.safe_dump_all(model_objects))
        return self.platform.commit(message)
