//! The `Accept` header, parsed once, and content negotiation as kube-apiserver does it
//! (`negotiation.NegotiateMediaTypeOptions` over goautoneg's clause order): which encoding an
//! answer gets, whether aggregated discovery was asked for, and the hook for conversions
//! (`as=Table`) an endpoint may offer.
//!
//! Served types, in kube-apiserver's order minus YAML (not served here): `application/json`,
//! `application/vnd.kubernetes.protobuf`. An absent or empty header gets the first. Clauses
//! are ordered by q, concrete types before wildcards whatever their q (goautoneg's `Less`,
//! through Go's insertion sort, so equal clauses keep their order); each clause in turn tries
//! the served types in order (`type/subtype`, `type/*`, `*/*`). A type whose most specific
//! matching clause has `q=0` is refused outright. Nothing acceptable is a 406.

use super::status::ApiError;
use crate::response::protobuf;

/// How an object is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// What the metrics APIs serve, in the server's order of preference.
    pub const SERVED: [Encoding; 2] = [Encoding::Json, Encoding::Protobuf];

    /// The response Content-Type, exactly as kube-apiserver writes it.
    pub fn media_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => protobuf::MEDIA_TYPE,
        }
    }

    /// The `encoding` label of the bridge's own metrics.
    pub fn label(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
        }
    }

    fn type_and_subtype(self) -> (&'static str, &'static str) {
        match self {
            Encoding::Json => ("application", "json"),
            Encoding::Protobuf => ("application", "vnd.kubernetes.protobuf"),
        }
    }
}

/// A conversion a clause asks for with `as`, `g` and `v`, such as kubectl's
/// `application/json;as=Table;v=v1;g=meta.k8s.io`. Missing parts are empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion<'a> {
    pub kind: &'a str,
    pub group: &'a str,
    pub version: &'a str,
}

/// Which conversions an endpoint performs, in which encoding: kube-apiserver's
/// `EndpointRestrictions.AllowsMediaTypeTransform`. A clause asking for a conversion the
/// endpoint refuses is skipped, so kubectl's Table triple falls through to its plain
/// `application/json`.
///
/// This is the hook for the Resource Metrics API's Table (JSON only, as kube-apiserver offers
/// it): its routes pass a function that allows `as=Table;g=meta.k8s.io;v=v1` with
/// [`Encoding::Json`] and then answer per [`Negotiated::conversion`].
pub type Conversions = fn(Encoding, &Conversion<'_>) -> bool;

/// The custom and external metrics APIs convert nothing (custom-metrics-apiserver passes
/// `DefaultEndpointRestrictions`).
pub fn no_conversions(_: Encoding, _: &Conversion<'_>) -> bool {
    false
}

/// Documents that exist only in JSON (discovery, OpenAPI, `/version`) are acceptable to any
/// clause that names something served, conversion or not: they are answered in JSON either
/// way (aggregated discovery has its own check, [`Accept::aggregated_discovery`]).
pub fn any_conversion(_: Encoding, _: &Conversion<'_>) -> bool {
    true
}

/// What negotiation picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated<'a> {
    pub encoding: Encoding,
    /// The conversion the chosen clause asked for (and the endpoint allowed); `None` for the
    /// object itself.
    pub conversion: Option<Conversion<'a>>,
}

impl Negotiated<'_> {
    const DEFAULT: Negotiated<'static> = Negotiated {
        encoding: Encoding::Json,
        conversion: None,
    };
}

/// One clause: `application/json;g=apidiscovery.k8s.io;v=v2;q=0.9`.
#[derive(Debug, Clone, PartialEq)]
struct Clause<'a> {
    type_: &'a str,
    subtype: &'a str,
    q: f32,
    /// Every parameter but `q`.
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> Clause<'a> {
    fn param(&self, key: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// How specifically this clause names `encoding`: 2 exact, 1 `type/*`, 0 `*/*`.
    /// Media types compare case-insensitively (RFC 9110; Go compares them as sent).
    fn specificity(&self, encoding: Encoding) -> Option<u8> {
        let (t, s) = encoding.type_and_subtype();
        let type_matches = self.type_.eq_ignore_ascii_case(t);
        if type_matches && self.subtype.eq_ignore_ascii_case(s) {
            Some(2)
        } else if type_matches && self.subtype == "*" {
            Some(1)
        } else if self.type_ == "*" && self.subtype == "*" {
            Some(0)
        } else {
            None
        }
    }

    /// goautoneg's `Less`: a higher q first, then a concrete type or subtype before a wildcard.
    fn less(&self, other: &Clause<'_>) -> bool {
        self.q > other.q
            || (self.type_ != "*" && other.type_ == "*")
            || (self.subtype != "*" && other.subtype == "*")
    }
}

