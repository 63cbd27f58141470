//! PromQL rendering: a request and the rule that owns its metric become one query.
//!
//! `LabelMatchers` follow prometheus-adapter's order (metric selector, then namespace, then
//! the object label), but every value is escaped, so nothing in a request can change the
//! query's structure. A `*` request does not enumerate objects in a regex: it asks for the
//! whole namespace (`pod!=""`), which renders the same text for every HPA in the namespace
//! and so shares one cache entry; the answer is then filtered to the objects asked for.

use std::collections::BTreeMap;

use crate::discovery::{CustomMetric, ExternalMetric};
use crate::promql::{self, Matcher};
use crate::rules::template::QueryArgs;
use crate::rules::Rule;
use crate::selector::Selector;

/// Why a request could not be rendered as PromQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A selector cannot be written as PromQL matchers (the client's fault: 400).
    #[error("{param}: {message}")]
    Selector {
        param: &'static str,
        message: String,
    },
    /// The rule cannot serve a namespaced request (the rules' fault: 500).
    #[error("{rule} has no label for namespaces")]
    NoNamespaceLabel { rule: String },
}

/// Which objects of the resource the query asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One named object: `pod="web-0"`.
    Object(&'a str),
    /// Every object in the namespace (or cluster) that has the label: `pod!=""`.
    Every,
}

/// Renders the query for a custom metric.
pub fn custom_query(
    rule: &Rule,
    metric: &CustomMetric,
    namespace: Option<&str>,
    scope: &Scope<'_>,
    metric_selector: &Selector,
) -> Result<String, QueryError> {
    let mut matchers = selector_matchers(metric_selector, "metricLabelSelector")?;
    let mut values_by_name = values_by_name(metric_selector);
    if let Some(ns) = namespace {
        let label = rule.namespace_label.as_deref().ok_or_else(|| {
            tracing::error!(rule = %rule.id, "namespaced request but the rule associates no label with namespaces");
            QueryError::NoNamespaceLabel {
                rule: rule.id.to_string(),
            }
        })?;
        matchers.push(Matcher::equal(label, ns));
        values_by_name.insert(label.to_string(), string_body(&promql::regex_escape(ns)));
    }
    let label = metric.resource_label.as_str();
    match scope {
        Scope::Object(name) => {
            matchers.push(Matcher::equal(label, name));
            values_by_name.insert(label.to_string(), string_body(&promql::regex_escape(name)));
        }
        Scope::Every => {
            matchers.push(Matcher::not_equal(label, ""));
            values_by_name.insert(label.to_string(), ".+".to_string());
        }
    }
    let group_by = [label.to_string()];
    Ok(render(
        rule,
        &metric.series,
        &matchers,
        &values_by_name,
        &group_by,
    ))
}

/// Renders the query for an external metric: the selector's matchers, plus the namespace
/// unless the rule says `namespaced = false`; no grouping, as in prometheus-adapter.
pub fn external_query(
    rule: &Rule,
    metric: &ExternalMetric,
    namespace: &str,
    selector: &Selector,
) -> Result<String, QueryError> {
    let mut matchers = selector_matchers(selector, "labelSelector")?;
    let mut values_by_name = values_by_name(selector);
    if rule.namespaced {
        if let Some(label) = rule.namespace_label.as_deref() {
            matchers.push(Matcher::equal(label, namespace));
            values_by_name.insert(
                label.to_string(),
                string_body(&promql::regex_escape(namespace)),
            );
        }
    }
    Ok(render(
        rule,
        &metric.series,
        &matchers,
        &values_by_name,
        &[],
    ))
}

fn render(
    rule: &Rule,
    series: &str,
    matchers: &[Matcher],
    values_by_name: &BTreeMap<String, String>,
    group_by: &[String],
) -> String {
    let label_matchers = promql::join_matchers(matchers);
    rule.metrics_query.render_query(&QueryArgs {
        series,
        label_matchers: &label_matchers,
        label_values_by_name: values_by_name,
        group_by,
    })
}

fn selector_matchers(selector: &Selector, param: &'static str) -> Result<Vec<Matcher>, QueryError> {
    selector
        .to_promql_matchers()
        .map_err(|e| QueryError::Selector {
            param,
            message: e.to_string(),
        })
}

/// `LabelValuesByName`: each selector key's values joined by `|` for use inside `=~"..."`,
/// each value regex-escaped and the whole escaped for a PromQL string.
fn values_by_name(selector: &Selector) -> BTreeMap<String, String> {
    selector
        .requirements()
        .iter()
        .filter(|r| !r.values.is_empty())
        .map(|r| {
            let alternation = r
                .values
                .iter()
                .map(|v| promql::regex_escape(v))
                .collect::<Vec<_>>()
                .join("|");
            (r.key.clone(), string_body(&alternation))
        })
        .collect()
}

/// The inside of a PromQL string literal (what goes between the quotes).
fn string_body(s: &str) -> String {
    let quoted = promql::quote(s);
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{ResourceMapper, StaticMapper};
    use crate::rules::RuleSet;

    fn rules() -> RuleSet {
        crate::rules::fixtures::example()
    }

    fn pods_metric() -> CustomMetric {
        CustomMetric {
            rule: crate::rules::RuleId {
                api: crate::rules::Api::Custom,
                index: 0,
            },
            series: "http_requests_total".into(),
            resource: StaticMapper::builtin().lookup("pods").expect("pods"),
            resource_label: "pod".into(),
        }
    }

    #[test]
    fn named_pod_matches_prometheus_adapter_shape() {
        let set = rules();
        let sel = crate::selector::parse("verb=GET").expect("sel");
        let q = custom_query(
            &set.custom[0],
            &pods_metric(),
            Some("default"),
            &Scope::Object("web-0"),
            &sel,
        )
        .expect("query");
        assert_eq!(
            q,
            r#"sum(rate(http_requests_total{verb="GET",namespace="default",pod="web-0"}[2m])) by (pod)"#
        );
    }

    #[test]
    fn wildcard_asks_for_the_namespace() {
        let set = rules();
        let q = custom_query(
            &set.custom[0],
            &pods_metric(),
            Some("demo"),
            &Scope::Every,
            &Selector::default(),
        )
        .expect("query");
        assert_eq!(
            q,
            r#"sum(rate(http_requests_total{namespace="demo",pod!=""}[2m])) by (pod)"#
        );
    }

    #[test]
    fn external_adds_namespace_and_no_grouping() {
        let set = rules();
        let metric = ExternalMetric {
            rule: set.external[0].id,
            series: "queue_messages_ready".into(),
        };
        let sel = crate::selector::parse("queue in (orders,emails)").expect("sel");
        let q = external_query(&set.external[0], &metric, "demo", &sel).expect("query");
        assert_eq!(
            q,
            r#"sum(queue_messages_ready{queue=~"emails|orders",namespace="demo"}) by ()"#
        );
    }

    #[test]
    fn hostile_values_stay_inside_their_strings() {
        let set = rules();
        // Keys and values that pass selector validation cannot carry quotes, but object
        // names come from the path: the parser rejects them, and even if one slipped
        // through, quoting keeps it a string.
        let q = custom_query(
            &set.custom[0],
            &pods_metric(),
            Some("demo"),
            &Scope::Object(r#"x"} or vector(1) #"#),
            &Selector::default(),
        )
        .expect("query");
        assert!(q.contains(r#"pod="x\"} or vector(1) #""#), "{q}");
        promql_parser::parser::parse(&q).expect("still one valid query");
    }
}
