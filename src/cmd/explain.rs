//! `explain --config FILE PATH`: the PromQL a request would run, found the way the server
//! finds it (one series discovery against the configured Prometheus).

use std::sync::Arc;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use futures::future::BoxFuture;

use crate::bridge::Bridge;
use crate::discovery::{build_registry, list_series, SeriesByQuery};
use crate::kube::objects::{ObjectResolver, ObjectSet, ResolveError};
use crate::kube::resources::{ResourceInfo, StaticMapper};
use crate::metrics::Metrics;
use crate::request::{self, Route, Target};
use crate::rules::{load_file, Overrides};
use crate::selector::Selector;

/// Answers every selector with "all objects", so the query can be shown without a cluster.
struct ShowAll;

impl ObjectResolver for ShowAll {
    fn resolve<'a>(
        &'a self,
        _: &'a ResourceInfo,
        _: Option<&'a str>,
        _: &'a Selector,
    ) -> BoxFuture<'a, Result<ObjectSet, ResolveError>> {
        Box::pin(async { Ok(ObjectSet::AllWithSamples) })
    }
}

/// `name (url), failover to "a", "b"`: where a rule's queries go.
fn backend_line(rules: &crate::rules::RuleSet, name: &str) -> String {
    let chain = rules.backends.chain(name);
    let Some(first) = chain.first() else {
        return format!("{name:?} (unknown)");
    };
    let mut line = format!("{name:?} ({})", first.url);
    if chain.len() > 1 {
        let rest: Vec<String> = chain[1..]
            .iter()
            .map(|b| format!("{:?}", crate::rules::backends::name_of(b)))
            .collect();
        line.push_str(&format!(", failover to {}", rest.join(", ")));
    }
    line
}

pub async fn run(
    config: &std::path::Path,
    prometheus_url: Option<String>,
    path: &str,
) -> anyhow::Result<()> {
    let rules = Arc::new(
        load_file(config, &Overrides { prometheus_url }).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let metrics = Arc::new(Metrics::new());
    let backend = crate::reload::backend_for(&rules, &metrics)?;
    let (series, errors) =
        list_series(&rules, backend.backends(), &SeriesByQuery::new(), &metrics).await;
    for (source, e) in &errors {
        eprintln!(
            "warning: series_query {:?} on backend {:?} failed: {e}",
            source.query, source.backend
        );
    }
    let mapper = Arc::new(StaticMapper::builtin());
    // Upstreams only route here: explain sends nothing to them.
    let upstreams = Arc::new(crate::upstream::Upstreams::unconnected(&rules.upstreams)?);
    let registry =
        Arc::new(build_registry(rules, &series, mapper.as_ref()).with_upstreams(upstreams));
    let bridge = Bridge {
        registry: Arc::new(ArcSwap::new(registry.clone())),
        backend: Arc::new(ArcSwap::from_pointee(backend)),
        mapper,
        objects: Arc::new(ShowAll),
        metrics,
        on_miss: None,
    };

    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let path = path.trim_start_matches('/');
    let full = if path.starts_with("apis/") {
        format!("/{path}")
    } else {
        format!("/apis/{}/v1beta2/{path}", request::CUSTOM_GROUP)
    };
    let route = request::parse(&full, query).map_err(|e| anyhow::anyhow!("{e}"))?;
    let upstreams = &registry.upstreams;
    let forwarded = match &route {
        Route::Custom(req) => upstreams.for_custom(&registry, bridge.mapper.as_ref(), req),
        Route::External(req) => upstreams.for_external(&registry, req),
        _ => None,
    };
    if let Some(to) = forwarded {
        // explain reads no upstream's discovery: this is where a request would go, and the
        // upstream decides what it answers.
        println!("request:  {full}");
        println!(
            "upstream: {} (these rules do not serve the metric; the request is forwarded \
             with the caller's identity and the upstream's answer returned unchanged)",
            to.upstream.name
        );
        return Ok(());
    }
    match route {
        Route::Custom(req) => {
            let plan = bridge
                .plan_custom(&registry, &req)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("explaining")?;
            let rule = plan.metric.rule;
            println!(
                "request:  {full}{}",
                if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                }
            );
            println!(
                "rule:     {rule} (series {}, objects named by label {:?})",
                plan.metric.series, plan.metric.resource_label
            );
            if let Some(rule) = registry.rules.rule(rule) {
                println!("backend:  {}", backend_line(&registry.rules, &rule.backend));
            }
            println!("promql:   {}", plan.promql);
            match &req.target {
                Target::Named(name) => println!("answer:   the sample whose {} is {name:?}", plan.metric.resource_label),
                Target::All(sel) if sel.is_empty() => println!("answer:   every {} with a sample", plan.resource.kind),
                Target::All(sel) => println!(
                    "answer:   the samples of the {} objects matching labelSelector \"{sel}\" (resolved from Kubernetes when serving)",
                    plan.resource.kind
                ),
            }
        }
        Route::External(req) => {
            let promql = bridge
                .plan_external(&registry, &req)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // A zero rule answers a metric discovery does not list (yet) as well.
            let metric = registry
                .external_metric(&req.metric)
                .cloned()
                .or_else(|| crate::bridge::undiscovered_external(&registry, &req.metric));
            let rule = metric
                .as_ref()
                .map(|m| m.rule.to_string())
                .unwrap_or_default();
            println!("request:  {full}");
            println!("rule:     {rule}");
            if let Some(m) = &metric {
                if let Some(rule) = registry.rules.rule(m.rule) {
                    println!("backend:  {}", backend_line(&registry.rules, &rule.backend));
                }
            }
            println!("promql:   {promql}");
        }
        Route::ResourceMetrics(req) => {
            let Some(rules) = registry.rules.resource_rules.as_ref() else {
                bail!("{full}: the rules file has no [resource_rules], so metrics.k8s.io is not served");
            };
            let queries =
                crate::resource_answer::queries(rules, &req).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("request:  {full}");
            println!(
                "backend:  {}",
                backend_line(&registry.rules, &rules.backend)
            );
            for (resource, promql) in &queries {
                let rule = rules.rule(*resource);
                let labels = match req.kind {
                    request::ResourceKind::Pods => format!(
                        "namespace label {:?}, pod label {:?}, container label {:?}",
                        rule.namespace_label(),
                        rule.pod_label(),
                        rule.container_label()
                    ),
                    request::ResourceKind::Nodes => {
                        format!(
                            "nodes by name or address in labels {:?}",
                            rule.node_labels()
                        )
                    }
                };
                println!("rule:     resource_rules.{} ({labels})", resource.as_str());
                println!("promql:   {promql}");
            }
            println!(
                "answer:   {} selected {} (shared by every caller for the cache TTL), window {}, missing containers: {:?}",
                match (req.kind, &req.name) {
                    (_, Some(name)) => format!("{name:?} if it is among the"),
                    _ => "the".to_string(),
                },
                match req.kind {
                    request::ResourceKind::Pods => "Running pods (from the watch cache when serving)",
                    request::ResourceKind::Nodes => "nodes",
                },
                crate::response::resource::go_duration(rules.window),
                rules.missing_containers
            );
        }
        other => bail!("{full} is not a metric request ({other:?})"),
    }
    Ok(())
}
