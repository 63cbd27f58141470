//! Sharing the metrics APIs with another server (`[[upstreams]]`). Only one server can own
//! an APIService such as `v1beta1.custom.metrics.k8s.io`, so during a migration the bridge
//! owns it and forwards what it does not serve to the old adapter: a custom or external
//! metric the registry does not have goes to an upstream that answers its group version,
//! with the caller's identity (as kube-apiserver's aggregator sends it), and the answer comes
//! back unchanged. The upstream's authorization decides; the bridge does not authorize those
//! requests itself.
//!
//! The upstreams belong to a registry ([`Registry::upstreams`]): a rules reload that moves
//! metrics from an upstream to the bridge's own rules swaps both at once, so no request
//! finds a metric in neither.
//!
//! Discovery documents list both: the upstreams' documents are read every
//! `discovery_interval` and merged into the bridge's own (the bridge wins a name clash, logged
//! once). Merged documents are rendered once per change of either side, like the bridge's own.

pub mod client;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use crate::config::UpstreamConfig;
use crate::discovery::Registry;
use crate::kube::resources::ResourceMapper;
use crate::metrics::Metrics;
use crate::request::{CustomRequest, ExternalRequest};
use crate::response::discovery::{CustomResource, Documents, Listing};
pub use client::{Upstream, UpstreamApi};

/// Every configured upstream, in the order of the file (the first that answers a group
/// version and lists a metric gets its requests).
pub struct Upstreams {
    /// What they were built from: a registry built from the same configs keeps this set.
    configs: Vec<UpstreamConfig>,
    list: Vec<Arc<Upstream>>,
    /// The last merged documents and what they were rendered from.
    merged: Mutex<Option<Merged>>,
    /// Clashes already logged (`<api> <resource>/<metric>`), so each is logged once.
    clashes: Mutex<HashSet<String>>,
}

struct Merged {
    /// A weak reference keeps the registry's allocation, so its address is never reused
    /// by a newer registry while this is cached.
    registry: Weak<Registry>,
    generations: Vec<u64>,
    documents: Arc<Documents>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.list).finish()
    }
}

impl Upstreams {
    pub fn none() -> Upstreams {
        Upstreams {
            configs: Vec::new(),
            list: Vec::new(),
            merged: Mutex::new(None),
            clashes: Mutex::new(HashSet::new()),
        }
    }

    /// Clients for `configs`; nothing is fetched until [`Upstreams::start`].
    pub fn new(configs: &[UpstreamConfig], metrics: &Arc<Metrics>) -> anyhow::Result<Upstreams> {
        Upstreams::build(configs, |cfg| Upstream::new(cfg, metrics.clone()))
    }

    /// For routing only (`explain`): no clients, so TLS files need not exist.
    pub fn unconnected(configs: &[UpstreamConfig]) -> anyhow::Result<Upstreams> {
        let metrics = Arc::new(Metrics::new());
        Upstreams::build(configs, |cfg| Upstream::unconnected(cfg, metrics.clone()))
    }

    fn build(
        configs: &[UpstreamConfig],
        one: impl Fn(&UpstreamConfig) -> anyhow::Result<Upstream>,
    ) -> anyhow::Result<Upstreams> {
        let mut list = Vec::with_capacity(configs.len());
        for cfg in configs {
            list.push(Arc::new(one(cfg)?));
        }
        Ok(Upstreams {
            configs: configs.to_vec(),
            list,
            ..Upstreams::none()
        })
    }

    pub fn configs(&self) -> &[UpstreamConfig] {
        &self.configs
    }

