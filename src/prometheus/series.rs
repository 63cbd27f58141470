//! What discovery keeps of a `/api/v1/series` answer, and how the answer is read: as a
//! stream, one series at a time, folded into a [`SeriesSet`] of distinct names and label names.
//!
//! The answer's size grows with the series (about 150 bytes each: a million series are about
//! 150 MB of JSON), what is kept only with the distinct names. So the answer is never held,
//! and what `prometheus.max_response_bytes` bounds here is what is kept: a backend that names
//! endless distinct series (garbage, or a query far broader than meant) is cut off there
//! instead of growing the set until the deadline.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::client::Envelope;

/// What discovery keeps of a `/api/v1/series` answer: each distinct series name with the
/// union of its series' label names. Label values are never kept: the registry needs only
/// which labels a name carries (to tie it to resources), and keeping every series' full label
/// set between runs made discovery's memory grow with the series count.
///
/// Only names that can stand unquoted in PromQL are kept ([`crate::promql::is_metric_name`]
/// and [`crate::promql::is_label_name`]): `<<.Series>>` and `<<.GroupBy>>` are rendered as
/// bare text, so a series named `x{a="1"} or vector(1)` (which Prometheus stores when it
/// arrives by remote write, and Prometheus 3 from any UTF-8 scrape) would otherwise inject
/// PromQL into every query of its rule. The dropped ones are counted for the log and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesSet {
    names: BTreeMap<String, BTreeSet<String>>,
    /// Estimated bytes of `names`, kept up to date by [`SeriesSet::add`].
    names_bytes: usize,
    /// Series in the answer, kept or not.
    pub series: u64,
    /// Series dropped because their name is not a classic metric name.
    pub invalid_names: u64,
    /// Label names left out (once per series) because they are not classic label names.
    pub invalid_label_names: u64,
    /// The first few distinct names dropped (each cut to 120 characters), for the log.
    pub invalid_examples: Vec<String>,
    /// The same for label names.
    pub invalid_label_examples: Vec<String>,
}

/// Adds `name`, cut to 120 characters, to `examples` unless it is there or the list is full.
fn remember(examples: &mut Vec<String>, name: &str) {
    let shown: String = name.chars().take(120).collect();
    if examples.len() < INVALID_EXAMPLES && !examples.contains(&shown) {
        examples.push(shown);
    }
}

const INVALID_EXAMPLES: usize = 8;
/// A B-tree entry's share of its node, roughly.
const TREE_ENTRY: usize = 16;

/// Estimated bytes of one kept string in a B-tree.
fn entry_bytes(s: &str) -> usize {
    std::mem::size_of::<String>() + s.len() + TREE_ENTRY
}

impl SeriesSet {
    /// Adds one series, keeping only what is valid.
    pub fn add<L: Into<String> + AsRef<str>>(
        &mut self,
        name: &str,
        label_names: impl IntoIterator<Item = L>,
    ) {
        self.series += 1;
        if !crate::promql::is_metric_name(name) {
            self.invalid_names += 1;
            remember(&mut self.invalid_examples, name);
            return;
        }
        let labels = match self.names.get_mut(name) {
            Some(labels) => labels,
            None => {
                self.names_bytes += entry_bytes(name) + std::mem::size_of::<BTreeSet<String>>();
                self.names.entry(name.to_string()).or_default()
            }
        };
        for label in label_names {
            if !crate::promql::is_label_name(label.as_ref()) {
                self.invalid_label_names += 1;
                remember(&mut self.invalid_label_examples, label.as_ref());
            } else if !labels.contains(label.as_ref()) {
                self.names_bytes += entry_bytes(label.as_ref());
                labels.insert(label.into());
            }
        }
    }

    /// Each kept name with its label names, sorted by name.
    pub fn names(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.names.iter().map(|(n, l)| (n.as_str(), l))
    }

    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Roughly the bytes this set keeps between discovery runs.
    pub fn kept_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.names_bytes
            + self
                .invalid_examples
                .iter()
                .chain(&self.invalid_label_examples)
                .map(|e| std::mem::size_of::<String>() + e.capacity())
                .sum::<usize>()
    }
}

/// A series answer, read.
#[derive(Debug)]
pub(super) enum Decoded {
    /// The envelope, or why the JSON could not be read.
    Answer(Result<Envelope<SeriesSet>, serde_json::Error>),
    /// The distinct names passed the limit; reading stopped there.
    KeptTooMuch,
}

