//! Answering metric requests: the request, the rule that owns the metric, the query, the
//! value cache, and the list that goes back. This is where the one-way flow meets:
//! request -> rule matching -> PromQL -> Prometheus/cache -> response.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::OnMissing;
use crate::discovery::{CustomMetric, ExternalMetric, Registry};
use crate::kube::objects::{ObjectResolver, ObjectSet, ResolveError};
use crate::kube::resources::{ResourceInfo, ResourceMapper};
use crate::metrics::{unix_now, Metrics, ValueLabels};
use crate::not_found::NotFound;
use crate::prometheus::{PrometheusError, QueryCache, RuleQuery, Sample};
use crate::query::{self, QueryError, Scope};
use crate::request::{CustomRequest, ExternalRequest, Target};
use crate::response::{CustomItem, CustomList, DescribedObject, ExternalList, ExternalValue};
use crate::rules::Rule;

/// The state every request reads. Each piece is swapped whole on reload or rediscovery.
pub struct Bridge {
    /// Rules and what discovery found for them, always a matching pair.
    pub registry: Arc<ArcSwap<Registry>>,
    /// The backends' clients with the value cache; replaced when the backends or `[cache]`
    /// change on reload.
    pub backend: Arc<ArcSwap<QueryCache>>,
    pub mapper: Arc<dyn ResourceMapper>,
    pub objects: Arc<dyn ObjectResolver>,
    pub metrics: Arc<Metrics>,
    /// Starts a discovery run when a request misses a metric (None: `explain`).
    pub on_miss: Option<Arc<crate::discovery::RediscoverOnMiss>>,
}

/// A custom-metrics request worked out down to its query.
#[derive(Debug)]
pub struct CustomPlan {
    pub resource: ResourceInfo,
    pub metric: CustomMetric,
    pub promql: String,
    /// The objects the answer may name; None means any object that has a sample.
    pub objects: Option<Vec<String>>,
}

/// Why a request could not be answered. The HTTP layer turns each into a Status
/// ([`crate::api::status`]); nothing here knows about HTTP codes.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// What was asked for is not there.
    #[error("{0}")]
    NotFound(NotFound),
    /// The request cannot be answered as asked (wrong scope, a selector that needs a cluster).
    #[error("{0}")]
    BadRequest(String),
    /// The request could not be rendered as PromQL.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Prometheus failed or answered something unusable.
    #[error(transparent)]
    Prometheus(#[from] PrometheusError),
    /// The objects a selector names could not be listed.
    #[error(transparent)]
    Objects(ResolveError),
    /// A rule vanished between lookups (a bug, not the client's fault).
    #[error("{0}")]
    Internal(String),
}

/// What `/readyz` reports: each check and, when it fails, why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub checks: Vec<(&'static str, Result<(), String>)>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|(_, r)| r.is_ok())
    }
}

