//! Metadata-only watch caches of the resources the rules tie metrics to, indexed by
//! namespace, so a `labelSelector` is answered from memory (prometheus-adapter lists from
//! kube-apiserver on every request) and a request looks only at its own namespace.
//!
//! Each cache has a [`CacheState`]. Only a synced cache answers; any other resource is
//! answered with one metadata-only LIST per request, whose error (403, 404, outage) becomes
//! that request's Status. Readiness waits only for caches still on their first list: one that
//! RBAC forbids, whose resource vanished or that fails for any other reason never holds the
//! whole API back (design §3.5). A failing cache retries with a growing, capped backoff and
//! logs once per change of state, and its state is a metric. A synced cache that loses
//! kube-apiserver keeps answering from memory and retries at least every 5 s, so it catches
//! up within seconds of kube-apiserver's return.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};

use super::objects::{ObjectResolver, ObjectSet, ResolveError};
use super::resource_objects::{NodeIndex, NodeInfo, PodIndex, RunningPod};
use super::resources::{GroupResource, ResourceInfo};
use crate::backoff::Backoff;
use crate::field_selector::FieldSelector;
use crate::metrics::Metrics;
use crate::selector::Selector;

type Labels = Arc<BTreeMap<String, String>>;
/// namespace ("" for cluster-scoped) -> name -> labels
type Index = HashMap<String, HashMap<String, Labels>>;

/// Where a watch cache stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// The first list has not finished or failed yet: holds readiness.
    Starting,
    /// Listed and watching; answers requests. A later outage keeps it synced (requests keep
    /// being answered from memory) until kube-rs' watcher relists.
    Synced,
    /// kube-apiserver answered 403: the bridge's RBAC does not cover this resource.
    Forbidden,
    /// Any other failure: the resource is gone (404, a deleted CRD) or kube-apiserver failed
    /// before the first list finished.
    Failing,
}

impl CacheState {
    pub const ALL: [CacheState; 4] = [
        CacheState::Starting,
        CacheState::Synced,
        CacheState::Forbidden,
        CacheState::Failing,
    ];

    /// The `state` label of `kube_metrics_bridge_watch_cache_state`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Starting => "starting",
            CacheState::Synced => "synced",
            CacheState::Forbidden => "forbidden",
            CacheState::Failing => "failing",
        }
    }
}

/// Retry delays of a failing watch: 1 s doubling to [`MAX_RETRY`], reset once it syncs. A
/// forbidden LIST costs kube-apiserver little, but a cluster full of them every second does.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// The cap while a synced cache has lost kube-apiserver (an outage, not a refusal): its
/// retries are a connect or a WATCH from the last resourceVersion, cheap, and every second
/// of delay after kube-apiserver is back is a second of answers naming pods deleted during
/// the outage, or missing the ones created. With the minute cap an outage was noticed about
/// as long after it ended as it had lasted (the delay doubles; 19 s after a 15 s outage in
/// `integration/load_faults.rs`).
const SYNCED_MAX_RETRY: Duration = Duration::from_secs(5);

/// How long a cache in `state` (after an error) waits before it tries again: the backoff, but
/// at most [`SYNCED_MAX_RETRY`] for a synced cache, whose answers go stale while it waits (a
/// kube-apiserver outage must not leave it naming deleted pods for a minute after).
fn retry_delay(backoff: &mut Backoff, state: CacheState) -> Duration {
    let delay = backoff.next_delay();
    if state == CacheState::Synced {
        delay.min(SYNCED_MAX_RETRY)
    } else {
        delay
    }
}

/// A cache's state, shared by its task (which moves it) and the resolver (which reads it), and
/// mirrored into the metric on every change.
#[derive(Clone)]
struct SharedState {
    state: Arc<Mutex<CacheState>>,
    resource: Arc<str>,
    metrics: Arc<Metrics>,
}

impl SharedState {
    fn new(resource: &str, metrics: Arc<Metrics>) -> Self {
        let shared = SharedState {
            state: Arc::new(Mutex::new(CacheState::Starting)),
            resource: resource.into(),
            metrics,
        };
        shared.publish(CacheState::Starting);
        shared
    }

    fn get(&self) -> CacheState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to `next`; true when that is a change (the caller logs it).
    fn set(&self, next: CacheState) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state == next {
            return false;
        }
        *state = next;
        self.publish(next);
        true
    }

    fn publish(&self, current: CacheState) {
        for state in CacheState::ALL {
            self.metrics
                .watch_cache_state(&self.resource, state.as_str())
                .set(i64::from(state == current));
        }
    }

    fn unpublish(&self) {
        for state in CacheState::ALL {
            self.metrics
                .forget_watch_cache_state(&self.resource, state.as_str());
        }
    }
}