/// Reads a series answer from any reader (the body's chunks, or a test's bytes), keeping at
/// most `limit` bytes of names.
pub(super) fn decode_series<R: Read>(reader: R, limit: usize) -> Decoded {
    let exceeded = Cell::new(false);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let read = SeriesAnswer {
        limit,
        exceeded: &exceeded,
    }
    .deserialize(&mut de)
    .and_then(|envelope| de.end().map(|()| envelope));
    if exceeded.get() {
        Decoded::KeptTooMuch
    } else {
        Decoded::Answer(read)
    }
}

/// The answer's envelope (`status`, `data`, `errorType`, `error`; anything else, such as
/// `warnings`, skipped), with `data` folded as it is read.
#[derive(Clone, Copy)]
struct SeriesAnswer<'a> {
    limit: usize,
    /// Set when the fold stopped at the limit, to tell that apart from bad JSON.
    exceeded: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for SeriesAnswer<'_> {
    type Value = Envelope<SeriesSet>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SeriesAnswer<'_> {
    type Value = Envelope<SeriesSet>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Prometheus API answer")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut status = None;
        let mut envelope = Envelope {
            status: String::new(),
            data: None,
            error_type: None,
            error: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "status" => status = Some(map.next_value::<String>()?),
                "data" => envelope.data = map.next_value_seed(SeriesData(self))?,
                "errorType" => envelope.error_type = map.next_value()?,
                "error" => envelope.error = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        envelope.status = status.ok_or_else(|| A::Error::missing_field("status"))?;
        Ok(envelope)
    }
}

/// `data`: `null`, or the list of series label sets.
struct SeriesData<'a>(SeriesAnswer<'a>);

impl<'de> DeserializeSeed<'de> for SeriesData<'_> {
    type Value = Option<SeriesSet>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for SeriesData<'_> {
    type Value = Option<SeriesSet>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of series label sets")
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
    /// Folds `[{"__name__": "x", "pod": "a", ...}, ...]` into the set one series at a time:
    /// only the series being read is held in full.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut set = SeriesSet::default();
        while let Some(one) = seq.next_element::<OneSeries>()? {
            set.add(&one.name, one.label_names);
            if set.names_bytes > self.0.limit {
                self.0.exceeded.set(true);
                return Err(A::Error::custom("series names past the limit"));
            }
        }
        Ok(Some(set))
    }
}

/// One element of the series answer: its name and label names; values are skipped unread.
struct OneSeries {
    name: String,
    label_names: Vec<String>,
}

