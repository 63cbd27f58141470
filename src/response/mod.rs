//! Response building: samples become `MetricValueList` (custom, v1beta1 or v1beta2) or
//! `ExternalMetricValueList` JSON, with canonical Quantity values and the sample's own
//! timestamp.

pub mod discovery;
pub mod resource;
pub mod table;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::request::{CustomVersion, CUSTOM_GROUP, EXTERNAL_GROUP};

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
    selector: &'a Value,
}

#[derive(Serialize)]
struct ItemV1beta2<'a> {
    #[serde(rename = "describedObject")]
    described_object: &'a DescribedObject,
    metric: MetricIdentifier<'a>,
    timestamp: String,
    #[serde(rename = "windowSeconds", skip_serializing_if = "Option::is_none")]
    window_seconds: Option<u64>,
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
    window: Option<u64>,
    value: &'a str,
    selector: &'a Value,
}

#[derive(Serialize)]
struct ExternalItem<'a> {
    #[serde(rename = "metricName")]
    metric_name: &'a str,
    #[serde(rename = "metricLabels")]
    metric_labels: &'a BTreeMap<String, String>,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<u64>,
    value: &'a str,
}

/// The last second RFC 3339 (and `metav1.Time`) can write: 9999-12-31T23:59:59Z.
pub const MAX_TIMESTAMP: f64 = 253_402_300_799.0;

/// `metav1.Time`: RFC 3339 in UTC, to the second. Never panics: the client clamps sample
/// times to `[0, MAX_TIMESTAMP]` already ([`crate::prometheus::client`]), and this clamps
/// again, so no value can reach the formatter's overflow (`UNIX_EPOCH + u64::MAX` seconds)
/// or its year-10000 error, which `to_string` would turn into a panic.
pub fn timestamp(unix_seconds: f64) -> String {
    let secs = if unix_seconds > 0.0 {
        // NaN fails the test above; `as` saturates; the min keeps the year at 9999.
        unix_seconds.min(MAX_TIMESTAMP).floor() as u64
    } else {
        0
    };
    let mut out = String::with_capacity(20);
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    if write!(out, "{}", humantime::format_rfc3339_seconds(time)).is_err() {
        // Unreachable within the clamp; say the epoch rather than fail the answer.
        return "1970-01-01T00:00:00Z".to_string();
    }
    out
}

/// `selector` echoes the metricLabelSelector as a metav1.LabelSelector (or null).
pub fn custom_list(
    version: CustomVersion,
    metric: &str,
    selector: &Value,
    window: Option<Duration>,
    items: &[CustomItem],
) -> String {
    let window = window.map(|w| w.as_secs());
    let api_version = format!("{CUSTOM_GROUP}/{}", version.as_str());
    let json = match version {
        CustomVersion::V1beta2 => serde_json::to_string(&List {
            kind: "MetricValueList",
            api_version,
            metadata: Default::default(),
            items: items
                .iter()
                .map(|i| ItemV1beta2 {
                    described_object: &i.object,
                    metric: MetricIdentifier {
                        name: metric,
                        selector,
                    },
                    timestamp: timestamp(i.timestamp),
                    window_seconds: window,
                    value: &i.value,
                })
                .collect(),
        }),
        CustomVersion::V1beta1 => serde_json::to_string(&List {
            kind: "MetricValueList",
            api_version,
            metadata: Default::default(),
            items: items
                .iter()
                .map(|i| ItemV1beta1 {
                    described_object: &i.object,
                    metric_name: metric,
                    timestamp: timestamp(i.timestamp),
                    window,
                    value: &i.value,
                    selector,
                })
                .collect(),
        }),
    };
    json.unwrap_or_default()
}

/// One external value: the sample's labels, time and value.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalValue {
    pub labels: BTreeMap<String, String>,
    pub timestamp: f64,
    pub value: String,
}

pub fn external_list(metric: &str, window: Option<Duration>, items: &[ExternalValue]) -> String {
    serde_json::to_string(&List {
        kind: "ExternalMetricValueList",
        api_version: format!("{EXTERNAL_GROUP}/v1beta1"),
        metadata: Default::default(),
        items: items
            .iter()
            .map(|i| ExternalItem {
                metric_name: metric,
                metric_labels: &i.labels,
                timestamp: timestamp(i.timestamp),
                window: window.map(|w| w.as_secs()),
                value: &i.value,
            })
            .collect(),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn v1beta2_shape() {
        let v: Value = serde_json::from_str(&custom_list(
            CustomVersion::V1beta2,
            "http_requests",
            &Value::Null,
            Some(Duration::from_secs(60)),
            &[item()],
        ))
        .expect("json");
        assert_eq!(
            v,
            json!({"kind":"MetricValueList","apiVersion":"custom.metrics.k8s.io/v1beta2","metadata":{},"items":[
                {"describedObject":{"kind":"Pod","namespace":"default","name":"web-0","apiVersion":"v1"},
                 "metric":{"name":"http_requests","selector":null},"timestamp":"2024-05-01T12:00:00Z","windowSeconds":60,"value":"1500m"}]})
        );
    }

    #[test]
    fn v1beta1_shape_and_key_order() {
        let sel = json!({"matchLabels":{"verb":"GET"}});
        let text = custom_list(CustomVersion::V1beta1, "qps", &sel, None, &[item()]);
        assert!(text.contains(r#""metricName":"qps","timestamp":"2024-05-01T12:00:00Z","value":"1500m","selector":{"matchLabels":{"verb":"GET"}}"#), "{text}");
        let empty = custom_list(CustomVersion::V1beta1, "qps", &Value::Null, None, &[]);
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
    }

    #[test]
    fn external_shape() {
        let labels: BTreeMap<String, String> = [("queue".to_string(), "orders".to_string())].into();
        let text = external_list(
            "queue_messages_ready",
            None,
            &[ExternalValue {
                labels,
                timestamp: 1714564800.0,
                value: "42".into(),
            }],
        );
        assert_eq!(
            text,
            r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":[{"metricName":"queue_messages_ready","metricLabels":{"queue":"orders"},"timestamp":"2024-05-01T12:00:00Z","value":"42"}]}"#
        );
    }
}
