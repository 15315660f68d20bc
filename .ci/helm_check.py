"""Checks the Helm chart with the real Helm 4 library and the Kubernetes 1.30 schemas.

For the default values and every file in ci/: strict lint, schema validation, render, every
rendered object validated (strict) against Kubernetes 1.30, the probes, securityContext and
resources asserted, the rendered claw-authz config accepted by `claw-authz check-config`, the
PrometheusRule accepted by promtool. Every file in ci/bad/ must be refused by the schema, and the
shapes the templates refuse must fail to render. Exits 1 listing every problem.
"""

import os
import subprocess
import sys
import tempfile

import helm_python as helm
import kubernetes_validate
import yaml

CHART = "k8s/helm/claw-authz"
KUBE = "1.30.0"
BINARY = os.environ.get("CLAW_AUTHZ_BIN", "target/debug/claw-authz")
problems = []


def problem(case, text):
    problems.append(f"{case}: {text}")


def lint(case, values):
    report = helm.lint(CHART, values, strict=True, kube_version="v" + KUBE)
    for m in report["messages"]:
        if m["severity"] >= 2:
            problem(case, f"lint: {m['path']}: {m['error']}")
    for e in report["errors"]:
        problem(case, f"lint: {e}")


def render(chart, case, values):
    chart.validate_schema(values)
    rendered = chart.render(chart.merge_values(values), name="claw", namespace="agents")
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            if "claw-authz" not in text:
                problem(case, "NOTES.txt is empty")
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def find(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def container(deployment, name):
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    return None


def check_objects(case, objects):
    for o in objects:
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs, checked below
        try:
            kubernetes_validate.validate(o, KUBE, strict=True)
        except Exception as e:  # ValidationError, SchemaNotFoundError
            problem(case, f"{o['kind']} {o['metadata']['name']}: {str(e).splitlines()[0]}")
    deployments = find(objects, "Deployment")
    if len(deployments) != 1:
        problem(case, f"expected one Deployment, got {len(deployments)}")
        return
    pod = deployments[0]["spec"]["template"]["spec"]
    c = container(deployments[0], "claw-authz")
    if c is None:
        problem(case, "no claw-authz container")
        return
    tls = any(m["mountPath"] == "/etc/claw-authz/tls" for m in c["volumeMounts"])
    socket = any(m["mountPath"] == "/var/run/claw-authz" for m in c["volumeMounts"])
    if tls or socket:
        # The kubelet's gRPC probe speaks neither TLS nor a Unix socket: readiness comes from
        # the admin listener.
        readiness = [
            (c["readinessProbe"].get("httpGet"), {"path": "/readyz", "port": "admin"}, "readiness: /readyz (TLS)"),
            (c["startupProbe"].get("httpGet"), {"path": "/readyz", "port": "admin"}, "startup: /readyz (TLS)"),
        ]
    else:
        readiness = [
            (c["readinessProbe"].get("grpc"), {"port": 9001, "service": "envoy.service.auth.v3.Authorization"}, "readiness: gRPC health"),
            (c["startupProbe"].get("grpc", {}).get("port"), 9001, "startup: gRPC health"),
        ]
    expect = readiness + [
        (c["livenessProbe"].get("httpGet", {}).get("path"), "/healthz", "liveness: /healthz"),
        (c["securityContext"].get("runAsNonRoot"), True, "runAsNonRoot"),
        (c["securityContext"].get("readOnlyRootFilesystem"), True, "readOnlyRootFilesystem"),
        (c["securityContext"].get("allowPrivilegeEscalation"), False, "allowPrivilegeEscalation"),
        (c["securityContext"].get("capabilities", {}).get("drop"), ["ALL"], "capabilities dropped"),
        (pod["securityContext"].get("runAsNonRoot"), True, "pod runAsNonRoot"),
        (pod["securityContext"].get("seccompProfile", {}).get("type"), "RuntimeDefault", "seccomp"),
        (pod.get("automountServiceAccountToken"), False, "no service account token"),
    ]
    for got, want, what in expect:
        if got != want:
            problem(case, f"{what}: got {got!r}, want {want!r}")
    for kind in ("requests", "limits"):
        r = c.get("resources", {}).get(kind, {})
        if not (r.get("cpu") and r.get("memory")):
            problem(case, f"resources.{kind} must set cpu and memory: {r}")
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    for path in ("/etc/claw-authz/config", "/var/lib/claw-authz", "/tmp"):
        if path not in mounts:
            problem(case, f"claw-authz container lacks the {path} mount (read-only root)")
    check_drain(case, objects, pod)
    check_config(case, objects, c)


def check_drain(case, objects, pod):
    """The pod's grace period covers the server's own drain and grace (`listen.*_secs`)."""
    config = next(
        (o["data"]["config.yaml"] for o in find(objects, "ConfigMap") if "config.yaml" in o.get("data", {})),
        None,
    )
    if config is None:
        return
    listen = yaml.safe_load(config).get("listen", {})
    need = listen.get("drain_secs", 5) + listen.get("grace_secs", 10)
    got = pod.get("terminationGracePeriodSeconds", 30)
    if got < need + 1:
        problem(case, f"terminationGracePeriodSeconds {got} does not cover drain + grace ({need} s)")


def check_config(case, objects, c):
    """The rendered config file passes the binary's own validation."""
    config = next(
        (o["data"]["config.yaml"] for o in find(objects, "ConfigMap") if "config.yaml" in o.get("data", {})),
        None,
    )
    if config is None:
        problem(case, "no ConfigMap with config.yaml")
        return
    if not os.path.exists(BINARY):
        problem(case, f"{BINARY} not built (cargo build)")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAW_AUTHZ_")}
    for e in c.get("env", []):
        if e["name"] == "CLAW_AUTHZ_REDIS__URL":
            env[e["name"]] = "redis://redis.example:6379/0"
    # The files the pod mounts, at the same paths under a temporary root.
    with tempfile.TemporaryDirectory() as root:
        trust = next((o["data"]["trust.yaml"] for o in find(objects, "ConfigMap") if "trust.yaml" in o["data"]), None)
        files = {"trust/trust.yaml": trust, "events-token/token": "a-token-from-the-secret\n"}
        # check-config only needs the TLS Secret's files to exist.
        for name in ("tls.crt", "tls.key", "ca.crt"):
            files[f"tls/{name}"] = "from the Secret\n"
        for rel, text in files.items():
            if text is not None:
                os.makedirs(os.path.dirname(f"{root}/{rel}"), exist_ok=True)
                with open(f"{root}/{rel}", "w") as f:
                    f.write(text)
        path = f"{root}/config.yaml"
        with open(path, "w") as f:
            f.write(config.replace("/etc/claw-authz/", f"{root}/").replace("/var/lib/claw-authz/", f"{root}/state/"))
        run = subprocess.run([BINARY, "check-config", "--config", path], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            problem(case, f"check-config refused the rendered config: {run.stderr.strip()}")


def check_crds(case, objects):
    for o in find(objects, "ServiceMonitor"):
        endpoint = o["spec"]["endpoints"][0]
        if (endpoint.get("port"), endpoint.get("path")) != ("admin", "/metrics"):
            problem(case, f"ServiceMonitor scrapes {endpoint}")
    for o in find(objects, "PrometheusRule"):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(o["spec"], f)
        run = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        os.unlink(f.name)
        if run.returncode != 0:
            problem(case, f"promtool refused the PrometheusRule: {run.stdout}{run.stderr}")


def main():
    cases = [("defaults", {})]
    for name in sorted(os.listdir(f"{CHART}/ci")):
        if name.endswith(".yaml"):
            with open(f"{CHART}/ci/{name}") as f:
                cases.append((name, helm.values_from_yaml(f.read())))
    expectations = {
        "defaults": {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"},
        "sidecar-values.yaml": {"Deployment", "Service", "ConfigMap", "NetworkPolicy"},
        "service-redis-hpa-values.yaml": {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"},
        "all-optional-values.yaml": {
            "Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule", "NetworkPolicy",
        },
    }
    with helm.Chart.load(CHART) as chart:
        for case, values in cases:
            lint(case, values)
            try:
                objects = render(chart, case, values)
            except helm.HelmError as e:
                problem(case, f"render: {e}")
                continue
            check_objects(case, objects)
            check_crds(case, objects)
            kinds = sorted({o["kind"] for o in objects})
            missing = expectations.get(case, set()) - set(kinds)
            if missing:
                problem(case, f"missing {sorted(missing)}")
            if case == "sidecar-values.yaml":
                d = find(objects, "Deployment")[0]
                if not (container(d, "envoy") and container(d, "app")):
                    problem(case, "the sidecar pod lacks envoy or app")
                envoy = next(o for o in find(objects, "ConfigMap") if "envoy.yaml" in o["data"])
                if "envoy.filters.http.ext_authz" not in envoy["data"]["envoy.yaml"]:
                    problem(case, "the Envoy config has no ext_authz filter")
                # Envoy reaches claw-authz over the Unix socket both containers mount.
                pipe = "pipe: { path: /var/run/claw-authz/grpc.sock }"
                if pipe not in envoy["data"]["envoy.yaml"] or "port_value: 9001" in envoy["data"]["envoy.yaml"]:
                    problem(case, "the Envoy config does not reach claw-authz over the Unix socket")
                config = next(o["data"]["config.yaml"] for o in find(objects, "ConfigMap") if "config.yaml" in o["data"])
                if yaml.safe_load(config)["listen"]["grpc"] != "unix:/var/run/claw-authz/grpc.sock":
                    problem(case, "claw-authz does not listen on the Unix socket")
                for name in ("envoy", "claw-authz"):
                    mounts = {m["mountPath"] for m in container(d, name).get("volumeMounts", [])}
                    if "/var/run/claw-authz" not in mounts:
                        problem(case, f"{name} does not mount the socket's directory")
                probe = container(d, "claw-authz")["readinessProbe"]
                if probe.get("httpGet", {}).get("path") != "/readyz":
                    problem(case, f"over the socket, readiness asks /readyz, not {probe}")
            if case == "service-redis-hpa-values.yaml":
                hpa = find(objects, "HorizontalPodAutoscaler")[0]["spec"]
                if (hpa["minReplicas"], hpa["maxReplicas"]) != (3, 12):
                    problem(case, f"HPA bounds {hpa['minReplicas']}..{hpa['maxReplicas']}")
                if "replicas" in find(objects, "Deployment")[0]["spec"]:
                    problem(case, "an HPA-managed Deployment must not set replicas")
            counts = ", ".join(f"{k} x{len(find(objects, k))}" for k in kinds)
            print(f"[helm] {case}: {counts}")

        for name in sorted(os.listdir(f"{CHART}/ci/bad")):
            with open(f"{CHART}/ci/bad/{name}") as f:
                values = helm.values_from_yaml(f.read())
            try:
                chart.validate_schema(chart.merge_values(values))
                problem(f"bad/{name}", "the schema accepted it")
            except helm.HelmValuesError as e:
                print(f"[helm] bad/{name}: refused ({' '.join(str(e).split())[:110]})")
        refused_by_templates = {
            "3 replicas on the file store": {"replicaCount": 3},
            "a redis store without its Secret": {"nonce": {"store": "redis"}},
            "sidecar without an app image": {"mode": "sidecar"},
            "client auth without a TLS Secret": {"tls": {"clientAuth": True}},
            "an allowlist without client auth": {
                "tls": {"existingSecret": "tls", "allowedClients": ["spiffe://x/y"]}
            },
            "the drain set through extraConfig": {"extraConfig": {"listen": {"drain_secs": 30}}},
            "the sidecar's socket moved through extraConfig": {
                "mode": "sidecar",
                "sidecar": {"app": {"image": "app:1"}},
                "extraConfig": {"listen": {"grpc": "0.0.0.0:9001"}},
            },
            "TLS on the sidecar's Unix socket": {
                "mode": "sidecar",
                "sidecar": {"app": {"image": "app:1"}},
                "tls": {"existingSecret": "tls"},
            },
        }
        for what, values in refused_by_templates.items():
            try:
                chart.render(chart.merge_values(values), name="claw", namespace="agents")
                problem(what, "rendered, should be refused")
            except helm.HelmError as e:
                print(f"[helm] {what}: refused ({str(e).splitlines()[-1][-90:]})")

    if problems:
        print(f"helm check: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        sys.exit(1)
    print("helm check: ok")


if __name__ == "__main__":
    main()
