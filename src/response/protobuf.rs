//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`): the wire primitives, the
//! `k8s\0` + `runtime.Unknown` envelope, and the apimachinery messages the metrics objects are
//! made of. The output is byte for byte what Go's gogo-generated marshallers write: every
//! non-pointer field is written even when empty or zero, map keys are sorted (our maps are
//! BTreeMaps), repeated fields keep their order, `metav1.Time` carries seconds only (nanos
//! written as 0), and the metrics' `window` fields are VARINTs (the `.proto`, not the Go struct
//! tags, is authoritative: see the reference's "Window trap").
//!
//! Written by hand rather than with `prost` (derive, no build.rs) because prost cannot give
//! Go's bytes with less code: its map encoding leaves out an entry's key or value when it is
//! the default (an empty label value, `a=` in a selector), where gogo writes both, so every
//! map would have to be modelled as a repeated entry message; its messages own their fields,
//! so every string of an answer would be copied into parallel structs; and the envelope's
//! `raw` would be the object encoded once more. What is needed here is five primitives
//! (varint, tag, length-delimited bytes, nested message, map entry) over borrowed data.
//!
//! Lengths are computed before each nested message is written (forward encoding), so a leaf
//! is measured once per enclosing message: a handful of additions per level, cheaper than
//! the one exact-capacity allocation it buys.

use std::collections::BTreeMap;

use crate::selector::{LabelSelector, LabelSelectorRequirement};

use super::DescribedObject;

/// The response Content-Type, exactly as kube-apiserver writes it.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// `k8s\0`: the 4th byte 0x00 says a `runtime.Unknown` follows.
pub const MAGIC: [u8; 4] = [0x6b, 0x38, 0x73, 0x00];

/// `ListMeta` with its three strings written empty (`selfLink`, `resourceVersion`,
/// `continue`), as field 1 of a list: `0a 06 0a00 1200 1a00`.
const EMPTY_LIST_META: [u8; 8] = [0x0a, 0x06, 0x0a, 0x00, 0x12, 0x00, 0x1a, 0x00];

const VARINT: u8 = 0;
const LEN: u8 = 2;

/// A protobuf message: its length (without its own tag and length prefix) and its fields.
pub(crate) trait Message {
    fn encoded_len(&self) -> usize;
    fn encode(&self, out: &mut Vec<u8>);
}

impl<M: Message + ?Sized> Message for &M {
    fn encoded_len(&self) -> usize {
        (**self).encoded_len()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out)
    }
}

fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 still takes one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Every field number used here is below 16, so a key is one byte.
fn key(field: u8, wire_type: u8) -> u8 {
    debug_assert!(field < 16);
    (field << 3) | wire_type
}

/// A LEN field holding `n` bytes: key, length, payload.
fn len_field(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn put_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(key(field, LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn message_field(m: &impl Message) -> usize {
    len_field(m.encoded_len())
}

fn put_message(out: &mut Vec<u8>, field: u8, m: &impl Message) {
    out.push(key(field, LEN));
    put_varint(out, m.encoded_len() as u64);
    m.encode(out);
}

/// An int64 field: Go writes `uint64(v)`, so a negative value takes ten bytes.
fn int_field(v: i64) -> usize {
    1 + varint_len(v as u64)
}

fn put_int(out: &mut Vec<u8>, field: u8, v: i64) {
    out.push(key(field, VARINT));
    put_varint(out, v as u64);
}

/// A `map<string,string>` field: one `{key=1, value=2}` entry per pair, both always written.
fn string_map(map: &BTreeMap<String, String>) -> usize {
    map.iter()
        .map(|(k, v)| len_field(len_field(k.len()) + len_field(v.len())))
        .sum()
}

fn put_string_map(out: &mut Vec<u8>, field: u8, map: &BTreeMap<String, String>) {
    for (k, v) in map {
        out.push(key(field, LEN));
        put_varint(out, (len_field(k.len()) + len_field(v.len())) as u64);
        put_bytes(out, 1, k.as_bytes());
        put_bytes(out, 2, v.as_bytes());
    }
}

/// A `map<string,Quantity>` field (`usage`).
fn quantity_map(map: &BTreeMap<String, String>) -> usize {
    map.iter()
        .map(|(k, v)| len_field(len_field(k.len()) + message_field(&Quantity(v))))
        .sum()
}

fn put_quantity_map(out: &mut Vec<u8>, field: u8, map: &BTreeMap<String, String>) {
    for (k, v) in map {
        out.push(key(field, LEN));
        put_varint(
            out,
            (len_field(k.len()) + message_field(&Quantity(v))) as u64,
        );
        put_bytes(out, 1, k.as_bytes());
        put_message(out, 2, &Quantity(v));
    }
}

/// `object` in the envelope: magic, then `runtime.Unknown{typeMeta{apiVersion, kind}, raw,
/// contentEncoding "", contentType ""}`. The object's own TypeMeta has no protobuf tag, so
/// apiVersion and kind live only here.
pub(crate) fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let type_meta = len_field(api_version.len()) + len_field(kind.len());
    let raw = object.encoded_len();
    let total = MAGIC.len() + len_field(type_meta) + len_field(raw) + 2 + 2;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC);
    out.push(key(1, LEN));
    put_varint(&mut out, type_meta as u64);
    put_bytes(&mut out, 1, api_version.as_bytes());
    put_bytes(&mut out, 2, kind.as_bytes());
    out.push(key(2, LEN));
    put_varint(&mut out, raw as u64);
    object.encode(&mut out);
    // contentEncoding and contentType, empty: Go always writes them.
    out.extend_from_slice(&[key(3, LEN), 0, key(4, LEN), 0]);
    debug_assert_eq!(out.len(), total);
    out
}

/// `resource.Quantity`: field 1, the canonical string.
pub(crate) struct Quantity<'a>(pub &'a str);