/// What a watch keeps of the objects it sees. [`run_cache`] fills it; a failed cache is
/// reset to the default (empty) value.
pub(crate) trait WatchIndex<K>: Default + Send + Sync + 'static {
    fn apply(&mut self, obj: &K);
    fn delete(&mut self, obj: &K);
}

impl WatchIndex<PartialObjectMeta<DynamicObject>> for Index {
    fn apply(&mut self, obj: &PartialObjectMeta<DynamicObject>) {
        insert(self, obj)
    }

    fn delete(&mut self, obj: &PartialObjectMeta<DynamicObject>) {
        remove(self, obj)
    }
}

/// One watch: its index, its state and the task that keeps both current.
pub(crate) struct Cache<I = Index> {
    pub(crate) index: Arc<RwLock<I>>,
    state: SharedState,
    task: tokio::task::JoinHandle<()>,
}

impl<I> Cache<I> {
    /// Starts watching `api` (with `config`'s selectors) into a fresh index of type `I`;
    /// `resource` names the cache in logs and in the state metric.
    pub(crate) fn start<K>(
        api: Api<K>,
        config: watcher::Config,
        resource: &str,
        metrics: Arc<Metrics>,
    ) -> Self
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
        I: WatchIndex<K>,
    {
        let index: Arc<RwLock<I>> = Arc::default();
        let state = SharedState::new(resource, metrics);
        let task = tokio::spawn(run_cache(api, config, index.clone(), state.clone()));
        Cache { index, state, task }
    }

    pub(crate) fn state(&self) -> CacheState {
        self.state.get()
    }

    /// The index, if the cache is synced (only a synced cache answers).
    pub(crate) fn synced(&self) -> Option<&Arc<RwLock<I>>> {
        (self.state.get() == CacheState::Synced).then_some(&self.index)
    }
}

impl<I> Drop for Cache<I> {
    fn drop(&mut self) {
        self.task.abort();
        self.state.unpublish();
    }
}

/// Resolves label selectors against the cluster.
pub struct ClusterResolver {
    client: kube::Client,
    metrics: Arc<Metrics>,
    caches: Mutex<HashMap<GroupResource, Cache>>,
    /// Running pods and nodes for the Resource Metrics API, while `[resource_rules]` exist.
    resource_metrics: Mutex<Option<ResourceMetricsCaches>>,
    /// Deadline of a per-request LIST.
    list_timeout: Duration,
}

