//! What `compare` compares, without the network: discovery documents (`APIResourceList`)
//! and metric answers (`MetricValueList`, `ExternalMetricValueList`) of two servers, and the
//! differences between them.
//!
//! Equal means: the same metric names in each group and version (and the same scope for
//! each), the same objects in each answer, and values within a tolerance. Some differences
//! are the two servers' documented behaviour and are not reported (docs/migration.md,
//! "Behaviour differences"): a 404 and an empty list are the same "no data" (the bridge
//! answers a `*` request without data with 404, prometheus-adapter with an empty list), the
//! bridge's placeholder discovery entry is not a metric, and values are compared as numbers,
//! not strings (`2499m` and `2499977563n` are 0.0009% apart).

use std::collections::BTreeMap;
use std::fmt;

/// The two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Old,
    New,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Old => "old",
            Side::New => "new",
        })
    }
}

/// Metric names of one discovery document, each with whether it is namespaced.
pub type Listing = BTreeMap<String, bool>;

/// The metric names of an `APIResourceList`; the bridge's placeholder entry (listed until
/// anything is discovered) is left out.
pub fn listing(doc: &serde_json::Value) -> Result<Listing, String> {
    let Some(resources) = doc.get("resources").and_then(|r| r.as_array()) else {
        return Err("not an APIResourceList (no resources)".into());
    };
    let mut out = Listing::new();
    for r in resources {
        let Some(name) = r.get("name").and_then(|n| n.as_str()) else {
            return Err("a resource without a name".into());
        };
        let metric = name.rsplit('/').next().unwrap_or(name);
        if metric == crate::response::discovery::PLACEHOLDER_METRIC {
            continue;
        }
        let namespaced = r
            .get("namespaced")
            .and_then(|n| n.as_bool())
            .unwrap_or(false);
        out.insert(name.to_string(), namespaced);
    }
    Ok(out)
}

/// One object of an answer: its value as written and as a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub text: String,
    pub value: f64,
}

/// What one server answered to one value request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The objects, by [`object_key`] (a 404 is no objects).
    Items(BTreeMap<String, Item>),
    /// Anything else: the status and the Status message (or the start of the body).
    Failed { status: u16, message: String },
}

impl Answer {
    /// An HTTP answer (`status`, `body`) to a custom (`external`: external) metric request.
    pub fn from_response(status: u16, body: &str, external: bool) -> Answer {
        match status {
            200 => match serde_json::from_str::<serde_json::Value>(body)
                .map_err(|e| e.to_string())
                .and_then(|doc| items(&doc, external))
            {
                Ok(items) => Answer::Items(items),
                Err(e) => Answer::Failed {
                    status,
                    message: format!("unreadable answer: {e}"),
                },
            },
            404 => Answer::Items(BTreeMap::new()),
            _ => {
                let message = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                    .unwrap_or_else(|| body.chars().take(200).collect());
                Answer::Failed { status, message }
            }
        }
    }
}

/// The items of a `MetricValueList` (v1beta1 or v1beta2) or `ExternalMetricValueList`.
pub fn items(doc: &serde_json::Value, external: bool) -> Result<BTreeMap<String, Item>, String> {
    let Some(list) = doc.get("items").and_then(|i| i.as_array()) else {
        return Err("no items".into());
    };
    let mut out = BTreeMap::new();
    for item in list {
        let text = item
            .get("value")
            .and_then(|v| v.as_str())
            .ok_or("an item without a value")?;
        let value =
            parse_quantity(text).ok_or_else(|| format!("value {text:?} is not a quantity"))?;
        let key = object_key(item, external)?;
        // Two items for one object (several series for one pod): keep both, numbered.
        let mut unique = key.clone();
        let mut n = 1;
        while out.contains_key(&unique) {
            n += 1;
            unique = format!("{key} #{n}");
        }
        out.insert(
            unique,
            Item {
                text: text.to_string(),
                value,
            },
        );
    }
    Ok(out)
}

