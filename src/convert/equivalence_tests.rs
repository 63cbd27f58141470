//! Converted rules render the same PromQL as prometheus-adapter for the same request.
//!
//! `integration/testdata/adapter/` holds configs modelled on prometheus-adapter's docs
//! (config-walkthrough.md, config.md, externalmetrics.md) and the Helm chart's default rules,
//! `cases.json` (config, rule, series, request) and `expected.json`: what prometheus-adapter's
//! own `pkg/naming` (v0.12.0) answers for each case, produced by the Go program in
//! `oracle/` (`cd oracle && go run . ../cases.json > ../expected.json`). Per case we compare whether the
//! series is kept, the metric name and the query text. A case with `bridge` is a deliberate
//! difference (`why` says which); it must really differ from prometheus-adapter's answer.
//!
//! Requests are compared at the rendering layer, as prometheus-adapter's `QueryForSeries`
//! takes them: a named object (`namespaces/ns/pods/NAME/m` -> namespace "ns", object NAME;
//! `namespaces/NAME/metrics/m` -> no namespace, object NAME). `*` requests are left out on
//! purpose: we render `pod!=""` where prometheus-adapter lists every name (see README).

use std::path::PathBuf;

use serde::Deserialize;

use crate::discovery::{CustomMetric, ExternalMetric};
use crate::kube::resources::{ResourceMapper, StaticMapper};
use crate::query::{custom_query, external_query, Scope};
use crate::rules::RuleSet;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    config: String,
    api: String,
    rule: usize,
    series: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    object: String,
    #[serde(default)]
    selector: String,
    bridge: Option<String>,
    why: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Expected {
    name: String,
    kept: bool,
    metric: Option<String>,
    query: Option<String>,
    error: Option<String>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration/testdata/adapter")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn converted(name: &str) -> super::Conversion {
    super::convert(&read(name), name, None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn compiled(name: &str) -> RuleSet {
    RuleSet::compile(&converted(name).config).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// (kept, metric name, query) as we have them for one case.
fn ours(case: &Case) -> (bool, Option<String>, String) {
    let set = compiled(&case.config);
    let rule = match case.api.as_str() {
        "custom" => &set.custom[case.rule],
        "external" => &set.external[case.rule],
        other => panic!("{}: api {other:?}", case.name),
    };
    let kept = rule.keeps_series(&case.series);
    let metric = kept.then(|| rule.metric_name(&case.series)).flatten();
    let selector = crate::selector::parse(&case.selector)
        .unwrap_or_else(|e| panic!("{}: selector: {e:?}", case.name));
    let namespace = (!case.namespace.is_empty()).then_some(case.namespace.as_str());
    let query = if case.api == "custom" {
        let mapper = StaticMapper::builtin();
        let name = if case.group.is_empty() {
            case.resource.clone()
        } else {
            format!("{}.{}", case.resource, case.group)
        };
        let resource = mapper
            .lookup(&name)
            .unwrap_or_else(|| panic!("{}: no resource {name}", case.name));
        let label = rule
            .resources
            .label_for_resource(&resource, &mapper)
            .unwrap_or_else(|| panic!("{}: no label for {name}", case.name));
        let metric = CustomMetric {
            rule: rule.id,
            series: case.series.clone(),
            resource,
            resource_label: label,
        };
        custom_query(
            rule,
            &metric,
            namespace,
            &Scope::Object(&case.object),
            &selector,
        )
    } else {
        let metric = ExternalMetric {
            rule: rule.id,
            series: case.series.clone(),
        };
        external_query(rule, &metric, namespace.unwrap_or(""), &selector)
    }
    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    (kept, metric, query)
}

#[test]
fn converted_rules_render_what_prometheus_adapter_renders() {
    let cases: Vec<Case> = serde_json::from_str(&read("cases.json")).expect("cases.json");
    let expected: Vec<Expected> =
        serde_json::from_str(&read("expected.json")).expect("expected.json");
    assert_eq!(
        cases.iter().map(|c| &c.name).collect::<Vec<_>>(),
        expected.iter().map(|e| &e.name).collect::<Vec<_>>(),
        "expected.json is stale: regenerate it with the oracle"
    );
    let mut failures = Vec::new();
    let mut identical = 0;
    for (case, want) in cases.iter().zip(&expected) {
        let (kept, metric, query) = ours(case);
        if kept != want.kept || (kept && metric != want.metric) {
            failures.push(format!(
                "{}: series kept/name: ours {kept} {metric:?}, prometheus-adapter {} {:?}",
                case.name, want.kept, want.metric
            ));
        }
        match &case.bridge {
            None => match (&want.query, &want.error) {
                (Some(q), None) if *q == query => identical += 1,
                _ => failures.push(format!(
                    "{}:\n  ours:               {query}\n  prometheus-adapter: {:?} {}",
                    case.name,
                    want.query,
                    want.error.as_deref().unwrap_or("")
                )),
            },
            Some(deliberate) => {
                assert!(
                    case.why.is_some(),
                    "{}: a deliberate difference needs `why`",
                    case.name
                );
                if *deliberate != query {
                    failures.push(format!(
                        "{}:\n  ours:     {query}\n  intended: {deliberate}",
                        case.name
                    ));
                }
                if want.error.is_none() && want.query.as_deref() == Some(query.as_str()) {
                    failures.push(format!(
                        "{}: marked as a difference but prometheus-adapter renders the same; drop `bridge`",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(identical >= 20, "only {identical} identical cases");
}

#[test]
fn every_fixture_converts_to_a_file_check_accepts() {
    for name in [
        "walkthrough.yaml",
        "config-doc.yaml",
        "externalmetrics.yaml",
        "helm-rendered.yaml",
        "helm-values.yaml",
    ] {
        let c = converted(name);
        let back = crate::config::parse(&c.toml, std::path::Path::new(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", c.toml));
        assert_eq!(back, c.config, "{name}");
        RuleSet::compile(&back).unwrap_or_else(|e| panic!("{name}: {e}\n{}", c.toml));
    }
}

#[test]
fn helm_default_true_is_the_chart_rendered_config() {
    let values = converted("helm-values.yaml");
    let rendered = converted("helm-rendered.yaml");
    assert_eq!(values.config.rules, rendered.config.rules);
    assert_eq!(values.config.external_rules, rendered.config.external_rules);
    assert_eq!(
        values.config.prometheus.url,
        "http://prometheus.monitoring.svc:9090"
    );
    assert!(values.had_resource_rules);
}
