//! Response building: samples become a typed `MetricValueList` (custom, v1beta1 or v1beta2)
//! or `ExternalMetricValueList`, with canonical Quantity values and the sample's own
//! timestamp, which the HTTP layer encodes as JSON or Kubernetes protobuf, as negotiated.

pub mod discovery;
pub mod protobuf;
pub mod resource;
pub mod table;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::request::{CustomVersion, CUSTOM_GROUP, EXTERNAL_GROUP};
use crate::selector::LabelSelector;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DescribedObject {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
}

/// One value about one object, before it is shaped for a version.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomItem {
    pub object: DescribedObject,
    pub timestamp: f64,
    pub value: String,
}

#[derive(Serialize)]
struct List<T> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: serde_json::Map<String, Value>,
    items: Vec<T>,
}

#[derive(Serialize)]
struct MetricIdentifier<'a> {
    name: &'a str,
    selector: Option<&'a LabelSelector>,
}

#[derive(Serialize)]
struct ItemV1beta2<'a> {
    #[serde(rename = "describedObject")]
    described_object: &'a DescribedObject,
    metric: MetricIdentifier<'a>,
    timestamp: String,
    #[serde(rename = "windowSeconds", skip_serializing_if = "Option::is_none")]
    window_seconds: Option<i64>,
    value: &'a str,
}

#[derive(Serialize)]
struct ItemV1beta1<'a> {
    #[serde(rename = "describedObject")]
    described_object: &'a DescribedObject,
    #[serde(rename = "metricName")]
    metric_name: &'a str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<i64>,
    value: &'a str,
    selector: Option<&'a LabelSelector>,
}

#[derive(Serialize)]
struct ExternalItem<'a> {
    #[serde(rename = "metricName")]
    metric_name: &'a str,
    #[serde(rename = "metricLabels")]
    metric_labels: &'a BTreeMap<String, String>,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<i64>,
    value: &'a str,
}

/// The last second RFC 3339 (and `metav1.Time`) can write: 9999-12-31T23:59:59Z.
pub const MAX_TIMESTAMP: f64 = 253_402_300_799.0;

/// `metav1.Time`: RFC 3339 in UTC, to the second. Never panics: the client clamps sample
/// times to `[0, MAX_TIMESTAMP]` already ([`crate::prometheus::client`]), and this clamps
/// again, so no value can reach the formatter's overflow (`UNIX_EPOCH + u64::MAX` seconds)
/// or its year-10000 error, which `to_string` would turn into a panic.
pub fn timestamp(unix_seconds: f64) -> String {
    let secs = timestamp_seconds(unix_seconds) as u64;
    let mut out = String::with_capacity(20);
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    if write!(out, "{}", humantime::format_rfc3339_seconds(time)).is_err() {
        // Unreachable within the clamp; say the epoch rather than fail the answer.
        return "1970-01-01T00:00:00Z".to_string();
    }
    out
}

/// The whole Unix seconds [`timestamp`] writes, for protobuf's `metav1.Time` (which, like the
/// JSON, carries no fraction): clamped to `[0, MAX_TIMESTAMP]`, NaN as 0.
pub fn timestamp_seconds(unix_seconds: f64) -> i64 {
    if unix_seconds > 0.0 {
        // NaN fails the test above; `as` saturates; the min keeps the year at 9999.
        unix_seconds.min(MAX_TIMESTAMP).floor() as i64
    } else {
        0
    }
}

/// A rule's window in whole seconds, as the lists carry it (int64 in Go).
fn window_seconds(window: Option<Duration>) -> Option<i64> {
    window.map(|w| i64::try_from(w.as_secs()).unwrap_or(i64::MAX))
}

/// A custom-metrics `MetricValueList` of either version, ready to be encoded either way.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomList {
    pub version: CustomVersion,
    pub metric: String,
    /// The request's metricLabelSelector echoed back; `None` (JSON `null`, omitted in
    /// protobuf) when it had none.
    pub selector: Option<LabelSelector>,
    pub window_seconds: Option<i64>,
    pub items: Vec<CustomItem>,
}

impl CustomList {
    pub fn new(
        version: CustomVersion,
        metric: &str,
        selector: Option<LabelSelector>,
        window: Option<Duration>,
        items: Vec<CustomItem>,
    ) -> Self {
        CustomList {
            version,
            metric: metric.to_string(),
            selector,
            window_seconds: window_seconds(window),
            items,
        }
    }

