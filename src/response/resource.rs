//! The Resource Metrics API's objects (`metrics.k8s.io/v1` and `v1beta1`): `PodMetrics` and
//! `NodeMetrics` and their lists, as the bridge builds them before they are encoded. JSON is
//! shaped as metrics-server and `k8s.io/metrics` write it: `metadata` with name, namespace
//! and labels, `timestamp` (RFC 3339, whole seconds), `window` (a Go duration string) and
//! `usage` maps of canonical Quantity strings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::protobuf::{self, ObjectMeta, ResourceMetrics, ResourceUsage};
use super::{timestamp, timestamp_seconds};

pub const RESOURCE_GROUP: &str = "metrics.k8s.io";

/// The versions of `metrics.k8s.io` served, preferred first. `k8s.io/metrics` defines the same
/// objects in both; only `apiVersion` differs. kubectl (1.37+) asks `v1` when discovery lists
/// it, the HPA controller asks `v1beta1`, so a server owning the API serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceVersion {
    V1,
    V1beta1,
}

impl ResourceVersion {
    pub const ALL: [ResourceVersion; 2] = [ResourceVersion::V1, ResourceVersion::V1beta1];

    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceVersion::V1 => "v1",
            ResourceVersion::V1beta1 => "v1beta1",
        }
    }

    pub fn parse(version: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == version)
    }

    /// `metrics.k8s.io/<version>`.
    pub fn api_version(self) -> &'static str {
        match self {
            ResourceVersion::V1 => "metrics.k8s.io/v1",
            ResourceVersion::V1beta1 => "metrics.k8s.io/v1beta1",
        }
    }
}

