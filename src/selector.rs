//! Kubernetes label selectors: the full string grammar of apimachinery's `labels.Parse`,
//! matching with Kubernetes semantics, the canonical string, the `metav1.LabelSelector` JSON
//! a Kubernetes server echoes back, and prometheus-adapter's mapping to PromQL matchers
//! (escaped, unlike the adapter's).
//!
//! Grammar (`labels.Parse`): comma-separated requirements `key=value`, `key==value`,
//! `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key` (exists) and `!key` (does not
//! exist), with whitespace allowed around tokens; the empty string selects everything. As in
//! apimachinery, `in`/`notin` are operators only where an operator is expected, so keys and
//! values named `index`, `inbound`, or even `in`, parse; `key in ()` means the one value `""`.
//! `>` and `<` are rejected: prometheus-adapter rejects them too, and they have no PromQL
//! equivalent.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

use crate::promql::{self, Matcher};

/// Why a selector string was refused, or why it cannot become PromQL. Positions are
/// 1-based character columns in the selector text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text does not follow the grammar.
    #[error("unable to parse requirement at column {column}: found {found}, expected: {expected}")]
    Syntax {
        column: usize,
        found: String,
        expected: &'static str,
    },
    /// `>` or `<`, which `labels.Parse` knows but this service does not serve.
    #[error(
        "unable to parse requirement at column {column}: operator '{op}' is not supported \
         (use =, ==, !=, in, notin, key or !key)"
    )]
    UnsupportedOperator { column: usize, op: &'static str },
    /// A key that Kubernetes would not accept.
    #[error("unable to parse requirement at column {column}: invalid label key {key:?}: {reason}")]
    InvalidKey {
        column: usize,
        key: String,
        reason: String,
    },
    /// A value that Kubernetes would not accept.
    #[error(
        "unable to parse requirement at column {column}: invalid label value {value:?} \
         at key {key:?}: {reason}"
    )]
    InvalidValue {
        column: usize,
        key: String,
        value: String,
        reason: String,
    },
    /// A requirement built in code with the wrong number of values for its operator.
    #[error("invalid requirement for key {key:?}: {reason}")]
    InvalidRequirement { key: String, reason: &'static str },
    /// A valid Kubernetes key that cannot name a Prometheus label (it has `/`, `.` or `-`).
    #[error(
        "label key {key:?} cannot be used in a PromQL selector: Prometheus label names are \
         [a-zA-Z_][a-zA-Z0-9_]* (no '/', '.' or '-')"
    )]
    NotPrometheusLabel { key: String },
}

/// A requirement's operator. `==` parses as [`Operator::Equals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One requirement of a selector. `values` is sorted and deduplicated: one value for
/// `Equals`/`NotEquals`, at least one for `In`/`NotIn`, none for `Exists`/`DoesNotExist`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
    pub values: Vec<String>,
}