impl ClusterResolver {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        ClusterResolver {
            client,
            metrics,
            caches: Mutex::new(HashMap::new()),
            resource_metrics: Mutex::new(None),
            list_timeout: Duration::from_secs(10),
        }
    }

    /// Watches exactly these resources: starts caches for new ones, drops the rest.
    pub fn track(&self, resources: &[ResourceInfo]) {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|gr, _| resources.iter().any(|r| &r.group_resource == gr));
        for info in resources {
            if !caches.contains_key(&info.group_resource) {
                tracing::info!(resource = %info.group_resource, "starting a metadata watch cache");
                caches.insert(info.group_resource.clone(), self.start_cache(info));
            }
        }
    }

    /// Resources whose cache is still on its first list (what readiness waits for), sorted.
    pub fn starting(&self) -> Vec<String> {
        let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting: Vec<String> = caches
            .iter()
            .filter(|(_, c)| c.state() == CacheState::Starting)
            .map(|(gr, _)| gr.to_string())
            .collect();
        let resource_metrics = self
            .resource_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(r) = resource_metrics.as_ref() {
            if r.pods.state() == CacheState::Starting {
                waiting.push(RUNNING_PODS.to_string());
            }
            if r.nodes.state() == CacheState::Starting {
                waiting.push(NODES.to_string());
            }
        }
        waiting.sort();
        waiting
    }

    /// Starts or stops the Resource Metrics API's pod and node caches.
    pub fn serve_resource_metrics(&self, on: bool) {
        let mut caches = self
            .resource_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (on, caches.is_some()) {
            (true, false) => {
                tracing::info!("starting the Running-pod and node watch caches of metrics.k8s.io");
                let pods: Api<Pod> = Api::all(self.client.clone());
                let nodes: Api<Node> = Api::all(self.client.clone());
                *caches = Some(ResourceMetricsCaches {
                    pods: Cache::start(
                        pods,
                        watcher::Config::default().fields("status.phase=Running"),
                        RUNNING_PODS,
                        self.metrics.clone(),
                    ),
                    nodes: Cache::start(
                        nodes,
                        watcher::Config::default(),
                        NODES,
                        self.metrics.clone(),
                    ),
                });
            }
            (false, true) => *caches = None,
            _ => {}
        }
    }

    /// The synced index `pick` chooses from the resource-metrics caches, or why there is none.
    fn resource_index<I>(
        &self,
        pick: impl Fn(&ResourceMetricsCaches) -> &Cache<I>,
        resource: &str,
    ) -> Result<Arc<RwLock<I>>, ResolveError> {
        let caches = self
            .resource_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let unavailable = |message: &str| ResolveError::Unavailable {
            resource: resource.to_string(),
            message: message.to_string(),
        };
        let cache = pick(
            caches
                .as_ref()
                .ok_or_else(|| unavailable("its watch cache is not running yet"))?,
        );
        match cache.state() {
            CacheState::Synced => Ok(cache.index.clone()),
            CacheState::Forbidden => Err(ResolveError::Forbidden {
                resource: resource.to_string(),
            }),
            CacheState::Starting => Err(unavailable("its watch cache has not listed yet")),
            CacheState::Failing => Err(unavailable("its watch cache is failing")),
        }
    }

    /// Every tracked resource and its cache's state (for tests and `doctor`-like reports).
    pub fn states(&self) -> BTreeMap<String, CacheState> {
        let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches
            .iter()
            .map(|(gr, c)| (gr.to_string(), c.state()))
            .collect()
    }

    /// The index of `resource`'s cache if it is synced.
    fn synced_index(&self, resource: &GroupResource) -> Option<Arc<RwLock<Index>>> {
        let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.get(resource).and_then(|c| c.synced()).cloned()
    }

    fn start_cache(&self, info: &ResourceInfo) -> Cache {
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), &api_resource(info));
        Cache::start(
            api,
            watcher::Config::default(),
            &info.group_resource.to_string(),
            self.metrics.clone(),
        )
    }

    async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Result<Vec<String>, ResolveError> {
        let ar = api_resource(resource);
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let params = ListParams::default().labels(&selector.to_string());
        let name = resource.group_resource.to_string();
        let list = tokio::time::timeout(self.list_timeout, api.list_metadata(&params))
            .await
            .map_err(|_| ResolveError::Unavailable {
                resource: name.clone(),
                message: "deadline exceeded".into(),
            })?
            .map_err(|e| list_error(&name, e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect())
    }
}

/// The resource-metrics caches' names in logs, the state metric and readiness.
const RUNNING_PODS: &str = "pods (Running, for metrics.k8s.io)";
const NODES: &str = "nodes (for metrics.k8s.io)";

struct ResourceMetricsCaches {
    pods: Cache<PodIndex>,
    nodes: Cache<NodeIndex>,
}

/// Sorts a failed LIST: 403 and 404 say something about the resource, the rest about
/// kube-apiserver.
fn list_error(resource: &str, e: kube::Error) -> ResolveError {
    match &e {
        kube::Error::Api(status) if status.code == 403 => ResolveError::Forbidden {
            resource: resource.to_string(),
        },
        kube::Error::Api(status) if status.code == 404 => ResolveError::Gone {
            resource: resource.to_string(),
        },
        _ => ResolveError::Unavailable {
            resource: resource.to_string(),
            message: e.to_string(),
        },
    }
}

/// What a watch error means for the cache's state.
fn state_after(error: &watcher::Error, current: CacheState) -> CacheState {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match status {
        Some(403) => CacheState::Forbidden,
        Some(404) => CacheState::Failing,
        // An outage after the first list: keep answering from memory; the watcher relists.
        _ if current == CacheState::Synced => CacheState::Synced,
        _ => CacheState::Failing,
    }
}

