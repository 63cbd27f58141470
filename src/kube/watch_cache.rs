//! Metadata-only watch caches of the resources the rules tie metrics to, indexed by
//! namespace, so a `labelSelector` is answered from memory (prometheus-adapter lists from
//! kube-apiserver on every request) and a request looks only at its own namespace.
//!
//! A resource with no cache (not tied to any discovered metric, or not synced yet) is
//! answered with one metadata-only LIST.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use super::objects::{ObjectResolver, ObjectSet, ResolveError};
use super::resources::{GroupResource, ResourceInfo};
use crate::selector::Selector;

type Labels = Arc<BTreeMap<String, String>>;
/// namespace ("" for cluster-scoped) -> name -> labels
type Index = HashMap<String, HashMap<String, Labels>>;

struct Cache {
    index: Arc<RwLock<Index>>,
    synced: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resolves label selectors against the cluster.
pub struct ClusterResolver {
    client: kube::Client,
    caches: Mutex<HashMap<GroupResource, Cache>>,
}

impl ClusterResolver {
    pub fn new(client: kube::Client) -> Self {
        ClusterResolver {
            client,
            caches: Mutex::new(HashMap::new()),
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

    /// True when every tracked cache has finished its initial list.
    pub fn synced(&self) -> bool {
        let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.values().all(|c| c.synced.load(Ordering::Relaxed))
    }

    fn start_cache(&self, info: &ResourceInfo) -> Cache {
        let index: Arc<RwLock<Index>> = Arc::default();
        let synced = Arc::new(AtomicBool::new(false));
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), &api_resource(info));
        let (task_index, task_synced, resource) = (
            index.clone(),
            synced.clone(),
            info.group_resource.to_string(),
        );
        let task = tokio::spawn(async move {
            let mut relist: Option<Index> = None;
            let mut events = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Init) => relist = Some(Index::new()),
                    Ok(Event::InitApply(obj)) => {
                        if let Some(buffer) = relist.as_mut() {
                            insert(buffer, &obj);
                        }
                    }
                    Ok(Event::InitDone) => {
                        if let Some(buffer) = relist.take() {
                            *task_index.write().unwrap_or_else(|e| e.into_inner()) = buffer;
                        }
                        if !task_synced.swap(true, Ordering::Relaxed) {
                            tracing::info!(%resource, "watch cache synced");
                        }
                    }
                    Ok(Event::Apply(obj)) => insert(
                        &mut task_index.write().unwrap_or_else(|e| e.into_inner()),
                        &obj,
                    ),
                    Ok(Event::Delete(obj)) => remove(
                        &mut task_index.write().unwrap_or_else(|e| e.into_inner()),
                        &obj,
                    ),
                    Err(e) => {
                        tracing::warn!(%resource, error = %e, "watch failed; retrying with backoff")
                    }
                }
            }
        });
        Cache {
            index,
            synced,
            task,
        }
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
        let list = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            api.list_metadata(&params),
        )
        .await
        .map_err(|_| ResolveError::Unavailable {
            resource: resource.group_resource.to_string(),
            message: "deadline exceeded".into(),
        })?
        .map_err(|e| ResolveError::Unavailable {
            resource: resource.group_resource.to_string(),
            message: e.to_string(),
        })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect())
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
            let cached = {
                let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
                caches
                    .get(&resource.group_resource)
                    .filter(|c| c.synced.load(Ordering::Relaxed))
                    .map(|c| {
                        select(
                            &c.index.read().unwrap_or_else(|e| e.into_inner()),
                            namespace,
                            selector,
                        )
                    })
            };
            let names = match cached {
                Some(names) => names,
                None => self.list(resource, namespace, selector).await?,
            };
            Ok(ObjectSet::Named(names))
        })
    }

    fn track(&self, resources: &[ResourceInfo]) {
        ClusterResolver::track(self, resources)
    }

    fn synced(&self) -> bool {
        ClusterResolver::synced(self)
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