impl Message for Quantity<'_> {
    fn encoded_len(&self) -> usize {
        len_field(self.0.len())
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, 1, self.0.as_bytes());
    }
}

/// `metav1.Time`: `{seconds=1, nanos=2}`, nanos always 0 (Go drops them); the zero time
/// (`None`, JSON `null`) is an empty message.
pub(crate) struct Time(pub Option<i64>);

impl Message for Time {
    fn encoded_len(&self) -> usize {
        self.0.map_or(0, |s| int_field(s) + int_field(0))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        if let Some(seconds) = self.0 {
            put_int(out, 1, seconds);
            put_int(out, 2, 0);
        }
    }
}

/// `metav1.Duration`: field 1, nanoseconds as an int64 VARINT.
pub(crate) struct Duration(pub i64);

impl Message for Duration {
    fn encoded_len(&self) -> usize {
        int_field(self.0)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_int(out, 1, self.0);
    }
}

/// A list object: `{metadata=1: ListMeta (empty), items=2: repeated}`; `view` shapes each
/// item (custom items take the list's metric, selector and window).
pub(crate) struct List<'a, T, F> {
    pub items: &'a [T],
    pub view: F,
}

impl<'a, T, F> List<'a, T, F> {
    /// Ties `view` to the items' lifetime, so closures need no annotations.
    pub fn new<M: Message>(items: &'a [T], view: F) -> Self
    where
        F: Fn(&'a T) -> M,
    {
        List { items, view }
    }
}

impl<'a, T, M, F> Message for List<'a, T, F>
where
    M: Message,
    F: Fn(&'a T) -> M,
{
    fn encoded_len(&self) -> usize {
        EMPTY_LIST_META.len()
            + self
                .items
                .iter()
                .map(|i| message_field(&(self.view)(i)))
                .sum::<usize>()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&EMPTY_LIST_META);
        for item in self.items {
            put_message(out, 2, &(self.view)(item));
        }
    }
}

/// `metav1.ObjectMeta` with the fields the metrics objects set: 1-8 always written (the
/// other strings empty, generation 0), labels (11) when any.
pub(crate) struct ObjectMeta<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// Unix seconds; `None` is Go's zero time (JSON `null`), which the bridge reports.
    pub creation_timestamp: Option<i64>,
    pub labels: &'a BTreeMap<String, String>,
}

impl Message for ObjectMeta<'_> {
    fn encoded_len(&self) -> usize {
        len_field(self.name.len())
            + len_field(0) // generateName
            + len_field(self.namespace.len())
            + len_field(0) // selfLink
            + len_field(0) // uid
            + len_field(0) // resourceVersion
            + int_field(0) // generation
            + message_field(&Time(self.creation_timestamp))
            + string_map(self.labels)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, 1, self.name.as_bytes());
        put_bytes(out, 2, b"");
        put_bytes(out, 3, self.namespace.as_bytes());
        put_bytes(out, 4, b"");
        put_bytes(out, 5, b"");
        put_bytes(out, 6, b"");
        put_int(out, 7, 0);
        put_message(out, 8, &Time(self.creation_timestamp));
        put_string_map(out, 11, self.labels);
    }
}

