//! Helpers shared by the fuzz targets under `fuzz_targets/` (see `hack/fuzz.sh`).

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};

/// Splits fuzz input in two at the first `sep` byte (all of it is the first part if absent).
pub fn split_once(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Parses `query` with promql-parser and returns its one vector selector's matchers (the
/// metric name's `__name__` matcher left out). Panics, with the query, on anything else:
/// the callers render queries whose structure no input may change.
pub fn vector_selector_matchers(query: &str) -> Vec<Matcher> {
    let expr = parser::parse(query)
        .unwrap_or_else(|e| panic!("rendered query does not parse: {e}\nquery: {query}"));
    match expr {
        Expr::VectorSelector(vs) => {
            assert!(
                vs.matchers.or_matchers.is_empty(),
                "query grew `or` matchers: {query}"
            );
            vs.matchers
                .matchers
                .into_iter()
                .filter(|m| m.name != "__name__")
                .collect()
        }
        other => panic!("query is not one vector selector: {other:?}\nquery: {query}"),
    }
}

/// The matcher of `name` in `matchers`, which must be there exactly once.
pub fn only<'a>(matchers: &'a [Matcher], name: &str, query: &str) -> &'a Matcher {
    let found: Vec<&Matcher> = matchers.iter().filter(|m| m.name == name).collect();
    assert_eq!(found.len(), 1, "matchers of {name:?} in {query}");
    found[0]
}

/// Whether `m` is `name="value"`.
pub fn is_equal(m: &Matcher, value: &str) -> bool {
    matches!(m.op, MatchOp::Equal) && m.value == value
}

/// Puts the default panic hook back. libfuzzer-sys installs one that aborts at once, before a
/// `catch_unwind` in the code under test (`promql::parse`) can handle the panic; a panic
/// nobody catches still aborts, in libfuzzer-sys' own `catch_unwind` around each input.
pub fn let_caught_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}
