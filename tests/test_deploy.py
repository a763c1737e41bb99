"""deploy/: the Dockerfile, docker-compose file and Kubernetes manifests, checked against the code.

Neither docker nor kubectl runs here, so these tests are the check: every file parses, every
``ARBOR_*`` name is a real setting (derived from :class:`Settings`, not a hand-kept list) and the
values validate, ports agree with ``ARBOR_PORT``, the hosts in connection URLs are services
defined alongside, probes hit routes the app has, commands are real ``arbor`` commands, and no
secret is committed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from typer.main import get_command

from arbor.cli.main import app as cli_app
from arbor.core.config import Settings, load_settings
from arbor.service.app import create_app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PREFIX = str(Settings.model_config.get("env_prefix", ""))
DELIMITER = str(Settings.model_config.get("env_nested_delimiter", ""))
ARBOR_NAME = re.compile(rf"\b{PREFIX}[A-Z0-9_]*[A-Z0-9]")
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
PLACEHOLDER = "change-me"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY$|TOKEN|AUTH", re.IGNORECASE)


# ---- loading ------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a dotenv file; comments and blank lines skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` against ``env``."""

    def value(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"] or "", m["arg"] or ""
        if env.get(name):
            return env[name]
        assert op.endswith("-"), f"docker-compose.yml uses ${{{name}}}; .env.example lacks it"
        return arg

    return INTERPOLATION.sub(value, text)


def compose_env() -> dict[str, str]:
    return read_env_file(DEPLOY / ".env.example")


def compose() -> dict[str, Any]:
    text = (DEPLOY / "docker-compose.yml").read_text()
    data: dict[str, Any] = yaml.safe_load(interpolate(text, compose_env()))
    return data


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in of_kind(kind).items():
            yield name, doc["spec"]["template"]["spec"]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
        for ln in joined.splitlines()
        if ln.strip()
    ]


def k8s_secret_env() -> dict[str, str]:
    return read_env_file(K8S / "secrets.env.example")


def k8s_config() -> dict[str, str]:
    data: dict[str, str] = of_kind("ConfigMap")["arbor-config"]["data"]
    return data