/// What the client accepts. `None`: no header (or an empty one), which accepts JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Accept<'a> {
    clauses: Option<Vec<Clause<'a>>>,
}

impl<'a> Accept<'a> {
    pub fn parse(header: Option<&'a str>) -> Self {
        let header = header.filter(|h| !h.trim().is_empty());
        let clauses = header.map(|h| {
            let mut clauses: Vec<Clause<'a>> = h.split(',').filter_map(parse_clause).collect();
            // Go's sort.Sort is an insertion sort up to 12 elements, which keeps equal clauses
            // in order; the same insertion sort here, whatever the length.
            for i in 1..clauses.len() {
                let mut j = i;
                while j > 0 && clauses[j].less(&clauses[j - 1]) {
                    clauses.swap(j, j - 1);
                    j -= 1;
                }
            }
            clauses
        });
        Accept { clauses }
    }

    /// The encoding (and conversion) to answer in, or the 406 to send. `conversions` says
    /// which `as`/`g`/`v` clauses the endpoint honours ([`no_conversions`] for the metrics
    /// lists today).
    pub fn negotiate(&self, conversions: Conversions) -> Result<Negotiated<'a>, ApiError> {
        let Some(clauses) = &self.clauses else {
            return Ok(Negotiated::DEFAULT);
        };
        // A type is refused when its most specific matching clause says q=0 (RFC 9110:
        // `application/json;q=0, */*` wants anything but JSON).
        let refused = Encoding::SERVED.map(|encoding| {
            let mut best: Option<(u8, bool)> = None;
            for c in clauses {
                if let Some(s) = c.specificity(encoding) {
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, c.q <= 0.0));
                    }
                }
            }
            best.is_some_and(|(_, refused)| refused)
        });
        for clause in clauses {
            if clause.q <= 0.0 {
                continue;
            }
            for (encoding, refused) in Encoding::SERVED.into_iter().zip(refused) {
                if refused || clause.specificity(encoding).is_none() {
                    continue;
                }
                if let Some(n) = accept_options(clause, encoding, conversions) {
                    return Ok(n);
                }
            }
        }
        Err(ApiError::not_acceptable())
    }

    /// Whether the client asked for aggregated discovery v2 (kube-aggregator does on `/apis`).
    pub fn aggregated_discovery(&self) -> bool {
        self.clauses.iter().flatten().any(|c| {
            c.q > 0.0
                && c.param("g") == Some("apidiscovery.k8s.io")
                && c.param("v") == Some("v2")
                && c.param("as") == Some("APIGroupDiscoveryList")
        })
    }
}

/// `type/subtype;k=v;q=0.5`, split as goautoneg does; a range without `/` (other than `*`)
/// is dropped, a `q` that is not a number counts as 0.
fn parse_clause(part: &str) -> Option<Clause<'_>> {
    let mut pieces = part.split(';');
    let range = pieces.next()?.trim();
    let (type_, subtype) = match range.split_once('/') {
        Some((t, s)) if !s.contains('/') => (t.trim(), s.trim()),
        None if range == "*" => ("*", "*"),
        _ => return None,
    };
    let mut clause = Clause {
        type_,
        subtype,
        q: 1.0,
        params: Vec::new(),
    };
    for param in pieces {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        if k == "q" {
            clause.q = v.parse().unwrap_or(0.0);
        } else {
            clause.params.push((k, v));
        }
    }
    Some(clause)
}

