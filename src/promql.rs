//! Text building blocks for PromQL that never let request content change a query's structure.
//!
//! Everything that comes from a request (label values, object names, namespaces) reaches a
//! query only as the body of a double-quoted string literal built by [`quote`], and, inside a
//! regex matcher, only after [`regex_escape`] has made it match literally. Label names are
//! checked with [`is_label_name`]; a [`Matcher`] whose label is not a plain name is rendered in
//! the quoted form of Prometheus 3 (`{"my.label"="v"}`), which older servers reject with a
//! parse error, so even a misused `Matcher` cannot inject syntax.

use std::fmt;

/// A PromQL double-quoted string literal for `s`.
///
/// PromQL strings follow Go's escape rules. `\`, `"`, newline, carriage return and tab get
/// their short escapes; other ASCII control characters become `\xNN`; non-ASCII control
/// characters, the line/paragraph separators and U+FFFD (which Prometheus' lexer mistakes
/// for invalid UTF-8) become `\uNNNN`. Everything else is kept as UTF-8, so the literal
/// always decodes back to exactly `s` and always ends at its closing quote.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{fffd}') => {
                // All of these are in the Basic Multilingual Plane, so four digits suffice.
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` escaped for Prometheus' RE2 so that it matches literally.
///
/// The escaped set is Go's `regexp.QuoteMeta`: ``\.+*?()|[]{}^$``. Prometheus anchors regex
/// matchers, so `label=~"<escaped>"` matches exactly the value `s`. The result still has to
/// go through [`quote`] to become a string literal.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `s` is a classic Prometheus label name, `[a-zA-Z_][a-zA-Z0-9_]*`, which can stand
/// unquoted in a selector.
pub fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `s` is a classic Prometheus metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`, the only kind
/// that can stand unquoted where `<<.Series>>` is rendered. Prometheus 3 also stores UTF-8
/// names (written `{"name"}` in PromQL), and 2.x stores any name that arrives by remote
/// write; neither kind may reach a query as bare text.
pub fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// The four label matching operators of a PromQL selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (anchored RE2)
    Re,
    /// `!~` (anchored RE2)
    Nre,
}

impl MatchOp {
    /// The operator as PromQL spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::Nre => "!~",
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One label matcher, e.g. `pod="web-1"` or `pod=~"a|b"`.
///
/// `value` is the raw value (for `=~`/`!~` the regex text); `Display` always quotes it, so
/// it can hold anything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
}

/// A regex that matches every value, newlines included, on Prometheus 2 and 3 alike.
const MATCH_ALL: &str = "(?s:.*)";

impl Matcher {
    /// A matcher with the given parts; `value` is used as is (a regex for `=~`/`!~`).
    pub fn new(label: &str, op: MatchOp, value: &str) -> Self {
        Matcher {
            label: label.to_string(),
            op,
            value: value.to_string(),
        }
    }

    /// `label="value"`.
    pub fn equal(label: &str, value: &str) -> Self {
        Self::new(label, MatchOp::Eq, value)
    }

    /// `label!="value"`.
    pub fn not_equal(label: &str, value: &str) -> Self {
        Self::new(label, MatchOp::Ne, value)
    }

    /// The label has one of `values`: `label="v"` for one distinct value, else
    /// `label=~"v1|v2"` with each value regex-escaped. Values are sorted and deduplicated
    /// so that equal sets render identical text (and share cache entries). An empty list
    /// matches nothing (`label!~"(?s:.*)"`).
    pub fn one_of<S: AsRef<str>>(label: &str, values: &[S]) -> Self {
        match distinct(values).as_slice() {
            [] => Self::new(label, MatchOp::Nre, MATCH_ALL),
            [one] => Self::equal(label, one),
            many => Self::new(label, MatchOp::Re, &alternation(many)),
        }
    }

