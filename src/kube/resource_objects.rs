//! The objects the Resource Metrics API answers about: Running pods (their labels and the
//! containers they run) and nodes (their labels and addresses), each from a watch cache.
//!
//! metrics-server and prometheus-adapter also list only Running pods, so Pending and
//! Succeeded pods never appear; the pod watch selects `status.phase=Running` on the server.
//! Container names let an answer tell a complete pod from one missing a container (the
//! HPA's rule), and skip series of containers a pod does not run (the pod-level cgroup, a
//! restarted pod's old sandbox). Node addresses let a sample keyed by `instance="10.0.0.5:9100"`
//! find its node (prometheus-adapter#385/#398).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::watch_cache::WatchIndex;
use crate::field_selector::FieldSelector;
use crate::selector::Selector;

pub type Labels = Arc<BTreeMap<String, String>>;

/// A Running pod as the resource metrics answer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Containers and sidecars (restartable init containers), sorted: what a complete answer
    /// for this pod lists.
    pub containers: Arc<[String]>,
}

/// A node: its labels and every address in `status.addresses` (IPs and host names).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub addresses: Arc<[String]>,
}

/// Running pods: namespace -> name -> pod.
#[derive(Debug, Default)]
pub struct PodIndex(HashMap<String, HashMap<String, RunningPod>>);

impl PodIndex {
    /// Pods in `namespace` (every namespace for None) that both selectors pick, sorted by
    /// namespace and name.
    pub fn select(
        &self,
        namespace: Option<&str>,
        labels: &Selector,
        fields: &FieldSelector,
    ) -> Vec<RunningPod> {
        let pick = |pods: &HashMap<String, RunningPod>| -> Vec<RunningPod> {
            pods.values()
                .filter(|p| labels.matches(&p.labels) && fields.matches(&p.namespace, &p.name))
                .cloned()
                .collect()
        };
        let mut pods: Vec<RunningPod> = match namespace {
            Some(ns) => self.0.get(ns).map(pick).unwrap_or_default(),
            None => self.0.values().flat_map(pick).collect(),
        };
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<RunningPod> {
        self.0.get(namespace)?.get(name).cloned()
    }
}

fn running_pod(pod: &Pod) -> Option<RunningPod> {
    let name = pod.metadata.name.clone()?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut containers: Vec<String> = Vec::new();
    if let Some(spec) = &pod.spec {
        containers.extend(spec.containers.iter().map(|c| c.name.clone()));
        containers.extend(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .map(|c| c.name.clone()),
        );
    }
    containers.sort();
    Some(RunningPod {
        namespace,
        name,
        labels: Arc::new(pod.metadata.labels.clone().unwrap_or_default()),
        containers: containers.into(),
    })
}

impl WatchIndex<Pod> for PodIndex {
    fn apply(&mut self, obj: &Pod) {
        // The watch selects Running pods; the phase check also keeps a pod that a relist
        // raced out of Running from being answered for.
        let running = obj
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|phase| phase == "Running");
        match running_pod(obj) {
            Some(pod) if running => {
                self.0
                    .entry(pod.namespace.clone())
                    .or_default()
                    .insert(pod.name.clone(), pod);
            }
            _ => self.delete(obj),
        }
    }

    fn delete(&mut self, obj: &Pod) {
        let Some(name) = obj.metadata.name.as_deref() else {
            return;
        };
        let namespace = obj.metadata.namespace.clone().unwrap_or_default();
        if let Some(pods) = self.0.get_mut(&namespace) {
            pods.remove(name);
            if pods.is_empty() {
                self.0.remove(&namespace);
            }
        }
    }
}

/// Nodes by name.
#[derive(Debug, Default)]
pub struct NodeIndex(HashMap<String, NodeInfo>);

impl NodeIndex {
    /// Nodes both selectors pick (a node's namespace is ""), sorted by name.
    pub fn select(&self, labels: &Selector, fields: &FieldSelector) -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = self
            .0
            .values()
            .filter(|n| labels.matches(&n.labels) && fields.matches("", &n.name))
            .cloned()
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    pub fn get(&self, name: &str) -> Option<NodeInfo> {
        self.0.get(name).cloned()
    }
}

impl WatchIndex<Node> for NodeIndex {
    fn apply(&mut self, obj: &Node) {
        let Some(name) = obj.metadata.name.clone() else {
            return;
        };
        let mut addresses: Vec<String> = obj
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .map(|a| a.address.clone())
            .collect();
        addresses.sort();
        addresses.dedup();
        let node = NodeInfo {
            name: name.clone(),
            labels: Arc::new(obj.metadata.labels.clone().unwrap_or_default()),
            addresses: addresses.into(),
        };
        self.0.insert(name, node);
    }

    fn delete(&mut self, obj: &Node) {
        if let Some(name) = obj.metadata.name.as_deref() {
            self.0.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, NodeAddress, NodeStatus, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(ns: &str, name: &str, phase: &str, containers: &[&str], sidecar: Option<&str>) -> Pod {
        let container = |n: &str| Container {
            name: n.to_string(),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: containers.iter().map(|c| container(c)).collect(),
                init_containers: Some(
                    [
                        Some(Container {
                            restart_policy: Some("Always".into()),
                            ..container(sidecar.unwrap_or("proxy"))
                        })
                        .filter(|_| sidecar.is_some()),
                        Some(container("setup")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                ),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn keeps_running_pods_with_their_containers_and_sidecars() {
        let mut index = PodIndex::default();
        index.apply(&pod(
            "default",
            "web-1",
            "Running",
            &["b", "a"],
            Some("mesh"),
        ));
        index.apply(&pod("default", "web-2", "Running", &["a"], None));
        index.apply(&pod("other", "web-3", "Running", &["a"], None));
        index.apply(&pod("default", "done", "Succeeded", &["a"], None));
        let web1 = index.get("default", "web-1").expect("running pod");
        assert_eq!(&*web1.containers, ["a", "b", "mesh"]);
        assert!(index.get("default", "done").is_none());

        let all = Selector::default();
        let none = FieldSelector::default();
        let names = |pods: Vec<RunningPod>| -> Vec<String> {
            pods.iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect()
        };
        assert_eq!(
            names(index.select(None, &all, &none)),
            ["default/web-1", "default/web-2", "other/web-3"]
        );
        let by_name = crate::field_selector::parse("metadata.name=web-2").expect("ok");
        assert_eq!(
            names(index.select(Some("default"), &all, &by_name)),
            ["default/web-2"]
        );
        let app_db = crate::selector::parse("app=db").expect("ok");
        assert!(index.select(None, &app_db, &none).is_empty());

        // Leaving Running removes it, as the field-selected watch's DELETED would.
        index.apply(&pod("default", "web-2", "Failed", &["a"], None));
        assert!(index.get("default", "web-2").is_none());
        index.delete(&pod("other", "web-3", "Running", &["a"], None));
        assert_eq!(names(index.select(None, &all, &none)), ["default/web-1"]);
    }

    #[test]
    fn nodes_keep_their_addresses() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("node-a".into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "10.0.0.5".into(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "node-a.example".into(),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut index = NodeIndex::default();
        index.apply(&node);
        let got = index.get("node-a").expect("node");
        assert_eq!(&*got.addresses, ["10.0.0.5", "node-a.example"]);
        assert_eq!(
            index
                .select(&Selector::default(), &FieldSelector::default())
                .len(),
            1
        );
        index.delete(&node);
        assert!(index.get("node-a").is_none());
    }
}
