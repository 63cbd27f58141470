//! Rules loading: any text as a rules file, through `config::parse` (figment + TOML) and
//! `RuleSet::compile` (regexes, templates, resource overrides, PromQL checks). Invariants:
//! no panic; a compiled rule renders its query without panicking (resource rules too); every
//! problem names a rule or field.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use kube_metrics_bridge::rules::resource_metrics::ComputeResource;
use kube_metrics_bridge::rules::template::QueryArgs;
use kube_metrics_bridge::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kube_metrics_bridge_fuzz::let_caught_panics_unwind();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = kube_metrics_bridge::config::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    let set = match RuleSet::compile(&file) {
        Ok(set) => set,
        Err(problems) => {
            for p in &problems.0 {
                assert!(!p.to_string().is_empty());
            }
            return;
        }
    };
    if let Some(rr) = &set.resource_rules {
        for resource in ComputeResource::ALL {
            let rule = rr.rule(resource);
            assert!(!rule.node_labels().is_empty());
            let _ = rule.pod_query(Some("default"));
            let _ = rule.pod_query(None);
            let _ = rule.node_query();
        }
    }
    let mut values = BTreeMap::new();
    values.insert("namespace".to_string(), "default".to_string());
    let group_by = ["pod".to_string()];
    for rule in set.all_rules() {
        let _ = rule.keeps_series("http_requests_total");
        let _ = rule.metric_name("http_requests_total");
        let _ = rule.metrics_query.render_query(&QueryArgs {
            series: "http_requests_total",
            label_matchers: r#"namespace="default",pod!="""#,
            label_values_by_name: &values,
            group_by: &group_by,
        });
    }
});