    /// The label has none of `values`: `label!="v"` for one distinct value, else
    /// `label!~"v1|v2"`, built like [`Matcher::one_of`]. An empty list matches everything
    /// (`label=~"(?s:.*)"`).
    pub fn none_of<S: AsRef<str>>(label: &str, values: &[S]) -> Self {
        match distinct(values).as_slice() {
            [] => Self::new(label, MatchOp::Re, MATCH_ALL),
            [one] => Self::not_equal(label, one),
            many => Self::new(label, MatchOp::Nre, &alternation(many)),
        }
    }
}

/// Sorted, deduplicated values, so the rendered text depends only on the set.
fn distinct<S: AsRef<str>>(values: &[S]) -> Vec<&str> {
    let mut v: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `v1|v2|...` with each value regex-escaped.
fn alternation(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| regex_escape(v))
        .collect::<Vec<_>>()
        .join("|")
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_label_name(&self.label) {
            f.write_str(&self.label)?;
        } else {
            f.write_str(&quote(&self.label))?;
        }
        f.write_str(self.op.as_str())?;
        f.write_str(&quote(&self.value))
    }
}

/// The matchers comma-joined, ready to go between a selector's braces.
pub fn join_matchers(matchers: &[Matcher]) -> String {
    matchers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes a Go/PromQL double-quoted literal at the start of `s`, the way Prometheus'
    /// lexer and `strconv.Unquote` do. Returns the value and the rest of the input.
    fn unquote(s: &str) -> Result<(String, &str), String> {
        let mut chars = s.char_indices();
        if !matches!(chars.next(), Some((_, '"'))) {
            return Err(format!("expected '\"' at {s:?}"));
        }
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &s[i + 1..])),
                '\n' => return Err("raw newline in string".into()),
                '\u{fffd}' => return Err("U+FFFD (Prometheus: invalid UTF-8 rune)".into()),
                '\\' => {
                    let (_, e) = chars.next().ok_or("dangling backslash")?;
                    let mut hex = |n: usize| -> Result<u32, String> {
                        let mut v = 0u32;
                        for _ in 0..n {
                            let (_, d) = chars.next().ok_or("short escape")?;
                            v = v * 16 + d.to_digit(16).ok_or("bad hex digit")?;
                        }
                        Ok(v)
                    };
                    match e {
                        'a' => out.push('\x07'),
                        'b' => out.push('\x08'),
                        'f' => out.push('\x0c'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'v' => out.push('\x0b'),
                        '\\' => out.push('\\'),
                        '"' => out.push('"'),
                        'x' => {
                            // A byte; only ASCII keeps the text valid UTF-8.
                            let b = hex(2)?;
                            if b >= 0x80 {
                                return Err("non-ASCII \\x escape".into());
                            }
                            out.push(char::from_u32(b).ok_or("bad \\x")?);
                        }
                        'u' => out.push(char::from_u32(hex(4)?).ok_or("bad \\u")?),
                        'U' => out.push(char::from_u32(hex(8)?).ok_or("bad \\U")?),
                        other => return Err(format!("unknown escape \\{other}")),
                    }
                }
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    }

    /// Hand-parses `metric{m1,m2,...}` and requires it to be exactly one vector selector
    /// with nothing after it. Returns (label, op, decoded value) per matcher.
    fn parse_selector(q: &str) -> Result<Vec<(String, String, String)>, String> {
        let name_end = q
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .ok_or("no selector braces")?;
        let mut rest = q[name_end..]
            .strip_prefix('{')
            .ok_or("expected '{' after the metric name")?;
        let mut out = Vec::new();
        if let Some(r) = rest.strip_prefix('}') {
            return if r.is_empty() {
                Ok(out)
            } else {
                Err(format!("trailing text {r:?}"))
            };
        }
        loop {
            let label;
            if rest.starts_with('"') {
                let (l, r) = unquote(rest)?;
                label = l;
                rest = r;
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .ok_or("unterminated label")?;
                label = rest[..end].to_string();
                if !is_label_name(&label) {
                    return Err(format!("bad label name {label:?}"));
                }
                rest = &rest[end..];
            }
            let op = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| rest.starts_with(op))
                .ok_or_else(|| format!("expected an operator at {rest:?}"))?;
            rest = &rest[op.len()..];
            let (value, r) = unquote(rest)?;
            out.push((label, op.to_string(), value));
            match r.chars().next() {
                Some(',') => rest = &r[1..],
                Some('}') if r.len() == 1 => return Ok(out),
                _ => return Err(format!("expected ',' or a final '}}' at {r:?}")),
            }
        }
    }

    /// Whether the RE2-compatible `pattern`, anchored like Prometheus does, matches `s`.
    fn anchored_match(pattern: &str, s: &str) -> bool {
        regex::Regex::new(&format!("^(?s:{pattern})$"))
            .map(|re| re.is_match(s))
            .unwrap_or(false)
    }

    const HOSTILE: &[&str] = &[
        r#""}or vector(1)#"#,
        r#"a"b"#,
        "back\\slash\\",
        "\\\"",
        "line\nbreak",
        "cr\rtab\t",
        "nul\0bell\x07del\x7f",
        "c1\u{85}control\u{9b}",
        "sep\u{2028}\u{2029}",
        "replacement\u{fffd}char",
        "ünïcödé 日本語 🦀",
        "} or on() vector(1) # ",
        "\"} or vector(1) or x{a=\"",
        "`raw`'single'",
        ".*",
        "a|b",
        "(?i)x[a-z]{2}^$",
        "",
    ];

    #[test]
    fn quote_escapes_go_style() {
        assert_eq!(quote("web-1"), r#""web-1""#);
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote(r"a\b"), r#""a\\b""#);
        assert_eq!(quote("a\nb\rc\td"), r#""a\nb\rc\td""#);
        assert_eq!(quote("\0\x1b\x7f"), r#""\x00\x1b\x7f""#);
        assert_eq!(quote("\u{85}\u{2028}\u{fffd}"), r#""\u0085\u2028\ufffd""#);
        assert_eq!(quote("日本 🦀"), "\"日本 🦀\"");
        assert_eq!(quote(""), r#""""#);
    }

    #[test]
    fn quote_round_trips_hostile_strings() {
        for s in HOSTILE {
            let q = quote(s);
            let (back, rest) = unquote(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(&back, s);
            assert!(rest.is_empty(), "{q} ended early");
        }
    }

    #[test]
    fn regex_escape_covers_quote_meta() {
        assert_eq!(
            regex_escape(r"\.+*?()|[]{}^$"),
            r"\\\.\+\*\?\(\)\|\[\]\{\}\^\$"
        );
        assert_eq!(regex_escape("web-1_a/b#c"), "web-1_a/b#c");
        for s in HOSTILE {
            assert!(anchored_match(&regex_escape(s), s), "{s:?}");
        }
        assert!(!anchored_match(&regex_escape("a.c"), "abc"));
        assert!(!anchored_match(&regex_escape("a|b"), "a"));
    }

    #[test]
    fn label_names() {
        for ok in ["pod", "_x", "A9_b", "__name__"] {
            assert!(is_label_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a.b", "app/x", "a b", "é", "a\"", "a}"] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn metric_names() {
        for ok in ["up", "_x", "a:b_c9", ":rate5m", "http_requests_total"] {
            assert!(is_metric_name(ok), "{ok}");
        }
        for bad in [
            "",
            "9a",
            "a-b",
            "a.b",
            "a b",
            "é",
            r#"x{a="1"} or vector(1)"#,
            "x)",
            "a\n",
        ] {
            assert!(!is_metric_name(bad), "{bad}");
        }
    }

    #[test]
    fn matcher_display() {
        assert_eq!(Matcher::equal("pod", "web-1").to_string(), r#"pod="web-1""#);
        assert_eq!(Matcher::not_equal("pod", "").to_string(), r#"pod!="""#);
        assert_eq!(
            Matcher::one_of("pod", &["b", "a", "b"]).to_string(),
            r#"pod=~"a|b""#
        );
        assert_eq!(
            Matcher::one_of("pod", &["a", "a"]).to_string(),
            r#"pod="a""#
        );
        assert_eq!(
            Matcher::none_of("pod", &["x.y", "a"]).to_string(),
            r#"pod!~"a|x\\.y""#
        );
        assert_eq!(Matcher::none_of("pod", &["a"]).to_string(), r#"pod!="a""#);
        assert_eq!(
            Matcher::one_of("pod", &["", "a"]).to_string(),
            r#"pod=~"|a""#
        );
        assert_eq!(
            Matcher::one_of::<&str>("pod", &[]).to_string(),
            r#"pod!~"(?s:.*)""#
        );
        assert_eq!(
            Matcher::none_of::<String>("pod", &[]).to_string(),
            r#"pod=~"(?s:.*)""#
        );
        // A label that is not a plain name is quoted, never spliced.
        assert_eq!(
            Matcher::equal("app.kubernetes.io/name", "x").to_string(),
            r#""app.kubernetes.io/name"="x""#
        );
    }

    #[test]
    fn equal_sets_render_identically() {
        let a = Matcher::one_of("q", &["orders", "emails", "orders"]);
        let owned: Vec<String> = vec!["emails".into(), "orders".into()];
        let b = Matcher::one_of("q", &owned);
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.to_string(), r#"q=~"emails|orders""#);
    }

    #[test]
    fn join() {
        let ms = [Matcher::equal("a", "1"), Matcher::not_equal("b", "")];
        assert_eq!(join_matchers(&ms), r#"a="1",b!="""#);
        assert_eq!(join_matchers(&[]), "");
    }

    #[test]
    fn hostile_values_stay_one_selector() {
        for s in HOSTILE {
            let ms = vec![
                Matcher::equal("pod", s),
                Matcher::not_equal("pod", s),
                Matcher::one_of("pod", &[*s, "other"]),
                Matcher::none_of("pod", &[*s, "other"]),
                Matcher::equal(s, s),
            ];
            let q = format!("metric{{{}}}", join_matchers(&ms));
            let parsed = parse_selector(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(parsed.len(), ms.len(), "{q}");
            assert_eq!(parsed[0], ("pod".into(), "=".into(), s.to_string()));
            assert_eq!(parsed[1], ("pod".into(), "!=".into(), s.to_string()));
            if *s == "other" {
                continue;
            }
            assert_eq!(parsed[2].1, "=~");
            assert!(anchored_match(&parsed[2].2, s), "{q}");
            assert!(anchored_match(&parsed[2].2, "other"), "{q}");
            assert!(!anchored_match(&parsed[2].2, "othe"), "{q}");
            assert_eq!(parsed[3].1, "!~");
            assert!(anchored_match(&parsed[3].2, s), "{q}");
            assert_eq!(parsed[4].0, s.to_string());
        }
    }

    proptest! {
        #[test]
        fn any_value_stays_inside_its_string(a in any::<String>(), b in any::<String>()) {
            let ms = vec![
                Matcher::equal("pod", &a),
                Matcher::one_of("pod", &[a.as_str(), b.as_str()]),
                Matcher::none_of(&b, &[a.as_str()]),
            ];
            let q = format!("m{{{}}}", join_matchers(&ms));
            let parsed = parse_selector(&q).map_err(|e| TestCaseError::fail(format!("{q:?}: {e}")))?;
            prop_assert_eq!(parsed.len(), 3);
            prop_assert_eq!(&parsed[0].2, &a);
            prop_assert_eq!(&parsed[2].0, &b);
            if a != b {
                prop_assert!(anchored_match(&parsed[1].2, &a));
                prop_assert!(anchored_match(&parsed[1].2, &b));
            }
        }

        #[test]
        fn regex_escape_matches_only_itself(s in any::<String>(), t in any::<String>()) {
            let pattern = regex_escape(&s);
            prop_assert!(anchored_match(&pattern, &s));
            prop_assert_eq!(anchored_match(&pattern, &t), s == t);
        }

        #[test]
        fn quote_round_trips(s in any::<String>()) {
            let q = quote(&s);
            let (back, rest) = unquote(&q).map_err(TestCaseError::fail)?;
            prop_assert_eq!(back, s);
            prop_assert!(rest.is_empty());
        }
    }
}