impl Bridge {
    /// Ready to answer: one series discovery done, and every watch cache past its first list.
    /// Caches that failed (forbidden, gone, kube-apiserver down) do not hold readiness: their
    /// resources are answered per request, so one bad resource never takes the API down.
    pub fn readiness(&self) -> Readiness {
        let discovery = if self.registry.load().discovered {
            Ok(())
        } else {
            Err("the first series discovery has not finished".to_string())
        };
        let starting = self.objects.starting();
        let caches = if starting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "waiting for the first list of {}",
                starting.join(", ")
            ))
        };
        Readiness {
            checks: vec![("series-discovery", discovery), ("watch-caches", caches)],
        }
    }

    /// A request asked for a metric the registry lacks: maybe a new one (rate limited).
    fn missed(&self, metric: &str) {
        if let Some(on_miss) = &self.on_miss {
            on_miss.missed(metric);
        }
    }

    /// Finds the rule, resolves the objects and renders the query.
    pub async fn plan_custom(
        &self,
        registry: &Registry,
        req: &CustomRequest,
    ) -> Result<CustomPlan, AnswerError> {
        let metric_not_found = |resource: &str| {
            AnswerError::NotFound(NotFound::Metric {
                metric: req.metric.clone(),
                resource: resource.to_string(),
            })
        };
        let resource = self
            .mapper
            .lookup(&req.resource)
            .ok_or_else(|| metric_not_found(&req.resource))?;
        let plural = resource.group_resource.to_string();
        if req.namespace.is_some() && !resource.namespaced {
            return Err(AnswerError::BadRequest(format!(
                "{plural} are cluster-scoped: ask for /{plural}/... without a namespace"
            )));
        }
        if req.namespace.is_none() && resource.namespaced {
            return Err(AnswerError::BadRequest(format!(
                "{plural} are namespaced: ask for /namespaces/{{namespace}}/{plural}/..."
            )));
        }
        let metric = registry
            .custom_metric(&resource.group_resource, &req.metric)
            .cloned()
            .ok_or_else(|| {
                self.missed(&req.metric);
                metric_not_found(&plural)
            })?;
        let rule = rule_of(registry, metric.rule)?;
        let namespace = req.namespace.as_deref();
        let (scope, objects) = match &req.target {
            Target::Named(name) => {
                // A synced cache knows every object: a deleted pod's lingering series must not
                // answer for it. Without one, Prometheus is all there is (documented).
                if self.objects.exists(&resource, namespace, name) == Some(false) {
                    return Err(AnswerError::NotFound(NotFound::Object {
                        resource: plural,
                        name: name.clone(),
                    }));
                }
                (Scope::Object(name.as_str()), Some(vec![name.clone()]))
            }
            Target::All(selector) => {
                match self.objects.resolve(&resource, namespace, selector).await {
                    Ok(ObjectSet::AllWithSamples) => (Scope::Every, None),
                    Ok(ObjectSet::Named(names)) => (Scope::Every, Some(names)),
                    Err(e) => return Err(resolve_error(e)),
                }
            }
        };
        let promql = query::custom_query(rule, &metric, namespace, &scope, &req.metric_selector)?;
        Ok(CustomPlan {
            resource,
            metric,
            promql,
            objects,
        })
    }

    pub async fn custom(&self, req: &CustomRequest) -> Result<CustomList, AnswerError> {
        let registry = self.registry.load_full();
        let plan = self.plan_custom(&registry, req).await?;
        let rule = rule_of(&registry, plan.metric.rule)?;
        let result = self
            .query(RuleQuery {
                backend: &rule.backend,
                promql: &plan.promql,
                namespace: req.tenant(),
                max_stale: rule.max_stale,
            })
            .await?;

        let wanted: Option<HashSet<&str>> = plan
            .objects
            .as_ref()
            .map(|names| names.iter().map(String::as_str).collect());
        let samples = result.samples();
        let mut seen = HashSet::with_capacity(samples.len());
        let mut items = Vec::with_capacity(samples.len());
        let api_version = plan.resource.api_version();
        for sample in samples {
            let Some(name) = sample.labels.get(&plan.metric.resource_label) else {
                continue;
            };
            if wanted.as_ref().is_some_and(|w| !w.contains(name.as_str()))
                || seen.contains(name.as_str())
            {
                continue;
            }
            let Some(value) = self.value_of(sample, rule) else {
                continue;
            };
            seen.insert(name.as_str());
            items.push(self.item(
                req,
                &plan.resource,
                &api_version,
                name,
                sample.timestamp,
                value,
            ));
        }
        if rule.on_missing == OnMissing::Zero {
            let now = unix_now();
            for name in plan.objects.iter().flatten() {
                if !seen.contains(name.as_str()) {
                    items.push(self.item(
                        req,
                        &plan.resource,
                        &api_version,
                        name,
                        now,
                        "0".to_string(),
                    ));
                }
            }
        }
        let plural = plan.resource.group_resource.to_string();
        if items.is_empty() {
            let what = match &req.target {
                Target::Named(name) => format!("{plural} {name}"),
                Target::All(sel) if plan.objects.as_ref().is_some_and(Vec::is_empty) => {
                    return Err(AnswerError::NotFound(NotFound::NoObjects {
                        resource: plural,
                        namespace: req.namespace.clone(),
                        selector: sel.to_string(),
                    }));
                }
                Target::All(_) => plural.clone(),
            };
            return Err(AnswerError::NotFound(NotFound::NoSamples {
                metric: req.metric.clone(),
                what,
                metric_selector: req.metric_selector.to_string(),
            }));
        }
        items.sort_by(|a, b| a.object.name.cmp(&b.object.name));
        Ok(CustomList::new(
            req.version,
            &req.metric,
            req.metric_selector.to_label_selector(),
            rule.window,
            items,
        ))
    }

    pub async fn external(&self, req: &ExternalRequest) -> Result<ExternalList, AnswerError> {
        let registry = self.registry.load_full();
        let (rule, promql) = self.external_plan(&registry, req)?;
        let result = self
            .query(RuleQuery {
                backend: &rule.backend,
                promql: &promql,
                namespace: Some(&req.namespace),
                max_stale: rule.max_stale,
            })
            .await?;
        let mut items: Vec<ExternalValue> = result
            .samples()
            .iter()
            .filter_map(|s| {
                let value = self.value_of(s, rule)?;
                let mut labels = s.labels.clone();
                labels.remove("__name__");
                Some(ExternalValue {
                    labels,
                    timestamp: s.timestamp,
                    value,
                })
            })
            .collect();
        if items.is_empty() {
            if rule.on_missing == OnMissing::Zero {
                items.push(ExternalValue {
                    labels: BTreeMap::new(),
                    timestamp: unix_now(),
                    value: "0".into(),
                });
            } else {
                return Err(AnswerError::NotFound(NotFound::NoExternalSamples {
                    metric: req.metric.clone(),
                    namespace: req.namespace.clone(),
                    selector: req.selector.to_string(),
                }));
            }
        }
        Ok(ExternalList::new(&req.metric, rule.window, items))
    }

    pub fn plan_external(
        &self,
        registry: &Registry,
        req: &ExternalRequest,
    ) -> Result<String, AnswerError> {
        Ok(self.external_plan(registry, req)?.1)
    }

    /// The rule that answers an external request, and the query it runs.
    fn external_plan<'r>(
        &self,
        registry: &'r Registry,
        req: &ExternalRequest,
    ) -> Result<(&'r Rule, String), AnswerError> {
        let metric = match registry.external_metric(&req.metric) {
            Some(metric) => metric.clone(),
            // Not a miss worth a discovery run: the query below finds the series if it is
            // there now, which is all a later discovery would add.
            None => undiscovered_external(registry, &req.metric).ok_or_else(|| {
                self.missed(&req.metric);
                external_not_found(req)
            })?,
        };
        let rule = rule_of(registry, metric.rule)?;
        let promql = query::external_query(rule, &metric, &req.namespace, &req.selector)?;
        Ok((rule, promql))
    }

    /// A rule's query through the value cache. A per-namespace backend (tenant headers or
    /// parameters) cannot answer a request that names no namespace.
    pub(crate) async fn query(
        &self,
        ask: RuleQuery<'_>,
    ) -> Result<Arc<crate::prometheus::QueryResult>, AnswerError> {
        let cache = self.backend.load_full();
        if ask.namespace.is_none() && cache.backends().is_per_namespace(ask.backend) {
            return Err(AnswerError::BadRequest(format!(
                "this metric comes from backend {:?}, which answers one namespace (tenant) at a \
                 time; ask for it within a namespace",
                ask.backend
            )));
        }
        Ok(cache.query(ask).await?)
    }

    /// The Quantity for a sample, or None if it has none (NaN/Inf count as missing).
    fn value_of(&self, sample: &Sample, rule: &Rule) -> Option<String> {
        match crate::quantity::from_f64(sample.value) {
            Some(q) => {
                if q.is_clamped() {
                    self.metrics
                        .values
                        .get_or_create(&ValueLabels { kind: "clamped" })
                        .inc();
                    tracing::warn!(rule = %rule.id, value = sample.value, "value beyond what the HPA can hold; clamped");
                }
                Some(q.into_string())
            }
            None => {
                self.metrics
                    .values
                    .get_or_create(&ValueLabels { kind: "non_finite" })
                    .inc();
                tracing::debug!(rule = %rule.id, value = sample.value, "non-finite sample treated as missing");
                None
            }
        }
    }

    fn item(
        &self,
        req: &CustomRequest,
        resource: &ResourceInfo,
        api_version: &str,
        name: &str,
        timestamp: f64,
        value: String,
    ) -> CustomItem {
        CustomItem {
            object: DescribedObject {
                kind: resource.kind.clone(),
                namespace: if resource.namespaced {
                    req.namespace.clone()
                } else {
                    None
                },
                name: name.to_string(),
                api_version: api_version.to_owned(),
            },
            timestamp,
            value,
        }
    }
}