/// kube-apiserver's `acceptMediaTypeOptions`: `as`/`g`/`v` ask for a conversion the endpoint
/// must allow; a server version (`sv`) is never served; other parameters (`pretty`,
/// `stream`, `export`, `profile`, unknown ones) do not refuse the clause.
fn accept_options<'a>(
    clause: &Clause<'a>,
    encoding: Encoding,
    conversions: Conversions,
) -> Option<Negotiated<'a>> {
    if clause.param("sv").is_some_and(|v| !v.is_empty()) {
        return None;
    }
    let (kind, group, version) = (clause.param("as"), clause.param("g"), clause.param("v"));
    let conversion = (kind.is_some() || group.is_some() || version.is_some()).then(|| Conversion {
        kind: kind.unwrap_or(""),
        group: group.unwrap_or(""),
        version: version.unwrap_or(""),
    });
    if let Some(c) = &conversion {
        if !conversions(encoding, c) {
            return None;
        }
    }
    Some(Negotiated {
        encoding,
        conversion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(header: Option<&str>) -> Option<Encoding> {
        Accept::parse(header)
            .negotiate(no_conversions)
            .ok()
            .map(|n| n.encoding)
    }

    #[test]
    fn negotiation_matrix() {
        use Encoding::{Json, Protobuf};
        for (header, want) in [
            (None, Some(Json)),
            (Some(""), Some(Json)),
            (Some("*/*"), Some(Json)),
            (Some("application/*"), Some(Json)),
            (Some("application/json"), Some(Json)),
            (Some("application/json, */*"), Some(Json)),
            // The HPA and kubectl top.
            (
                Some("application/vnd.kubernetes.protobuf, */*"),
                Some(Protobuf),
            ),
            // The generated metrics clientset's default.
            (
                Some("application/vnd.kubernetes.protobuf,application/json"),
                Some(Protobuf),
            ),
            (Some("application/vnd.kubernetes.protobuf"), Some(Protobuf)),
            (Some("APPLICATION/VND.KUBERNETES.PROTOBUF"), Some(Protobuf)),
            // q orders concrete types.
            (
                Some("application/vnd.kubernetes.protobuf;q=0.5, application/json"),
                Some(Json),
            ),
            (
                Some("application/json;q=0.5, application/vnd.kubernetes.protobuf;q=0.9"),
                Some(Protobuf),
            ),
            // A concrete type beats a wildcard whatever the q (goautoneg's order).
            (
                Some("*/*;q=1, application/vnd.kubernetes.protobuf;q=0.1"),
                Some(Protobuf),
            ),
            // q=0 refuses a type even where a wildcard would take it.
            (Some("application/json;q=0, */*"), Some(Protobuf)),
            (Some("application/json;q=0"), None),
            (Some("application/json;q=nonsense"), None),
            (Some("application/yaml"), None),
            (Some("text/html, image/*"), None),
            (Some("application/cbor"), None),
            (Some("application/json;sv=v1"), None),
            // Parameters that ask for nothing keep the clause.
            (Some("application/json;pretty=1;stream=watch"), Some(Json)),
        ] {
            assert_eq!(encoding(header), want, "{header:?}");
        }
    }

    #[test]
    fn conversions_are_skipped_unless_the_endpoint_offers_them() {
        // kubectl get: Table clauses, then plain JSON.
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let plain = Accept::parse(Some(kubectl))
            .negotiate(no_conversions)
            .expect("plain JSON");
        assert_eq!(plain.encoding, Encoding::Json);
        assert_eq!(plain.conversion, None);
        assert!(
            Accept::parse(Some("application/json;as=Table;v=v1;g=meta.k8s.io"))
                .negotiate(no_conversions)
                .is_err()
        );

        // The hook: an endpoint that offers Table in JSON only.
        fn table(encoding: Encoding, c: &Conversion<'_>) -> bool {
            encoding == Encoding::Json
                && c.kind == "Table"
                && c.group == "meta.k8s.io"
                && c.version == "v1"
        }
        let t = Accept::parse(Some(kubectl))
            .negotiate(table)
            .expect("table");
        assert_eq!(
            t.conversion,
            Some(Conversion {
                kind: "Table",
                group: "meta.k8s.io",
                version: "v1"
            })
        );
        let proto_table = "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/vnd.kubernetes.protobuf";
        let p = Accept::parse(Some(proto_table))
            .negotiate(table)
            .expect("protobuf");
        assert_eq!((p.encoding, p.conversion), (Encoding::Protobuf, None));
    }

    #[test]
    fn not_acceptable_names_what_is_served() {
        let e = Accept::parse(Some("application/yaml"))
            .negotiate(no_conversions)
            .expect_err("406");
        assert_eq!(e.code, 406);
        assert!(
            e.message
                .contains("application/json, application/vnd.kubernetes.protobuf"),
            "{}",
            e.message
        );
        assert!(e.message.contains("YAML is not served"), "{}", e.message);
    }

    proptest::proptest! {
        /// Any header text negotiates to an answer or a 406, never a panic.
        #[test]
        fn any_header_negotiates(header in ".{0,80}", clauses in "[a-z*/;=q0-9., ]{0,60}") {
            for h in [header.as_str(), clauses.as_str()] {
                let accept = Accept::parse(Some(h));
                let _ = accept.negotiate(no_conversions);
                let _ = accept.negotiate(any_conversion);
                let _ = accept.aggregated_discovery();
            }
        }
    }

    #[test]
    fn aggregated_discovery() {
        let agg = |h: Option<&str>| Accept::parse(h).aggregated_discovery();
        assert!(agg(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(agg(Some(
            "application/json; g=apidiscovery.k8s.io; v=v2; as=APIGroupDiscoveryList"
        )));
        assert!(!agg(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        )));
        assert!(!agg(Some("application/json")));
        assert!(!agg(None));
        // The aggregated clause is a conversion: a JSON-only document accepts it.
        assert!(Accept::parse(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        ))
        .negotiate(any_conversion)
        .is_ok());
    }
}
