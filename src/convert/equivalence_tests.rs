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
        "adapter-defaults.yaml",
        "kube-prometheus.yaml",
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
        values.config.prometheus.as_ref().map(|p| p.url.as_str()),
        Some("http://prometheus.monitoring.svc:9090")
    );
    assert!(values.config.resource_rules.is_some());
    assert_eq!(values.config.resource_rules, rendered.config.resource_rules);
}

/// Resource rules keep their templates; what changes is the arguments, on purpose: where
/// prometheus-adapter lists the namespace's pods (`namespace="default",pod=~"a|b"`, grouped
/// by `pod,container`) we ask for the whole namespace once, grouped by namespace too, so one
/// query serves every request there and a cluster-wide list is one query, not one per
/// namespace. Rendering the converted template with prometheus-adapter's arguments gives
/// prometheus-adapter's query (what its `Build` makes of the same template), so the
/// difference is only the arguments.
#[test]
fn resource_rules_keep_templates_and_change_only_the_arguments() {
    use crate::rules::resource_metrics::ComputeResource;
    use crate::rules::template::{QueryArgs, Template, TemplateKind};
    use std::collections::BTreeMap;

    let c = converted("adapter-defaults.yaml");
    let rr = c.config.resource_rules.as_ref().expect("resource rules");
    let cpu = rr.cpu.as_ref().expect("cpu");
    let template =
        Template::compile(&cpu.container_query, TemplateKind::MetricsQuery).expect("template");
    let adapter = template.render_query(&QueryArgs {
        series: "",
        label_matchers: r#"namespace="default",pod=~"a|b""#,
        label_values_by_name: &BTreeMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("pod".to_string(), "a|b".to_string()),
        ]),
        group_by: &["pod".to_string(), "container".to_string()],
    });
    assert_eq!(
        adapter,
        "sum by (pod,container) (\n  irate (\n      container_cpu_usage_seconds_total{namespace=\"default\",pod=~\"a|b\",container!=\"\",pod!=\"\"}[4m]\n  )\n)\n"
    );

    let set = compiled("adapter-defaults.yaml");
    let rules = set.resource_rules.as_ref().expect("compiled");
    let cpu = rules.rule(ComputeResource::Cpu);
    assert_eq!(
        cpu.pod_query(Some("default")).expect("query"),
        "sum by (namespace,pod,container) (\n  irate (\n      container_cpu_usage_seconds_total{namespace=\"default\",container!=\"\",pod!=\"\"}[4m]\n  )\n)\n"
    );
    assert_eq!(
        cpu.pod_query(None).expect("query"),
        "sum by (namespace,pod,container) (\n  irate (\n      container_cpu_usage_seconds_total{namespace!=\"\",container!=\"\",pod!=\"\"}[4m]\n  )\n)\n"
    );
    assert_eq!(
        cpu.node_query(),
        "sum by (node) (\n  irate(\n      node_cpu_usage_seconds_total{node!=\"\"}[4m]\n  )\n)\n"
    );
    let memory = rules.rule(ComputeResource::Memory);
    assert_eq!(
        memory.node_query(),
        "sum by (node) (\n  node_memory_working_set_bytes{node!=\"\"}\n)\n"
    );
    // The meaning is kept: window 5m, irate over 4m, and the disagreement is said (#555).
    assert_eq!(rules.window, std::time::Duration::from_secs(300));
    assert!(
        set.warnings.iter().any(
            |w| w.place == "resource_rules.cpu" && w.message.contains("prometheus-adapter#555")
        ),
        "{:?}",
        set.warnings
    );
}

/// kube-prometheus maps `instance` to nodes in its memory rule and `node` in its CPU rule;
/// each rule keeps its own node label, so both keep working.
#[test]
fn kube_prometheus_node_labels_differ_per_rule() {
    use crate::rules::resource_metrics::ComputeResource;

    let set = compiled("kube-prometheus.yaml");
    let rules = set.resource_rules.as_ref().expect("compiled");
    let cpu = rules.rule(ComputeResource::Cpu);
    let memory = rules.rule(ComputeResource::Memory);
    assert_eq!(cpu.node_labels(), ["node"]);
    assert_eq!(memory.node_labels(), ["instance"]);
    let node_memory = memory.node_query();
    assert!(
        node_memory.starts_with(
            "sum by (instance) (\n  node_memory_MemTotal_bytes{job=\"node-exporter\",instance!=\"\"}"
        ),
        "{node_memory}"
    );
    let node_cpu = cpu.node_query();
    assert!(
        node_cpu.contains("node_namespace_pod:kube_pod_info:{node!=\"\"}")
            && node_cpu.contains(
                "windows_cpu_time_total{mode=\"idle\", job=\"windows-exporter\",node!=\"\"}[4m]"
            ),
        "{node_cpu}"
    );
    assert_eq!(
        memory.pod_query(Some("monitoring")).expect("query"),
        "sum by (namespace,pod,container) (\n  container_memory_working_set_bytes{namespace=\"monitoring\",container!=\"\",pod!=\"\"}\n)\n"
    );
    // irate over 120s, 60s and 4m under a 5m window: warnings, not problems.
    assert_eq!(rules.window, std::time::Duration::from_secs(300));
    assert!(set.warnings.len() >= 3, "{:#?}", set.warnings);
}
