"""values.schema.json turns bad values away at install time, naming the key."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from chartkit import CHART, VALUE_SETS, helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())

# id -> (override, the key the error must name, words the message must contain)
BAD_VALUES = {
    "log-format-unknown": ({"operator": {"logFormat": "xml"}}, "operator.logFormat", "'human', 'json'"),
    "replicas-zero": ({"operator": {"replicas": 0}}, "operator.replicas", "minimum"),
    "replicas-as-string": ({"operator": {"replicas": "2"}}, "operator.replicas", "not of type 'integer'"),
    "two-replicas-without-peering": ({"operator": {"peering": {"enabled": False}}}, "operator.replicas", "1 was expected"),
    "metrics-port-out-of-range": ({"operator": {"metricsPort": 70000}}, "operator.metricsPort", "maximum"),
    "namespace-not-a-dns-label": ({"operator": {"watchNamespaces": ["Speech_A"]}}, "operator.watchNamespaces.0", "does not match"),
    "digest-not-sha256": ({"operator": {"image": {"digest": "latest"}}}, "operator.image.digest", "does not match"),
    "pull-policy-typo": ({"operator": {"image": {"pullPolicy": "always"}}}, "operator.image.pullPolicy", "'Always'"),
    "root-operator": ({"operator": {"podSecurityContext": {"runAsNonRoot": False}}}, "operator.podSecurityContext.runAsNonRoot", "True was expected"),
    "privilege-escalation": ({"operator": {"securityContext": {"allowPrivilegeEscalation": True}}},
                             "operator.securityContext.allowPrivilegeEscalation", "False was expected"),
    "bad-memory-quantity": ({"operator": {"resources": {"limits": {"memory": "lots"}}}}, "operator.resources.limits.memory", "does not match"),
    "gpu-switch-as-string": ({"workers": {"gpu": "no"}}, "workers.gpu", "not of type 'boolean'"),
    "unknown-top-level-key": ({"opertor": {}}, "", "'opertor' was unexpected"),
    "unknown-nested-key": ({"monitoring": {"podMonitor": {"enable": True}}}, "monitoring.podMonitor", "'enable' was unexpected"),
    "scrape-interval-not-a-duration": ({"monitoring": {"podMonitor": {"interval": "15 seconds"}}}, "monitoring.podMonitor.interval", "does not match"),
    "drop-ratio-above-one": ({"monitoring": {"prometheusRule": {"droppedFramesRatio": 5}}},
                             "monitoring.prometheusRule.droppedFramesRatio", "maximum"),
    "egress-cidr-not-a-cidr": ({"networkPolicy": {"operatorEgressCIDRs": ["10.0.0.1"]}}, "networkPolicy.operatorEgressCIDRs.0", "does not match"),
}


def merged(override: dict) -> dict:
    def merge(base, extra):
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out
    return merge(DEFAULTS, override)


def test_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("values_id", VALUE_SETS)
def test_defaults_and_supported_value_sets_pass(values_id):
    jsonschema.Draft7Validator(SCHEMA).validate(merged(VALUE_SETS[values_id]))


@pytest.mark.parametrize("case", BAD_VALUES)
def test_schema_rejects_bad_value_naming_the_key(case):
    override, key, words = BAD_VALUES[case]
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(merged(override)))
    assert errors, f"{case}: accepted"
    described = [(".".join(map(str, e.absolute_path)), e.message) for e in errors]
    assert any(path == key and words in msg for path, msg in described), described


@pytest.mark.parametrize("case", BAD_VALUES)
def test_helm_refuses_to_render_bad_values(case):
    # The check users meet: Helm validates values.schema.json before rendering.
    override, key, _ = BAD_VALUES[case]
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmError) as caught:
            chart.render(values=override, name="speechops", namespace="speechops-system")
    leaf = key.split(".")[-1] if key and not key.split(".")[-1].isdigit() else key.split(".")[-2] if key else "opertor"
    assert leaf in str(caught.value), str(caught.value)
