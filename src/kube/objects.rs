//! Which objects a `*` request covers.
//!
//! With a label selector, only Kubernetes knows which objects match; without one, a `*`
//! request covers every object that has a sample. `--standalone` has no cluster, so it can
//! only answer the second kind.

use futures::future::BoxFuture;

use super::resource_objects::{NodeInfo, RunningPod};
use super::resources::ResourceInfo;
use crate::field_selector::FieldSelector;
use crate::selector::Selector;

/// The objects a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectSet {
    /// Every object of the resource (in the namespace) that has a sample.
    AllWithSamples,
    /// Exactly these names (from a label selector); objects not listed never appear.
    Named(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The request cannot be answered in this mode (a 400 for the client).
    #[error("{0}")]
    Unsupported(String),
    /// The cluster could not be asked (a 503 for the client).
    #[error("unable to list {resource}: {message}")]
    Unavailable { resource: String, message: String },
    /// kube-apiserver refused the bridge a LIST of the resource (its RBAC does not cover it).
    #[error("the bridge may not list {resource}")]
    Forbidden { resource: String },
    /// The resource no longer exists (a deleted CRD).
    #[error("{resource} no longer exist in the cluster")]
    Gone { resource: String },
}

pub trait ObjectResolver: Send + Sync {
    /// Objects of `resource` in `namespace` (None for cluster scope) matching `selector`.
    fn resolve<'a>(
        &'a self,
        resource: &'a ResourceInfo,
        namespace: Option<&'a str>,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<ObjectSet, ResolveError>>;

    /// The resources that have metrics now; a resolver may cache them (called after each
    /// series discovery).
    fn track(&self, _resources: &[ResourceInfo]) {}

    /// Whether object `name` exists: `Some` only where an up-to-date cache can tell, `None`
    /// where nothing can be said without asking the cluster.
    fn exists(
        &self,
        _resource: &ResourceInfo,
        _namespace: Option<&str>,
        _name: &str,
    ) -> Option<bool> {
        None
    }

    /// Resources whose cache is still on its first list (readiness waits for them; caches
    /// that failed do not count).
    fn starting(&self) -> Vec<String> {
        Vec::new()
    }

    /// Starts (or stops) the pod and node caches of the Resource Metrics API; called after
    /// each series discovery with whether the rules have `[resource_rules]`.
    fn serve_resource_metrics(&self, _on: bool) {}

    /// Running pods in `namespace` (all for None) that both selectors pick, for the Resource
    /// Metrics API. `Ok(None)`: no cluster to ask (`--standalone`), so every pod with a sample
    /// is answered.
    fn running_pods(
        &self,
        _namespace: Option<&str>,
        _labels: &Selector,
        _fields: &FieldSelector,
    ) -> Result<Option<Vec<RunningPod>>, ResolveError> {
        Ok(None)
    }

    /// Nodes both selectors pick; `Ok(None)` as for [`Self::running_pods`].
    fn nodes(
        &self,
        _labels: &Selector,
        _fields: &FieldSelector,
    ) -> Result<Option<Vec<NodeInfo>>, ResolveError> {
        Ok(None)
    }
}

/// `--standalone`: no cluster. An empty selector means every object with a sample; any other
/// selector is refused with a message that says why.
#[derive(Debug, Default)]
pub struct StandaloneResolver;

impl ObjectResolver for StandaloneResolver {
    fn resolve<'a>(
        &'a self,
        _resource: &'a ResourceInfo,
        _namespace: Option<&'a str>,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<ObjectSet, ResolveError>> {
        Box::pin(async move {
            if selector.is_empty() {
                Ok(ObjectSet::AllWithSamples)
            } else {
                Err(ResolveError::Unsupported(format!(
                    "labelSelector \"{selector}\" needs a Kubernetes connection to find the \
                     matching objects; this server runs with --standalone"
                )))
            }
        })
    }
}