/// `core/v1.ObjectReference`: all seven strings written (uid, resourceVersion and fieldPath
/// empty).
impl Message for DescribedObject {
    fn encoded_len(&self) -> usize {
        len_field(self.kind.len())
            + len_field(self.namespace.as_deref().map_or(0, str::len))
            + len_field(self.name.len())
            + len_field(0)
            + len_field(self.api_version.len())
            + len_field(0)
            + len_field(0)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, 1, self.kind.as_bytes());
        put_bytes(out, 2, self.namespace.as_deref().unwrap_or("").as_bytes());
        put_bytes(out, 3, self.name.as_bytes());
        put_bytes(out, 4, b"");
        put_bytes(out, 5, self.api_version.as_bytes());
        put_bytes(out, 6, b"");
        put_bytes(out, 7, b"");
    }
}

/// `metav1.LabelSelector`: matchLabels (1) then matchExpressions (2).
impl Message for LabelSelector {
    fn encoded_len(&self) -> usize {
        string_map(&self.match_labels)
            + self
                .match_expressions
                .iter()
                .map(message_field)
                .sum::<usize>()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_string_map(out, 1, &self.match_labels);
        for r in &self.match_expressions {
            put_message(out, 2, r);
        }
    }
}

/// `metav1.LabelSelectorRequirement`: key, operator, values (repeated).
impl Message for LabelSelectorRequirement {
    fn encoded_len(&self) -> usize {
        len_field(self.key.len())
            + len_field(self.operator.len())
            + self
                .values
                .iter()
                .map(|v| len_field(v.len()))
                .sum::<usize>()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, 1, self.key.as_bytes());
        put_bytes(out, 2, self.operator.as_bytes());
        for v in &self.values {
            put_bytes(out, 3, v.as_bytes());
        }
    }
}

/// custom.metrics.k8s.io/v1beta1 `MetricValue`: describedObject, metricName, timestamp,
/// window (VARINT, nil omitted), value, selector (nil omitted).
pub(crate) struct MetricValueV1beta1<'a> {
    pub described_object: &'a DescribedObject,
    pub metric_name: &'a str,
    pub timestamp: i64,
    pub window_seconds: Option<i64>,
    pub value: &'a str,
    pub selector: Option<&'a LabelSelector>,
}

impl Message for MetricValueV1beta1<'_> {
    fn encoded_len(&self) -> usize {
        message_field(self.described_object)
            + len_field(self.metric_name.len())
            + message_field(&Time(Some(self.timestamp)))
            + self.window_seconds.map_or(0, int_field)
            + message_field(&Quantity(self.value))
            + self.selector.map_or(0, message_field)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_message(out, 1, self.described_object);
        put_bytes(out, 2, self.metric_name.as_bytes());
        put_message(out, 3, &Time(Some(self.timestamp)));
        if let Some(w) = self.window_seconds {
            put_int(out, 4, w);
        }
        put_message(out, 5, &Quantity(self.value));
        if let Some(s) = self.selector {
            put_message(out, 6, s);
        }
    }
}

/// custom.metrics.k8s.io/v1beta2 `MetricIdentifier`: name, selector (nil omitted).
struct MetricIdentifier<'a> {
    name: &'a str,
    selector: Option<&'a LabelSelector>,
}

impl Message for MetricIdentifier<'_> {
    fn encoded_len(&self) -> usize {
        len_field(self.name.len()) + self.selector.map_or(0, message_field)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, 1, self.name.as_bytes());
        if let Some(s) = self.selector {
            put_message(out, 2, s);
        }
    }
}

/// custom.metrics.k8s.io/v1beta2 `MetricValue`: describedObject, metric, timestamp,
/// windowSeconds (VARINT, nil omitted), value.
pub(crate) struct MetricValueV1beta2<'a> {
    pub described_object: &'a DescribedObject,
    pub metric_name: &'a str,
    pub selector: Option<&'a LabelSelector>,
    pub timestamp: i64,
    pub window_seconds: Option<i64>,
    pub value: &'a str,
}

impl MetricValueV1beta2<'_> {
    fn metric(&self) -> MetricIdentifier<'_> {
        MetricIdentifier {
            name: self.metric_name,
            selector: self.selector,
        }
    }
}

