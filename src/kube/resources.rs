//! Resource mapping: `pods`, `pod`, `po`, `deployments.apps` -> one canonical resource with
//! its kind, API version and scope, as a Kubernetes RESTMapper does.

use std::collections::HashMap;
use std::fmt;

/// A group-qualified resource, always in its canonical plural form (`deployments`, `apps`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }

    pub fn namespaces() -> Self {
        GroupResource::new("", "namespaces")
    }
}

impl fmt::Display for GroupResource {
    /// `pods`, `deployments.apps`: the form used in URLs and discovery documents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// Everything a response needs to describe an object of this resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group_resource: GroupResource,
    pub version: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
}

impl ResourceInfo {
    /// `describedObject.apiVersion`: `v1` for the core group (not the Go framework's `/v1`).
    pub fn api_version(&self) -> String {
        if self.group_resource.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group_resource.group, self.version)
        }
    }
}

/// Resolves the names users and clients write for a resource.
pub trait ResourceMapper: Send + Sync {
    /// `pods`, `pod`, `po`, `Pod`, `deployments.apps`, `deployment.apps`, `deploy`.
    fn lookup(&self, name: &str) -> Option<ResourceInfo>;
}

/// A mapper over a fixed list of resources; built from the well-known built-ins for
/// `--standalone`, or from API discovery when connected to a cluster.
#[derive(Debug, Clone, Default)]
pub struct StaticMapper {
    resources: Vec<ResourceInfo>,
    /// (group, any accepted name in lower case) -> index into `resources`.
    by_name: HashMap<(String, String), usize>,
    /// any accepted name in lower case -> indexes, in priority order, for names without a group.
    by_bare_name: HashMap<String, Vec<usize>>,
}

impl StaticMapper {
    pub fn new(resources: Vec<ResourceInfo>) -> Self {
        let mut mapper = StaticMapper {
            resources,
            ..Default::default()
        };
        for (i, info) in mapper.resources.iter().enumerate() {
            let mut names = vec![
                info.group_resource.resource.to_lowercase(),
                info.singular.to_lowercase(),
                info.kind.to_lowercase(),
            ];
            names.extend(info.short_names.iter().map(|s| s.to_lowercase()));
            names.sort();
            names.dedup();
            for name in names {
                mapper
                    .by_name
                    .entry((info.group_resource.group.clone(), name.clone()))
                    .or_insert(i);
                mapper.by_bare_name.entry(name).or_default().push(i);
            }
        }
        mapper
    }

    /// The resources a cluster always has, for running without one.
    pub fn builtin() -> Self {
        let r = |group: &str,
                 version: &str,
                 plural: &str,
                 singular: &str,
                 kind: &str,
                 namespaced: bool,
                 short: &[&str]| ResourceInfo {
            group_resource: GroupResource::new(group, plural),
            version: version.into(),
            singular: singular.into(),
            kind: kind.into(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
        };
        StaticMapper::new(vec![
            r("", "v1", "pods", "pod", "Pod", true, &["po"]),
            r("", "v1", "services", "service", "Service", true, &["svc"]),
            r(
                "",
                "v1",
                "namespaces",
                "namespace",
                "Namespace",
                false,
                &["ns"],
            ),
            r("", "v1", "nodes", "node", "Node", false, &["no"]),
            r(
                "",
                "v1",
                "persistentvolumeclaims",
                "persistentvolumeclaim",
                "PersistentVolumeClaim",
                true,
                &["pvc"],
            ),
            r(
                "",
                "v1",
                "persistentvolumes",
                "persistentvolume",
                "PersistentVolume",
                false,
                &["pv"],
            ),
            r(
                "",
                "v1",
                "replicationcontrollers",
                "replicationcontroller",
                "ReplicationController",
                true,
                &["rc"],
            ),
            r(
                "",
                "v1",
                "endpoints",
                "endpoints",
                "Endpoints",
                true,
                &["ep"],
            ),
            r(
                "apps",
                "v1",
                "deployments",
                "deployment",
                "Deployment",
                true,
                &["deploy"],
            ),
            r(
                "apps",
                "v1",
                "statefulsets",
                "statefulset",
                "StatefulSet",
                true,
                &["sts"],
            ),
            r(
                "apps",
                "v1",
                "replicasets",
                "replicaset",
                "ReplicaSet",
                true,
                &["rs"],
            ),
            r(
                "apps",
                "v1",
                "daemonsets",
                "daemonset",
                "DaemonSet",
                true,
                &["ds"],
            ),
            r("batch", "v1", "jobs", "job", "Job", true, &[]),
            r(
                "batch",
                "v1",
                "cronjobs",
                "cronjob",
                "CronJob",
                true,
                &["cj"],
            ),
            r(
                "networking.k8s.io",
                "v1",
                "ingresses",
                "ingress",
                "Ingress",
                true,
                &["ing"],
            ),
            r(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "horizontalpodautoscaler",
                "HorizontalPodAutoscaler",
                true,
                &["hpa"],
            ),
        ])
    }

    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }
}

impl ResourceMapper for StaticMapper {
    fn lookup(&self, name: &str) -> Option<ResourceInfo> {
        let name = name.to_lowercase();
        // `deployments.apps`: the resource is before the first dot, the group after it.
        if let Some((resource, group)) = name.split_once('.') {
            if let Some(&i) = self.by_name.get(&(group.to_string(), resource.to_string())) {
                return Some(self.resources[i].clone());
            }
        }
        // A bare name: the core group wins, then the first group that has it (discovery order).
        let candidates = self.by_bare_name.get(&name)?;
        candidates
            .iter()
            .find(|&&i| self.resources[i].group_resource.group.is_empty())
            .or_else(|| candidates.first())
            .map(|&i| self.resources[i].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_spellings_of_pods() {
        let m = StaticMapper::builtin();
        for name in ["pods", "pod", "po", "Pod", "PODS"] {
            let info = m.lookup(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(info.group_resource, GroupResource::new("", "pods"));
            assert_eq!(info.api_version(), "v1");
            assert_eq!(info.kind, "Pod");
            assert!(info.namespaced);
        }
    }

    #[test]
    fn group_qualified_names() {
        let m = StaticMapper::builtin();
        for name in [
            "deployments.apps",
            "deployment.apps",
            "deploy",
            "deployments",
        ] {
            let info = m.lookup(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(info.group_resource.to_string(), "deployments.apps");
            assert_eq!(info.api_version(), "apps/v1");
        }
        let ing = m.lookup("ingresses.networking.k8s.io").expect("ingress");
        assert_eq!(ing.api_version(), "networking.k8s.io/v1");
        assert!(m.lookup("deployments.batch").is_none());
        assert!(m.lookup("widgets").is_none());
    }

    #[test]
    fn cluster_scoped() {
        let m = StaticMapper::builtin();
        assert!(!m.lookup("namespaces").expect("ns").namespaced);
        assert!(!m.lookup("node").expect("node").namespaced);
    }
}