    pub fn api_version(&self) -> String {
        format!("{CUSTOM_GROUP}/{}", self.version.as_str())
    }

    pub fn to_json(&self) -> String {
        let api_version = self.api_version();
        let (metric, selector) = (self.metric.as_str(), self.selector.as_ref());
        let json = match self.version {
            CustomVersion::V1beta2 => serde_json::to_string(&List {
                kind: "MetricValueList",
                api_version,
                metadata: Default::default(),
                items: self
                    .items
                    .iter()
                    .map(|i| ItemV1beta2 {
                        described_object: &i.object,
                        metric: MetricIdentifier {
                            name: metric,
                            selector,
                        },
                        timestamp: timestamp(i.timestamp),
                        window_seconds: self.window_seconds,
                        value: &i.value,
                    })
                    .collect(),
            }),
            CustomVersion::V1beta1 => serde_json::to_string(&List {
                kind: "MetricValueList",
                api_version,
                metadata: Default::default(),
                items: self
                    .items
                    .iter()
                    .map(|i| ItemV1beta1 {
                        described_object: &i.object,
                        metric_name: metric,
                        timestamp: timestamp(i.timestamp),
                        window: self.window_seconds,
                        value: &i.value,
                        selector,
                    })
                    .collect(),
            }),
        };
        json.unwrap_or_default()
    }

    pub fn to_protobuf(&self) -> Vec<u8> {
        let (metric, selector) = (self.metric.as_str(), self.selector.as_ref());
        let api_version = self.api_version();
        match self.version {
            CustomVersion::V1beta1 => protobuf::envelope(
                &api_version,
                "MetricValueList",
                &protobuf::List::new(&self.items, |i| protobuf::MetricValueV1beta1 {
                    described_object: &i.object,
                    metric_name: metric,
                    timestamp: timestamp_seconds(i.timestamp),
                    window_seconds: self.window_seconds,
                    value: &i.value,
                    selector,
                }),
            ),
            CustomVersion::V1beta2 => protobuf::envelope(
                &api_version,
                "MetricValueList",
                &protobuf::List::new(&self.items, |i| protobuf::MetricValueV1beta2 {
                    described_object: &i.object,
                    metric_name: metric,
                    selector,
                    timestamp: timestamp_seconds(i.timestamp),
                    window_seconds: self.window_seconds,
                    value: &i.value,
                }),
            ),
        }
    }
}

/// One external value: the sample's labels, time and value.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalValue {
    pub labels: BTreeMap<String, String>,
    pub timestamp: f64,
    pub value: String,
}

/// An `ExternalMetricValueList`, ready to be encoded either way.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalList {
    pub metric: String,
    pub window_seconds: Option<i64>,
    pub items: Vec<ExternalValue>,
}

impl ExternalList {
    pub fn new(metric: &str, window: Option<Duration>, items: Vec<ExternalValue>) -> Self {
        ExternalList {
            metric: metric.to_string(),
            window_seconds: window_seconds(window),
            items,
        }
    }