/// The task behind one cache: follows the watch, moves the state, backs off on errors.
async fn run_cache<K, I>(
    api: Api<K>,
    config: watcher::Config,
    index: Arc<RwLock<I>>,
    state: SharedState,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    I: WatchIndex<K>,
{
    let resource = state.resource.clone();
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let mut relist: Option<I> = None;
    // No kube-rs backoff: ours grows to a minute and is reset only by a finished list.
    let mut events = watcher::watcher(api, config).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => relist = Some(I::default()),
            Ok(Event::InitApply(obj)) => {
                if let Some(buffer) = relist.as_mut() {
                    buffer.apply(&obj);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(buffer) = relist.take() {
                    *index.write().unwrap_or_else(|e| e.into_inner()) = buffer;
                }
                backoff.reset();
                if state.set(CacheState::Synced) {
                    tracing::info!(%resource, "watch cache synced");
                }
            }
            Ok(Event::Apply(obj)) => index.write().unwrap_or_else(|e| e.into_inner()).apply(&obj),
            Ok(Event::Delete(obj)) => index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .delete(&obj),
            Err(e) => {
                let next = state_after(&e, state.get());
                let retry_in = retry_delay(&mut backoff, next);
                if next != CacheState::Synced {
                    // Not answering from it any more: free what it held.
                    *index.write().unwrap_or_else(|e| e.into_inner()) = I::default();
                }
                if state.set(next) {
                    match next {
                        CacheState::Forbidden => {
                            tracing::warn!(%resource, error = %e, ?retry_in, "watch forbidden: the bridge's RBAC lacks list/watch on this resource; its metrics are answered per request (which fails until it is granted)")
                        }
                        _ => {
                            tracing::warn!(%resource, state = next.as_str(), error = %e, ?retry_in, "watch failing; its metrics are answered per request until it recovers")
                        }
                    }
                } else {
                    tracing::debug!(%resource, state = next.as_str(), error = %e, ?retry_in, "watch still failing");
                }
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

fn api_resource(info: &ResourceInfo) -> ApiResource {
    let group = info.group_resource.group.clone();
    ApiResource {
        api_version: info.api_version(),
        group,
        version: info.version.clone(),
        kind: info.kind.clone(),
        plural: info.group_resource.resource.clone(),
    }
}

fn insert(index: &mut Index, obj: &PartialObjectMeta<DynamicObject>) {
    let Some(name) = obj.metadata.name.clone() else {
        return;
    };
    let namespace = obj.metadata.namespace.clone().unwrap_or_default();
    let labels = Arc::new(obj.metadata.labels.clone().unwrap_or_default());
    index.entry(namespace).or_default().insert(name, labels);
}

fn remove(index: &mut Index, obj: &PartialObjectMeta<DynamicObject>) {
    let (Some(name), namespace) = (
        obj.metadata.name.as_deref(),
        obj.metadata.namespace.clone().unwrap_or_default(),
    ) else {
        return;
    };
    if let Some(names) = index.get_mut(&namespace) {
        names.remove(name);
        if names.is_empty() {
            index.remove(&namespace);
        }
    }
}

/// Names in `namespace` (all namespaces for None) whose labels match.
fn select(index: &Index, namespace: Option<&str>, selector: &Selector) -> Vec<String> {
    let matching = |names: &HashMap<String, Labels>| -> Vec<String> {
        names
            .iter()
            .filter(|(_, labels)| selector.matches(labels))
            .map(|(name, _)| name.clone())
            .collect()
    };
    let mut names = match namespace {
        Some(ns) => index.get(ns).map(matching).unwrap_or_default(),
        None => index.values().flat_map(matching).collect(),
    };
    names.sort();
    names
}

impl ObjectResolver for ClusterResolver {
    fn resolve<'a>(
        &'a self,
        resource: &'a ResourceInfo,
        namespace: Option<&'a str>,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<ObjectSet, ResolveError>> {
        Box::pin(async move {
            let names = match self.synced_index(&resource.group_resource) {
                Some(index) => select(
                    &index.read().unwrap_or_else(|e| e.into_inner()),
                    namespace,
                    selector,
                ),
                None => self.list(resource, namespace, selector).await?,
            };
            Ok(ObjectSet::Named(names))
        })
    }

    fn exists(&self, resource: &ResourceInfo, namespace: Option<&str>, name: &str) -> Option<bool> {
        let index = self.synced_index(&resource.group_resource)?;
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        Some(
            index
                .get(namespace.unwrap_or_default())
                .is_some_and(|names| names.contains_key(name)),
        )
    }

    fn track(&self, resources: &[ResourceInfo]) {
        ClusterResolver::track(self, resources)
    }

    fn starting(&self) -> Vec<String> {
        ClusterResolver::starting(self)
    }

    fn serve_resource_metrics(&self, on: bool) {
        ClusterResolver::serve_resource_metrics(self, on)
    }

    fn running_pods(
        &self,
        namespace: Option<&str>,
        labels: &Selector,
        fields: &FieldSelector,
    ) -> Result<Option<Vec<RunningPod>>, ResolveError> {
        let index = self.resource_index(|c| &c.pods, "pods")?;
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        Ok(Some(index.select(namespace, labels, fields)))
    }

    fn nodes(
        &self,
        labels: &Selector,
        fields: &FieldSelector,
    ) -> Result<Option<Vec<NodeInfo>>, ResolveError> {
        let index = self.resource_index(|c| &c.nodes, "nodes")?;
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        Ok(Some(index.select(labels, fields)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<DynamicObject> {
        PartialObjectMeta {
            types: None,
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("refused", "Refused").with_code(code),
        ))
    }

    #[test]
    fn errors_move_the_state() {
        use watcher::Error as E;
        let forbidden = E::InitialListFailed(api_error(403));
        let gone = E::WatchStartFailed(api_error(404));
        let outage = E::InitialListFailed(api_error(503));
        for from in CacheState::ALL {
            assert_eq!(state_after(&forbidden, from), CacheState::Forbidden);
            assert_eq!(state_after(&gone, from), CacheState::Failing);
        }
        assert_eq!(
            state_after(&outage, CacheState::Starting),
            CacheState::Failing,
            "a failed first list does not hold readiness"
        );
        assert_eq!(
            state_after(&outage, CacheState::Synced),
            CacheState::Synced,
            "an outage after the first list keeps answering from memory"
        );
        assert_eq!(
            state_after(
                &E::WatchError(Box::new(
                    kube::core::Status::failure("gone", "Gone").with_code(410)
                )),
                CacheState::Synced
            ),
            CacheState::Synced
        );
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let mut b = Backoff::new(FIRST_RETRY, MAX_RETRY);
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], FIRST_RETRY);
        assert_eq!(delays[9], MAX_RETRY);
    }

    #[test]
    fn a_synced_cache_retries_an_outage_within_seconds() {
        let mut b = Backoff::new(FIRST_RETRY, MAX_RETRY);
        let delays: Vec<Duration> = (0..10)
            .map(|_| retry_delay(&mut b, CacheState::Synced))
            .collect();
        assert_eq!(delays[0], FIRST_RETRY);
        assert_eq!(delays[9], SYNCED_MAX_RETRY);
        // Refused or gone after that: the long backoff again.
        assert_eq!(retry_delay(&mut b, CacheState::Failing), MAX_RETRY);
    }

    #[test]
    fn state_is_a_metric_and_changes_once() {
        let metrics = Arc::new(Metrics::new());
        let state = SharedState::new("secrets", metrics.clone());
        assert!(metrics.encode().contains(
            "kube_metrics_bridge_watch_cache_state{resource=\"secrets\",state=\"starting\"} 1"
        ));
        assert!(state.set(CacheState::Forbidden));
        assert!(!state.set(CacheState::Forbidden), "no change, no log line");
        let text = metrics.encode();
        assert!(
            text.contains(
                "kube_metrics_bridge_watch_cache_state{resource=\"secrets\",state=\"forbidden\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "kube_metrics_bridge_watch_cache_state{resource=\"secrets\",state=\"starting\"} 0"
            ),
            "{text}"
        );
        state.unpublish();
        assert!(!metrics.encode().contains("secrets"));
    }

    #[test]
    fn selects_within_the_namespace() {
        let mut index = Index::new();
        insert(&mut index, &obj("demo", "web-0", &[("app", "web")]));
        insert(&mut index, &obj("demo", "web-1", &[("app", "web")]));
        insert(&mut index, &obj("demo", "db-0", &[("app", "db")]));
        insert(&mut index, &obj("other", "web-9", &[("app", "web")]));
        let web = crate::selector::parse("app=web").expect("sel");
        assert_eq!(select(&index, Some("demo"), &web), vec!["web-0", "web-1"]);
        assert_eq!(select(&index, None, &web).len(), 3);
        assert_eq!(select(&index, Some("demo"), &Selector::default()).len(), 3);
        remove(&mut index, &obj("demo", "web-1", &[]));
        assert_eq!(
            select(&index, Some("demo"), &web),
            vec!["web-0"],
            "deleted objects never appear"
        );
        remove(&mut index, &obj("other", "web-9", &[]));
        assert!(!index.contains_key("other"));
    }
}
