//! Quoting and regex escaping (`promql::quote`, `regex_escape`, `Matcher`): any strings as
//! label values. Invariants: the rendered selector parses as PromQL with exactly the
//! matchers built, each `=` value reads back byte for byte, and a `one_of`/`none_of` regex
//! matches exactly its values (checked on the values and on a string that is not one).
#![no_main]

use kube_metrics_bridge::promql::{self, join_matchers, Matcher};
use kube_metrics_bridge_fuzz::vector_selector_matchers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kube_metrics_bridge_fuzz::let_caught_panics_unwind();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Values separated by NUL; the last one is a probe that may or may not be a value.
    let mut values: Vec<&str> = text.split('\0').collect();
    let probe = values.pop().unwrap_or("");
    let built = vec![
        Matcher::equal("a", values.first().copied().unwrap_or("")),
        Matcher::one_of("b", &values),
        Matcher::none_of("c", &values),
        Matcher::not_equal("weird.label", probe),
    ];
    let q = format!("m{{{}}}", join_matchers(&built));
    let parsed = vector_selector_matchers(&q);
    assert_eq!(parsed.len(), built.len(), "{q}");
    for (b, p) in built.iter().zip(&parsed) {
        assert_eq!(b.label, p.name, "{q}");
        assert_eq!(b.value, p.value, "{q}");
    }
    let (one_of, none_of) = (&parsed[1], &parsed[2]);
    for v in &values {
        assert!(one_of.is_match(v), "{v:?} not matched by {one_of:?}");
        assert!(!none_of.is_match(v), "{v:?} matched by {none_of:?}");
    }
    let probe_is_value = values.contains(&probe);
    assert_eq!(
        one_of.is_match(probe),
        probe_is_value,
        "probe {probe:?}: {q}"
    );
    assert_eq!(
        !none_of.is_match(probe),
        probe_is_value,
        "probe {probe:?}: {q}"
    );

    // A quoted string is one string literal whatever it holds.
    let lit = promql::quote(probe);
    match promql_parser::parser::parse(&lit) {
        Ok(promql_parser::parser::Expr::StringLiteral(s)) => assert_eq!(s.val, probe, "{lit}"),
        other => panic!("{lit} parsed as {other:?}"),
    }
});