    pub fn api_version() -> String {
        format!("{EXTERNAL_GROUP}/v1beta1")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&List {
            kind: "ExternalMetricValueList",
            api_version: Self::api_version(),
            metadata: Default::default(),
            items: self
                .items
                .iter()
                .map(|i| ExternalItem {
                    metric_name: &self.metric,
                    metric_labels: &i.labels,
                    timestamp: timestamp(i.timestamp),
                    window: self.window_seconds,
                    value: &i.value,
                })
                .collect(),
        })
        .unwrap_or_default()
    }

    pub fn to_protobuf(&self) -> Vec<u8> {
        protobuf::envelope(
            &Self::api_version(),
            "ExternalMetricValueList",
            &protobuf::List::new(&self.items, |i| protobuf::ExternalMetricValue {
                metric_name: &self.metric,
                metric_labels: &i.labels,
                timestamp: timestamp_seconds(i.timestamp),
                window_seconds: self.window_seconds,
                value: &i.value,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::protobuf::spec_bytes;
    use super::*;
    use serde_json::json;

    fn item() -> CustomItem {
        CustomItem {
            object: DescribedObject {
                kind: "Pod".into(),
                namespace: Some("default".into()),
                name: "web-0".into(),
                api_version: "v1".into(),
            },
            timestamp: 1714564800.7,
            value: "1500m".into(),
        }
    }

    fn selector(text: &str) -> Option<LabelSelector> {
        crate::selector::parse(text)
            .expect("selector")
            .to_label_selector()
    }

    #[test]
    fn v1beta2_shape() {
        let list = CustomList::new(
            CustomVersion::V1beta2,
            "http_requests",
            None,
            Some(Duration::from_secs(60)),
            vec![item()],
        );
        let v: Value = serde_json::from_str(&list.to_json()).expect("json");
        assert_eq!(
            v,
            json!({"kind":"MetricValueList","apiVersion":"custom.metrics.k8s.io/v1beta2","metadata":{},"items":[
                {"describedObject":{"kind":"Pod","namespace":"default","name":"web-0","apiVersion":"v1"},
                 "metric":{"name":"http_requests","selector":null},"timestamp":"2024-05-01T12:00:00Z","windowSeconds":60,"value":"1500m"}]})
        );
    }

    #[test]
    fn v1beta1_shape_and_key_order() {
        let list = CustomList::new(
            CustomVersion::V1beta1,
            "qps",
            selector("verb=GET"),
            None,
            vec![item()],
        );
        let text = list.to_json();
        assert!(text.contains(r#""metricName":"qps","timestamp":"2024-05-01T12:00:00Z","value":"1500m","selector":{"matchLabels":{"verb":"GET"}}"#), "{text}");
        let empty = CustomList::new(CustomVersion::V1beta1, "qps", None, None, vec![]).to_json();
        assert!(empty.contains(r#""items":[]"#), "{empty}");
    }

    #[test]
    fn timestamps_out_of_range_do_not_panic() {
        // Before the clamp: u64::MAX seconds overflowed `UNIX_EPOCH + Duration` (a panic),
        // and year >= 10000 made humantime's Display fail, which `to_string` turns into one.
        assert_eq!(timestamp(u64::MAX as f64), "9999-12-31T23:59:59Z");
        assert_eq!(timestamp(1e300), "9999-12-31T23:59:59Z");
        assert_eq!(timestamp(253_402_300_800.0), "9999-12-31T23:59:59Z");
        assert_eq!(timestamp(MAX_TIMESTAMP), "9999-12-31T23:59:59Z");
        assert_eq!(timestamp(-5.0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(f64::NAN), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(f64::INFINITY), "9999-12-31T23:59:59Z");
        assert_eq!(timestamp(1714564800.7), "2024-05-01T12:00:00Z");
        // Protobuf writes the same whole seconds.
        assert_eq!(timestamp_seconds(1714564800.7), 1_714_564_800);
        assert_eq!(timestamp_seconds(f64::NAN), 0);
        assert_eq!(timestamp_seconds(-5.0), 0);
        assert_eq!(timestamp_seconds(1e300), MAX_TIMESTAMP as i64);
    }

    fn external_values() -> Vec<ExternalValue> {
        // Inserted as q, b: written sorted.
        let mut labels = BTreeMap::new();
        labels.insert("q".to_string(), "a".to_string());
        labels.insert("b".to_string(), "x".to_string());
        vec![ExternalValue {
            labels,
            timestamp: 1_700_000_000.0,
            value: "3".into(),
        }]
    }

    #[test]
    fn external_shape() {
        let labels: BTreeMap<String, String> = [("queue".to_string(), "orders".to_string())].into();
        let text = ExternalList::new(
            "queue_messages_ready",
            None,
            vec![ExternalValue {
                labels,
                timestamp: 1714564800.0,
                value: "42".into(),
            }],
        )
        .to_json();
        assert_eq!(
            text,
            r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":[{"metricName":"queue_messages_ready","metricLabels":{"queue":"orders"},"timestamp":"2024-05-01T12:00:00Z","value":"42"}]}"#
        );
    }

    /// The envelope around one list item, as the reference's item examples are given.
    fn enveloped(api_version: &str, kind: &str, item: &[u8]) -> Vec<u8> {
        let mut raw = spec_bytes("0a06 0a00 1200 1a00");
        raw.push(0x12);
        assert!(item.len() < 128);
        raw.push(item.len() as u8);
        raw.extend_from_slice(item);
        let mut type_meta = vec![0x0a, api_version.len() as u8];
        type_meta.extend_from_slice(api_version.as_bytes());
        type_meta.extend_from_slice(&[0x12, kind.len() as u8]);
        type_meta.extend_from_slice(kind.as_bytes());
        let mut out = spec_bytes("6b387300 0a");
        out.push(type_meta.len() as u8);
        out.extend_from_slice(&type_meta);
        out.extend_from_slice(&[0x12, raw.len() as u8]);
        out.extend_from_slice(&raw);
        out.extend_from_slice(&spec_bytes("1a00 2200"));
        out
    }

    fn web_1(api_version: &str) -> CustomItem {
        CustomItem {
            object: DescribedObject {
                kind: "Pod".into(),
                namespace: Some("default".into()),
                name: "web-1".into(),
                api_version: api_version.into(),
            },
            timestamp: 1_700_000_000.0,
            value: "10500m".into(),
        }
    }

    #[test]
    fn protobuf_v1beta2_item_as_in_the_reference() {
        // The reference's example names the Go framework's "/v1"; bytes are what matter here.
        let list = CustomList::new(
            CustomVersion::V1beta2,
            "rps",
            None,
            Some(Duration::from_secs(60)),
            vec![web_1("/v1")],
        );
        let item = spec_bytes(
            r#"0a20 {0a03"Pod" 1207"default" 1a05"web-1" 2200 2a03"/v1" 3200 3a00} 1205{0a03"rps"} 1a08{0880e2cfaa061000} 203c 2a08{0a06"10500m"}"#,
        );
        assert_eq!(
            list.to_protobuf(),
            enveloped("custom.metrics.k8s.io/v1beta2", "MetricValueList", &item)
        );
    }

    #[test]
    fn protobuf_v1beta1_item_has_a_bare_metric_name_and_the_selector() {
        let list = CustomList::new(
            CustomVersion::V1beta1,
            "rps",
            selector("verb=GET,code in (2xx,5xx)"),
            None,
            vec![web_1("v1")],
        );
        let item = spec_bytes(concat!(
            r#"0a1f {0a03"Pod" 1207"default" 1a05"web-1" 2200 2a02"v1" 3200 3a00} 1203"rps" 1a08{0880e2cfaa061000} 2a08{0a06"10500m"}"#,
            // selector: matchLabels {verb: GET}, then matchExpressions [{code In [2xx 5xx]}]
            r#" 3223 {0a0b{0a04"verb" 1203"GET"} 1214{0a04"code" 1202"In" 1a03"2xx" 1a03"5xx"}}"#,
        ));
        assert_eq!(
            list.to_protobuf(),
            enveloped("custom.metrics.k8s.io/v1beta1", "MetricValueList", &item)
        );
    }

    #[test]
    fn protobuf_windows_are_varints() {
        let window = |secs: u64| {
            let list = CustomList::new(
                CustomVersion::V1beta1,
                "m",
                None,
                Some(Duration::from_secs(secs)),
                vec![web_1("v1")],
            );
            let bytes = list.to_protobuf();
            // The window follows the timestamp (field 3, 8 bytes) and precedes the value.
            let at = bytes
                .windows(10)
                .position(|w| w == spec_bytes("1a08 0880e2cfaa061000").as_slice())
                .expect("timestamp")
                + 10;
            let end = bytes[at..].iter().position(|b| *b == 0x2a).expect("value") + at;
            bytes[at..end].to_vec()
        };
        assert_eq!(window(60), spec_bytes("203c"));
        assert_eq!(window(300), spec_bytes("20ac02"));
        assert_eq!(
            window(0),
            spec_bytes("2000"),
            "a zero window is still written"
        );
    }

    #[test]
    fn protobuf_external_item_sorts_labels() {
        let list = ExternalList::new("queue", None, external_values());
        let item = spec_bytes(
            r#"0a05"queue" 1206{0a01"b" 1201"x"} 1206{0a01"q" 1201"a"} 1a08{0880e2cfaa061000} 2a03{0a01"3"}"#,
        );
        assert_eq!(
            list.to_protobuf(),
            enveloped(
                "external.metrics.k8s.io/v1beta1",
                "ExternalMetricValueList",
                &item
            )
        );
    }

    #[test]
    fn protobuf_empty_lists() {
        let empty = CustomList::new(CustomVersion::V1beta2, "m", None, None, vec![]);
        assert_eq!(
            empty.to_protobuf(),
            spec_bytes(
                r#"6b387300 0a30 {0a1d"custom.metrics.k8s.io/v1beta2" 120f"MetricValueList"} 1208 {0a06 0a00 1200 1a00} 1a00 2200"#
            )
        );
        let empty = ExternalList::new("m", None, vec![]).to_protobuf();
        assert!(empty.ends_with(&spec_bytes("1208 0a060a0012001a00 1a00 2200")));
    }
}
