//! The `Accept` header, parsed once: its media ranges and their parameters. Every content
//! negotiation the API does (JSON or not, aggregated discovery or not) reads this.

/// One media range: `application/json;g=apidiscovery.k8s.io;v=v2`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaRange<'a> {
    media: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

/// What the client accepts. No header at all accepts anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept<'a> {
    ranges: Option<Vec<MediaRange<'a>>>,
}

impl<'a> Accept<'a> {
    pub fn parse(header: Option<&'a str>) -> Self {
        let ranges = header.map(|h| {
            h.split(',')
                .map(|part| {
                    let mut pieces = part.split(';').map(str::trim);
                    let media = pieces.next().unwrap_or("");
                    let params = pieces
                        .filter_map(|p| p.split_once('='))
                        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
                        .collect();
                    MediaRange { media, params }
                })
                .collect()
        });
        Accept { ranges }
    }

    /// JSON is served for `*/*`, `application/*`, `application/json` (with any parameters) or
    /// no Accept at all; the HPA sends `application/vnd.kubernetes.protobuf, */*`.
    pub fn json(&self) -> bool {
        match &self.ranges {
            None => true,
            Some(ranges) => ranges.iter().any(|r| {
                r.media.is_empty()
                    || r.media == "*/*"
                    || r.media == "application/*"
                    || r.media.eq_ignore_ascii_case("application/json")
            }),
        }
    }

    /// Whether the client asked for aggregated discovery v2 (kube-aggregator does on `/apis`).
    pub fn aggregated_discovery(&self) -> bool {
        self.ranges.iter().flatten().any(|r| {
            let has = |k: &str, v: &str| r.params.iter().any(|(pk, pv)| *pk == k && *pv == v);
            has("g", "apidiscovery.k8s.io") && has("v", "v2") && has("as", "APIGroupDiscoveryList")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_negotiation() {
        let json = |h: Option<&str>| Accept::parse(h).json();
        assert!(json(None));
        assert!(json(Some("application/vnd.kubernetes.protobuf, */*")));
        assert!(json(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(!json(Some("application/yaml")));
        assert!(!json(Some("application/vnd.kubernetes.protobuf")));
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
    }
}
