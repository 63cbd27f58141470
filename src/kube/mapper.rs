//! Resource mapping from the cluster's API discovery (aggregated discovery, two requests),
//! refreshed periodically so CRDs added later become usable without a restart.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use kube::core::discovery::v2::APIGroupDiscoveryList;

use super::resources::{GroupResource, ResourceInfo, ResourceMapper, StaticMapper};

/// The metrics groups themselves (ours, and metrics-server's) name no objects.
const SKIPPED_GROUPS: [&str; 3] = [
    "custom.metrics.k8s.io",
    "external.metrics.k8s.io",
    "metrics.k8s.io",
];

/// A mapper whose table is replaced by each successful discovery.
pub struct DiscoveryMapper {
    current: ArcSwap<StaticMapper>,
    discovered: std::sync::atomic::AtomicBool,
}

impl DiscoveryMapper {
    /// Starts with the built-in table so nothing fails before the first discovery.
    pub fn new() -> Self {
        DiscoveryMapper {
            current: ArcSwap::from_pointee(StaticMapper::builtin()),
            discovered: false.into(),
        }
    }

    /// True once the cluster's own discovery has been read.
    pub fn is_discovered(&self) -> bool {
        self.discovered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The resource table as it is now.
    pub fn snapshot(&self) -> StaticMapper {
        StaticMapper::clone(&self.current.load())
    }

    pub async fn refresh(&self, client: &kube::Client) -> anyhow::Result<usize> {
        let core = client.list_core_api_versions_aggregated().await?;
        let groups = client.list_api_groups_aggregated().await?;
        let resources = resources_from_discovery(&core, true)
            .into_iter()
            .chain(resources_from_discovery(&groups, false))
            .collect::<Vec<_>>();
        let count = resources.len();
        self.current.store(Arc::new(StaticMapper::new(resources)));
        self.discovered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(count)
    }

    /// Refreshes every `interval` for as long as the returned task runs.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        client: kube::Client,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let mapper = self.clone();
        tokio::spawn(async move {
            loop {
                match mapper.refresh(&client).await {
                    Ok(n) => tracing::debug!(resources = n, "API discovery refreshed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "API discovery failed; keeping the previous resource table")
                    }
                }
                let wait = if mapper.is_discovered() {
                    interval
                } else {
                    Duration::from_secs(2)
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}

impl Default for DiscoveryMapper {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceMapper for DiscoveryMapper {
    fn lookup(&self, name: &str) -> Option<ResourceInfo> {
        self.current.load().lookup(name)
    }
}

/// Each group's preferred (first listed) version's top-level resources.
pub fn resources_from_discovery(list: &APIGroupDiscoveryList, core: bool) -> Vec<ResourceInfo> {
    let mut out = Vec::new();
    for group in &list.items {
        let group_name = if core {
            String::new()
        } else {
            group
                .metadata
                .as_ref()
                .and_then(|m| m.name.clone())
                .unwrap_or_default()
        };
        if SKIPPED_GROUPS.contains(&group_name.as_str()) {
            continue;
        }
        let Some(version) = group.versions.first() else {
            continue;
        };
        let Some(version_name) = version.version.clone() else {
            continue;
        };
        for r in &version.resources {
            let (Some(plural), Some(kind)) = (
                r.resource.clone(),
                r.response_kind.as_ref().and_then(|k| k.kind.clone()),
            ) else {
                continue;
            };
            if plural.contains('/') || kind.is_empty() {
                continue;
            }
            out.push(ResourceInfo {
                group_resource: GroupResource::new(&group_name, &plural),
                version: version_name.clone(),
                singular: r
                    .singular_resource
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| kind.to_lowercase()),
                kind,
                namespaced: r.scope.as_deref() == Some("Namespaced"),
                short_names: r.short_names.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_aggregated_discovery() {
        let core: APIGroupDiscoveryList = serde_json::from_value(serde_json::json!({
            "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": [{"metadata": {"creationTimestamp": null}, "versions": [{"version": "v1", "resources": [
                {"resource": "pods", "responseKind": {"group": "", "version": "v1", "kind": "Pod"}, "scope": "Namespaced",
                 "singularResource": "pod", "shortNames": ["po"], "verbs": ["get", "list", "watch"],
                 "subresources": [{"subresource": "status", "responseKind": {"kind": "Pod"}, "verbs": ["get"]}]},
                {"resource": "nodes", "responseKind": {"group": "", "version": "v1", "kind": "Node"}, "scope": "Cluster",
                 "singularResource": "node", "verbs": ["get"]}]}]}]
        }))
        .expect("core");
        let groups: APIGroupDiscoveryList = serde_json::from_value(serde_json::json!({
            "items": [
              {"metadata": {"name": "example.com"}, "versions": [{"version": "v2", "resources": [
                {"resource": "widgets", "responseKind": {"group": "example.com", "version": "v2", "kind": "Widget"}, "scope": "Namespaced",
                 "singularResource": "widget", "shortNames": ["wd"], "verbs": ["list"]}]}, {"version": "v1", "resources": []}]},
              {"metadata": {"name": "custom.metrics.k8s.io"}, "versions": [{"version": "v1beta2", "resources": [
                {"resource": "pods", "responseKind": {"kind": ""}, "scope": "Namespaced", "verbs": []}]}]}]
        }))
        .expect("groups");
        let all: Vec<ResourceInfo> = resources_from_discovery(&core, true)
            .into_iter()
            .chain(resources_from_discovery(&groups, false))
            .collect();
        let mapper = StaticMapper::new(all);
        let pods = mapper.lookup("po").expect("pods by short name");
        assert_eq!(pods.group_resource, GroupResource::new("", "pods"));
        assert!(!mapper.lookup("node").expect("node").namespaced);
        let widget = mapper.lookup("widgets.example.com").expect("CRD");
        assert_eq!(widget.api_version(), "example.com/v2");
        assert_eq!(mapper.lookup("wd").map(|w| w.kind), Some("Widget".into()));
        assert_eq!(
            mapper.resources().len(),
            3,
            "subresources and the metrics groups are skipped"
        );
    }
}
