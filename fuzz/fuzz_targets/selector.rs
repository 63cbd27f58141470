//! Label selectors: `selector::parse` on any text. Invariants: no panic; a parsed selector
//! prints a canonical string that parses back to the same selector and prints the same
//! again; its PromQL matchers parse as PromQL and match what the requirement says for its
//! own values; its `metav1.LabelSelector` JSON names every requirement.
#![no_main]

use std::collections::BTreeMap;

use kube_metrics_bridge::promql::join_matchers;
use kube_metrics_bridge::selector::{self, Operator};
use kube_metrics_bridge_fuzz::vector_selector_matchers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kube_metrics_bridge_fuzz::let_caught_panics_unwind();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = selector::parse(text) else {
        return;
    };
    let canonical = sel.to_string();
    let again = selector::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {text:?} fails: {e}"));
    assert_eq!(again, sel, "{text:?} -> {canonical:?}");
    assert_eq!(again.to_string(), canonical);

    let json = sel.to_label_selector_json();
    if sel.is_empty() {
        assert!(json.is_null());
    } else {
        let labels = json
            .get("matchLabels")
            .and_then(|v| v.as_object())
            .map_or(0, |m| m.len());
        let exprs = json
            .get("matchExpressions")
            .and_then(|v| v.as_array())
            .map_or(0, |a| a.len());
        assert_eq!(labels + exprs, sel.requirements().len(), "{json}");
    }

    // An object labelled with each requirement's first value (or nothing).
    let mut labels = BTreeMap::new();
    for r in sel.requirements() {
        if let Some(v) = r.values.first() {
            labels.entry(r.key.clone()).or_insert_with(|| v.clone());
        }
    }
    let _ = sel.matches(&labels);

    let Ok(matchers) = sel.to_promql_matchers() else {
        return;
    };
    let q = format!("m{{{}}}", join_matchers(&matchers));
    let parsed = vector_selector_matchers(&q);
    assert_eq!(parsed.len(), sel.requirements().len(), "{q}");
    for (r, m) in sel.requirements().iter().zip(&parsed) {
        assert_eq!(r.key, m.name, "{q}");
        for v in &r.values {
            let want = matches!(r.op, Operator::Equals | Operator::In);
            assert_eq!(m.is_match(v), want, "{r} on value {v:?}: {q}");
        }
        match r.op {
            Operator::Exists => assert!(!m.is_match("") && m.is_match("x"), "{q}"),
            Operator::DoesNotExist => assert!(m.is_match("") && !m.is_match("x"), "{q}"),
            _ => {}
        }
    }
});