# ---- settings names and values ------------------------------------------------------------
def accepts(annotation: Any, rest: list[str]) -> bool:
    """Whether the nested env name parts ``rest`` address something inside ``annotation``."""
    if not rest:
        return True
    if get_origin(annotation) in (Union, type(int | None)):
        return any(accepts(a, rest) for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is dict:  # any key, then the value's fields
        return accepts(get_args(annotation)[1], rest[1:])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(rest[0].lower())
        return field is not None and accepts(field.annotation, rest[1:])
    return False


def is_setting(name: str) -> bool:
    return name.startswith(PREFIX) and accepts(Settings, name[len(PREFIX) :].split(DELIMITER))


def test_setting_names_derivation_can_fail() -> None:
    assert is_setting("ARBOR_PORT")
    assert is_setting("ARBOR_SERVICE__SESSION_SECRET")
    assert is_setting("ARBOR_PROVIDERS__OLLAMA__BASE_URL")
    assert is_setting("ARBOR_LLM__LIMITS__OPENAI:GPT-4O__RPM")
    assert not is_setting("ARBOR_WORKERS")
    assert not is_setting("ARBOR_SERVICE__NOPE")
    assert not is_setting("ARBOR_PORT__X")
    assert not is_setting("ARBOR_PROVIDERS__OLLAMA__NOPE")


def test_every_arbor_name_in_deploy_is_a_setting() -> None:
    used: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            for name in ARBOR_NAME.findall(path.read_text()):
                used.setdefault(name, set()).add(str(path.relative_to(DEPLOY)))
    assert "ARBOR_DATABASE_URL" in used and "ARBOR_EXECUTOR" in used
    unknown = {n: sorted(p) for n, p in used.items() if not is_setting(n)}
    assert not unknown, f"not Arbor settings: {unknown}"


def load_with(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        if key.startswith(PREFIX):
            monkeypatch.setenv(key, value)
    return load_settings()  # raises ConfigError naming a bad value


def test_compose_settings_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    server = compose()["services"]["arbor"]
    env = dict(server["environment"])
    for entry in server["env_file"]:
        env |= read_env_file(DEPLOY / f"{entry['path']}.example")
    settings = load_with(env, monkeypatch)
    assert settings.profile == "prod" and settings.executor == "local"
    assert settings.admin_key is not None and len(settings.admin_key.get_secret_value()) >= 32
    assert settings.service.session_secret is not None


def test_k8s_settings_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    config = k8s_config()
    assert not [k for k in config if SECRET_NAME.search(k) or "@" in config[k]]
    settings = load_with(config | k8s_secret_env(), monkeypatch)
    assert settings.database_url and settings.redis_url and settings.milvus_uri
    assert settings.admin_key is not None and settings.service.session_secret is not None


# ---- ports -------------------------------------------------------------------------------
def test_ports_agree_with_the_port_setting() -> None:
    port = int(compose()["services"]["arbor"]["environment"]["ARBOR_PORT"])
    assert int(k8s_config()["ARBOR_PORT"]) == port
    instructions = dockerfile()
    assert f"ARBOR_PORT={port}" in " ".join(a for i, a in instructions if i == "ENV")
    assert [a for i, a in instructions if i == "EXPOSE"] == [str(port)]

    server = compose()["services"]["arbor"]
    assert all(p.rsplit(":", 1)[1] == str(port) for p in server["ports"])
    assert f":{port}/readyz" in " ".join(server["healthcheck"]["test"])
    assert server["command"][server["command"].index("--port") + 1] == str(port)

    (container,) = dict(pod_specs())["arbor-server"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["args"][container["args"].index("--port") + 1] == str(port)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port, probe
    assert [p["targetPort"] for p in of_kind("Service")["arbor"]["spec"]["ports"]] == [port]


def test_services_expose_the_ports_their_pods_listen_on() -> None:
    pods = list(of_kind("Deployment").values()) + list(of_kind("StatefulSet").values())
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"]
        labels = [p["spec"]["template"]["metadata"]["labels"] for p in pods]
        matching = [p for p, lb in zip(pods, labels, strict=True) if selector.items() <= lb.items()]
        assert matching, f"Service {name} selects no pods"
        listening = {
            port["containerPort"]
            for p in matching
            for c in p["spec"]["template"]["spec"]["containers"]
            for port in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in listening, f"Service {name} port {port}"


# ---- hosts in URLs -----------------------------------------------------------------------
def url_targets(env: dict[str, str]) -> list[tuple[str, str, int | None]]:
    keys = ("ARBOR_DATABASE_URL", "ARBOR_REDIS_URL", "ARBOR_MILVUS_URI", "ARBOR_RAY_ADDRESS")
    parts = [urlsplit(env[k]) for k in keys]
    return [(k, p.hostname or "", p.port) for k, p in zip(keys, parts, strict=True)]


def test_compose_urls_name_compose_services() -> None:
    data = compose()
    services = data["services"]
    for key, host, _ in url_targets(services["arbor"]["environment"]):
        assert host in services, f"{key} points at {host!r}, not a compose service"
    worker_address = services["ray-worker"]["command"][1].removeprefix("--address=")
    head = services["ray-head"]["command"]
    assert worker_address == f"ray-head:{_flag(head, '--port')}"
    ray_port = urlsplit(services["arbor"]["environment"]["ARBOR_RAY_ADDRESS"]).port
    assert str(ray_port) == _flag(head, "--ray-client-server-port")
    # Milvus reaches its etcd and MinIO by service name too.
    milvus = services["milvus"]["environment"]
    assert {milvus["ETCD_ENDPOINTS"].split(":")[0], milvus["MINIO_ADDRESS"].split(":")[0]} <= set(
        services
    )


def _flag(argv: list[str], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"{flag}=")]
    return value


def test_k8s_urls_name_k8s_services() -> None:
    services = of_kind("Service")
    for key, host, port in url_targets(k8s_config() | k8s_secret_env()):
        assert host in services, f"{key} points at {host!r}, not a Service"
        exposed = [p["port"] for p in services[host]["spec"]["ports"]]
        assert port in exposed, f"{key} uses port {port}; Service {host} has {exposed}"
    worker = dict(pod_specs())["ray-worker"]["containers"][0]["args"]
    host, port = worker[1].removeprefix("--address=").split(":")
    assert host in services and int(port) in [p["port"] for p in services[host]["spec"]["ports"]]


def test_database_and_redis_credentials_agree() -> None:
    secrets = k8s_secret_env()
    db = make_url(secrets["ARBOR_DATABASE_URL"])
    assert db.get_dialect().driver == "asyncpg"  # the driver is installed and async
    assert db.password == secrets["POSTGRES_PASSWORD"]
    assert urlsplit(secrets["ARBOR_REDIS_URL"]).password == secrets["REDIS_PASSWORD"]
    (postgres,) = dict(pod_specs())["postgres"]["containers"]
    env = {e["name"]: e.get("value") for e in postgres["env"]}
    assert (db.username, db.database) == (env["POSTGRES_USER"], env["POSTGRES_DB"])

    services = compose()["services"]
    db = make_url(services["arbor"]["environment"]["ARBOR_DATABASE_URL"])
    pg = services["postgres"]["environment"]
    assert (db.username, db.password, db.database) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    redis_url = urlsplit(services["arbor"]["environment"]["ARBOR_REDIS_URL"])
    assert redis_url.password == compose_env()["REDIS_PASSWORD"]
    assert redis_url.password in services["redis"]["command"]


# ---- probes and commands -----------------------------------------------------------------
def test_probes_hit_routes_the_app_has() -> None:
    paths = set(create_app(settings=load_settings()).openapi()["paths"])
    assert {"/healthz", "/readyz"} <= paths
    (container,) = dict(pod_specs())["arbor-server"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (check,) = [a for i, a in dockerfile() if i == "HEALTHCHECK"]
    assert "/healthz'" in check
    assert "/readyz'" in " ".join(compose()["services"]["arbor"]["healthcheck"]["test"])


def check_arbor_argv(argv: list[str]) -> None:
    """``argv`` parses as a real ``arbor`` command line (options and values validated)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts, f"{argv[0]!r} is not a console script of the project"
    command: Any = get_command(cli_app)
    name, args, parent = argv[0], list(argv[1:]), None
    while hasattr(command, "list_commands"):  # a group: descend to the sub-command named next
        context = command.make_context(name, args[:1], parent=parent)
        sub = command.get_command(context, args[0])
        assert sub is not None, f"`{name} {args[0]}` is not a command"
        name, args, parent, command = args[0], args[1:], context, sub
    command.make_context(name, args, parent=parent)  # a bad option or value raises


def test_entrypoints_are_real_arbor_commands() -> None:
    instructions = dict(dockerfile())
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert entrypoint == ["arbor"]
    check_arbor_argv(entrypoint + json.loads(instructions["CMD"]))
    assert json.loads(instructions["CMD"])[:3] == ["serve", "--host", "0.0.0.0"]
    check_arbor_argv(entrypoint + compose()["services"]["arbor"]["command"])
    (container,) = dict(pod_specs())["arbor-server"]["containers"]
    check_arbor_argv(entrypoint + container["args"])
    readme = (DEPLOY / "README.md").read_text()
    in_readme = re.findall(r"exec arbor (arbor [^#\n]+)", readme)
    assert in_readme
    for line in in_readme:
        check_arbor_argv(shlex.split(line))
    with pytest.raises(Exception, match="No such option"):
        check_arbor_argv(["arbor", "serve", "--no-such-option"])
    with pytest.raises(AssertionError, match="not a command"):
        check_arbor_argv(["arbor", "worker"])
    with pytest.raises(Exception, match="No such option"):
        check_arbor_argv(["arbor", "keys", "create", "--scopes", "admin"])


def test_dockerfile_builds_in_stages_and_runs_unprivileged() -> None:
    instructions = dockerfile()
    stages = [a for i, a in instructions if i == "FROM"]
    assert len(stages) >= 3 and stages[-1].endswith("AS runtime")
    builder = " ".join(a for i, a in instructions if i == "RUN")
    assert "cmake" in builder and "build-essential" in builder  # llama-cpp-python's build
    assert "uv sync --frozen" in builder
    (user,) = [a for i, a in instructions if i == "USER"]
    assert user.split(":")[0] not in ("0", "root")


def test_dockerignore_keeps_what_the_image_copies() -> None:
    instructions = dockerfile()
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    copied = [
        src
        for i, a in instructions
        if i == "COPY" and not a.startswith("--from")
        for src in a.split()[:-1]
    ]
    assert {"pyproject.toml", "uv.lock", "README.md", "src"} <= set(copied)
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not [p for p in patterns if fnmatch.fnmatch(src, p.removeprefix("**/"))], src
    # The venv the builder fills is the one copied, and its bin/ is on PATH.
    env = " ".join(a for i, a in instructions if i == "ENV")
    venv = re.search(r"UV_PROJECT_ENVIRONMENT=(\S+)", env)
    assert venv and f"PATH={venv[1]}/bin:" in env
    assert f"--from=builder {venv[1]} {venv[1]}" in [a for i, a in instructions if i == "COPY"]


# ---- compose and kustomize structure -----------------------------------------------------
KINDS = {
    "ConfigMap": "v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "Namespace": "v1",
    "PodDisruptionBudget": "policy/v1",
    "Service": "v1",
    "StatefulSet": "apps/v1",
}


def test_manifests_use_current_api_versions() -> None:
    docs = k8s_docs()
    assert len(docs) >= 12
    for doc in docs:
        assert KINDS.get(doc["kind"]) == doc["apiVersion"], doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"]  # kustomization.yaml sets it
    (pdb,) = of_kind("PodDisruptionBudget").values()
    server_labels = of_kind("Deployment")["arbor-server"]["spec"]["template"]["metadata"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= server_labels["labels"].items()


def test_compose_dependencies_volumes_and_replicas() -> None:
    data = compose()
    services = data["services"]
    for name, service in services.items():
        for dep, rule in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(("/", ".")) or source in data["volumes"], source
    assert services["arbor"]["deploy"]["replicas"] >= 2
    assert services["ray-worker"]["deploy"]["replicas"] >= 1
    assert {"postgres", "redis", "milvus", "etcd", "minio", "ray-head"} <= set(services)


def test_kustomization_lists_every_manifest_and_reference() -> None:
    kust = kustomization()
    listed = set(kust["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    (generator,) = kust["secretGenerator"]
    assert generator["envs"] == ["secrets.env"]
    assert (K8S / "secrets.env.example").is_file()
    secret_keys = set(k8s_secret_env())
    config_maps = set(of_kind("ConfigMap"))
    for name, spec in pod_specs():
        for c in spec["containers"]:
            for ref in c.get("envFrom", []):
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] == generator["name"], name
                else:
                    assert ref["configMapRef"]["name"] in config_maps, name
            for env in c.get("env", []):
                key_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if key_ref:
                    assert key_ref["name"] == generator["name"], name
                    assert key_ref["key"] in secret_keys, f"{name}: {key_ref['key']}"
            if c["image"].split(":")[0] == "arbor":
                assert [i["name"] for i in kust["images"]] == ["arbor"]
    for name, sts in of_kind("StatefulSet").items():
        assert sts["spec"]["serviceName"] in of_kind("Service"), name
    for name, doc in (of_kind("Deployment") | of_kind("StatefulSet")).items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), name


def test_server_is_hardened_and_autoscaled() -> None:
    deployment = of_kind("Deployment")["arbor-server"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert {k8s_config()["ARBOR_HOME"], "/tmp"} <= mounted  # the only writable paths
    (hpa,) = of_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "arbor-server",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert "ray-worker" in of_kind("Deployment")


# ---- secrets -----------------------------------------------------------------------------
def committed_files() -> list[Path]:
    """Files under deploy/ that git would commit; without git (a source tarball), every file
    but the ones deploy/.gitignore names."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "deploy"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        ignored = set((DEPLOY / ".gitignore").read_text().split())
        files = [p for p in DEPLOY.rglob("*") if p.is_file()]
        return [p for p in files if str(p.relative_to(DEPLOY)) not in ignored]
    return [ROOT / line for line in out.splitlines()]


def secret_values() -> Iterator[tuple[str, str, str]]:
    """(file, key, value) of every secret-looking setting in every deploy file."""
    for name in (".env.example", "arbor.env.example", "k8s/secrets.env.example"):
        for key, value in read_env_file(DEPLOY / name).items():
            yield name, key, value
    raw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for service in raw["services"].values():
        for key, value in (service.get("environment") or {}).items():
            yield "docker-compose.yml", key, str(value)


def test_no_secret_literals_are_committed() -> None:
    files = committed_files()
    names = {str(p.relative_to(DEPLOY)) for p in files}
    assert not names & {".env", "arbor.env", "k8s/secrets.env"}, "a filled-in secrets file"
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert {".env", "arbor.env", "k8s/secrets.env"} <= set(ignored)
    for path in files:
        text = path.read_text()
        assert not re.search(r"\bsk-[A-Za-z0-9_-]{12,}", text), f"an API key in {path}"
        for url in re.findall(r"\b[a-z][a-z0-9+]*://[^\s\"']+", text):
            password = urlsplit(url).password
            assert password is None or PLACEHOLDER in password or password.startswith("${"), url
    checked = 0
    for file, key, value in secret_values():
        if SECRET_NAME.search(key):
            checked += 1
            assert PLACEHOLDER in value or INTERPOLATION.fullmatch(value), f"{file}: {key}"
    assert checked >= 8