/// Objects that could not be resolved: a vanished resource is a 404 like any other; the rest
/// keep their cause for the HTTP layer (the details go to the log here).
fn resolve_error(e: ResolveError) -> AnswerError {
    match e {
        ResolveError::Gone { resource } => AnswerError::NotFound(NotFound::Resource { resource }),
        ResolveError::Forbidden { ref resource } => {
            tracing::warn!(%resource, "cannot list the selected objects: the bridge's RBAC does not allow it");
            AnswerError::Objects(e)
        }
        ResolveError::Unavailable { .. } => {
            tracing::warn!(error = %e, "cannot resolve labelSelector");
            AnswerError::Objects(e)
        }
        ResolveError::Unsupported(_) => AnswerError::Objects(e),
    }
}

fn external_not_found(req: &ExternalRequest) -> AnswerError {
    AnswerError::NotFound(NotFound::Metric {
        metric: req.metric.clone(),
        resource: "namespaces".into(),
    })
}

/// An external metric discovery has not listed (its series never existed, or none has had a
/// sample within `series_max_age`), answered anyway by a rule with `on_missing = "zero"` whose
/// `series_query` names its series: an exporter that drops an empty queue's series must read
/// as 0, not as an unknown metric that stops the HPA. Later rules win, as in discovery.
pub(crate) fn undiscovered_external(registry: &Registry, metric: &str) -> Option<ExternalMetric> {
    registry.rules.external.iter().rev().find_map(|rule| {
        if rule.on_missing != OnMissing::Zero {
            return None;
        }
        let series = literal_series_name(&rule.series_query)?;
        let answers =
            rule.keeps_series(&series) && rule.metric_name(&series).as_deref() == Some(metric);
        answers.then_some(ExternalMetric {
            rule: rule.id,
            series,
        })
    })
}