impl Message for MetricValueV1beta2<'_> {
    fn encoded_len(&self) -> usize {
        message_field(self.described_object)
            + message_field(&self.metric())
            + message_field(&Time(Some(self.timestamp)))
            + self.window_seconds.map_or(0, int_field)
            + message_field(&Quantity(self.value))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_message(out, 1, self.described_object);
        put_message(out, 2, &self.metric());
        put_message(out, 3, &Time(Some(self.timestamp)));
        if let Some(w) = self.window_seconds {
            put_int(out, 4, w);
        }
        put_message(out, 5, &Quantity(self.value));
    }
}

/// external.metrics.k8s.io/v1beta1 `ExternalMetricValue`: metricName, metricLabels (map),
/// timestamp, window (VARINT, nil omitted), value.
pub(crate) struct ExternalMetricValue<'a> {
    pub metric_name: &'a str,
    pub metric_labels: &'a BTreeMap<String, String>,
    pub timestamp: i64,
    pub window_seconds: Option<i64>,
    pub value: &'a str,
}

impl Message for ExternalMetricValue<'_> {
    fn encoded_len(&self) -> usize {
        len_field(self.metric_name.len())
            + string_map(self.metric_labels)
            + message_field(&Time(Some(self.timestamp)))
            + self.window_seconds.map_or(0, int_field)
            + message_field(&Quantity(self.value))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, 1, self.metric_name.as_bytes());
        put_string_map(out, 2, self.metric_labels);
        put_message(out, 3, &Time(Some(self.timestamp)));
        if let Some(w) = self.window_seconds {
            put_int(out, 4, w);
        }
        put_message(out, 5, &Quantity(self.value));
    }
}

/// metrics.k8s.io `ContainerMetrics`: name, usage (map of Quantity).
pub(crate) struct ContainerMetrics<'a> {
    pub name: &'a str,
    pub usage: &'a BTreeMap<String, String>,
}

impl Message for ContainerMetrics<'_> {
    fn encoded_len(&self) -> usize {
        len_field(self.name.len()) + quantity_map(self.usage)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, 1, self.name.as_bytes());
        put_quantity_map(out, 2, self.usage);
    }
}

/// metrics.k8s.io `PodMetrics` (containers in field 4) or `NodeMetrics` (usage in field 4):
/// metadata, timestamp, window (a `metav1.Duration`) always written.
pub(crate) struct ResourceMetrics<'a> {
    pub metadata: ObjectMeta<'a>,
    pub timestamp: i64,
    pub window_nanos: i64,
    pub usage: ResourceUsage<'a>,
}

pub(crate) enum ResourceUsage<'a> {
    Containers(&'a [super::resource::ContainerMetrics]),
    Node(&'a BTreeMap<String, String>),
}

fn container(c: &super::resource::ContainerMetrics) -> ContainerMetrics<'_> {
    ContainerMetrics {
        name: &c.name,
        usage: &c.usage,
    }
}

impl Message for ResourceMetrics<'_> {
    fn encoded_len(&self) -> usize {
        message_field(&self.metadata)
            + message_field(&Time(Some(self.timestamp)))
            + message_field(&Duration(self.window_nanos))
            + match self.usage {
                ResourceUsage::Containers(cs) => {
                    cs.iter().map(|c| message_field(&container(c))).sum()
                }
                ResourceUsage::Node(usage) => quantity_map(usage),
            }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_message(out, 1, &self.metadata);
        put_message(out, 2, &Time(Some(self.timestamp)));
        put_message(out, 3, &Duration(self.window_nanos));
        match self.usage {
            ResourceUsage::Containers(cs) => {
                for c in cs {
                    put_message(out, 4, &container(c));
                }
            }
            ResourceUsage::Node(usage) => put_quantity_map(out, 4, usage),
        }
    }
}

