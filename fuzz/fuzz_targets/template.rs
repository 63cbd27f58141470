//! The `<< >>` template engine (Go text/template subset): any text compiled as a
//! `metrics_query` and as a `resources.template`, then rendered, turned into the resource
//! label regex, and checked as PromQL the way `RuleSet::compile` checks it at load time.
//! Invariants: no panic, no runaway output (rendering is bounded by the template's size and
//! its arguments').
#![no_main]

use std::collections::BTreeMap;

use kube_metrics_bridge::rules::template::{self, QueryArgs, RuleKind, Template, TemplateKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kube_metrics_bridge_fuzz::let_caught_panics_unwind();
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Template::compile(src, TemplateKind::MetricsQuery) {
        let mut values = BTreeMap::new();
        values.insert("namespace".to_string(), "default".to_string());
        values.insert("pod".to_string(), "web\\-0|web\\-1".to_string());
        let group_by = ["pod".to_string(), "namespace".to_string()];
        let args = QueryArgs {
            series: "http_requests_total",
            label_matchers: r#"namespace="default",pod=~"web\\-0|web\\-1""#,
            label_values_by_name: &values,
            group_by: &group_by,
        };
        let out = t.render_query(&args);
        assert!(
            out.len() <= 64 * (src.len() + 256),
            "{} bytes from {src:?}",
            out.len()
        );
        let _ = t.render_resource("apps", "deployment");
        for kind in [
            RuleKind::Custom,
            RuleKind::External { namespaced: true },
            RuleKind::External { namespaced: false },
        ] {
            let _ = template::validate_query_for(&t, "http_requests_total", kind);
        }
        assert!(t.resource_label_regex().is_err());
    }
    if let Ok(t) = Template::compile(src, TemplateKind::ResourceName) {
        let rendered = t.render_resource("apps", "deployment");
        if let Ok(re) = t.resource_label_regex() {
            // The regex finds group and resource back in the label the template renders.
            if let Some(c) = re.captures(&rendered) {
                assert!(c.name("resource").is_some(), "{src:?} -> {rendered:?}");
            }
        }
    }
});