impl<'de> Deserialize<'de> for OneSeries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Labels;
        impl<'de> Visitor<'de> for Labels {
            type Value = OneSeries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a series label set")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OneSeries, A::Error> {
                let mut one = OneSeries {
                    name: String::new(),
                    label_names: Vec::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__name__" {
                        one.name = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        one.label_names.push(key);
                    }
                }
                Ok(one)
            }
        }
        d.deserialize_map(Labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series_body(series: &[&str]) -> String {
        format!(r#"{{"status":"success","data":[{}]}}"#, series.join(","))
    }

    /// The set of a successful answer.
    fn read(body: &str) -> SeriesSet {
        match decode_series(body.as_bytes(), usize::MAX) {
            Decoded::Answer(Ok(Envelope {
                data: Some(set), ..
            })) => set,
            other => panic!("not a successful answer: {other:?}"),
        }
    }

    #[test]
    fn series_answer_keeps_only_valid_names_and_label_names() {
        let set = read(&series_body(&[
            r#"{"__name__":"http_requests_total","namespace":"a","pod":"web-0"}"#,
            r#"{"pod":"web-1","__name__":"http_requests_total","namespace":"b","container":"c"}"#,
            r#"{"__name__":"x{a=\"1\"} or vector(1)","namespace":"a","pod":"evil"}"#,
            r#"{"__name__":"sum(up) by (pod)","namespace":"a","pod":"evil"}"#,
            r#"{"__name__":"caf\u00e9","namespace":"a"}"#,
            r#"{"__name__":"queue_ready","queue":"q","bad label":"v","pod) or vector(1":"v"}"#,
            r#"{"namespace":"no-name"}"#,
        ]));
        let names: Vec<(&str, Vec<&str>)> = set
            .names()
            .map(|(n, l)| (n, l.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            names,
            [
                ("http_requests_total", vec!["container", "namespace", "pod"]),
                ("queue_ready", vec!["queue"]),
            ]
        );
        assert_eq!(set.series, 7);
        assert_eq!(set.invalid_names, 4);
        assert_eq!(set.invalid_label_names, 2);
        assert_eq!(
            set.invalid_label_examples,
            ["bad label", "pod) or vector(1"]
        );
        assert_eq!(
            set.invalid_examples,
            [r#"x{a="1"} or vector(1)"#, "sum(up) by (pod)", "café", ""]
        );
    }

    #[test]
    fn envelope_fields_in_any_order_with_extras_and_null_data() {
        let set = read(
            r#"{"warnings":["w"],"data":[{"__name__":"a","pod":"p"}],"infos":{},"status":"success"}"#,
        );
        assert_eq!(set.name_count(), 1);
        let Decoded::Answer(Ok(env)) = decode_series(
            br#"{"status":"error","data":null,"errorType":"bad_data","error":"e"}"#.as_slice(),
            usize::MAX,
        ) else {
            panic!("an error envelope reads");
        };
        assert_eq!(
            (env.status.as_str(), env.data, env.error_type.as_deref()),
            ("error", None, Some("bad_data"))
        );
        assert!(matches!(
            decode_series(br#"{"data":[]}"#.as_slice(), usize::MAX),
            Decoded::Answer(Err(_))
        ));
    }

    /// The limit is on what is kept, not on the answer: many series of a few names pass a
    /// small limit; many distinct names stop at it, and stop reading there.
    #[test]
    fn the_limit_bounds_distinct_names_not_series() {
        let same_name: Vec<String> = (0..10_000)
            .map(|i| format!(r#"{{"__name__":"up","pod":"web-{i}"}}"#))
            .collect();
        let refs: Vec<&str> = same_name.iter().map(String::as_str).collect();
        let body = series_body(&refs);
        assert!(body.len() > 200_000);
        assert!(matches!(
            decode_series(body.as_bytes(), 4096),
            Decoded::Answer(Ok(_))
        ));
        let distinct: Vec<String> = (0..10_000)
            .map(|i| format!(r#"{{"__name__":"metric_{i}","pod":"web"}}"#))
            .collect();
        let refs: Vec<&str> = distinct.iter().map(String::as_str).collect();
        let body = series_body(&refs);
        assert!(matches!(
            decode_series(body.as_bytes(), 4096),
            Decoded::KeptTooMuch
        ));
        // Garbage is still garbage, whatever the limit.
        assert!(matches!(
            decode_series(b"<html>".as_slice(), 4096),
            Decoded::Answer(Err(_))
        ));
    }

    /// What discovery keeps between runs depends on the distinct names and label names, not
    /// on the number of series: 200,000 series of two names keep what 2 series keep.
    #[test]
    fn series_memory_follows_distinct_names_not_series() {
        let body = |pods: usize| {
            let mut b = String::from(r#"{"status":"success","data":["#);
            for i in 0..pods {
                for name in ["http_requests_total", "http_request_duration_seconds_count"] {
                    if b.ends_with('}') {
                        b.push(',');
                    }
                    b.push_str(&format!(
                        r#"{{"__name__":"{name}","namespace":"ns-{}","pod":"web-{i}","instance":"10.0.{}.{}:8080","job":"web"}}"#,
                        i % 50,
                        i / 256 % 256,
                        i % 256
                    ));
                }
            }
            b.push_str("]}");
            b
        };
        let small_body = body(1);
        let big_body = body(100_000);
        let (small, big) = (read(&small_body), read(&big_body));
        assert_eq!(big.series, 200_000);
        assert_eq!(big.name_count(), 2);
        assert_eq!(small.kept_bytes(), big.kept_bytes());
        // The full label sets, as kept before (a BTreeMap of strings per series), would be of
        // the order of the body; what is kept now is a few hundred bytes.
        assert!(big_body.len() > 20_000_000, "{}", big_body.len());
        assert!(big.kept_bytes() < 2048, "{}", big.kept_bytes());
        eprintln!(
            "series answer of {} bytes ({} series) keeps {} bytes",
            big_body.len(),
            big.series,
            big.kept_bytes()
        );
    }
}