    /// Reads each upstream's discovery now and every `discovery_interval` after, for as long
    /// as this set is in use (a reload that replaces it ends the tasks).
    pub fn start(&self) {
        for upstream in &self.list {
            let weak = Arc::downgrade(upstream);
            tokio::spawn(async move {
                loop {
                    let Some(upstream) = weak.upgrade() else {
                        return;
                    };
                    upstream.refresh().await;
                    let interval = upstream.discovery_interval;
                    drop(upstream);
                    tokio::time::sleep(interval).await;
                }
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.list.iter()
    }

    /// Where a custom-metrics request goes when the registry does not serve its metric: the
    /// first upstream for its version that lists it, else the first for its version (its
    /// discovery may lag behind; its own 404 then answers). `resource` is the request's
    /// resource in the form discovery lists (`pods`, `deployments.apps`).
    pub fn for_custom(
        &self,
        registry: &Registry,
        mapper: &dyn ResourceMapper,
        req: &CustomRequest,
    ) -> Option<Forward> {
        if self.list.is_empty() {
            return None;
        }
        let info = mapper.lookup(&req.resource);
        if let Some(info) = &info {
            if registry
                .custom_metric(&info.group_resource, &req.metric)
                .is_some()
            {
                return None;
            }
        }
        let resource = info
            .map(|i| i.group_resource.to_string())
            .unwrap_or_else(|| req.resource.clone());
        self.pick(UpstreamApi::Custom(req.version), &resource, &req.metric)
    }

    /// As [`Upstreams::for_custom`], for an external metric. A rule with `on_missing =
    /// "zero"` that names the metric's series claims it even while discovery does not list
    /// it (it answers 0), so such a metric is not forwarded either.
    pub fn for_external(&self, registry: &Registry, req: &ExternalRequest) -> Option<Forward> {
        if self.list.is_empty()
            || registry.external_metric(&req.metric).is_some()
            || crate::bridge::undiscovered_external(registry, &req.metric).is_some()
        {
            return None;
        }
        self.pick(UpstreamApi::External, "", &req.metric)
    }

    fn pick(&self, api: UpstreamApi, resource: &str, metric: &str) -> Option<Forward> {
        let mut serving = self.list.iter().filter(|u| u.serves(api)).peekable();
        let first = serving.peek().cloned()?.clone();
        let listing = serving.find(|u| u.lists(api, resource, metric)).cloned();
        Some(Forward {
            listed: listing.is_some(),
            upstream: listing.unwrap_or(first),
        })
    }

    /// The discovery documents to serve: the registry's own, or, with upstreams, both merged
    /// (rendered again only when the registry or an upstream's listing changed).
    pub fn documents(&self, registry: &Arc<Registry>) -> Arc<Documents> {
        if self.list.is_empty() {
            return registry.documents.clone();
        }
        let generations: Vec<u64> = self.list.iter().map(|u| u.generation()).collect();
        let mut merged = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = merged.as_ref() {
            if m.generations == generations
                && std::ptr::eq(m.registry.as_ptr(), Arc::as_ptr(registry))
            {
                return m.documents.clone();
            }
        }
        let documents = Arc::new(Documents::render(&self.merge(&registry.listing)));
        *merged = Some(Merged {
            registry: Arc::downgrade(registry),
            generations,
            documents: documents.clone(),
        });
        documents
    }

    /// `ours` with every upstream's metrics added that `ours` (or an earlier upstream) does
    /// not already list.
    fn merge(&self, ours: &Listing) -> Listing {
        let mut out = ours.clone();
        for upstream in &self.list {
            let listing = upstream.listing();
            for (api, theirs) in &listing.apis {
                for (resource, (namespaced, metrics)) in &theirs.resources {
                    for metric in metrics {
                        let added = match api {
                            UpstreamApi::External => out.external.insert(metric.clone()),
                            UpstreamApi::Custom(version) => {
                                let entry = out
                                    .custom_mut(*version)
                                    .entry(resource.clone())
                                    .or_insert_with(|| CustomResource {
                                        namespaced: *namespaced,
                                        metrics: Default::default(),
                                    });
                                entry.metrics.insert(metric.clone())
                            }
                        };
                        if !added {
                            self.clash(&upstream.name, *api, resource, metric, ours);
                        }
                    }
                }
            }
        }
        out
    }

    /// Logs once that an upstream lists a metric the bridge (or an earlier upstream) serves.
    fn clash(&self, name: &str, api: UpstreamApi, resource: &str, metric: &str, ours: &Listing) {
        let key = format!("{name} {api} {resource}/{metric}");
        let mut logged = self.clashes.lock().unwrap_or_else(|e| e.into_inner());
        if logged.insert(key) {
            let served_here = match api {
                UpstreamApi::External => ours.external.contains(metric),
                UpstreamApi::Custom(v) => ours
                    .custom(v)
                    .get(resource)
                    .is_some_and(|r| r.metrics.contains(metric)),
            };
            let winner = if served_here {
                "the bridge"
            } else {
                "an earlier upstream"
            };
            tracing::info!(upstream = %name, %api, %resource, %metric, %winner, "an upstream lists a metric that is served elsewhere; requests for it go to the winner");
        }
    }
}

/// Where one request goes.
#[derive(Debug, Clone)]
pub struct Forward {
    pub upstream: Arc<Upstream>,
    /// Whether the upstream's discovery lists the metric (else it is a guess, and a miss of
    /// the bridge's own that discovery may fix).
    pub listed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::StaticMapper;

    fn upstreams(apis: &[&[&str]]) -> Upstreams {
        let metrics = Arc::new(Metrics::new());
        let configs: Vec<UpstreamConfig> = apis
            .iter()
            .enumerate()
            .map(|(i, apis)| UpstreamConfig {
                name: format!("u{i}"),
                url: format!("https://u{i}.invalid"),
                apis: apis.iter().map(|s| s.to_string()).collect(),
                ..UpstreamConfig::default()
            })
            .collect();
        Upstreams::new(&configs, &metrics).expect("clients")
    }

    fn registry(text: &str) -> Arc<Registry> {
        let rules = crate::rules::fixtures::compile(text).expect("rules");
        Arc::new(Registry::empty(Arc::new(rules)))
    }

    #[test]
    fn without_upstreams_the_registry_documents_are_served_as_they_are() {
        let reg = registry(crate::rules::fixtures::EXAMPLE);
        assert!(reg.upstreams.is_empty());
        assert!(Arc::ptr_eq(&reg.upstreams.documents(&reg), &reg.documents));
    }

    #[test]
    fn requests_go_to_the_upstream_serving_their_version() {
        let ups = upstreams(&[
            &["external.metrics.k8s.io/v1beta1"],
            &[
                "custom.metrics.k8s.io/v1beta1",
                "external.metrics.k8s.io/v1beta1",
            ],
        ]);
        let reg = registry(crate::rules::fixtures::EXAMPLE);
        let mapper = StaticMapper::builtin();
        let custom = |version| CustomRequest {
            version,
            namespace: Some("default".into()),
            resource: "pod".into(),
            target: crate::request::Target::Named("web-0".into()),
            metric: "http_requests".into(),
            metric_selector: Default::default(),
            namespace_metric: false,
        };
        let to = ups
            .for_custom(
                &reg,
                &mapper,
                &custom(crate::request::CustomVersion::V1beta1),
            )
            .expect("forwarded");
        assert_eq!(to.upstream.name, "u1");
        assert!(!to.listed);
        assert!(ups
            .for_custom(
                &reg,
                &mapper,
                &custom(crate::request::CustomVersion::V1beta2)
            )
            .is_none());
        let external = ExternalRequest {
            namespace: "default".into(),
            metric: "queue".into(),
            selector: Default::default(),
        };
        assert_eq!(
            ups.for_external(&reg, &external)
                .map(|f| f.upstream.name.clone()),
            Some("u0".into())
        );
        // A zero rule naming the series answers it (0 while absent): not forwarded.
        let zero = registry(
            "[[external_rules]]\nseries_query = 'queue{namespace!=\"\"}'\n\
             resources.overrides = { namespace = { resource = \"namespace\" } }\n\
             metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'\non_missing = \"zero\"\n",
        );
        assert!(ups.for_external(&zero, &external).is_none());
    }

    #[test]
    fn merged_documents_list_both_and_the_bridge_wins_a_clash() {
        let ups = upstreams(&[&[
            "custom.metrics.k8s.io/v1beta1",
            "external.metrics.k8s.io/v1beta1",
        ]]);
        let mapper = StaticMapper::builtin();
        let pods = mapper.lookup("pods").expect("pods");
        let mut ours = Listing::of(
            vec![(&pods, "mine"), (&pods, "both")].into_iter(),
            vec!["queue_mine"].into_iter(),
            false,
        );
        ours.resource_metrics = false;
        let mut theirs = client::UpstreamListing::default();
        let mut custom = client::ApiListing::default();
        custom.resources.insert(
            "pods".into(),
            (true, ["both".to_string(), "theirs".to_string()].into()),
        );
        custom
            .resources
            .insert("jobs.batch".into(), (true, ["queue".to_string()].into()));
        theirs.apis.insert(
            UpstreamApi::Custom(crate::request::CustomVersion::V1beta1),
            custom,
        );
        let mut external = client::ApiListing::default();
        external
            .resources
            .insert(String::new(), (true, ["queue_theirs".to_string()].into()));
        theirs.apis.insert(UpstreamApi::External, external);
        ups.list[0].set_listing_for_test(theirs);
        let merged = ups.merge(&ours);
        let v1 = &merged.custom_v1beta1;
        assert_eq!(
            v1["pods"].metrics.iter().collect::<Vec<_>>(),
            ["both", "mine", "theirs"]
        );
        assert!(v1["jobs.batch"].metrics.contains("queue"));
        // The upstream answers v1beta1 only: v1beta2 lists the bridge's own.
        assert!(!merged.custom_v1beta2.contains_key("jobs.batch"));
        assert_eq!(
            merged.external.iter().collect::<Vec<_>>(),
            ["queue_mine", "queue_theirs"]
        );
        assert_eq!(ups.clashes.lock().map(|c| c.len()).unwrap_or(0), 1);
    }
}
