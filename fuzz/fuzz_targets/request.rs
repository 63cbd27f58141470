//! The request path: `request::parse(path, query)` on anything a client can send, then, for
//! metric requests, the PromQL the bridge would run. Invariants: parsing never panics, and a
//! parsed request renders a query that Prometheus' grammar reads as one vector selector whose
//! matchers are exactly the request's namespace, object and selector values (so nothing in a
//! request can change a query's structure).
#![no_main]

use std::sync::OnceLock;

use kube_metrics_bridge::discovery::{CustomMetric, ExternalMetric};
use kube_metrics_bridge::kube::resources::{ResourceMapper, StaticMapper};
use kube_metrics_bridge::query::{custom_query, external_query, Scope};
use kube_metrics_bridge::request::{self, Route, Target};
use kube_metrics_bridge::rules::RuleSet;
use kube_metrics_bridge_fuzz::{is_equal, only, split_once, vector_selector_matchers};
use libfuzzer_sys::fuzz_target;

const RULES: &str = r#"
[[rules]]
series_query = 'http_requests_total{namespace!="",pod!=""}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
metrics_query = '<<.Series>>{<<.LabelMatchers>>}'

[[external_rules]]
series_query = 'queue_messages_ready{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = '<<.Series>>{<<.LabelMatchers>>}'
"#;

fn rules() -> &'static (RuleSet, StaticMapper) {
    static RULES_SET: OnceLock<(RuleSet, StaticMapper)> = OnceLock::new();
    RULES_SET.get_or_init(|| {
        let file = kube_metrics_bridge::config::parse(RULES, std::path::Path::new("fuzz.toml"))
            .expect("fuzz rules parse");
        let set = RuleSet::compile(&file).expect("fuzz rules compile");
        (set, StaticMapper::builtin())
    })
}

fuzz_target!(|data: &[u8]| {
    kube_metrics_bridge_fuzz::let_caught_panics_unwind();
    // `path?query`, as the server splits a request target.
    let (path, query) = split_once(data, b'?');
    let (Ok(path), Ok(query)) = (std::str::from_utf8(path), std::str::from_utf8(query)) else {
        return;
    };
    let Ok(route) = request::parse(path, query) else {
        return;
    };
    let _ = route.label();
    let (set, mapper) = rules();
    match route {
        Route::Custom(req) => {
            let Some(resource) = mapper.lookup(&req.resource) else {
                return;
            };
            let resource_label = resource.singular.clone();
            let metric = CustomMetric {
                rule: set.custom[0].id,
                series: "http_requests_total".into(),
                resource,
                resource_label: resource_label.clone(),
            };
            let scope = match &req.target {
                Target::Named(name) => Scope::Object(name),
                Target::All(_) => Scope::Every,
            };
            let Ok(q) = custom_query(
                &set.custom[0],
                &metric,
                req.namespace.as_deref(),
                &scope,
                &req.metric_selector,
            ) else {
                return;
            };
            let matchers = vector_selector_matchers(&q);
            if let Some(ns) = &req.namespace {
                if resource_label != "namespace" {
                    assert!(is_equal(only(&matchers, "namespace", &q), ns), "{q}");
                }
            }
            if let Target::Named(name) = &req.target {
                assert!(
                    matchers
                        .iter()
                        .any(|m| m.name == resource_label && is_equal(m, name)),
                    "{q}"
                );
            }
            let selector_matchers = req.metric_selector.requirements().len();
            let expected = selector_matchers + 1 + usize::from(req.namespace.is_some());
            assert_eq!(matchers.len(), expected, "{q}");
        }
        Route::External(req) => {
            let metric = ExternalMetric {
                rule: set.external[0].id,
                series: "queue_messages_ready".into(),
            };
            let Ok(q) = external_query(&set.external[0], &metric, &req.namespace, &req.selector)
            else {
                return;
            };
            let matchers = vector_selector_matchers(&q);
            assert_eq!(matchers.len(), req.selector.requirements().len() + 1, "{q}");
            assert!(
                matchers
                    .iter()
                    .any(|m| m.name == "namespace" && is_equal(m, &req.namespace)),
                "{q}"
            );
        }
        _ => {}
    }
});