/// What an item is about: `Pod shop/web-0` (the described object) for custom metrics, the
/// metric's labels `{queue=orders}` for external ones.
pub fn object_key(item: &serde_json::Value, external: bool) -> Result<String, String> {
    if external {
        let labels: BTreeMap<&str, &str> = item
            .get("metricLabels")
            .and_then(|l| l.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Ok(format!("{{{}}}", pairs.join(",")));
    }
    let o = item
        .get("describedObject")
        .ok_or("an item without describedObject")?;
    let field = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let name = field("name");
    if name.is_empty() {
        return Err("describedObject without a name".into());
    }
    Ok(match field("namespace") {
        "" => format!("{} {name}", field("kind")),
        ns => format!("{} {ns}/{name}", field("kind")),
    })
}

/// A Kubernetes Quantity as a number: decimal (`1.5`, `-2`), exponent (`1e3`, `2E-3`),
/// DecimalSI (`n` to `E`) and BinarySI (`Ki` to `Ei`) suffixes.
pub fn parse_quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let text = text.trim();
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(s, f)| text.strip_suffix(s).map(|n| (n, *f)))
        .or_else(|| text.strip_suffix('E').map(|n| (n, 1e18)))
        .unwrap_or((text, 1.0));
    // Only digits, one dot, a sign and an exponent: f64's parser also takes "inf" and "NaN".
    let plain = number
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'));
    if number.is_empty() || !plain {
        return None;
    }
    let v = number.parse::<f64>().ok()? * scale;
    v.is_finite().then_some(v)
}

/// How far apart two values may be and still count as equal: either bound suffices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// A fraction of the larger magnitude (0.01: 1%).
    pub relative: f64,
    /// In the metric's unit (0.001: prometheus-adapter's truncation to milli-units).
    pub absolute: f64,
}

impl Tolerance {
    pub fn same(&self, a: f64, b: f64) -> bool {
        let d = (a - b).abs();
        d <= self.absolute || d <= self.relative * a.abs().max(b.abs())
    }
}

/// One difference, in the words `compare` prints.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// A group version only one server serves.
    Served { api: String, only: Side },
    /// A metric (`pods/http_requests_per_second`) only one server lists.
    Metric {
        api: String,
        name: String,
        only: Side,
    },
    /// Both list it, with different scopes.
    Scope {
        api: String,
        name: String,
        old_namespaced: bool,
    },
    /// An object only one server answers for.
    Object {
        request: String,
        object: String,
        only: Side,
        value: String,
    },
    /// The same object with values beyond the tolerance.
    Value {
        request: String,
        object: String,
        old: Item,
        new: Item,
    },
    /// A request one or both servers failed.
    Failed {
        request: String,
        old: Option<(u16, String)>,
        new: Option<(u16, String)>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Served { api, only } => {
                write!(f, "{api}: served only by {only}")
            }
            Difference::Metric { api, name, only } => {
                write!(f, "{api}: metric {name} only on {only}")
            }
            Difference::Scope {
                api,
                name,
                old_namespaced,
            } => write!(
                f,
                "{api}: metric {name} is namespaced on {} only",
                if *old_namespaced { "old" } else { "new" }
            ),
            Difference::Object {
                request,
                object,
                only,
                value,
            } => write!(f, "{request}: {object} only on {only} ({value})"),
            Difference::Value {
                request,
                object,
                old,
                new,
            } => {
                let base = old.value.abs().max(new.value.abs());
                let pct = if base > 0.0 {
                    format!(
                        ", {:.3}% apart",
                        (old.value - new.value).abs() / base * 100.0
                    )
                } else {
                    String::new()
                };
                write!(
                    f,
                    "{request}: {object}: old {} ({}), new {} ({}){pct}",
                    old.text,
                    number(old.value),
                    new.text,
                    number(new.value)
                )
            }
            Difference::Failed { request, old, new } => {
                let side = |s: &Option<(u16, String)>| match s {
                    Some((status, message)) => format!("{status} {message}"),
                    None => "ok".to_string(),
                };
                write!(f, "{request}: failed: old {}; new {}", side(old), side(new))
            }
        }
    }
}

