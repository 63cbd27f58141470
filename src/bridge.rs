//! Answering metric requests: the request, the rule that owns the metric, the query, the
//! value cache, and the list that goes back. This is where the one-way flow meets:
//! request -> rule matching -> PromQL -> Prometheus/cache -> response.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::OnMissing;
use crate::discovery::{CustomMetric, Registry};
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
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for sample in result.samples() {
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
            items.push(self.item(req, &plan.resource, name, sample.timestamp, value));
        }
        if rule.on_missing == OnMissing::Zero {
            let now = unix_now();
            for name in plan.objects.iter().flatten() {
                if !seen.contains(name.as_str()) {
                    items.push(self.item(req, &plan.resource, name, now, "0".to_string()));
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
        let promql = self.plan_external(&registry, req)?;
        let metric = registry.external_metric(&req.metric).ok_or_else(|| {
            self.missed(&req.metric);
            external_not_found(req)
        })?;
        let rule = rule_of(&registry, metric.rule)?;
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
        let metric = registry.external_metric(&req.metric).ok_or_else(|| {
            self.missed(&req.metric);
            external_not_found(req)
        })?;
        let rule = rule_of(registry, metric.rule)?;
        Ok(query::external_query(
            rule,
            metric,
            &req.namespace,
            &req.selector,
        )?)
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
                Some(q.as_str().to_string())
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
                api_version: resource.api_version(),
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

fn rule_of(registry: &Registry, id: crate::rules::RuleId) -> Result<&Rule, AnswerError> {
    registry
        .rules
        .rule(id)
        .ok_or_else(|| AnswerError::Internal(format!("{id} vanished")))
}
