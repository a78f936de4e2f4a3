"""The Helm chart's specification: what it renders for each values set, and what it refuses.

Renders through Helm's own library (helm-python-sdk, in the cached tools virtualenv that
.ci/chart-checks builds), exactly like `helm template`. A missing tool fails these tests: it never
skips them.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "kallglot-receiver"
CI_VALUES = {
    path.name.removesuffix("-values.yaml"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))
}
CONTRACT_METRICS = {
    "kallglot_api_credits_remaining",
    "kallglot_api_credits_used",
    "kallglot_api_ratelimit_remaining",
    "kallglot_api_ratelimit_limit",
    "kallglot_api_requests_total",
    "kallglot_api_request_duration_seconds",
    "receiver_events_total",
    "receiver_analyses_started_total",
    "receiver_analyses_finished_total",
    "receiver_analysis_duration_seconds",
    "receiver_call_to_delivery_seconds",
    "receiver_deliveries_total",
    "receiver_delivery_duration_seconds",
    "receiver_backlog",
    "receiver_oldest_pending_seconds",
    "receiver_dead_letters",
    "receiver_credits_paused",
    "receiver_handler_circuit_open",
    "receiver_analyses_skipped_total",
    # operational metrics beside the contract's
    "receiver_store_up",
    "receiver_calls",
    "receiver_orphaned_deliveries",
    "receiver_carrier_events_unmatched",
    "receiver_http_request_duration_seconds",
    "receiver_build_info",
    "receiver_replicas",
    "kallglot_api_rate_share",
}
CREDENTIALS = ("--set", "secrets.apiKey=sk_test_x", "--set", "secrets.webhookSecrets={kg_secret}")


@functools.cache
def tools_python() -> str:
    explicit = os.environ.get("KALLGLOT_CI_TOOLS_PYTHON")
    if explicit:
        return explicit
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "chart-checks"), "--tools-python"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, (
        f"cannot set up the chart tools (helm-python-sdk):\n{result.stderr[-3000:]}"
    )
    return result.stdout.strip().splitlines()[-1]


@functools.cache
def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools_python(), str(ROOT / "helm" / "render.py"), "template", str(CHART), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def render(*args: str) -> list[dict[str, Any]]:
    result = helm_template(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_set(name: str, *args: str) -> list[dict[str, Any]]:
    return render("-f", str(CI_VALUES[name]), *args)


def refusal(*args: str) -> str:
    result = helm_template(*args)
    assert result.returncode != 0, "the chart rendered values it must refuse"
    return result.stderr


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind}*{name_suffix}, found {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def receiver(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in pod_spec(docs)["containers"] if c["name"] == "receiver")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_ci_values_sets_cover_defaults_postgresql_and_sidecar() -> None:
    assert {"default", "postgresql", "sidecar"} <= set(CI_VALUES)


def test_defaults_render_without_any_values() -> None:
    assert {"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount"} <= kinds(render())


def test_defaults_run_one_sqlite_replica_on_a_persistent_volume() -> None:
    docs = render_set("default")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert env_of(receiver(docs))["RECEIVER_DATABASE_URL"] == "sqlite:////data/receiver.db"
    claim = one(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert {"name": "data", "mountPath": "/data"} in receiver(docs)["volumeMounts"]


@pytest.mark.parametrize("args", [("--set", "replicaCount=2"), ("--set", "replicaCount=3")], ids=["2", "3"])
def test_sqlite_with_more_than_one_replica_is_refused_with_a_clear_message(args: tuple[str, ...]) -> None:
    message = refusal(*args)
    assert "SQLite supports exactly one replica" in message
    assert "database.type=postgresql" in message


def test_sqlite_with_autoscaling_is_refused() -> None:
    assert "autoscaling.enabled needs PostgreSQL" in refusal("--set", "autoscaling.enabled=true")


def test_postgresql_without_a_url_is_refused() -> None:
    assert "needs the URL" in refusal("--set", "database.type=postgresql", "--set", "replicaCount=3")


def test_postgresql_three_replicas_migrate_in_a_hook_job_and_not_on_start() -> None:
    docs = render_set("postgresql")
    assert one(docs, "Deployment")["spec"].get("replicas", 3) == 3
    assert "PersistentVolumeClaim" not in kinds(docs)
    assert env_of(receiver(docs))["RECEIVER_MIGRATE_ON_START"] == "false"
    job = one(docs, "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert env_of(job["spec"]["template"]["spec"]["containers"][0])["RECEIVER_DATABASE_URL"] == {
        "secretKeyRef": {"name": "receiver-postgres", "key": "uri"}
    }


def test_postgresql_replicas_spread_over_nodes_and_zones() -> None:
    keys = {c["topologyKey"] for c in pod_spec(render_set("postgresql"))["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_postgresql_set_renders_every_optional_object() -> None:
    assert {
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "PodDisruptionBudget",
        "Ingress",
        "Job",
    } <= kinds(render_set("postgresql"))


def test_existing_secret_replaces_the_charts_secret() -> None:
    docs = render_set("postgresql")
    assert not [d for d in docs if d["kind"] == "Secret"]
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "kallglot-receiver-credentials"
    env = env_of(receiver(docs))
    assert env["KALLGLOT_API_KEY_FILE"] == "/var/run/secrets/kallglot-receiver/KALLGLOT_API_KEY"
    assert env["CRM_WEBHOOK_SECRET"] == {
        "secretKeyRef": {"name": "kallglot-receiver-credentials", "key": "CRM_WEBHOOK_SECRET"}
    }


def test_secrets_reach_the_receiver_as_files_not_variables() -> None:
    docs = render(
        *CREDENTIALS,
        "--set",
        "secrets.adminToken=admin-token-123456",
        "--set",
        "secrets.handlerCredentials.CRM_WEBHOOK_SECRET=whsec_abc",
    )
    container = receiver(docs)
    env = env_of(container)
    mount = "/var/run/secrets/kallglot-receiver"
    for name in ("KALLGLOT_API_KEY", "KALLGLOT_WEBHOOK_SECRETS", "RECEIVER_ADMIN_TOKEN"):
        assert env[f"{name}_FILE"] == f"{mount}/{name}"
        assert name not in env
    assert "envFrom" not in container  # no key of the Secret becomes a variable wholesale
    assert env["CRM_WEBHOOK_SECRET"]["secretKeyRef"]["key"] == "CRM_WEBHOOK_SECRET"  # ${VAR} in handlers
    assert {"name": "secrets", "mountPath": mount, "readOnly": True} in container["volumeMounts"]
    init = pod_spec(docs)["initContainers"][0]
    assert env_of(init)["KALLGLOT_API_KEY_FILE"] == f"{mount}/KALLGLOT_API_KEY"


def test_secrets_as_variables_when_files_are_switched_off() -> None:
    container = receiver(render(*CREDENTIALS, "--set", "secrets.mountAsFiles=false"))
    assert container["envFrom"] == [{"secretRef": {"name": "kallglot-receiver"}}]
    assert not [
        name for name in env_of(container) if name.endswith("_FILE") and name != "RECEIVER_CONFIG_FILE"
    ]


def test_credentials_go_to_the_secret_not_the_configmap() -> None:
    docs = render(*CREDENTIALS, "--set", "secrets.handlerCredentials.CRM_WEBHOOK_SECRET=whsec_abc")
    assert set(one(docs, "Secret")["data"]) == {
        "KALLGLOT_API_KEY",
        "KALLGLOT_WEBHOOK_SECRETS",
        "CRM_WEBHOOK_SECRET",
    }
    assert "sk_test_x" not in json.dumps(one(docs, "ConfigMap"))


def test_handlers_and_settings_land_in_the_config_file() -> None:
    docs = render_set("postgresql")
    config = yaml.safe_load(one(docs, "ConfigMap", "kallglot-receiver")["data"]["config.yaml"])
    assert [h["name"] for h in config["handlers"]] == ["crm-bridge", "archive"]
    assert config["handlers"][0]["secret"] == "${CRM_WEBHOOK_SECRET}"
    assert config["credit_reserve"] == 100
    assert env_of(receiver(docs))["RECEIVER_CONFIG_FILE"] == "/etc/kallglot-receiver/config.yaml"


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(*args: str) -> str:
        annotations = one(render(*args), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum() != checksum("--set", "config.logLevel=DEBUG")


@pytest.mark.parametrize("values_set", sorted(CI_VALUES))
def test_every_container_runs_non_root_read_only_without_capabilities(values_set: str) -> None:
    docs = render_set(values_set)
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in {"Deployment", "Job"}]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert "limits" in container["resources"], container["name"]


@pytest.mark.parametrize("values_set", sorted(CI_VALUES))
def test_probes_use_healthz_and_readyz(values_set: str) -> None:
    container = receiver(render_set(values_set))
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["port"] == "http"
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "admin", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert container["args"][:5] == ["serve", "--host", "0.0.0.0", "--port", "8080"]  # noqa: S104
    env = env_of(container)
    assert (env["RECEIVER_PORT"], env["RECEIVER_ADMIN_PORT"]) == ("8080", "9090")


@pytest.mark.parametrize("values_set", sorted(CI_VALUES))
def test_grace_period_outlasts_the_drain(values_set: str) -> None:
    docs = render_set(values_set)
    config = yaml.safe_load(one(docs, "ConfigMap", "kallglot-receiver")["data"]["config.yaml"])
    command = receiver(docs).get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["", "0"])
    pre_stop = int(command[1])
    assert pod_spec(docs)["terminationGracePeriodSeconds"] > config["shutdown_grace_seconds"] + pre_stop


def test_default_grace_period_is_30_seconds_over_a_20_second_drain() -> None:
    docs = render()
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert (pod_spec(docs)["terminationGracePeriodSeconds"], config["shutdown_grace_seconds"]) == (30, 20)


def test_a_grace_period_shorter_than_the_drain_is_refused() -> None:
    message = refusal("--set", "terminationGracePeriodSeconds=20")
    assert "terminationGracePeriodSeconds (20) must exceed" in message


def test_values_outside_the_schema_are_refused() -> None:
    message = refusal("--set", "database.type=mysql")
    assert "/database/type" in message


def test_sidecar_mode_puts_the_platform_in_the_receivers_pod_posting_to_localhost() -> None:
    docs = render_set("sidecar")
    containers = {c["name"]: c for c in pod_spec(docs)["containers"]}
    assert set(containers) == {"receiver", "telephony"}
    assert (
        env_of(containers["telephony"])["KALLGLOT_RECEIVER_EVENTS_URL"]
        == "http://127.0.0.1:8080/events/call-ended"
    )
    assert {p["name"] for p in one(docs, "Service")["spec"]["ports"]} == {"http", "admin", "sip"}


def test_sidecar_without_containers_is_refused() -> None:
    assert "sidecar.containers" in refusal(*CREDENTIALS, "--set", "sidecar.enabled=true")


def test_pdb_always_lets_one_pod_go() -> None:
    assert one(render(), "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "kallglot-receiver",
                "app.kubernetes.io/instance": "kallglot-receiver",
            }
        },
    }


def _metric_names(expression: str) -> set[str]:
    names = set(re.findall(r"\b((?:kallglot|receiver)_[a-z_]+)", expression))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_alerts_use_only_contract_metrics_and_each_has_a_runbook_section() -> None:
    rules = one(render_set("postgresql"), "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert len(rules) == 13
    runbook = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    headings = {re.sub(r"[^a-z0-9]", "", h.lower()) for h in re.findall(r"^#+ (.+)$", runbook, flags=re.M)}
    for rule in rules:
        assert _metric_names(rule["expr"]) <= CONTRACT_METRICS, rule["alert"]
        assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
        assert rule["alert"].lower() in headings, f"docs/operations.md has no section {rule['alert']}"


def test_dashboard_uses_only_contract_metrics_and_ships_as_a_labelled_configmap() -> None:
    dashboard = json.loads((CHART / "dashboards" / "kallglot-receiver.json").read_text(encoding="utf-8"))
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set().union(*(_metric_names(e) for e in expressions))
    assert used <= CONTRACT_METRICS
    assert {"kallglot_api_credits_remaining", "receiver_deliveries_total", "receiver_dead_letters"} <= used
    configmap = one(render_set("postgresql"), "ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["kallglot-receiver.json"]) == dashboard


STORE_WIDE = (
    "receiver_backlog",
    "receiver_oldest_pending_seconds",
    "receiver_dead_letters",
    "receiver_calls",
    "receiver_orphaned_deliveries",
    "receiver_carrier_events_unmatched",
    "receiver_replicas",
)


def test_dashboard_takes_the_max_of_store_wide_gauges_so_replicas_do_not_multiply_them() -> None:
    dashboard = json.loads((CHART / "dashboards" / "kallglot-receiver.json").read_text(encoding="utf-8"))
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for name in STORE_WIDE:
        using = [e for e in expressions if re.search(rf"\b{name}\b", e)]
        assert using, f"no panel shows {name}"
        for expression in using:
            assert re.match(r"^max(\s+by\s*\([^)]*\))?\s*\(", expression), expression
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Store up", "Kallglot errors by code", "Malformed inbound events", "Rate-limit use"} <= titles


def test_the_plain_manifest_copy_of_the_dashboard_is_identical() -> None:
    assert (ROOT / "deploy" / "grafana" / "kallglot-receiver.json").read_bytes() == (
        CHART / "dashboards" / "kallglot-receiver.json"
    ).read_bytes()


@pytest.mark.parametrize("values_set", sorted(CI_VALUES))
def test_pre_stop_uses_no_action_newer_than_the_oldest_declared_kubernetes(values_set: str) -> None:
    # Chart.yaml declares >=1.25; the preStop `sleep` action exists only from 1.30.
    assert 'kubeVersion: ">=1.25.0-0"' in (CHART / "Chart.yaml").read_text(encoding="utf-8")
    pre_stop = receiver(render_set(values_set))["lifecycle"]["preStop"]
    assert pre_stop == {"exec": {"command": ["sleep", "3"]}}


def test_body_timeout_and_connection_limit_are_values() -> None:
    env = env_of(
        receiver(render("--set", "config.bodyTimeoutSeconds=5", "--set", "config.maxConnections=200"))
    )
    assert (env["RECEIVER_BODY_TIMEOUT_SECONDS"], env["RECEIVER_MAX_CONNECTIONS"]) == ("5", "200")
    defaults = env_of(receiver(render()))
    assert (defaults["RECEIVER_BODY_TIMEOUT_SECONDS"], defaults["RECEIVER_MAX_CONNECTIONS"]) == ("10", "1000")


def test_the_service_has_a_public_and_an_admin_port_and_the_ingress_only_the_public_one() -> None:
    docs = render_set("postgresql")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in one(docs, "Service")["spec"]["ports"]}
    assert ports == {"http": (8080, "http"), "admin": (9090, "admin")}
    backends = [
        path["backend"]["service"]["port"]
        for rule in one(docs, "Ingress")["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": "http"}]
    [endpoint] = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("admin", "/metrics")


def test_the_network_policy_admits_the_ingress_controller_publicly_and_named_peers_on_admin() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = render(*CREDENTIALS, "--set-json", f"networkPolicy.admin.from=[{json.dumps(monitoring)}]")
    rules = one(docs, "NetworkPolicy")["spec"]["ingress"]
    by_port = {rule["ports"][0]["port"]: rule for rule in rules}
    assert by_port["http"]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
        }
    ]
    assert by_port["admin"]["from"] == [monitoring]
    closed = {r["ports"][0]["port"] for r in one(render(*CREDENTIALS), "NetworkPolicy")["spec"]["ingress"]}
    assert closed == {"http"}  # no admin peers named: the admin port admits no one
    public = one(render(*CREDENTIALS, "--set", "networkPolicy.public.allowAll=true"), "NetworkPolicy")
    assert "from" not in public["spec"]["ingress"][0]


def test_extra_env_takes_a_map_or_a_list() -> None:
    as_map = env_of(receiver(render("--set", "extraEnv.OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:4318")))
    assert as_map["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4318"
    as_list = receiver(
        render("--set-json", 'extraEnv=[{"name":"A","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}]')
    )
    assert env_of(as_list)["A"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_service_monitor_relabelings_and_extra_alert_rules_are_values() -> None:
    relabel = [
        {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}
    ]
    rule = {"alert": "MyBacklog", "expr": "max(receiver_backlog) > 100", "for": "5m"}
    docs = render_set(
        "postgresql",
        "--set-json",
        f"metrics.serviceMonitor.relabelings={json.dumps(relabel)}",
        "--set-json",
        f"metrics.prometheusRule.additionalRules=[{json.dumps(rule)}]",
    )
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["relabelings"] == relabel
    assert one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"][-1] == rule


def test_helm_test_checks_readiness_and_in_sandbox_mode_sends_one_signed_event() -> None:
    plain = [d for d in render(*CREDENTIALS) if d["kind"] == "Pod"]
    assert [p["metadata"]["annotations"]["helm.sh/hook"] for p in plain] == ["test"]
    assert "/readyz" in plain[0]["spec"]["containers"][0]["command"][-1]
    sandbox = render("--set", "sandbox=true")
    pods = {d["metadata"]["name"]: d for d in sandbox if d["kind"] == "Pod"}
    sender = pods["kallglot-receiver-test-session-ended"]["spec"]["containers"][0]
    assert sender["args"][:2] == ["send", "session.ended"]
    assert "--sandbox" in receiver(sandbox)["args"]
    assert pod_spec(sandbox)["initContainers"][0]["args"] == ["check-config", "--sandbox"]


def test_the_chart_readme_and_schema_descriptions_are_generated_from_values() -> None:
    result = subprocess.run(
        [tools_python(), str(ROOT / "helm" / "readme.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| service.adminPort | int | `9090` |" in (CHART / "README.md").read_text(encoding="utf-8")


def test_the_chart_icon_exists_in_the_repository() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    prefix = "https://raw.githubusercontent.com/kallglot/kallglot-receiver/main/"
    assert chart["icon"].startswith(prefix)
    assert (ROOT / chart["icon"].removeprefix(prefix)).is_file()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


TELEPHONY = (
    "--set",
    "secrets.twilioAuthToken=twilio-auth-token-0123456789abcdef",
    "--set",
    f"secrets.telnyxPublicKey={base64.b64encode(bytes(range(32))).decode()}",
    "--set",
    "secrets.inboundBearerToken=pbx-bearer-token-0123456789abcdef",
    "--set",
    "config.publicUrl=https://calls.example.com",
    "--set",
    "config.endSession=true",
    "--set",
    "config.telnyxEndSession=false",
    "--set",
    "config.callSettleSeconds=15",
    "--set",
    "config.callEndedMapping.session_id=variables.kallglot_session",
    "--set",
    "config.adminShowPersonalData=true",
)


def test_carrier_secrets_reach_the_receiver_as_files_and_the_telnyx_key_as_a_variable() -> None:
    docs = render(*CREDENTIALS, *TELEPHONY)
    env = env_of(receiver(docs))
    mount = "/var/run/secrets/kallglot-receiver"
    for name in ("RECEIVER_TWILIO_AUTH_TOKEN", "RECEIVER_INBOUND_BEARER_TOKEN"):
        assert env[f"{name}_FILE"] == f"{mount}/{name}"
        assert name not in env
    # A public key: the setting has no _FILE form, so it comes from the Secret as a variable.
    assert env["RECEIVER_TELNYX_PUBLIC_KEY"] == {
        "secretKeyRef": {"name": "kallglot-receiver", "key": "RECEIVER_TELNYX_PUBLIC_KEY"}
    }
    assert {
        "RECEIVER_TWILIO_AUTH_TOKEN",
        "RECEIVER_TELNYX_PUBLIC_KEY",
        "RECEIVER_INBOUND_BEARER_TOKEN",
    } <= set(one(docs, "Secret")["data"])
    configmap = json.dumps(one(docs, "ConfigMap", "kallglot-receiver"))
    assert "twilio-auth-token" not in configmap
    assert "pbx-bearer-token" not in configmap


def test_carrier_and_operator_settings_land_in_the_config_file() -> None:
    config = yaml.safe_load(
        one(render(*CREDENTIALS, *TELEPHONY), "ConfigMap", "kallglot-receiver")["data"]["config.yaml"]
    )
    assert config["public_url"] == "https://calls.example.com"
    assert (config["end_session"], config["telnyx_end_session"]) == (True, False)
    assert "twilio_end_session" not in config  # null: follows end_session
    assert config["call_settle_seconds"] == 15
    assert config["call_ended_mapping"] == {"session_id": "variables.kallglot_session"}
    assert config["admin_show_personal_data"] is True
    defaults = yaml.safe_load(one(render(), "ConfigMap", "kallglot-receiver")["data"]["config.yaml"])
    assert (defaults["end_session"], defaults["admin_show_personal_data"]) == (False, False)
    assert "public_url" not in defaults
    assert "call_ended_mapping" not in defaults


def test_the_rendered_carrier_settings_pass_the_receivers_own_check_config(tmp_path: Path) -> None:
    """The pod's environment and files as the chart renders them, read by the receiver itself."""
    keys = (
        "--set",
        "secrets.apiKey=sk_test_0123456789abcdef",
        "--set",
        "secrets.webhookSecrets={" + "k" * 32 + "}",
    )
    docs = render(*keys, *TELEPHONY)
    secret = {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret")["data"].items()}
    (tmp_path / "config.yaml").write_text(
        one(docs, "ConfigMap", "kallglot-receiver")["data"]["config.yaml"], encoding="utf-8"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    for name, value in env_of(receiver(docs)).items():
        if isinstance(value, dict):
            env[name] = secret[value["secretKeyRef"]["key"]]
        elif name.endswith("_FILE") and name != "RECEIVER_CONFIG_FILE":
            key = name.removesuffix("_FILE")
            (tmp_path / key).write_text(secret[key] + "\n", encoding="utf-8")
            env[name] = str(tmp_path / key)
        elif name.startswith("RECEIVER_"):
            env[name] = str(value)
    env["RECEIVER_CONFIG_FILE"] = str(tmp_path / "config.yaml")
    env["RECEIVER_DATABASE_URL"] = f"sqlite:///{tmp_path}/receiver.db"

    result = subprocess.run(
        [sys.executable, "-m", "receiver", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "twilio-auth-token-0123456789abcdef" not in result.stdout + result.stderr
