"""The Kubernetes manifests under k8s/, checked offline (no cluster in CI).

Built-in kinds are validated strictly (unknown fields are errors) against the Kubernetes 1.30
JSON schemas bundled in the `kubernetes-validate` package. The custom resources (RayCluster,
ClickHouseInstallation, ServiceMonitor) have no schema there: their pod templates are validated
strictly as Kubernetes PodTemplates, and the fields their operators require are checked here.
Then the cross-references: kustomization, ConfigMap keys against actors/settings.py, Secret
keys, Service selector, Ingress backend, resources and pinned images.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import kubernetes_validate  # noqa: E402  (pinned in the `test` extra)

from actors.settings import Settings  # noqa: E402

K8S = Path(__file__).resolve().parent.parent / "k8s"
KUBERNETES_VERSION = "1.30"
CRD_KINDS = {"RayCluster", "ClickHouseInstallation", "ServiceMonitor"}
EXAMPLES = {"secret.example.yaml", "clickhouse-chi.example.yaml", "servicemonitor.example.yaml"}


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


YAML_FILES = sorted(p for p in K8S.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
DOCS = [(p, d) for p in YAML_FILES if p.name != "kustomization.yaml" for d in _load(p)]


def _docs(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d.get("kind") == kind]


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for d in _docs(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _strict(doc: dict) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise AssertionError(f"{doc['kind']} {doc.get('metadata', {}).get('name')}: {where}: {exc.message}") from None


def _as_pod_template(name: str, template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def _raycluster() -> dict:
    return _one("RayCluster")


def _ray_templates() -> list[tuple[str, dict]]:
    rc = _raycluster()
    return [("head", rc["spec"]["headGroupSpec"]["template"])] + [
        (g["groupName"], g["template"]) for g in rc["spec"]["workerGroupSpecs"]]


def _pod_specs() -> list[tuple[str, dict]]:
    """Every pod spec in the manifests: workloads, RayCluster groups, ClickHouseInstallation."""
    out = [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
           for d in _docs("StatefulSet") + _docs("Deployment") + _docs("DaemonSet")]
    out += [(f"RayCluster/{name}", t["spec"]) for name, t in _ray_templates()]
    for chi in _docs("ClickHouseInstallation"):
        out += [(f"ClickHouseInstallation/{t['name']}", t["spec"]) for t in chi["spec"]["templates"]["podTemplates"]]
    return out


def _containers() -> list[tuple[str, dict]]:
    return [(f"{where}/{c['name']}", c) for where, spec in _pod_specs()
            for c in spec.get("initContainers", []) + spec["containers"]]


def _env(container: dict) -> list[dict]:
    return container.get("env", [])


# -- every document is valid -----------------------------------------------------------------
def test_the_validator_is_offline_and_knows_the_pinned_version():
    assert KUBERNETES_VERSION in {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}
    with pytest.raises(AssertionError, match="'prots' was unexpected"):  # it really checks, strictly
        _strict({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}})


def test_every_yaml_file_parses_and_every_document_has_a_kind():
    assert len(YAML_FILES) >= 12
    for path, doc in DOCS:
        assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path.name
        assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without a name"


@pytest.mark.parametrize("path", [p for p in YAML_FILES if p.name != "kustomization.yaml"], ids=lambda p: p.name)
def test_builtin_kinds_validate_strictly(path):
    for doc in _load(path):
        if doc["kind"] not in CRD_KINDS:
            _strict(doc)


def test_raycluster_has_what_kuberay_requires():
    rc = _raycluster()
    assert rc["apiVersion"] == "ray.io/v1"
    spec = rc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert isinstance(spec["rayVersion"], str) and spec["rayVersion"]
    head = spec["headGroupSpec"]
    assert head["template"]["spec"]["containers"], "the head needs its Ray container"
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in [head, *groups]:
        params = g.get("rayStartParams", {})
        assert isinstance(params, dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), \
            f"rayStartParams must map strings to strings: {params}"
        assert "num-cpus" in params
        # KubeRay's default Ray metrics port is 8080: the gateway's
        assert params.get("metrics-export-port") not in (None, "8080")
    assert head["rayStartParams"]["num-cpus"] == "0"
    for g in groups:
        assert isinstance(g["groupName"], str) and g["groupName"]
        assert all(isinstance(g[k], int) for k in ("replicas", "minReplicas", "maxReplicas"))
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert g["template"]["spec"]["containers"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    # the autoscaler sidecar KubeRay adds: sized and given the token
    options = spec["autoscalerOptions"]
    assert options["resources"]["requests"] and options["resources"]["limits"]
    env = {e["name"]: e for e in options["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    assert set(rc["spec"]) <= {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec",
                               "workerGroupSpecs", "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions"}


@pytest.mark.parametrize("group", ["head", "workers"])
def test_raycluster_pod_templates_validate_strictly_as_pod_templates(group):
    template = dict(_ray_templates())[group]
    _strict(_as_pod_template(group, template))


def test_every_ray_container_uses_token_auth():
    for name, template in _ray_templates():
        for c in template["spec"]["containers"]:
            env = {e["name"]: e for e in _env(c)}
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name}/{c['name']}"
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "peakdesk-secrets" and ref["key"] == "RAY_AUTH_TOKEN"


def test_the_head_runs_peakdesk_up_joining_its_ray_node():
    spec = dict(_ray_templates())["head"]["spec"]
    ray_head, peakdesk = spec["containers"][0], spec["containers"][1]
    assert ray_head["name"] == "ray-head" and "command" not in ray_head  # KubeRay generates `ray start`
    assert 8080 in {p["containerPort"] for p in ray_head["ports"]}
    script = peakdesk["command"][-1]
    assert "exec peakdesk up" in script and '--ray-address "${MY_POD_IP}:6379"' in script
    assert "$(" not in script, "Kubernetes would expand $(VAR) in a command"
    mounts = lambda c: {m["mountPath"] for m in c["volumeMounts"]}  # noqa: E731
    assert "/tmp/ray" in mounts(ray_head) & mounts(peakdesk)        # the driver reaches its raylet
    if shutil.which("bash"):
        done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert done.returncode == 0, done.stderr
    # every flag the script passes is an option of `peakdesk up`
    from click.testing import CliRunner

    import cli
    up_flags = {o for p in cli.up.params for o in p.opts}
    passed = {w for w in script.replace("(", " ").split() if w.startswith("--")}
    assert passed <= up_flags, passed - up_flags
    assert CliRunner().invoke(cli.main, ["up", "--help"]).exit_code == 0
    # the probes: readiness reads /healthz; its code compiles
    probe = peakdesk["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2]
    compile(probe[2], "readinessProbe", "exec")
    assert peakdesk["livenessProbe"]["httpGet"]["port"] == 8080


def test_workers_drain_their_node_before_they_go():
    spec = dict(_ray_templates())["workers"]["spec"]
    hook = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert "peakdesk drain" in hook and "$(" not in hook
    assert spec["terminationGracePeriodSeconds"] >= 120
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n"], input=hook, text=True).returncode == 0


def test_clickhouse_installation_example():
    chi = _one("ClickHouseInstallation")
    assert chi["apiVersion"] == "clickhouse.altinity.com/v1"
    spec = chi["spec"]
    assert spec["configuration"]["clusters"][0]["layout"]
    for t in spec["templates"]["podTemplates"]:
        _strict(_as_pod_template(t["name"], {"metadata": t.get("metadata", {}), "spec": t["spec"]}))
    for t in spec["templates"]["volumeClaimTemplates"]:
        _strict({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": t["name"]},
                 "spec": t["spec"]})
    names = {t["name"] for t in spec["templates"]["podTemplates"]}
    assert spec["defaults"]["templates"]["podTemplate"] in names


def test_servicemonitor_example_scrapes_the_gateway_service():
    sm = _one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    svc = _one("Service", "peakdesk-gateway")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names and ep["path"] == "/metrics"


# -- kustomization -------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest_but_the_examples():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["apiVersion"].startswith("kustomize.config.k8s.io/") and k["kind"] == "Kustomization"
    assert k["namespace"] == "peakdesk"
    listed = k["resources"]
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (K8S / name).is_file(), name
        assert _load(K8S / name), name
    top = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == top - EXAMPLES
    assert not set(listed) & EXAMPLES
    assert _one("Namespace")["metadata"]["name"] == "peakdesk"


# -- resources and images --------------------------------------------------------------------
def test_every_container_has_requests_and_limits():
    containers = _containers()
    assert len(containers) >= 6
    for where, c in containers:
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: resources.{kind} needs cpu and memory"


def _images() -> list[tuple[str, str]]:
    return [(where, c["image"]) for where, c in _containers()]


def test_every_image_is_pinned():
    images = _images()
    assert images
    for where, image in images:
        name, _, tag = image.rpartition(":") if "@" not in image else (image, ":", "digest")
        assert name and tag and "/" not in tag, f"{where}: {image} has no tag"
        assert tag != "latest", f"{where}: {image}"
    assert {i for _, i in images if "peakdesk" in i} == {"ghcr.io/peakdesk/peakdesk:0.1.0"}
    rc = _raycluster()
    dockerfile = (K8S / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and "pip install ." in dockerfile and "USER 1000" in dockerfile
    import tomllib
    pyproject = tomllib.loads((K8S.parent / "pyproject.toml").read_text())
    assert f"ray[default]=={rc['spec']['rayVersion']}" in pyproject["project"]["dependencies"]


# -- settings and secrets ----------------------------------------------------------------------
def _configmap() -> dict:
    return _one("ConfigMap", "peakdesk-config")


def test_configmap_keys_are_settings_and_their_values_are_valid_settings():
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    data = _configmap()["data"]
    unknown = set(data) - set(fields)
    assert not unknown, f"not fields of actors.settings.Settings: {sorted(unknown)}"
    assert {"redis_url", "clickhouse_url", "hosts", "writers", "bot_workers", "port"} <= set(data)
    assert all(isinstance(v, str) for v in data.values())
    kinds = {"int": int, "float": float}
    values = {k: kinds.get(str(fields[k].type), str)(v) for k, v in data.items() if v != ""}
    Settings(**values)  # raises ConfigError naming a bad value
    assert data["redis_url"].startswith("redis://redis.peakdesk.svc")
    assert data["clickhouse_url"].startswith("http://clickhouse.peakdesk.svc")


def test_every_config_and_secret_reference_exists():
    data = _configmap()["data"]
    secret = _one("Secret", "peakdesk-secrets")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    refs = 0
    for where, c in _containers() + [("autoscaler", {"env": _raycluster()["spec"]["autoscalerOptions"]["env"]})]:
        for e in _env(c):
            source = e.get("valueFrom", {})
            if "configMapKeyRef" in source:
                ref, refs = source["configMapKeyRef"], refs + 1
                assert ref["name"] == "peakdesk-config" and ref["key"] in data, f"{where}: {e['name']}"
            if "secretKeyRef" in source:
                ref, refs = source["secretKeyRef"], refs + 1
                assert ref["name"] == "peakdesk-secrets" and ref["key"] in secret_keys, f"{where}: {e['name']}"
        for src in c.get("envFrom", []):
            assert src.get("configMapRef", {}).get("name", "peakdesk-config") == "peakdesk-config"
            assert src.get("secretRef", {}).get("name", "peakdesk-secrets") == "peakdesk-secrets"
    assert refs >= 20


def test_the_secret_example_holds_only_placeholders():
    secret = _one("Secret", "peakdesk-secrets")
    values = secret["stringData"]
    assert {"RAY_AUTH_TOKEN", "CLICKHOUSE_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "PEAKDESK_LLM_API_KEY", "PEAKDESK_SECRET"} <= set(values)
    for key, value in values.items():
        assert value == "" or "REPLACE_ME" in value or key == "CLICKHOUSE_USER", f"{key} looks like a real secret"
    assert "NOT applied" in (K8S / "secret.example.yaml").read_text()


# -- wiring between the manifests ----------------------------------------------------------------
def test_gateway_service_selects_the_head_pod_on_the_gateway_port():
    svc = _one("Service", "peakdesk-gateway")
    head = dict(_ray_templates())["head"]
    assert svc["spec"]["selector"].items() <= head["metadata"]["labels"].items()
    for name, template in _ray_templates():
        if name != "head":
            assert not svc["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert "sessionAffinity" not in svc["spec"] or svc["spec"]["sessionAffinity"] == "None"
    ports = {p["containerPort"] for c in head["spec"]["containers"] for p in c.get("ports", [])}
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] in ports and port["targetPort"] == int(_configmap()["data"]["port"])


def test_ingress_routes_the_public_paths_to_the_gateway_service_only():
    ing = _one("Ingress")
    svc = _one("Service", "peakdesk-gateway")
    svc_ports = {p["name"] for p in svc["spec"]["ports"]} | {p["port"] for p in svc["spec"]["ports"]}
    paths = []
    for rule in ing["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            backend = p["backend"]["service"]
            assert backend["name"] == "peakdesk-gateway"
            assert backend["port"].get("name", backend["port"].get("number")) in svc_ports
            paths.append(p["path"])
    assert {"/ws", "/api"} <= set(paths)
    assert not {"/", "/metrics", "/healthz"} & set(paths), "no login on these: keep them in the cluster"
    notes = ing["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert notes["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert ing["spec"]["tls"][0]["secretName"]


def test_state_is_persistent():
    redis = _one("StatefulSet", "redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--appendfsync") + 1] == "everysec"
    assert "noeviction" in args
    for sts in (redis, _one("StatefulSet", "clickhouse")):
        assert sts["spec"]["replicas"] == 1 and sts["spec"]["volumeClaimTemplates"]
        mounted = {m["name"] for c in sts["spec"]["template"]["spec"]["containers"] for m in c["volumeMounts"]}
        assert {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]} <= mounted
        svc = _one("Service", sts["spec"]["serviceName"])
        assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert _one("Service", "redis")["spec"]["clusterIP"] == "None"
    assert 8123 in {p["port"] for p in _one("Service", "clickhouse")["spec"]["ports"]}


def test_pod_disruption_budgets_select_real_pods():
    labels = [t["metadata"]["labels"] for _, t in _ray_templates()]
    labels += [s["spec"]["template"]["metadata"]["labels"] for s in _docs("StatefulSet")]
    budgets = {d["metadata"]["name"]: d for d in _docs("PodDisruptionBudget")}
    assert {"redis", "clickhouse", "ray-workers"} <= set(budgets)
    for name, pdb in budgets.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert sum(selector.items() <= l.items() for l in labels) == 1, name
    assert budgets["redis"]["spec"].get("maxUnavailable") == 0 or budgets["redis"]["spec"].get("minAvailable") == 1
    assert budgets["ray-workers"]["spec"]["maxUnavailable"] == 1


def test_every_pod_is_inside_the_network_fence():
    (policy,) = _docs("NetworkPolicy")
    fence = policy["spec"]["podSelector"]["matchLabels"]
    templates = [t for _, t in _ray_templates()] + [s["spec"]["template"] for s in _docs("StatefulSet")]
    for t in templates:
        assert fence.items() <= t["metadata"]["labels"].items()


def test_grafana_dashboard_is_json():
    for path in (K8S / "grafana").glob("*.json"):
        assert json.loads(path.read_text())["panels"]