/// `cpu` and `memory` usage of one container or node: resource name -> canonical Quantity.
/// Sorted, as Go's encoders sort map keys.
pub type Usage = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerMetrics {
    pub name: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodMetrics {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds of the oldest sample the pod's values come from.
    pub timestamp: f64,
    pub window: Duration,
    /// Sorted by name, so answers are stable.
    pub containers: Vec<ContainerMetrics>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeMetrics {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub timestamp: f64,
    pub window: Duration,
    pub usage: Usage,
}

/// Go's `time.Duration.String()`: `15s`, `1m0s`, `5m0s`, `1h0m0s`, `500ms`, `0s`, `10.866s`.
/// `metav1.Duration` is written this way and parsed back with `time.ParseDuration`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        // Below a second Go picks the largest unit that keeps an integer part.
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / scale` with the fraction's trailing zeros removed, as Go prints it.
fn fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let frac = format!("{rest:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    // metav1.ObjectMeta writes `creationTimestamp: null` for a zero time; we have no
    // creation time of our own to report (metrics-server's is "now", which says nothing).
    #[serde(rename = "creationTimestamp")]
    creation_timestamp: Option<()>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ContainerJson<'a> {
    name: &'a str,
    usage: &'a Usage,
}

#[derive(Serialize)]
struct PodJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    metadata: Metadata<'a>,
    timestamp: String,
    window: String,
    containers: Vec<ContainerJson<'a>>,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    metadata: Metadata<'a>,
    timestamp: String,
    window: String,
    usage: &'a Usage,
}

#[derive(Serialize)]
struct ListJson<T> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: serde_json::Map<String, serde_json::Value>,
    items: Vec<T>,
}

impl PodMetrics {
    /// `version` set: a top-level object, with kind and apiVersion; unset: a list item.
    fn json(&self, version: Option<ResourceVersion>) -> PodJson<'_> {
        PodJson {
            kind: version.map(|_| "PodMetrics"),
            api_version: version.map(ResourceVersion::api_version),
            metadata: Metadata {
                name: &self.name,
                namespace: Some(&self.namespace),
                creation_timestamp: None,
                labels: &self.labels,
            },
            timestamp: timestamp(self.timestamp),
            window: go_duration(self.window),
            containers: self
                .containers
                .iter()
                .map(|c| ContainerJson {
                    name: &c.name,
                    usage: &c.usage,
                })
                .collect(),
        }
    }

    /// A single `PodMetrics` (a get by name).
    pub fn to_json(&self, version: ResourceVersion) -> String {
        serde_json::to_string(&self.json(Some(version))).unwrap_or_default()
    }
}

impl NodeMetrics {
    fn json(&self, version: Option<ResourceVersion>) -> NodeJson<'_> {
        NodeJson {
            kind: version.map(|_| "NodeMetrics"),
            api_version: version.map(ResourceVersion::api_version),
            metadata: Metadata {
                name: &self.name,
                namespace: None,
                creation_timestamp: None,
                labels: &self.labels,
            },
            timestamp: timestamp(self.timestamp),
            window: go_duration(self.window),
            usage: &self.usage,
        }
    }

    /// A single `NodeMetrics` (a get by name).
    pub fn to_json(&self, version: ResourceVersion) -> String {
        serde_json::to_string(&self.json(Some(version))).unwrap_or_default()
    }
}

/// A window as `metav1.Duration`'s int64 nanoseconds (saturating past ~292 years).
fn window_nanos(window: Duration) -> i64 {
    i64::try_from(window.as_nanos()).unwrap_or(i64::MAX)
}

impl PodMetrics {
    fn proto(&self) -> ResourceMetrics<'_> {
        ResourceMetrics {
            metadata: ObjectMeta {
                name: &self.name,
                namespace: &self.namespace,
                creation_timestamp: None,
                labels: &self.labels,
            },
            timestamp: timestamp_seconds(self.timestamp),
            window_nanos: window_nanos(self.window),
            usage: ResourceUsage::Containers(&self.containers),
        }
    }

    /// A single `PodMetrics` in Kubernetes protobuf, the envelope included.
    pub fn to_protobuf(&self, version: ResourceVersion) -> Vec<u8> {
        protobuf::envelope(version.api_version(), "PodMetrics", &self.proto())
    }
}

impl NodeMetrics {
    fn proto(&self) -> ResourceMetrics<'_> {
        ResourceMetrics {
            metadata: ObjectMeta {
                name: &self.name,
                namespace: "",
                creation_timestamp: None,
                labels: &self.labels,
            },
            timestamp: timestamp_seconds(self.timestamp),
            window_nanos: window_nanos(self.window),
            usage: ResourceUsage::Node(&self.usage),
        }
    }

    /// A single `NodeMetrics` in Kubernetes protobuf, the envelope included.
    pub fn to_protobuf(&self, version: ResourceVersion) -> Vec<u8> {
        protobuf::envelope(version.api_version(), "NodeMetrics", &self.proto())
    }
}

/// `PodMetricsList` in Kubernetes protobuf.
pub fn pod_list_protobuf(items: &[PodMetrics], version: ResourceVersion) -> Vec<u8> {
    protobuf::envelope(
        version.api_version(),
        "PodMetricsList",
        &protobuf::List::new(items, PodMetrics::proto),
    )
}

/// `NodeMetricsList` in Kubernetes protobuf.
pub fn node_list_protobuf(items: &[NodeMetrics], version: ResourceVersion) -> Vec<u8> {
    protobuf::envelope(
        version.api_version(),
        "NodeMetricsList",
        &protobuf::List::new(items, NodeMetrics::proto),
    )
}

/// `PodMetricsList`; items carry no kind or apiVersion, as in Go.
pub fn pod_list_json(items: &[PodMetrics], version: ResourceVersion) -> String {
    serde_json::to_string(&ListJson {
        kind: "PodMetricsList",
        api_version: version.api_version(),
        metadata: Default::default(),
        items: items.iter().map(|p| p.json(None)).collect(),
    })
    .unwrap_or_default()
}

/// `NodeMetricsList`.
pub fn node_list_json(items: &[NodeMetrics], version: ResourceVersion) -> String {
    serde_json::to_string(&ListJson {
        kind: "NodeMetricsList",
        api_version: version.api_version(),
        metadata: Default::default(),
        items: items.iter().map(|n| n.json(None)).collect(),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::protobuf::spec_bytes;
    use super::*;

    /// The reference's worked example (§4.5), encoded by Go's `protobuf.Serializer`.
    const WORKED_EXAMPLE: &str = r#"
        6b387300 0a28 0a16"metrics.k8s.io/v1beta1" 120e"PodMetricsList"
        127b
          0a06 0a00 1200 1a00
          1271
            0a30 0a05"web-1" 1200 1a07"default" 2200 2a00 3200 3800
                 4208 0885e2cfaa06 1000
                 5a0a 0a03"app" 1203"web"
            1208 0880e2cfaa06 1000
            1a06 0880acc7f037
            222b 0a01"c"
                 1211 0a03"cpu" 120a 0a08"1234567n"
                 1213 0a06"memory" 1209 0a07"12345Ki"
        1a00 2200"#;

    #[test]
    fn protobuf_worked_example_exactly() {
        // The model reports no creation time; the example has one (1700000005), so the
        // encoder is driven directly here, with the model's other fields.
        let pod = pod();
        let mut view = pod.proto();
        view.metadata.creation_timestamp = Some(1_700_000_005);
        let bytes = protobuf::envelope(
            ResourceVersion::V1beta1.api_version(),
            "PodMetricsList",
            &protobuf::List::new(std::slice::from_ref(&view), |v| v),
        );
        assert_eq!(bytes, spec_bytes(WORKED_EXAMPLE));
    }

    #[test]
    fn protobuf_model_writes_a_zero_creation_timestamp() {
        // The example with `42 00` for creationTimestamp: eight bytes fewer at each level.
        let expected = spec_bytes(
            &WORKED_EXAMPLE
                .replace("4208 0885e2cfaa06 1000", "4200")
                .replace("127b", "1273")
                .replace("1271", "1269")
                .replace("0a30 0a05", "0a28 0a05"),
        );
        assert_eq!(
            pod_list_protobuf(&[pod()], ResourceVersion::V1beta1),
            expected
        );
    }

    #[test]
    fn protobuf_single_objects_and_empty_lists() {
        let single = pod().to_protobuf(ResourceVersion::V1beta1);
        assert!(single.starts_with(&spec_bytes(
            r#"6b387300 0a24 0a16"metrics.k8s.io/v1beta1" 120a"PodMetrics" 1269"#
        )));
        assert_eq!(
            node_list_protobuf(&[], ResourceVersion::V1beta1),
            spec_bytes(
                r#"6b387300 0a29 0a16"metrics.k8s.io/v1beta1" 120f"NodeMetricsList" 1208 0a060a0012001a00 1a00 2200"#
            )
        );
        let node = NodeMetrics {
            name: "node-a".into(),
            labels: BTreeMap::new(),
            timestamp: 1_700_000_000.9,
            window: Duration::from_millis(10_866),
            usage: [("cpu".to_string(), "2".to_string())].into(),
        };
        assert_eq!(
            node.to_protobuf(ResourceVersion::V1beta1),
            spec_bytes(concat!(
                r#"6b387300 0a25 0a16"metrics.k8s.io/v1beta1" 120b"NodeMetrics" 1236"#,
                r#" 0a16 {0a06"node-a" 1200 1a00 2200 2a00 3200 3800 4200}"#,
                // timestamp: seconds only, the .9 dropped as the JSON drops it
                r#" 1208 0880e2cfaa06 1000"#,
                // window 10.866 s = 10 866 000 000 ns
                r#" 1a06 088081a8bd28"#,
                r#" 220a {0a03"cpu" 1203 {0a01"2"}}"#,
                r#" 1a00 2200"#,
            ))
        );
    }

    #[test]
    fn go_duration_strings() {
        let s = |secs: u64| go_duration(Duration::from_secs(secs));
        assert_eq!(s(0), "0s");
        assert_eq!(s(15), "15s");
        assert_eq!(s(60), "1m0s");
        assert_eq!(s(300), "5m0s");
        assert_eq!(s(3600), "1h0m0s");
        assert_eq!(s(3725), "1h2m5s");
        assert_eq!(go_duration(Duration::from_millis(10_866)), "10.866s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(go_duration(Duration::from_millis(90_500)), "1m30.5s");
    }

    fn pod() -> PodMetrics {
        PodMetrics {
            name: "web-1".into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            timestamp: 1_700_000_000.5,
            window: Duration::from_secs(15),
            containers: vec![ContainerMetrics {
                name: "c".into(),
                usage: [
                    ("cpu".to_string(), "1234567n".to_string()),
                    ("memory".to_string(), "12345Ki".to_string()),
                ]
                .into(),
            }],
        }
    }

    #[test]
    fn pod_list_shape() {
        assert_eq!(
            pod_list_json(&[pod()], ResourceVersion::V1beta1),
            r#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":[{"metadata":{"name":"web-1","namespace":"default","creationTimestamp":null,"labels":{"app":"web"}},"timestamp":"2023-11-14T22:13:20Z","window":"15s","containers":[{"name":"c","usage":{"cpu":"1234567n","memory":"12345Ki"}}]}]}"#
        );
    }

    #[test]
    fn single_objects_carry_kind() {
        let text = pod().to_json(ResourceVersion::V1beta1);
        assert!(
            text.starts_with(r#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","#),
            "{text}"
        );
        let node = NodeMetrics {
            name: "node-a".into(),
            labels: BTreeMap::new(),
            timestamp: 1_700_000_000.0,
            window: Duration::from_secs(60),
            usage: [("cpu".to_string(), "2".to_string())].into(),
        };
        assert_eq!(
            node.to_json(ResourceVersion::V1beta1),
            r#"{"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{"name":"node-a","creationTimestamp":null},"timestamp":"2023-11-14T22:13:20Z","window":"1m0s","usage":{"cpu":"2"}}"#
        );
        assert!(node_list_json(&[], ResourceVersion::V1beta1).ends_with(r#""items":[]}"#));
    }

    #[test]
    fn v1_differs_only_in_api_version() {
        let v1 = ResourceVersion::V1;
        assert_eq!(
            pod_list_json(&[pod()], v1),
            pod_list_json(&[pod()], ResourceVersion::V1beta1)
                .replace("metrics.k8s.io/v1beta1", "metrics.k8s.io/v1")
        );
        assert!(pod()
            .to_json(v1)
            .starts_with(r#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1","#));
        // The envelope's TypeMeta names v1: 5 bytes shorter at the TypeMeta and nothing else.
        assert_eq!(
            node_list_protobuf(&[], v1),
            spec_bytes(
                r#"6b387300 0a24 0a11"metrics.k8s.io/v1" 120f"NodeMetricsList" 1208 0a060a0012001a00 1a00 2200"#
            )
        );
        assert_eq!(ResourceVersion::parse("v1"), Some(v1));
        assert_eq!(
            ResourceVersion::parse("v1beta1"),
            Some(ResourceVersion::V1beta1)
        );
        assert_eq!(ResourceVersion::parse("v1alpha1"), None);
    }
}