/// The one series name a series selector names (`queue_depth{...}` or
/// `{__name__="queue_depth"}`); None for regexes and alternatives.
fn literal_series_name(series_query: &str) -> Option<String> {
    use promql_parser::label::{MatchOp, METRIC_NAME};
    let promql_parser::parser::Expr::VectorSelector(selector) =
        crate::promql::parse(series_query).ok()?
    else {
        return None;
    };
    if !selector.matchers.or_matchers.is_empty() {
        return None;
    }
    let name = selector.name.clone().or_else(|| {
        selector
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone())
    })?;
    crate::promql::is_metric_name(&name).then_some(name)
}

fn rule_of(registry: &Registry, id: crate::rules::RuleId) -> Result<&Rule, AnswerError> {
    registry
        .rules
        .rule(id)
        .ok_or_else(|| AnswerError::Internal(format!("{id} vanished")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Route;
    use crate::rules::RuleSet;

    /// What discovery holds when it has seen no series at all (every queue gone).
    fn registry(rules: &str) -> Registry {
        let text = format!("[prometheus]\nurl = \"http://127.0.0.1:9\"\n{rules}");
        let file = crate::config::parse(&text, std::path::Path::new("t.toml")).expect("parses");
        Registry::empty(Arc::new(RuleSet::compile(&file).expect("compiles")))
    }

    fn external(metric: &str, query: &str) -> ExternalRequest {
        let path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/{metric}");
        match crate::request::parse(&path, query) {
            Ok(Route::External(req)) => req,
            other => panic!("{path}: {other:?}"),
        }
    }

    /// The query an undiscovered metric would run, or None when it stays unknown.
    fn undiscovered_query(registry: &Registry, req: &ExternalRequest) -> Option<String> {
        let metric = undiscovered_external(registry, &req.metric)?;
        let rule = registry.rules.rule(metric.rule).expect("its rule");
        Some(query::external_query(rule, &metric, &req.namespace, &req.selector).expect("renders"))
    }

    const QUEUES: &str = r#"
[[external_rules]]
series_query = 'queue_messages_ready{namespace!="",queue!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'
on_missing = "zero"

[[external_rules]]
series_query = 'queue_messages_ready{namespace!="",queue!=""}'
name = { matches = "^queue_(.*)$", as = "strict_${1}" }
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'
"#;

    #[test]
    fn a_zero_rule_answers_its_series_without_discovery() {
        let registry = registry(QUEUES);
        let req = external("queue_messages_ready", "labelSelector=queue%3Dorders");
        assert!(registry.external_metric(&req.metric).is_none());
        // The query runs on the series the selector names: 0 items become one item of 0
        // (on_missing), a series that has just appeared is read before discovery lists it.
        assert_eq!(
            undiscovered_query(&registry, &req).as_deref(),
            Some(r#"sum(queue_messages_ready{queue="orders",namespace="shop"}) by (queue)"#)
        );
        let metric = undiscovered_external(&registry, &req.metric).expect("resolved");
        assert_eq!(metric.rule.to_string(), "external_rules[0]");
    }

    #[test]
    fn an_error_rule_or_a_name_no_rule_gives_stays_unknown() {
        let registry = registry(QUEUES);
        // `strict_messages_ready` is what the second rule calls the series: on_missing = error.
        for name in [
            "strict_messages_ready",
            "messages_ready",
            "queue_messages_ready_total",
            "other",
        ] {
            assert_eq!(
                undiscovered_query(&registry, &external(name, "")),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn only_a_series_named_literally_and_kept_by_the_rule_is_assumed() {
        let registry = registry(
            r#"
[[external_rules]]
series_query = '{__name__=~"jobs_.*",namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'
on_missing = "zero"

[[external_rules]]
series_query = '{__name__="tasks_waiting",namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
name = { matches = "^(.*)_waiting$", as = "${1}_backlog" }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'
on_missing = "zero"

[[external_rules]]
series_query = 'tasks_waiting_bucket{namespace!=""}'
series_filters = [{ is_not = "_bucket$" }]
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'
on_missing = "zero"
"#,
        );
        for name in ["jobs_pending", "tasks_waiting", "tasks_waiting_bucket"] {
            assert_eq!(
                undiscovered_query(&registry, &external(name, "")),
                None,
                "{name}"
            );
        }
        assert_eq!(
            undiscovered_query(&registry, &external("tasks_backlog", "")).as_deref(),
            Some(r#"sum(tasks_waiting{namespace="shop"})"#),
            "named through `as`"
        );
    }

    #[test]
    fn later_rules_win_as_in_discovery() {
        let registry = registry(
            r#"
[[external_rules]]
series_query = 'queue_depth{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'
on_missing = "zero"

[[external_rules]]
series_query = 'queue_depth{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'max(<<.Series>>{<<.LabelMatchers>>})'
on_missing = "zero"
"#,
        );
        assert_eq!(
            undiscovered_query(&registry, &external("queue_depth", "")).as_deref(),
            Some(r#"max(queue_depth{namespace="shop"})"#)
        );
    }

    #[test]
    fn literal_series_names() {
        for (query, want) in [
            (r#"queue_depth{namespace!=""}"#, Some("queue_depth")),
            ("queue_depth", Some("queue_depth")),
            (
                r#"{__name__="queue_depth",namespace!=""}"#,
                Some("queue_depth"),
            ),
            ("ns:queue_depth:sum{}", Some("ns:queue_depth:sum")),
            (r#"{__name__=~"queue_depth"}"#, None),
            (r#"{__name__=~"a|b",namespace!=""}"#, None),
            (r#"{namespace!=""}"#, None),
            (r#"{__name__!="a",namespace!=""}"#, None),
            (r#"{"queue.depth",namespace!=""}"#, None),
            ("sum(queue_depth)", None),
        ] {
            assert_eq!(literal_series_name(query).as_deref(), want, "{query}");
        }
    }
}