/// A parsed label selector; requirements are kept in canonical order (by key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Parses a label selector string as apimachinery's `labels.Parse` does.
pub fn parse(s: &str) -> Result<Selector, SelectorError> {
    Parser::new(s).parse()
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl Requirement {
    /// A validated requirement (key, values and value count checked as Kubernetes'
    /// `NewRequirement` does), with its values sorted and deduplicated.
    pub fn new(key: &str, op: Operator, values: &[&str]) -> Result<Self, SelectorError> {
        validate_key(key, 1)?;
        for v in values {
            validate_value(key, v, 1)?;
        }
        let mut values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        values.sort();
        values.dedup();
        let reason = match op {
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                Some("'=', '==' and '!=' need exactly one value")
            }
            Operator::In | Operator::NotIn if values.is_empty() => {
                Some("'in' and 'notin' need at least one value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                Some("'exists' and '!' take no values")
            }
            _ => None,
        };
        match reason {
            Some(reason) => Err(SelectorError::InvalidRequirement {
                key: key.to_string(),
                reason,
            }),
            None => Ok(Requirement {
                key: key.to_string(),
                op,
                values,
            }),
        }
    }

    /// Kubernetes semantics: `=`/`in` need the key present with one of the values; `!=` and
    /// `notin` also match when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let single = || self.values.first().map(String::as_str).unwrap_or("");
        match self.op {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={}", self.key, single()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, single()),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

impl Selector {
    /// A selector from requirements (for example built with [`Requirement::new`]), put in
    /// canonical order.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        // apimachinery sorts by key only; ties are ordered by the rest so that equal
        // selectors always print the same text.
        requirements.sort();
        Selector { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the selector selects everything (it has no requirements).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected (every requirement holds).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// prometheus-adapter's mapping, escaped: `=` to `key="v"`, `!=` to `key!="v"`, `in` to
    /// [`Matcher::one_of`], `notin` to [`Matcher::none_of`], `key` to `key!=""`, `!key` to
    /// `key=""`. A key that is not a Prometheus label name is an error (an HTTP 400).
    pub fn to_promql_matchers(&self) -> Result<Vec<Matcher>, SelectorError> {
        self.requirements
            .iter()
            .map(|r| {
                if !promql::is_label_name(&r.key) {
                    return Err(SelectorError::NotPrometheusLabel { key: r.key.clone() });
                }
                Ok(match r.op {
                    Operator::Equals | Operator::In => Matcher::one_of(&r.key, &r.values),
                    Operator::NotEquals | Operator::NotIn => Matcher::none_of(&r.key, &r.values),
                    Operator::Exists => Matcher::not_equal(&r.key, ""),
                    Operator::DoesNotExist => Matcher::equal(&r.key, ""),
                })
            })
            .collect()
    }

    /// The `metav1.LabelSelector` JSON a Kubernetes server echoes back, as
    /// `metav1.ParseToLabelSelector` builds it: `=` requirements in `matchLabels`, the rest
    /// in `matchExpressions` (`!=` as `NotIn` with one value, which `ParseToLabelSelector`
    /// itself refuses); empty parts omitted; `null` for the empty selector. A second `=` on
    /// the same key becomes `In` with one value, so nothing is silently dropped.
    pub fn to_label_selector_json(&self) -> Value {
        self.to_label_selector()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null)
    }

    /// The typed `metav1.LabelSelector` behind [`Selector::to_label_selector_json`], which the
    /// protobuf encoder writes too; `None` for the empty selector (Go's nil pointer).
    pub fn to_label_selector(&self) -> Option<LabelSelector> {
        if self.is_empty() {
            return None;
        }
        let mut out = LabelSelector::default();
        for r in &self.requirements {
            let operator = match r.op {
                Operator::Equals => match r.values.as_slice() {
                    [v] if !out.match_labels.contains_key(&r.key) => {
                        out.match_labels.insert(r.key.clone(), v.clone());
                        continue;
                    }
                    _ => "In",
                },
                Operator::In => "In",
                Operator::NotEquals | Operator::NotIn => "NotIn",
                Operator::Exists => "Exists",
                Operator::DoesNotExist => "DoesNotExist",
            };
            out.match_expressions.push(LabelSelectorRequirement {
                key: r.key.clone(),
                operator,
                values: r.values.clone(),
            });
        }
        Some(out)
    }
}

/// `metav1.LabelSelector`, fields in Go's order. Keys are sorted (a BTreeMap), as Go's
/// encoders sort map keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LabelSelector {
    #[serde(rename = "matchLabels", skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(rename = "matchExpressions", skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `metav1.LabelSelectorRequirement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl fmt::Display for Selector {
    /// The canonical Kubernetes string: requirements by key, comma-joined.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

// ---- validation (apimachinery's IsQualifiedName and IsValidLabelValue) ----

const NAME_MAX: usize = 63;
const PREFIX_MAX: usize = 253;
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' \
    or '.', and must start and end with an alphanumeric character (e.g. 'MyName', or \
    'my.name', or '123-abc'), with an optional DNS subdomain prefix and '/' \
    (e.g. 'example.com/MyName')";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
    characters, '-', '_' or '.', and must start and end with an alphanumeric character \
    (e.g. 'MyValue', or 'my_value', or '12345')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn validate_key(key: &str, column: usize) -> Result<(), SelectorError> {
    let mut problems: Vec<String> = Vec::new();
    let name = match key.split_once('/') {
        None => key,
        Some((prefix, name)) => {
            if name.contains('/') {
                problems.push(format!(
                    "a qualified name has at most one '/'; {QUALIFIED_NAME_MSG}"
                ));
            } else if prefix.is_empty() {
                problems.push("prefix part must be non-empty".into());
            } else if prefix.len() > PREFIX_MAX {
                problems.push(format!(
                    "prefix part must be no more than {PREFIX_MAX} characters"
                ));
            } else if !crate::names::is_dns_subdomain(prefix) {
                problems.push(
                    "prefix part must be a lowercase RFC 1123 subdomain: lowercase alphanumeric \
                     characters, '-' or '.', starting and ending with an alphanumeric character \
                     (e.g. 'example.com')"
                        .into(),
                );
            }
            name
        }
    };
    if problems.is_empty() {
        if name.is_empty() {
            problems.push("name part must be non-empty".into());
        } else {
            if name.len() > NAME_MAX {
                problems.push(format!(
                    "name part must be no more than {NAME_MAX} characters"
                ));
            }
            if !is_name(name) {
                problems.push(QUALIFIED_NAME_MSG.into());
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidKey {
            column,
            key: key.to_string(),
            reason: problems.join("; "),
        })
    }
}

fn validate_value(key: &str, value: &str, column: usize) -> Result<(), SelectorError> {
    let mut problems: Vec<String> = Vec::new();
    if value.len() > NAME_MAX {
        problems.push(format!("must be no more than {NAME_MAX} characters"));
    }
    if !value.is_empty() && !is_name(value) {
        problems.push(VALUE_MSG.into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidValue {
            column,
            key: key.to_string(),
            value: value.to_string(),
            reason: problems.join("; "),
        })
    }
}

// ---- lexer and parser (a port of apimachinery's, without `>`/`<` support) ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A run of characters that are neither whitespace nor one of `=!(),<>`.
    Ident(&'a str),
    /// `!` not followed by `=`.
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Bang => "'!'".into(),
            Tok::Eq => "'='".into(),
            Tok::DoubleEq => "'=='".into(),
            Tok::NotEq => "'!='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Lt => "'<'".into(),
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::End => "end of string".into(),
        }
    }
}

/// apimachinery's whitespace set.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

/// Splits `s` into tokens, each with its 1-based character column.
fn lex(s: &str) -> Vec<(Tok<'_>, usize)> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    let mut column = 0;
    while let Some((i, c)) = chars.next() {
        column += 1;
        let start = column;
        let next_is = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, want: char| {
            chars.next_if(|&(_, n)| n == want).is_some()
        };
        let tok = match c {
            c if is_space(c) => continue,
            '!' if next_is(&mut chars, '=') => {
                column += 1;
                Tok::NotEq
            }
            '!' => Tok::Bang,
            '=' if next_is(&mut chars, '=') => {
                column += 1;
                Tok::DoubleEq
            }
            '=' => Tok::Eq,
            '>' => Tok::Gt,
            '<' => Tok::Lt,
            '(' => Tok::Open,
            ')' => Tok::Close,
            ',' => Tok::Comma,
            _ => {
                let mut end = i + c.len_utf8();
                while let Some((j, n)) = chars.next_if(|&(_, n)| !is_space(n) && !is_special(n)) {
                    end = j + n.len_utf8();
                    column += 1;
                }
                Tok::Ident(&s[i..end])
            }
        };
        out.push((tok, start));
    }
    out.push((Tok::End, column + 1));
    out
}

struct Parser<'a> {
    tokens: Vec<(Tok<'a>, usize)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        Parser {
            tokens: lex(s),
            pos: 0,
        }
    }

    fn peek(&self) -> (Tok<'a>, usize) {
        // `lex` always ends with `End`, and `next` never moves past it.
        self.tokens
            .get(self.pos)
            .copied()
            .unwrap_or((Tok::End, self.tokens.last().map_or(1, |t| t.1)))
    }

    fn next(&mut self) -> (Tok<'a>, usize) {
        let t = self.peek();
        if t.0 != Tok::End {
            self.pos += 1;
        }
        t
    }

    fn syntax(found: (Tok<'_>, usize), expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            column: found.1,
            found: found.0.describe(),
            expected,
        }
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.peek() {
                (Tok::End, _) => break,
                (Tok::Ident(_) | Tok::Bang, _) => {
                    requirements.push(self.requirement()?);
                    match self.next() {
                        (Tok::End, _) => break,
                        (Tok::Comma, _) => match self.peek() {
                            (Tok::Ident(_) | Tok::Bang, _) => {}
                            t => return Err(Self::syntax(t, "identifier after ','")),
                        },
                        t => return Err(Self::syntax(t, "',' or end of string")),
                    }
                }
                t => return Err(Self::syntax(t, "'!', identifier, or end of string")),
            }
        }
        Ok(Selector::from_requirements(requirements))
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut negated = false;
        let mut tok = self.next();
        if tok.0 == Tok::Bang {
            negated = true;
            tok = self.next();
        }
        let (key, column) = match tok {
            (Tok::Ident(key), column) => (key, column),
            t => return Err(Self::syntax(t, "identifier")),
        };
        validate_key(key, column)?;
        let unary = matches!(self.peek().0, Tok::End | Tok::Comma);
        if negated || unary {
            let op = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            // `!key=value` and the like fail in `parse`, which expects ',' next.
            return Ok(Requirement {
                key: key.to_string(),
                op,
                values: Vec::new(),
            });
        }
        let op = match self.next() {
            (Tok::Ident("in"), _) => Operator::In,
            (Tok::Ident("notin"), _) => Operator::NotIn,
            (Tok::Eq | Tok::DoubleEq, _) => Operator::Equals,
            (Tok::NotEq, _) => Operator::NotEquals,
            (Tok::Gt, column) => {
                return Err(SelectorError::UnsupportedOperator { column, op: ">" })
            }
            (Tok::Lt, column) => {
                return Err(SelectorError::UnsupportedOperator { column, op: "<" })
            }
            t => return Err(Self::syntax(t, "in, notin, =, ==, !=")),
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.values()?,
            _ => vec![self.exact_value()?],
        };
        let mut out = Vec::with_capacity(values.len());
        for (value, column) in values {
            validate_value(key, value, column)?;
            out.push(value.to_string());
        }
        out.sort();
        out.dedup();
        Ok(Requirement {
            key: key.to_string(),
            op,
            values: out,
        })
    }

    /// The value after `=`, `==` or `!=`; nothing before `,` or the end means `""`.
    fn exact_value(&mut self) -> Result<(&'a str, usize), SelectorError> {
        match self.peek() {
            (Tok::End | Tok::Comma, column) => Ok(("", column)),
            (Tok::Ident(v), column) => {
                self.next();
                Ok((v, column))
            }
            t => Err(Self::syntax(t, "identifier")),
        }
    }

    /// `( v1, v2, ... )`, where empty slots (`()`, `(,a)`, `(a,)`) stand for `""`, as in
    /// apimachinery.
    fn values(&mut self) -> Result<Vec<(&'a str, usize)>, SelectorError> {
        match self.next() {
            (Tok::Open, _) => {}
            t => return Err(Self::syntax(t, "'('")),
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                (Tok::Ident(v), column) if expect_value => {
                    values.push((v, column));
                    expect_value = false;
                }
                (Tok::Comma, column) => {
                    if expect_value {
                        values.push(("", column));
                    }
                    expect_value = true;
                }
                (Tok::Close, column) => {
                    if expect_value {
                        values.push(("", column));
                    }
                    return Ok(values);
                }
                t if expect_value => return Err(Self::syntax(t, "',', ')' or identifier")),
                t => return Err(Self::syntax(t, "',' or ')'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn p(s: &str) -> Selector {
        parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        match parse(s) {
            Ok(sel) => panic!("{s:?} parsed as {sel}"),
            Err(e) => e.to_string(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn every_operator_parses() {
        let sel = p("a=1,b==2,c!=3,d in (y,x,y),e notin (z),f,!g");
        assert_eq!(
            sel.requirements(),
            &[
                req("a", Operator::Equals, &["1"]),
                req("b", Operator::Equals, &["2"]),
                req("c", Operator::NotEquals, &["3"]),
                req("d", Operator::In, &["x", "y"]),
                req("e", Operator::NotIn, &["z"]),
                req("f", Operator::Exists, &[]),
                req("g", Operator::DoesNotExist, &[]),
            ]
        );
        assert_eq!(sel.to_string(), "a=1,b=2,c!=3,d in (x,y),e notin (z),f,!g");
    }

    #[test]
    fn empty_and_whitespace_select_everything() {
        for s in ["", "  ", "\t\n"] {
            let sel = p(s);
            assert!(sel.is_empty());
            assert!(sel.matches(&labels(&[("a", "b")])));
            assert_eq!(sel.to_string(), "");
        }
        assert_eq!(Selector::default(), p(""));
    }

    #[test]
    fn whitespace_around_tokens() {
        let sel = p("  a = 1 ,  b  in  ( x , y )  ,!  c , d!=  ");
        assert_eq!(sel.to_string(), "a=1,b in (x,y),!c,d!=");
        assert_eq!(p("x in(a)").to_string(), "x in (a)");
        assert_eq!(p("x notin(a,b)").to_string(), "x notin (a,b)");
    }

    #[test]
    fn keywords_only_in_operator_position() {
        assert_eq!(p("index=1").requirements()[0].key, "index");
        assert_eq!(
            p("inbound").requirements()[0],
            req("inbound", Operator::Exists, &[])
        );
        assert_eq!(p("notinx!=2").requirements()[0].key, "notinx");
        assert_eq!(p("in").requirements()[0], req("in", Operator::Exists, &[]));
        assert_eq!(
            p("in in (in,notin)").requirements()[0],
            req("in", Operator::In, &["in", "notin"])
        );
        assert_eq!(
            p("a=in").requirements()[0],
            req("a", Operator::Equals, &["in"])
        );
        assert!(err("a inbound (x)").contains("found 'inbound', expected: in, notin"));
        assert!(err("a index").contains("found 'index'"));
    }

    #[test]
    fn empty_values() {
        assert_eq!(p("a=").requirements()[0], req("a", Operator::Equals, &[""]));
        assert_eq!(
            p("a==,b=1").requirements()[0],
            req("a", Operator::Equals, &[""])
        );
        assert_eq!(
            p("a!=").requirements()[0],
            req("a", Operator::NotEquals, &[""])
        );
        // apimachinery reads empty slots in a set as the empty value.
        assert_eq!(
            p("a in ()").requirements()[0],
            req("a", Operator::In, &[""])
        );
        assert_eq!(
            p("a in (,x)").requirements()[0],
            req("a", Operator::In, &["", "x"])
        );
        assert_eq!(
            p("a in (x,)").requirements()[0],
            req("a", Operator::In, &["", "x"])
        );
        assert_eq!(
            p("a notin (,,)").requirements()[0],
            req("a", Operator::NotIn, &[""])
        );
        assert_eq!(p("a in ()").to_string(), "a in ()");
        assert_eq!(p("a in (,x)").to_string(), "a in (,x)");
    }

    #[test]
    fn canonical_order_is_by_key() {
        assert_eq!(p("b=1,a=2,B=3").to_string(), "B=3,a=2,b=1");
        assert_eq!(p("z,x/y=1,a.b/c=2").to_string(), "a.b/c=2,x/y=1,z");
        // Ties on a key are ordered too, so equal selectors print equal text.
        assert_eq!(p("a!=1,a=2").to_string(), p("a=2,a!=1").to_string());
        assert_eq!("a=1".parse::<Selector>(), Ok(p(" a == 1 ")));
    }

    #[test]
    fn syntax_errors_say_where_and_what() {
        assert_eq!(
            err("a=b c"),
            "unable to parse requirement at column 5: found 'c', expected: ',' or end of string"
        );
        assert!(err("a=b,").contains("found end of string, expected: identifier after ','"));
        assert!(err(",a").contains("column 1: found ','"));
        assert!(err("a in x").contains("found 'x', expected: '('"));
        assert!(err("a in (x").contains("found end of string, expected: ',' or ')'"));
        assert!(err("a in (x y)").contains("found 'y', expected: ',' or ')'"));
        assert!(err("a in (=)").contains("found '=', expected: ',', ')' or identifier"));
        assert!(err("a=(b)").contains("found '(', expected: identifier"));
        assert!(err("!a=b").contains("found '=', expected: ',' or end of string"));
        assert!(err("!").contains("found end of string, expected: identifier"));
        assert!(err("!!a").contains("column 2: found '!', expected: identifier"));
        assert!(err("a===b").contains("found '=', expected: identifier"));
        assert!(err("a ! b").contains("found '!', expected: in, notin, =, ==, !="));
        assert!(err("=a").contains("found '=', expected: '!', identifier"));
    }

    #[test]
    fn greater_and_less_are_refused_clearly() {
        assert_eq!(
            err("a>1"),
            "unable to parse requirement at column 2: operator '>' is not supported \
             (use =, ==, !=, in, notin, key or !key)"
        );
        assert!(err("a < 1").contains("operator '<' is not supported"));
    }

    #[test]
    fn keys_are_validated_like_kubernetes() {
        for ok in [
            "a",
            "A1",
            "a.b-c_d",
            "app.kubernetes.io/name",
            "example.com/MyName",
            "x/y",
            &"k".repeat(63),
            &format!("{}/{}", "a".repeat(253), "n"),
        ] {
            assert!(parse(&format!("{ok}=v")).is_ok(), "{ok}");
        }
        assert_eq!(
            err("-a=b"),
            format!(
                "unable to parse requirement at column 1: invalid label key \"-a\": {QUALIFIED_NAME_MSG}"
            )
        );
        assert!(err(&"k".repeat(64)).contains("name part must be no more than 63 characters"));
        assert!(err("/a").contains("prefix part must be non-empty"));
        assert!(err("a/").contains("name part must be non-empty"));
        assert!(err("a/b/c").contains("at most one '/'"));
        assert!(err("Example.com/a").contains("lowercase RFC 1123 subdomain"));
        assert!(err("a..b/c").contains("lowercase RFC 1123 subdomain"));
        assert!(err(&format!("{}/n", "a".repeat(254))).contains("no more than 253"));
        assert!(err("a_/x").contains("RFC 1123"));
        assert!(err("a\"b").contains(r#"invalid label key "a\"b""#));
        assert!(err("ключ").contains("invalid label key"));
        assert!(err("a.").contains("invalid label key \"a.\""));
    }

    #[test]
    fn values_are_validated_like_kubernetes() {
        assert!(parse(&format!("a={}", "v".repeat(63))).is_ok());
        assert!(
            err(&format!("a={}", "v".repeat(64))).contains("must be no more than 63 characters")
        );
        assert_eq!(
            err("a in (ok, -bad)"),
            format!(
                "unable to parse requirement at column 11: invalid label value \"-bad\" at key \"a\": {VALUE_MSG}"
            )
        );
        assert!(err("a=b\"}").contains("invalid label value"));
        assert!(err("a=x|y").contains("invalid label value \"x|y\""));
        assert!(err("a=é").contains("invalid label value"));
        assert!(parse("a=A.b-c_1").is_ok());
    }

    #[test]
    fn requirement_new_checks_value_counts() {
        assert!(Requirement::new("a", Operator::Equals, &["x", "y"]).is_err());
        assert!(Requirement::new("a", Operator::Equals, &[]).is_err());
        assert!(Requirement::new("a", Operator::In, &[]).is_err());
        assert!(Requirement::new("a", Operator::Exists, &["x"]).is_err());
        assert!(Requirement::new("a b", Operator::Exists, &[]).is_err());
        assert!(Requirement::new("a", Operator::In, &["-"]).is_err());
        assert_eq!(
            Requirement::new("a", Operator::In, &["y", "x", "y"]),
            Ok(req("a", Operator::In, &["x", "y"]))
        );
        assert_eq!(
            Requirement::new("a", Operator::In, &[]).map_err(|e| e.to_string()),
            Err(
                "invalid requirement for key \"a\": 'in' and 'notin' need at least one value"
                    .into()
            )
        );
    }

    #[test]
    fn matching_follows_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let none = labels(&[]);
        let cases: &[(&str, bool, bool)] = &[
            // selector, matches `web`, matches no labels
            ("app=web", true, false),
            ("app=db", false, false),
            ("app!=db", true, true),
            ("app!=web", false, true),
            ("app in (db,web)", true, false),
            ("app notin (db)", true, true),
            ("app notin (web)", false, true),
            ("app", true, false),
            ("!app", false, true),
            ("app=web,tier=front", true, false),
            ("app=web,tier=back", false, false),
            ("app=", false, false),
            ("", true, true),
        ];
        for (s, on_web, on_none) in cases {
            assert_eq!(p(s).matches(&web), *on_web, "{s} on web");
            assert_eq!(p(s).matches(&none), *on_none, "{s} on no labels");
        }
        assert!(p("app=").matches(&labels(&[("app", "")])));
    }

    #[test]
    fn promql_mapping() {
        let sel = p("a=1,b!=2,c in (x.y,z),d notin (q),e,!f,g in (one)");
        let text = promql::join_matchers(&sel.to_promql_matchers().expect("all label names"));
        assert_eq!(
            text,
            r#"a="1",b!="2",c=~"x\\.y|z",d!="q",e!="",f="",g="one""#
        );
        assert_eq!(p("").to_promql_matchers(), Ok(vec![]));
        let e = p("app.kubernetes.io/name=web")
            .to_promql_matchers()
            .expect_err("not a label name");
        assert_eq!(
            e,
            SelectorError::NotPrometheusLabel {
                key: "app.kubernetes.io/name".into()
            }
        );
        assert!(e
            .to_string()
            .contains("cannot be used in a PromQL selector"));
        assert!(p("a-b").to_promql_matchers().is_err());
        assert!(p("a.b").to_promql_matchers().is_err());
    }

    #[test]
    fn label_selector_json() {
        assert_eq!(p("").to_label_selector_json(), Value::Null);
        assert_eq!(
            p("verb=GET").to_label_selector_json(),
            json!({"matchLabels": {"verb": "GET"}})
        );
        assert_eq!(
            p("env in (b,a)").to_label_selector_json(),
            json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]})
        );
        assert_eq!(
            p("a=1,b!=2,c notin (x),d,!e").to_label_selector_json(),
            json!({
                "matchLabels": {"a": "1"},
                "matchExpressions": [
                    {"key": "b", "operator": "NotIn", "values": ["2"]},
                    {"key": "c", "operator": "NotIn", "values": ["x"]},
                    {"key": "d", "operator": "Exists"},
                    {"key": "e", "operator": "DoesNotExist"},
                ]
            })
        );
        assert_eq!(
            p("a=1,a=2").to_label_selector_json(),
            json!({
                "matchLabels": {"a": "1"},
                "matchExpressions": [{"key": "a", "operator": "In", "values": ["2"]}]
            })
        );
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        let name = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?";
        prop_oneof![
            proptest::string::string_regex(name).expect("regex"),
            (
                proptest::string::string_regex(
                    "[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}"
                )
                .expect("regex"),
                proptest::string::string_regex(name).expect("regex")
            )
                .prop_map(|(p, n)| format!("{p}/{n}")),
            Just("in".to_string()),
            Just("notin".to_string()),
            Just("index".to_string()),
            Just("inbound".to_string()),
        ]
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex("(([A-Za-z0-9][-A-Za-z0-9_.]{0,10})?[A-Za-z0-9])?")
                .expect("regex"),
            Just("in".to_string()),
            Just("notin".to_string()),
        ]
    }

    fn requirement_strategy() -> impl Strategy<Value = Requirement> {
        let op = prop_oneof![
            Just(Operator::Equals),
            Just(Operator::NotEquals),
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
        ];
        (
            key_strategy(),
            op,
            proptest::collection::vec(value_strategy(), 1..4),
        )
            .prop_map(|(key, op, values)| {
                let values: Vec<&str> = match op {
                    Operator::Equals | Operator::NotEquals => vec![values[0].as_str()],
                    Operator::In | Operator::NotIn => values.iter().map(String::as_str).collect(),
                    Operator::Exists | Operator::DoesNotExist => vec![],
                };
                Requirement::new(&key, op, &values).expect("generated requirements are valid")
            })
    }

    proptest! {
        #[test]
        fn display_round_trips(reqs in proptest::collection::vec(requirement_strategy(), 0..6)) {
            let sel = Selector::from_requirements(reqs);
            let text = sel.to_string();
            let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(&back, &sel, "{}", text);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            if let Ok(sel) = parse(&s) {
                prop_assert_eq!(parse(&sel.to_string()), Ok(sel.clone()));
                let _ = sel.to_promql_matchers();
                let _ = sel.to_label_selector_json();
            }
        }

        #[test]
        fn selector_like_text_never_panics(s in "[a-c in!=(),<> \t/.-]{0,24}") {
            if let Ok(sel) = parse(&s) {
                prop_assert_eq!(parse(&sel.to_string()), Ok(sel.clone()), "{:?}", s);
                let _ = sel.matches(&labels(&[("a", "b"), ("in", "")]));
            }
        }

        #[test]
        fn promql_text_stays_one_selector(reqs in proptest::collection::vec(requirement_strategy(), 0..6)) {
            let sel = Selector::from_requirements(reqs);
            if let Ok(ms) = sel.to_promql_matchers() {
                // Values pass Kubernetes validation, so they never contain a quote or a
                // backslash of their own; every '"' in the text is a delimiter.
                let text = promql::join_matchers(&ms);
                prop_assert_eq!(text.matches('"').count(), 2 * ms.len());
            }
        }
    }
}
