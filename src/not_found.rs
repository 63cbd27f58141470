//! Every 404 the API answers, worded in one place. The request parser and the bridge say
//! *what* was not found; the HTTP layer turns it into a `NotFound` Status with this text.

use std::fmt;

/// What a request asked for that is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// No route matches the path (kube-apiserver's wording).
    Path,
    /// No rule serves `metric` for `resource` (a resource as written, or its plural).
    Metric { metric: String, resource: String },
    /// A named object that an up-to-date watch cache does not hold.
    Object { resource: String, name: String },
    /// The resource itself no longer exists (a deleted CRD).
    Resource { resource: String },
    /// A `*` request whose selector matched no object.
    NoObjects {
        resource: String,
        namespace: Option<String>,
        selector: String,
    },
    /// The query returned no finite sample for what was asked.
    NoSamples {
        metric: String,
        /// `pods`, or `pods web-0` for a named object.
        what: String,
        metric_selector: String,
    },
    /// A Running pod or a node without complete metrics (metrics-server's wording, with its
    /// group-resources `podmetrics` and `nodemetrics`; `name` is `namespace/pod` for pods).
    ResourceMetrics { kind: &'static str, name: String },
    /// An external query returned no finite sample.
    NoExternalSamples {
        metric: String,
        namespace: String,
        selector: String,
    },
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotFound::Path => f.write_str("the server could not find the requested resource"),
            NotFound::Metric { metric, resource } => {
                write!(
                    f,
                    "the server could not find the metric {metric} for {resource}"
                )
            }
            NotFound::Object { resource, name } => write!(f, "{resource} \"{name}\" not found"),
            NotFound::Resource { resource } => write!(
                f,
                "the server could not find the requested resource {resource}: it no longer \
                 exists in the cluster"
            ),
            NotFound::NoObjects {
                resource,
                namespace,
                selector,
            } => {
                let scope = namespace
                    .as_deref()
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default();
                if selector.is_empty() {
                    write!(f, "no {resource} exist{scope}")
                } else {
                    write!(f, "no {resource}{scope} match labelSelector \"{selector}\"")
                }
            }
            NotFound::NoSamples {
                metric,
                what,
                metric_selector,
            } => {
                write!(
                    f,
                    "the server could not find the metric {metric} for {what}"
                )?;
                if !metric_selector.is_empty() {
                    write!(f, " with metricLabelSelector \"{metric_selector}\"")?;
                }
                Ok(())
            }
            NotFound::ResourceMetrics { kind, name } => {
                write!(f, "{kind}.metrics.k8s.io \"{name}\" not found")
            }
            NotFound::NoExternalSamples {
                metric,
                namespace,
                selector,
            } => {
                write!(
                    f,
                    "no samples for external metric {metric} in namespace {namespace}"
                )?;
                if !selector.is_empty() {
                    write!(f, " with labelSelector \"{selector}\"")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for NotFound {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording() {
        let s = |n: NotFound| n.to_string();
        assert_eq!(
            s(NotFound::Path),
            "the server could not find the requested resource"
        );
        assert_eq!(
            s(NotFound::Object {
                resource: "pods".into(),
                name: "ghost-0".into()
            }),
            "pods \"ghost-0\" not found"
        );
        assert_eq!(
            s(NotFound::ResourceMetrics {
                kind: "podmetrics",
                name: "default/busy".into()
            }),
            "podmetrics.metrics.k8s.io \"default/busy\" not found"
        );
        assert_eq!(
            s(NotFound::NoObjects {
                resource: "pods".into(),
                namespace: Some("shop".into()),
                selector: "app=web".into()
            }),
            "no pods in namespace shop match labelSelector \"app=web\""
        );
        assert_eq!(
            s(NotFound::NoObjects {
                resource: "nodes".into(),
                namespace: None,
                selector: String::new()
            }),
            "no nodes exist"
        );
        assert_eq!(
            s(NotFound::NoSamples {
                metric: "m".into(),
                what: "pods web-0".into(),
                metric_selector: "a=b".into()
            }),
            "the server could not find the metric m for pods web-0 with metricLabelSelector \"a=b\""
        );
        assert_eq!(
            s(NotFound::NoExternalSamples {
                metric: "q".into(),
                namespace: "shop".into(),
                selector: String::new()
            }),
            "no samples for external metric q in namespace shop"
        );
    }
}