/// Bytes written as the reference writes them: hex pairs, `"text"` for its bytes; spaces,
/// `{` and `}` (nesting, for the reader) ignored. `0a05"web-1"` is `0a 05 77 65 62 2d 31`.
#[cfg(test)]
pub(crate) fn spec_bytes(spec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = spec;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            let end = rest[1..].find('"').expect("closing quote") + 1;
            out.extend_from_slice(&rest.as_bytes()[1..end]);
            rest = &rest[end + 1..];
        } else if c.is_whitespace() || c == '{' || c == '}' {
            rest = &rest[1..];
        } else {
            out.push(u8::from_str_radix(&rest[..2], 16).expect("hex pair"));
            rest = &rest[2..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let enc = |v: u64| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        // 15 s in nanoseconds, as in the worked example.
        assert_eq!(enc(15_000_000_000), [0x80, 0xac, 0xc7, 0xf0, 0x37]);
        assert_eq!(enc(u64::MAX).len(), 10);
        assert_eq!(
            int_field(-1),
            11,
            "Go writes uint64(-1): ten bytes and the key"
        );
    }

    #[test]
    fn time_is_seconds_with_zero_nanos_and_zero_time_is_empty() {
        let mut out = Vec::new();
        put_message(&mut out, 3, &Time(Some(1_700_000_000)));
        assert_eq!(
            out,
            [0x1a, 0x08, 0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x10, 0x00]
        );
        out.clear();
        put_message(&mut out, 8, &Time(None));
        assert_eq!(out, [0x42, 0x00]);
        out.clear();
        put_message(&mut out, 3, &Time(Some(0)));
        assert_eq!(
            out,
            [0x1a, 0x04, 0x08, 0x00, 0x10, 0x00],
            "1970 is not Go's zero time"
        );
    }

    /// Walks `bytes` as one message: every key known, every LEN field inside the message,
    /// the last field ending exactly at its end. Returns the LEN payloads of `field`.
    fn walk(bytes: &[u8], field: u8) -> Vec<&[u8]> {
        let varint = |at: &mut usize| {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = bytes[*at];
                *at += 1;
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b < 0x80 {
                    return v;
                }
            }
        };
        let (mut at, mut found) = (0, Vec::new());
        while at < bytes.len() {
            let key = bytes[at];
            at += 1;
            match key & 7 {
                VARINT => {
                    varint(&mut at);
                }
                LEN => {
                    let n = varint(&mut at) as usize;
                    assert!(at + n <= bytes.len(), "field {} overruns", key >> 3);
                    if key >> 3 == field {
                        found.push(&bytes[at..at + n]);
                    }
                    at += n;
                }
                other => panic!("wire type {other}"),
            }
        }
        assert_eq!(at, bytes.len());
        found
    }

    proptest::proptest! {
        /// Any strings, long ones included (multi-byte lengths at every level): the lengths
        /// announced are the lengths written (`envelope` asserts the total in debug builds),
        /// and the list and its items parse as messages.
        #[test]
        fn lengths_hold_for_any_content(
            names in proptest::collection::vec(".{0,200}", 0..6),
            labels in proptest::collection::btree_map(".{0,150}", ".{0,150}", 0..5),
            seconds in proptest::prelude::any::<i64>(),
            window in proptest::prelude::any::<i64>(),
        ) {
            let usage = labels.clone();
            let containers: Vec<super::super::resource::ContainerMetrics> = names
                .iter()
                .map(|n| super::super::resource::ContainerMetrics { name: n.clone(), usage: usage.clone() })
                .collect();
            let pods: Vec<ResourceMetrics<'_>> = names
                .iter()
                .map(|n| ResourceMetrics {
                    metadata: ObjectMeta { name: n, namespace: n, creation_timestamp: Some(seconds), labels: &labels },
                    timestamp: seconds,
                    window_nanos: window,
                    usage: ResourceUsage::Containers(&containers),
                })
                .collect();
            let bytes = envelope("metrics.k8s.io/v1beta1", "PodMetricsList", &List::new(&pods, |p| p));
            proptest::prop_assert_eq!(&bytes[..4], &MAGIC[..]);
            let raw = walk(&bytes[4..], 2);
            proptest::prop_assert_eq!(raw.len(), 1);
            let items = walk(raw[0], 2);
            proptest::prop_assert_eq!(items.len(), pods.len());
            for item in items {
                proptest::prop_assert_eq!(walk(item, 4).len(), containers.len());
            }
        }
    }

    #[test]
    fn empty_map_values_are_written() {
        // prost would leave the empty value out; gogo writes `12 00`.
        let map: BTreeMap<String, String> = [("a".to_string(), String::new())].into();
        let mut out = Vec::new();
        put_string_map(&mut out, 1, &map);
        assert_eq!(out, [0x0a, 0x05, 0x0a, 0x01, b'a', 0x12, 0x00]);
        assert_eq!(out.len(), string_map(&map));
    }
}