/// A value for people: at most nine decimals, no float noise (`2.000034429`, not
/// `2.0000344290000003`).
fn number(v: f64) -> String {
    let text = format!("{v:.9}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// The discovery documents of one group version (`None`: not served, a 404).
pub fn compare_listings(
    api: &str,
    old: Option<&Listing>,
    new: Option<&Listing>,
) -> Vec<Difference> {
    let (old, new) = match (old, new) {
        (None, None) => return Vec::new(),
        (Some(_), None) => {
            return vec![Difference::Served {
                api: api.into(),
                only: Side::Old,
            }]
        }
        (None, Some(_)) => {
            return vec![Difference::Served {
                api: api.into(),
                only: Side::New,
            }]
        }
        (Some(o), Some(n)) => (o, n),
    };
    let mut out = Vec::new();
    for (name, namespaced) in old {
        match new.get(name) {
            None => out.push(Difference::Metric {
                api: api.into(),
                name: name.clone(),
                only: Side::Old,
            }),
            Some(n) if n != namespaced => out.push(Difference::Scope {
                api: api.into(),
                name: name.clone(),
                old_namespaced: *namespaced,
            }),
            Some(_) => {}
        }
    }
    for name in new.keys().filter(|n| !old.contains_key(*n)) {
        out.push(Difference::Metric {
            api: api.into(),
            name: name.clone(),
            only: Side::New,
        });
    }
    out
}

/// The two answers to one request.
pub fn compare_answers(
    request: &str,
    old: &Answer,
    new: &Answer,
    tolerance: Tolerance,
) -> Vec<Difference> {
    let (old, new) = match (old, new) {
        (Answer::Items(o), Answer::Items(n)) => (o, n),
        _ => {
            let failure = |a: &Answer| match a {
                Answer::Failed { status, message } => Some((*status, message.clone())),
                Answer::Items(_) => None,
            };
            return vec![Difference::Failed {
                request: request.into(),
                old: failure(old),
                new: failure(new),
            }];
        }
    };
    let mut out = Vec::new();
    for (object, o) in old {
        match new.get(object) {
            None => out.push(Difference::Object {
                request: request.into(),
                object: object.clone(),
                only: Side::Old,
                value: o.text.clone(),
            }),
            Some(n) if !tolerance.same(o.value, n.value) => out.push(Difference::Value {
                request: request.into(),
                object: object.clone(),
                old: o.clone(),
                new: n.clone(),
            }),
            Some(_) => {}
        }
    }
    for (object, n) in new.iter().filter(|(k, _)| !old.contains_key(*k)) {
        out.push(Difference::Object {
            request: request.into(),
            object: object.clone(),
            only: Side::New,
            value: n.text.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOL: Tolerance = Tolerance {
        relative: 0.01,
        absolute: 0.001,
    };

    fn custom(items: &[(&str, &str, &str)]) -> serde_json::Value {
        json!({
            "kind": "MetricValueList",
            "apiVersion": "custom.metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": items.iter().map(|(ns, name, value)| json!({
                "describedObject": {"kind": "Pod", "namespace": ns, "name": name, "apiVersion": "/v1"},
                "metricName": "m", "timestamp": "2026-01-01T00:00:00Z", "value": value,
            })).collect::<Vec<_>>(),
        })
    }

    fn answer(doc: &serde_json::Value) -> Answer {
        Answer::from_response(200, &doc.to_string(), false)
    }

    #[test]
    fn quantities() {
        for (text, want) in [
            ("2499m", 2.499),
            ("2499977563n", 2.499977563),
            ("1500m", 1.5),
            ("1k", 1000.0),
            ("12345678", 12345678.0),
            ("1.5", 1.5),
            ("-3", -3.0),
            ("128Mi", 134217728.0),
            ("1e3", 1000.0),
            ("2E", 2e18),
            ("250u", 0.00025),
        ] {
            let got = parse_quantity(text).unwrap_or_else(|| panic!("{text}"));
            assert!((got - want).abs() <= want.abs() * 1e-12, "{text}: {got}");
        }
        for bad in ["", "m", "abc", "NaN", "inf", "1x", "1.2.3k"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_are_printed_without_float_noise() {
        assert_eq!(number(2.0000344290000003), "2.000034429");
        assert_eq!(number(4.0), "4");
        assert_eq!(number(0.6910000000000001), "0.691");
        assert_eq!(number(-0.0000000001), "0");
        assert_eq!(number(1e18), "1000000000000000000");
    }

    #[test]
    fn tolerance_is_relative_or_absolute() {
        assert!(TOL.same(2.499, 2.499977563), "milli truncation");
        assert!(TOL.same(100.0, 100.9));
        assert!(!TOL.same(100.0, 102.0));
        assert!(TOL.same(0.0, 0.0009));
        assert!(!TOL.same(0.0, 0.002));
        let strict = Tolerance {
            relative: 0.0,
            absolute: 0.0,
        };
        assert!(strict.same(1.0, 1.0) && !strict.same(1.0, 1.000001));
    }

    #[test]
    fn same_answers_in_other_units_are_equal() {
        let old = answer(&custom(&[
            ("shop", "web-0", "2499m"),
            ("shop", "web-1", "1k"),
        ]));
        let new = answer(&custom(&[
            ("shop", "web-1", "1000"),
            ("shop", "web-0", "2499977563n"),
        ]));
        assert_eq!(compare_answers("r", &old, &new, TOL), vec![]);
    }

    #[test]
    fn objects_and_values_that_differ() {
        let old = answer(&custom(&[("shop", "web-0", "2"), ("shop", "gone", "1")]));
        let new = answer(&custom(&[("shop", "web-0", "4"), ("shop", "new-1", "7")]));
        let d = compare_answers("namespaces/shop/pods/*/m", &old, &new, TOL);
        let text: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "namespaces/shop/pods/*/m: Pod shop/gone only on old (1)",
                "namespaces/shop/pods/*/m: Pod shop/web-0: old 2 (2), new 4 (4), 50.000% apart",
                "namespaces/shop/pods/*/m: Pod shop/new-1 only on new (7)",
            ]
        );
    }

    #[test]
    fn a_404_is_an_empty_list_and_errors_are_reported() {
        let empty = answer(&custom(&[]));
        let not_found = Answer::from_response(404, "{\"kind\":\"Status\",\"code\":404}", false);
        assert_eq!(compare_answers("r", &empty, &not_found, TOL), vec![]);
        let failed = Answer::from_response(
            503,
            "{\"kind\":\"Status\",\"message\":\"unable to fetch metrics: the metrics backend is unavailable\"}",
            false,
        );
        let d = compare_answers("r", &empty, &failed, TOL);
        assert_eq!(
            d.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["r: failed: old ok; new 503 unable to fetch metrics: the metrics backend is unavailable"]
        );
        let garbage = Answer::from_response(200, "<html>", false);
        assert!(
            matches!(garbage, Answer::Failed { status: 200, .. }),
            "{garbage:?}"
        );
        let both = compare_answers("r", &garbage, &failed, TOL);
        assert_eq!(both.len(), 1);
    }

    #[test]
    fn external_items_are_keyed_by_their_labels() {
        let doc = |v: &str| {
            json!({"kind": "ExternalMetricValueList", "items": [
                {"metricName": "q", "metricLabels": {"queue": "orders", "vhost": "/"}, "timestamp": "t", "value": v},
                {"metricName": "q", "metricLabels": {}, "timestamp": "t", "value": "1"},
            ]})
        };
        let old = Answer::from_response(200, &doc("5").to_string(), true);
        let Answer::Items(items) = &old else {
            panic!("{old:?}")
        };
        assert_eq!(
            items.keys().collect::<Vec<_>>(),
            ["{queue=orders,vhost=/}", "{}"]
        );
        let new = Answer::from_response(200, &doc("6").to_string(), true);
        let d = compare_answers("e", &old, &new, TOL);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].to_string().contains("{queue=orders,vhost=/}: old 5"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn duplicate_objects_are_all_kept() {
        let doc = custom(&[("a", "p", "1"), ("a", "p", "2")]);
        let items = items(&doc, false).expect("items");
        assert_eq!(items.keys().collect::<Vec<_>>(), ["Pod a/p", "Pod a/p #2"]);
        let key = object_key(
            &json!({"describedObject": {"kind": "Node", "name": "n1"}}),
            false,
        );
        assert_eq!(key.as_deref(), Ok("Node n1"));
        assert!(object_key(&json!({"describedObject": {"kind": "Pod"}}), false).is_err());
    }

    #[test]
    fn listings_compare_names_and_scope_and_skip_the_placeholder() {
        let doc = |names: &[(&str, bool)]| json!({"kind": "APIResourceList", "resources": names.iter().map(|(n, ns)| json!({"name": n, "namespaced": ns})).collect::<Vec<_>>()});
        let old = listing(&doc(&[
            ("pods/a", true),
            ("namespaces/a", false),
            ("pods/only_old", true),
            ("jobs.batch/b", true),
        ]))
        .expect("listing");
        let new = listing(&doc(&[
            ("pods/a", true),
            ("namespaces/a", false),
            ("jobs.batch/b", false),
            ("pods/only_new", true),
            ("namespaces/none_discovered_yet", false),
        ]))
        .expect("listing");
        let d: Vec<String> =
            compare_listings("custom.metrics.k8s.io/v1beta1", Some(&old), Some(&new))
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(
            d,
            [
                "custom.metrics.k8s.io/v1beta1: metric jobs.batch/b is namespaced on old only",
                "custom.metrics.k8s.io/v1beta1: metric pods/only_old only on old",
                "custom.metrics.k8s.io/v1beta1: metric pods/only_new only on new",
            ]
        );
        assert_eq!(compare_listings("x", Some(&old), Some(&old)), vec![]);
        assert_eq!(compare_listings("x", None, None), vec![]);
        assert_eq!(
            compare_listings("x", None, Some(&new)),
            vec![Difference::Served {
                api: "x".into(),
                only: Side::New
            }]
        );
        assert!(listing(&json!({"kind": "Status"})).is_err());
    }
}
