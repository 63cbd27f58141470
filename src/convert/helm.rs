//! `convert --helm-values`: the prometheus-community `prometheus-adapter` Helm chart's values
//! as this project's chart values (`deploy/chart/kube-metrics-bridge`), so a release can move
//! over without hand editing.
//!
//! The input is merged onto that chart's own defaults (`adapter_chart_values.yaml`, chart
//! 5.3.0, prometheus-adapter v0.12.0) as Helm merges a values file, so a full copy of its
//! `values.yaml` and a short file of overrides convert alike. Then:
//!
//! - the rules (`rules.default`, `.custom`, `.external`, `.resource`) become the `rules` value
//!   through [`super::convert_helm_rules`]: TOML tables only, since this chart writes
//!   `[prometheus]` and `[cache]` from its own values; the APIServices follow them as the
//!   adapter chart's do, and resources the rules name beyond this chart's RBAC are granted in
//!   `rbac.extraRules`;
//! - `prometheus.{url,port,path}` become one `prometheus.url`, `metricsRelistInterval`
//!   `cache.discoveryInterval`, `replicas` `replicaCount`, and so on (the table in
//!   docs/migration.md);
//! - `extraArguments` are read as prometheus-adapter's flag parser reads them (the chart puts
//!   them after its own flags, so they win): each flag is mapped to a value, to a `serve` flag
//!   in `extraArgs` or a `KMB_CONFIG_*` variable in `extraEnv`, or noted as having no
//!   equivalent, with why;
//! - pod settings (resources, affinity, security contexts, ...) are carried over only where
//!   they differ from the adapter chart's defaults: left at those, this chart's defaults apply
//!   (two replicas with a PodDisruptionBudget, `system-cluster-critical`, a locked-down
//!   securityContext, probes on the metrics port).
//!
//! Every value not carried over, and every change of meaning, is a note: a YAML comment in
//! the output (above the value, or in the closing block for what was left out) and a line on
//! stderr, as `convert` reports notes on rules.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use yaml_serde::{Mapping, Value};

use super::{convert, convert_helm_rules, err, Conversion, ConvertError, PLACEHOLDER_URL};
use crate::kube::resources::GroupResource;

/// prometheus-adapter chart 5.3.0's `values.yaml`, comments left out.
const ADAPTER_DEFAULTS: &str = include_str!("adapter_chart_values.yaml");
/// This project's chart's defaults: the order of the output's keys, and what a replaced
/// value (resources) must clear.
const OUR_DEFAULTS: &str = include_str!("../../deploy/chart/kube-metrics-bridge/values.yaml");

/// Where the pod's own ServiceAccount credentials are mounted (prometheus-adapter's
/// `--prometheus-auth-incluster` uses them).
const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const SA_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// What `convert --helm-values` produced.
#[derive(Debug, Clone)]
pub struct ValuesConversion {
    /// The values file: YAML with the notes as comments.
    pub yaml: String,
    /// The same values (what `yaml` parses to).
    pub values: Mapping,
    /// Everything the user should read: changes of meaning and what was not carried over
    /// (all of it is also in `yaml` as comments).
    pub notes: Vec<String>,
    /// The rules' conversion (its `rules_toml` is the `rules` value).
    pub rules: Conversion,
}

/// Where the rules come from when not from the values' `rules`: a prometheus-adapter config
/// (file or ConfigMap), e.g. the ConfigMap `rules.existing` names.
pub struct RulesInput<'a> {
    pub text: &'a str,
    pub source: &'a str,
}

/// Converts prometheus-adapter chart values (`text`, named `source` in the output);
/// `prometheus_url` wins over whatever the values say.
pub fn convert_values(
    text: &str,
    source: &str,
    rules_input: Option<RulesInput<'_>>,
    prometheus_url: Option<&str>,
) -> Result<ValuesConversion, ConvertError> {
    let user: Value =
        yaml_serde::from_str(text).map_err(|e| ConvertError(format!("not valid YAML: {e}")))?;
    let user = match user {
        Value::Null => Value::Mapping(Mapping::new()),
        v @ Value::Mapping(_) => v,
        other => {
            return err(format!(
                "expected the chart's values (a mapping), found {}",
                super::kind(&other)
            ))
        }
    };
    let defaults: Value = yaml_serde::from_str(ADAPTER_DEFAULTS).expect("built-in YAML");
    let effective = helm_merge(&defaults, &user);
    let mut c = Converter {
        eff: &effective,
        def: &defaults,
        out: Out::default(),
        env: Vec::new(),
        extra_args: Vec::new(),
    };

    c.unknown_keys(&user);
    let flags = c.read_flags()?;
    let rules = c.rules(&user, rules_input, &flags)?;
    c.out.set(
        &["rules"],
        Value::String(rules.rules_toml.trim_start_matches('\n').to_string()),
    );
    c.prometheus(&flags, prometheus_url);
    c.cache(&flags);
    c.deployment(&flags);
    c.pod();
    c.service_and_account();
    c.certificates();
    c.api_services(&rules);
    c.rbac(&rules);
    c.leftovers();
    c.flush_env_and_args();

    let Converter { mut out, .. } = c;
    // The rules' own notes are comments in the TOML, above each rule, except those about
    // the whole input and the RBAC this conversion did not add: those go above `rules`,
    // one for all the rules a note is the same for ("rules[3], rules[4]: ...").
    let mut gaps: Vec<(Vec<&str>, &str)> = Vec::new();
    for gap in &rules.rbac_gaps {
        if out.resolved_rule_notes.contains(&gap.note) {
            continue;
        }
        let (place, text) = gap.note.split_once(": ").unwrap_or(("", &gap.note));
        match gaps.iter_mut().find(|(_, t)| *t == text) {
            Some((places, _)) => places.push(place),
            None => gaps.push((vec![place], text)),
        }
    }
    for (places, text) in gaps {
        out.note("rules", format!("{}: {text}", places.join(", ")));
    }
    if get(&user, &["rules", "default"]).is_none() {
        out.note(
            "rules",
            "rules.default is not set; the adapter chart's default (true) applies, so its six \
             default rules were converted",
        );
    }
    let values = out.ordered();
    // A note about a value that ended up not written goes with what was left out.
    let orphans: Vec<String> = out
        .comments
        .keys()
        .filter(|k| !values.contains_key(k.as_str()))
        .cloned()
        .collect();
    for k in orphans {
        let notes = out.comments.remove(&k).unwrap_or_default();
        out.dropped
            .extend(notes.into_iter().map(|n| format!("{k}: {n}")));
    }
    // On stderr: the rules' notes, then the comments in the file's order, then what was
    // left out.
    let by_key = values
        .keys()
        .filter_map(super::scalar_text)
        .filter_map(|k| out.comments.get(&k))
        .flatten();
    let mut notes: Vec<String> = Vec::new();
    for n in rules
        .notes
        .iter()
        .filter(|n| !rules.rbac_gaps.iter().any(|g| &&g.note == n))
        // Said above `rules`, in the words of this chart.
        .filter(|n| !n.starts_with("rules.default is not set"))
        .chain(by_key)
        .chain(out.dropped.iter())
    {
        if !notes.contains(n) {
            notes.push(n.clone());
        }
    }
    let yaml = render(source, &values, &out, &rules.rules_toml);
    // The file must read back as exactly these values (what Helm will see).
    let back: Value = yaml_serde::from_str(&yaml).map_err(|e| {
        ConvertError(format!(
            "internal error: the values written do not parse: {e}"
        ))
    })?;
    if back != Value::Mapping(values.clone()) {
        return err("internal error: the values written do not read back as converted");
    }
    Ok(ValuesConversion {
        yaml,
        values,
        notes,
        rules,
    })
}

// ---- the output --------------------------------------------------------------------------

#[derive(Default)]
struct Out {
    values: Mapping,
    /// Notes shown above a top-level key (and on stderr).
    comments: BTreeMap<String, Vec<String>>,
    /// What was not carried over, and why (the closing comment block, and stderr).
    dropped: Vec<String>,
    /// Notes of the rules' conversion this conversion took care of (RBAC added).
    resolved_rule_notes: Vec<String>,
}

impl Out {
    /// Sets `path` (nested keys) to `v`.
    fn set(&mut self, path: &[&str], v: Value) {
        let mut map = &mut self.values;
        for (i, key) in path.iter().enumerate() {
            let k = Value::String((*key).to_string());
            if i + 1 == path.len() {
                map.insert(k, v);
                return;
            }
            if !matches!(map.get(&k), Some(Value::Mapping(_))) {
                map.insert(k.clone(), Value::Mapping(Mapping::new()));
            }
            map = match map.get_mut(&k) {
                Some(Value::Mapping(m)) => m,
                _ => unreachable!("inserted above"),
            };
        }
    }

    fn note(&mut self, key: &str, text: impl Into<String>) {
        self.comments
            .entry(key.to_string())
            .or_default()
            .push(text.into());
    }

    fn drop(&mut self, text: impl Into<String>) {
        self.dropped.push(text.into());
    }

    /// The values in the order of this chart's values.yaml (others after, as set).
    fn ordered(&self) -> Mapping {
        let ours: Value = yaml_serde::from_str(OUR_DEFAULTS).unwrap_or(Value::Null);
        let mut order: Vec<Value> = match &ours {
            Value::Mapping(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        for k in self.values.keys() {
            if !order.contains(k) {
                order.push(k.clone());
            }
        }
        let mut out = Mapping::new();
        for k in order {
            if let Some(v) = self.values.get(&k) {
                out.insert(k, v.clone());
            }
        }
        out
    }
}

/// The YAML text: a header, each value with its notes above it, the rules as a literal
/// block, and the values not carried over at the end.
fn render(source: &str, values: &Mapping, out: &Out, rules_toml: &str) -> String {
    let mut text = String::new();
    for line in [
        "# kube-metrics-bridge chart values, converted by `kube-metrics-bridge convert --helm-values`".to_string(),
        format!("# from {source} (values of the prometheus-community prometheus-adapter chart)."),
        "# Only what differs from that chart's defaults is carried over; the rest keeps this chart's".into(),
        "# defaults (deploy/chart/kube-metrics-bridge/values.yaml: two replicas with a".into(),
        "# PodDisruptionBudget, priorityClassName system-cluster-critical, a locked-down".into(),
        "# securityContext, probes on the metrics port). NOTE comments say where the meaning changed;".into(),
        "# the end of the file lists what has no equivalent. Install it next to the adapter first,".into(),
        "# without APIServices, and compare (docs/migration.md). image.repository is required (no".into(),
        "# public image yet: hack/image.sh builds it, push it to your registry):".into(),
        "#   helm install kube-metrics-bridge deploy/chart/kube-metrics-bridge -n custom-metrics \\".into(),
        "#     --create-namespace -f THIS-FILE --set image.repository=REGISTRY/kube-metrics-bridge \\".into(),
        "#     --set apiServices.custom=false --set apiServices.external=false \\".into(),
        "#     --set apiServices.resource=false".into(),
    ] {
        text.push_str(&line);
        text.push('\n');
    }
    for (k, v) in values {
        let key = super::scalar_text(k).unwrap_or_default();
        text.push('\n');
        for note in out.comments.get(&key).into_iter().flatten() {
            write_comment(&mut text, "NOTE: ", note);
        }
        if key == "rules" {
            text.push_str("rules: ");
            text.push_str(&literal_block(rules_toml.trim_start_matches('\n')));
            continue;
        }
        let mut one = Mapping::new();
        one.insert(k.clone(), v.clone());
        text.push_str(&yaml_serde::to_string(&one).unwrap_or_default());
    }
    if !out.dropped.is_empty() {
        text.push_str("\n# Not carried over (no equivalent in this chart, or not needed):\n");
        for d in &out.dropped {
            write_comment(&mut text, "- ", d);
        }
    }
    text
}

fn write_comment(text: &mut String, lead: &str, note: &str) {
    let pad = " ".repeat(lead.len());
    for (i, line) in super::wrap(note, 88).iter().enumerate() {
        let _ = writeln!(text, "# {}{line}", if i == 0 { lead } else { &pad });
    }
}

/// `s` as a YAML literal block scalar (after `key: `), indented by two: kept byte for byte,
/// which a TOML document of printable text and newlines allows.
fn literal_block(s: &str) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    // An indentation indicator when the first line starts with a space.
    let indicator = if s.starts_with(' ') { "2" } else { "" };
    let mut out = format!("|{indicator}{chomp}\n");
    for line in s.trim_end_matches('\n').split('\n') {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "  {line}");
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

// ---- reading the input -------------------------------------------------------------------

/// Helm's merge of a values file over a chart's: mappings merge key by key, a `null`
/// removes the key, anything else replaces.
fn helm_merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                match (v, b.get(k)) {
                    (Value::Null, _) => {
                        out.remove(k);
                    }
                    (Value::Mapping(_), Some(bv @ Value::Mapping(_))) => {
                        out.insert(k.clone(), helm_merge(bv, v));
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Mapping(out)
        }
        _ => over.clone(),
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    (!cur.is_null()).then_some(cur)
}

/// What of `eff` differs from `def`: for mappings key by key (a key the user removed is
/// `null`, which removes it from this chart's defaults too), else the whole value.
fn diff(eff: Option<&Value>, def: Option<&Value>) -> Option<Value> {
    match (eff, def) {
        (Some(Value::Mapping(e)), Some(Value::Mapping(d))) => {
            let mut out = Mapping::new();
            for (k, v) in e {
                if let Some(dv) = diff(Some(v), d.get(k)) {
                    out.insert(k.clone(), dv);
                }
            }
            for (k, dv) in d {
                if !e.contains_key(k) && !dv.is_null() {
                    out.insert(k.clone(), Value::Null);
                }
            }
            (!out.is_empty()).then_some(Value::Mapping(out))
        }
        (e, d) if e == d => None,
        (Some(e), _) => Some(e.clone()),
        (None, _) => Some(Value::Null),
    }
}

/// A mapping whose values are all strings (labels, annotations, nodeSelector), scalars
/// written as their text.
fn string_map(v: &Value, place: &str) -> Result<Mapping, String> {
    let Value::Mapping(m) = v else {
        return Err(format!(
            "{place}: expected a mapping, found {}",
            super::kind(v)
        ));
    };
    let mut out = Mapping::new();
    for (k, v) in m {
        let (Some(k), Some(text)) = (super::scalar_text(k), super::scalar_text(v)) else {
            return Err(format!(
                "{place}: every key and value must be a string (found {})",
                super::kind(v)
            ));
        };
        out.insert(Value::String(k), Value::String(text));
    }
    Ok(out)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Mapping(m) => m.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A klog verbosity (`--v`, the chart's `logLevel`) as `RUST_LOG`: prometheus-adapter logs
/// each query from 6 on, which is the bridge's debug level.
fn rust_log(verbosity: &str) -> Option<&'static str> {
    let v: i64 = verbosity.trim().parse().ok()?;
    Some(if v >= 6 {
        "info,kube_metrics_bridge=debug"
    } else {
        "info"
    })
}

// ---- extraArguments ----------------------------------------------------------------------

/// How one prometheus-adapter flag maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    PrometheusUrl,
    PrometheusHeader,
    PrometheusVerb,
    /// A `[prometheus]` file (`KMB_CONFIG_PROMETHEUS__<FIELD>`).
    PrometheusFile(&'static str),
    AuthInCluster,
    Config,
    RelistInterval,
    MaxAge,
    SecurePort,
    Verbosity,
    LoggingFormat,
    /// One of the three kubeconfig flags (`serve --kubeconfig` is one for all).
    Kubeconfig,
    /// A `serve` flag of the same meaning, named.
    Serve(&'static str),
    /// No equivalent, and why.
    Nothing(&'static str),
    Help,
}

const WHY_AUTH_CONFIG: &str = "the bridge does not read a kubeconfig for Prometheus; put its \
    token, CA and client certificate in a Secret and set prometheus.auth";
const WHY_TLS_FILES: &str = "this chart mounts its own serving certificate (certificates.mode); \
    prometheus-adapter's names the adapter's Service, so kube-apiserver would refuse it here";
const WHY_CERT_DIR: &str = "this chart always provides the serving certificate \
    (certificates.mode)";
const WHY_TLS_POLICY: &str = "TLS 1.2 and 1.3 with rustls' safe cipher suites, not configurable";
const WHY_SNI: &str = "one serving certificate for every name";
const WHY_PORT_SHARING: &str = "one listener a port; nothing to share";
const WHY_REQUESTHEADER: &str = "the front-proxy and client CAs, allowed names and header names \
    are read from ConfigMap kube-system/extension-apiserver-authentication (watched), as \
    kube-apiserver publishes them";
const WHY_SKIP_LOOKUP: &str =
    "that ConfigMap is always read; --authentication-tolerate-lookup-failure \
    lets the bridge start without it";
const WHY_REVIEW_TTL: &str = "TokenReview and SubjectAccessReview answers are cached for a fixed \
    10 s";
const WHY_AUDIT: &str = "no audit log; requests are logged (logLevel \
    info,kube_metrics_bridge=debug) and counted on /metrics";
const WHY_FEATURES: &str = "no Kubernetes feature gates";
const WHY_PROFILING: &str = "no profiling endpoints";
const WHY_APF: &str = "no API Priority and Fairness; requests in flight are bounded by \
    --max-requests-inflight (429)";
const WHY_KLOG: &str = "logs always go to stderr, unbuffered; logLevel (RUST_LOG) sets levels, \
    logFormat the format";
const WHY_VMODULE: &str = "per-module levels are RUST_LOG directives in logLevel (e.g. \
    info,kube_metrics_bridge::prometheus=debug)";
const WHY_CLIENT_QPS: &str = "the bridge watches what it needs (a cache, not a list per \
    request) and caches reviews; TokenReviews are rate-limited on their own \
    (--authentication-token-review-qps, --authentication-token-review-burst)";
const WHY_HTTP2: &str = "HTTP/1.1 and HTTP/2 are both served; HTTP/2 streams are bounded \
    (--http2-max-streams-per-connection) and silent or idle connections closed \
    (--first-byte-timeout, --idle-timeout)";

/// prometheus-adapter v0.12.0's flags (its own, custom-metrics-apiserver's, the generic
/// apiserver options it uses, and logging), whether each is boolean, and how it maps.
/// `audit-*` flags are matched by prefix ([`lookup_flag`]).
const FLAGS: &[(&str, bool, Flag)] = &[
    ("prometheus-url", false, Flag::PrometheusUrl),
    ("prometheus-header", false, Flag::PrometheusHeader),
    ("prometheus-verb", false, Flag::PrometheusVerb),
    (
        "prometheus-token-file",
        false,
        Flag::PrometheusFile("bearer_token_file"),
    ),
    ("prometheus-ca-file", false, Flag::PrometheusFile("ca_file")),
    (
        "prometheus-client-tls-cert-file",
        false,
        Flag::PrometheusFile("client_cert_file"),
    ),
    (
        "prometheus-client-tls-key-file",
        false,
        Flag::PrometheusFile("client_key_file"),
    ),
    ("prometheus-auth-incluster", true, Flag::AuthInCluster),
    (
        "prometheus-auth-config",
        false,
        Flag::Nothing(WHY_AUTH_CONFIG),
    ),
    ("config", false, Flag::Config),
    ("metrics-relist-interval", false, Flag::RelistInterval),
    ("metrics-max-age", false, Flag::MaxAge),
    ("disable-http2", true, Flag::Nothing(WHY_HTTP2)),
    ("lister-kubeconfig", false, Flag::Kubeconfig),
    ("client-qps", false, Flag::Nothing(WHY_CLIENT_QPS)),
    ("client-burst", false, Flag::Nothing(WHY_CLIENT_QPS)),
    ("authentication-kubeconfig", false, Flag::Kubeconfig),
    ("authorization-kubeconfig", false, Flag::Kubeconfig),
    (
        "discovery-interval",
        false,
        Flag::Serve("api-discovery-interval"),
    ),
    ("secure-port", false, Flag::SecurePort),
    ("bind-address", false, Flag::Serve("bind-address")),
    ("cert-dir", false, Flag::Nothing(WHY_CERT_DIR)),
    ("tls-cert-file", false, Flag::Nothing(WHY_TLS_FILES)),
    ("tls-private-key-file", false, Flag::Nothing(WHY_TLS_FILES)),
    ("tls-cipher-suites", false, Flag::Nothing(WHY_TLS_POLICY)),
    ("tls-min-version", false, Flag::Nothing(WHY_TLS_POLICY)),
    ("tls-sni-cert-key", false, Flag::Nothing(WHY_SNI)),
    (
        "http2-max-streams-per-connection",
        false,
        Flag::Serve("http2-max-streams-per-connection"),
    ),
    ("permit-port-sharing", true, Flag::Nothing(WHY_PORT_SHARING)),
    (
        "permit-address-sharing",
        true,
        Flag::Nothing(WHY_PORT_SHARING),
    ),
    (
        "authentication-skip-lookup",
        true,
        Flag::Nothing(WHY_SKIP_LOOKUP),
    ),
    (
        "authentication-token-webhook-cache-ttl",
        false,
        Flag::Nothing(WHY_REVIEW_TTL),
    ),
    (
        "authentication-tolerate-lookup-failure",
        true,
        Flag::Serve("authentication-tolerate-lookup-failure"),
    ),
    ("client-ca-file", false, Flag::Nothing(WHY_REQUESTHEADER)),
    (
        "requestheader-client-ca-file",
        false,
        Flag::Nothing(WHY_REQUESTHEADER),
    ),
    (
        "requestheader-allowed-names",
        false,
        Flag::Nothing(WHY_REQUESTHEADER),
    ),
    (
        "requestheader-username-headers",
        false,
        Flag::Nothing(WHY_REQUESTHEADER),
    ),
    (
        "requestheader-group-headers",
        false,
        Flag::Nothing(WHY_REQUESTHEADER),
    ),
    (
        "requestheader-extra-headers-prefix",
        false,
        Flag::Nothing(WHY_REQUESTHEADER),
    ),
    (
        "requestheader-uid-headers",
        false,
        Flag::Nothing(WHY_REQUESTHEADER),
    ),
    (
        "authorization-always-allow-paths",
        false,
        Flag::Serve("authorization-always-allow-paths"),
    ),
    (
        "authorization-webhook-cache-authorized-ttl",
        false,
        Flag::Nothing(WHY_REVIEW_TTL),
    ),
    (
        "authorization-webhook-cache-unauthorized-ttl",
        false,
        Flag::Nothing(WHY_REVIEW_TTL),
    ),
    ("feature-gates", false, Flag::Nothing(WHY_FEATURES)),
    ("profiling", true, Flag::Nothing(WHY_PROFILING)),
    ("contention-profiling", true, Flag::Nothing(WHY_PROFILING)),
    ("debug-socket-path", false, Flag::Nothing(WHY_PROFILING)),
    ("enable-priority-and-fairness", true, Flag::Nothing(WHY_APF)),
    ("logging-format", false, Flag::LoggingFormat),
    ("v", false, Flag::Verbosity),
    ("vmodule", false, Flag::Nothing(WHY_VMODULE)),
    ("log-flush-frequency", false, Flag::Nothing(WHY_KLOG)),
    ("log-json-info-buffer-size", false, Flag::Nothing(WHY_KLOG)),
    ("log-json-split-stream", true, Flag::Nothing(WHY_KLOG)),
    ("log-text-info-buffer-size", false, Flag::Nothing(WHY_KLOG)),
    ("log-text-split-stream", true, Flag::Nothing(WHY_KLOG)),
    // klog's own flags, which older prometheus-adapter releases took.
    ("logtostderr", true, Flag::Nothing(WHY_KLOG)),
    ("alsologtostderr", true, Flag::Nothing(WHY_KLOG)),
    ("log-dir", false, Flag::Nothing(WHY_KLOG)),
    ("log-file", false, Flag::Nothing(WHY_KLOG)),
    ("log-file-max-size", false, Flag::Nothing(WHY_KLOG)),
    ("log-backtrace-at", false, Flag::Nothing(WHY_KLOG)),
    ("skip-headers", true, Flag::Nothing(WHY_KLOG)),
    ("skip-log-headers", true, Flag::Nothing(WHY_KLOG)),
    ("stderrthreshold", false, Flag::Nothing(WHY_KLOG)),
    ("one-output", true, Flag::Nothing(WHY_KLOG)),
    ("add-dir-header", true, Flag::Nothing(WHY_KLOG)),
    ("help", true, Flag::Help),
];

/// The flag called `name` (without dashes): whether it is boolean, and its mapping.
fn lookup_flag(name: &str) -> Option<(bool, Flag)> {
    if let Some(&(_, boolean, flag)) = FLAGS.iter().find(|(n, _, _)| *n == name) {
        return Some((boolean, flag));
    }
    if name.starts_with("audit-") {
        let boolean = ["-compress", "-enable", "-enabled"]
            .iter()
            .any(|s| name.ends_with(s));
        return Some((boolean, Flag::Nothing(WHY_AUDIT)));
    }
    match name {
        "h" => Some((true, Flag::Help)),
        _ => None,
    }
}

/// One flag as written, its mapping and its value (`None` for a boolean given bare).
#[derive(Debug, Clone)]
struct Arg {
    written: String,
    name: String,
    flag: Option<Flag>,
    value: Option<String>,
}

/// `extraArguments` as pflag reads them: `--name=value`, `--name value` (for non-boolean
/// flags), `-v=6`; anything else is noted.
fn parse_args(items: &[Value], notes: &mut Vec<String>) -> Vec<Arg> {
    let tokens: Vec<String> = items
        .iter()
        .map(|v| super::scalar_text(v).unwrap_or_else(|| format!("{v:?}")))
        .collect();
    let mut args = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        i += 1;
        let Some(body) = token
            .strip_prefix("--")
            .or_else(|| token.strip_prefix('-'))
            .filter(|b| !b.is_empty())
        else {
            notes.push(format!(
                "extraArguments {token:?}: not a flag; prometheus-adapter would refuse to start with it"
            ));
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        let found = lookup_flag(&name);
        let value = match (inline, found) {
            (Some(v), _) => Some(v),
            (None, Some((true, _))) => None,
            // A flag with a value takes the next argument, as pflag does; an unknown one
            // only when that does not look like a flag.
            (None, Some((false, _))) if i < tokens.len() => {
                i += 1;
                Some(tokens[i - 1].clone())
            }
            (None, None) if i < tokens.len() && !tokens[i].starts_with('-') => {
                i += 1;
                Some(tokens[i - 1].clone())
            }
            (None, _) => None,
        };
        let written = match &value {
            Some(v) => format!("--{name}={v}"),
            None => format!("--{name}"),
        };
        args.push(Arg {
            written,
            name,
            flag: found.map(|(_, f)| f),
            value,
        });
    }
    args
}

/// A pflag boolean: bare is true; `=true`, `=1`, `=t` and their like.
fn flag_bool(value: Option<&str>) -> Option<bool> {
    match value {
        None => Some(true),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Some(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Some(false),
        Some(_) => None,
    }
}

/// What the chart's flags and `extraArguments` say together (the later flag wins).
#[derive(Debug, Default)]
struct Flags {
    url: Option<String>,
    headers: Vec<(String, String)>,
    verb: Option<String>,
    files: BTreeMap<&'static str, String>,
    in_cluster: bool,
    config: Option<String>,
    relist: Option<String>,
    max_age: Option<String>,
    secure_port: Option<String>,
    verbosity: Option<String>,
    logging_format: Option<String>,
    kubeconfigs: Vec<(String, String)>,
    /// `serve` flags by name (the later wins): the value, `None` for a switch that is on.
    serve: Vec<(String, Option<String>)>,
}

// ---- the conversion ----------------------------------------------------------------------

struct Converter<'a> {
    eff: &'a Value,
    def: &'a Value,
    out: Out,
    /// `extraEnv` entries to add after the user's (`KMB_CONFIG_*`).
    env: Vec<(String, String)>,
    /// `extraArgs` (this chart's `serve` flags).
    extra_args: Vec<String>,
}

/// Top-level values of the adapter chart this conversion knows (all of 5.3.0's, and those
/// of older releases).
const KNOWN_KEYS: &[&str] = &[
    "affinity",
    "topologySpreadConstraints",
    "nameOverride",
    "fullnameOverride",
    "image",
    "logLevel",
    "metricsRelistInterval",
    "listenPort",
    "nodeSelector",
    "priorityClassName",
    "namespaceOverride",
    "customAnnotations",
    "customLabels",
    "prometheus",
    "replicas",
    "podSecurityContext",
    "securityContext",
    "rbac",
    "psp",
    "automountServiceAccountToken",
    "serviceAccount",
    "dnsConfig",
    "dnsPolicy",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "rules",
    "service",
    "tls",
    "env",
    "extraArguments",
    "extraContainers",
    "extraVolumes",
    "extraVolumeMounts",
    "tolerations",
    "podLabels",
    "podAnnotations",
    "deploymentAnnotations",
    "hostNetwork",
    "strategy",
    "podDisruptionBudget",
    "certManager",
    "extraManifests",
    "revisionHistoryLimit",
    "global",
];

impl Converter<'_> {
    fn at(&self, path: &[&str]) -> Option<&Value> {
        get(self.eff, path)
    }

    /// The value at `path` when it differs from the adapter chart's default (and is not
    /// removed: a value set to null takes this chart's default, as an unchanged one does).
    fn changed(&self, path: &[&str]) -> Option<Value> {
        diff(get(self.eff, path), get(self.def, path)).filter(|v| !v.is_null())
    }

    fn text(&self, path: &[&str]) -> Option<String> {
        self.at(path).and_then(super::scalar_text)
    }

    fn unknown_keys(&mut self, user: &Value) {
        if let Value::Mapping(m) = user {
            for k in m.keys() {
                let name = super::scalar_text(k).unwrap_or_else(|| format!("{k:?}"));
                if !KNOWN_KEYS.contains(&name.as_str()) {
                    self.out.drop(format!(
                        "{name}: not a value of the prometheus-adapter chart (5.3.0), which \
                         ignores it; ignored here too"
                    ));
                }
            }
        }
    }

    /// The chart's own flags, then `extraArguments` over them.
    fn read_flags(&mut self) -> Result<Flags, ConvertError> {
        let mut f = Flags::default();
        let items = match self.at(&["extraArguments"]) {
            None => Vec::new(),
            Some(Value::Sequence(s)) => s.clone(),
            Some(other) => {
                return err(format!(
                    "extraArguments: expected a list, found {}",
                    super::kind(other)
                ))
            }
        };
        let mut notes = Vec::new();
        let args = parse_args(&items, &mut notes);
        for n in notes {
            self.out.drop(n);
        }
        let mut explained = Vec::new();
        for arg in args {
            let value = arg.value.clone().unwrap_or_default();
            let Some(flag) = arg.flag else {
                self.out.drop(format!(
                    "extraArguments {}: prometheus-adapter v0.12.0 has no such flag (it would \
                     refuse to start with it)",
                    arg.written
                ));
                continue;
            };
            match flag {
                Flag::PrometheusUrl => f.url = Some(value),
                Flag::PrometheusHeader => {
                    let (k, v) = value.split_once('=').unwrap_or((value.as_str(), ""));
                    f.headers.push((k.to_string(), v.to_string()));
                }
                Flag::PrometheusVerb => f.verb = Some(value),
                Flag::PrometheusFile(field) => {
                    f.files.insert(field, value);
                }
                Flag::AuthInCluster => f.in_cluster = flag_bool(arg.value.as_deref()) == Some(true),
                Flag::Config => f.config = Some(value),
                Flag::RelistInterval => f.relist = Some(value),
                Flag::MaxAge => f.max_age = Some(value),
                Flag::SecurePort => f.secure_port = Some(value),
                Flag::Verbosity => f.verbosity = Some(value),
                Flag::LoggingFormat => f.logging_format = Some(value),
                Flag::Kubeconfig => f.kubeconfigs.push((arg.name.clone(), value)),
                Flag::Serve(ours) => {
                    f.serve.retain(|(n, _)| n != ours);
                    if !lookup_flag(&arg.name).is_some_and(|(boolean, _)| boolean) {
                        f.serve.push((ours.to_string(), Some(value)));
                        continue;
                    }
                    match flag_bool(arg.value.as_deref()) {
                        Some(true) => f.serve.push((ours.to_string(), None)),
                        // Off, as by default.
                        Some(false) => {}
                        None => self.out.drop(format!(
                            "extraArguments {}: not a boolean; not carried over",
                            arg.written
                        )),
                    }
                }
                Flag::Nothing(why) => {
                    if !explained.contains(&arg.name) {
                        explained.push(arg.name.clone());
                        self.out.drop(format!(
                            "extraArguments {}: no equivalent: {why}",
                            arg.written
                        ));
                    }
                }
                Flag::Help => self.out.drop(format!(
                    "extraArguments {}: prints help and exits; ignored",
                    arg.written
                )),
            }
        }
        Ok(f)
    }

    fn rules(
        &mut self,
        user: &Value,
        rules_input: Option<RulesInput<'_>>,
        flags: &Flags,
    ) -> Result<Conversion, ConvertError> {
        let existing = self.text(&["rules", "existing"]).filter(|s| !s.is_empty());
        if let Some(input) = rules_input {
            let c = convert(input.text, input.source, None)?;
            let why = match (&existing, &flags.config) {
                (Some(name), _) => format!("the chart's rules.existing ({name})"),
                (None, Some(path)) => format!("extraArguments --config={path}"),
                (None, None) => "the rules file given".to_string(),
            };
            self.out.note(
                "rules",
                format!(
                    "converted from {} ({why}); the values' rules.default, .custom, .external \
                     and .resource are not used",
                    input.source
                ),
            );
            return Ok(c);
        }
        if let Some(name) = existing {
            return err(format!(
                "rules.existing = {name}: the chart reads its rules from that ConfigMap; pass it \
                 too: kubectl get configmap {name} -o yaml > rules.yaml; \
                 kube-metrics-bridge convert --helm-values VALUES rules.yaml"
            ));
        }
        if let Some(path) = &flags.config {
            return err(format!(
                "extraArguments --config={path}: prometheus-adapter reads its rules from that \
                 file, not from the values' rules; pass that file too: \
                 kube-metrics-bridge convert --helm-values VALUES CONFIG-FILE"
            ));
        }
        // The user's own `rules` (so that a missing `default` is noted as such).
        let mut rules_only = Mapping::new();
        rules_only.insert(
            Value::String("rules".into()),
            match user.get("rules") {
                Some(v @ Value::Mapping(_)) => v.clone(),
                None | Some(Value::Null) => Value::Mapping(Mapping::new()),
                Some(other) => {
                    return err(format!(
                        "rules: expected a mapping (default, custom, external, resource, \
                         existing), found {}",
                        super::kind(other)
                    ))
                }
            },
        );
        convert_helm_rules(&rules_only, "values", None)
    }

    fn prometheus(&mut self, flags: &Flags, url_flag: Option<&str>) {
        // The chart: `--prometheus-url={{ tpl url }}{{ if port }}:{{ port }}{{ end }}{{ path }}`.
        let base = self.text(&["prometheus", "url"]).unwrap_or_default();
        let port = self
            .text(&["prometheus", "port"])
            .filter(|p| !p.is_empty() && p != "0" && p != "false");
        let path = self.text(&["prometheus", "path"]).unwrap_or_default();
        let from_values = match port {
            Some(port) => format!("{base}:{port}{path}"),
            None => format!("{base}{path}"),
        };
        let (mut url, mut whence) = (from_values, "prometheus.url, .port and .path");
        if let Some(u) = &flags.url {
            url = u.clone();
            whence = "extraArguments --prometheus-url";
        }
        if let Some(u) = url_flag {
            url = u.to_string();
            whence = "convert --prometheus-url";
        }
        let mut note = None;
        if url.contains("{{") {
            note = Some(format!(
                "{whence} give {url:?}, Helm templating this conversion cannot render; \
                 PLACEHOLDER: set prometheus.url (or pass --prometheus-url to convert)"
            ));
            url = PLACEHOLDER_URL.into();
        } else if !(url.starts_with("http://") || url.starts_with("https://")) {
            note = Some(format!(
                "{whence} give {url:?}, not an http:// or https:// URL; PLACEHOLDER: set \
                 prometheus.url (or pass --prometheus-url to convert)"
            ));
            url = PLACEHOLDER_URL.into();
        }
        if let Some(n) = note {
            self.out.note("prometheus", n);
        }
        self.out
            .set(&["prometheus", "url"], Value::String(url.clone()));
        if let Some(verb) = &flags.verb {
            match verb.as_str() {
                "GET" | "POST" => self
                    .out
                    .set(&["prometheus", "method"], Value::String(verb.clone())),
                other => self.out.drop(format!(
                    "extraArguments --prometheus-verb={other}: prometheus-adapter accepts only \
                     GET and POST (it would not start); not carried over"
                )),
            }
        }
        if !flags.headers.is_empty() {
            let mut headers = Mapping::new();
            for (k, v) in &flags.headers {
                let key = Value::String(k.clone());
                if headers.contains_key(&key) {
                    self.out.note(
                        "prometheus",
                        format!(
                            "--prometheus-header {k} is given more than once; prometheus-adapter \
                             sent every value, this bridge sends the last ({v:?})"
                        ),
                    );
                }
                headers.insert(key, Value::String(v.clone()));
            }
            self.out
                .set(&["prometheus", "headers"], Value::Mapping(headers));
        }
        // TLS and token files: prometheus-adapter's paths, unchanged (extraVolumes and
        // extraVolumeMounts are carried over), as KMB_CONFIG_PROMETHEUS__* variables.
        let mut files = flags.files.clone();
        if !files.contains_key("ca_file") {
            for field in ["client_cert_file", "client_key_file"] {
                if let Some(path) = files.remove(field) {
                    self.out.drop(format!(
                        "extraArguments {}={path}: prometheus-adapter uses a client certificate \
                         only together with --prometheus-ca-file, so it sent none; not carried over",
                        if field == "client_cert_file" {
                            "--prometheus-client-tls-cert-file"
                        } else {
                            "--prometheus-client-tls-key-file"
                        }
                    ));
                }
            }
            if flags.in_cluster {
                // Without a CA file, prometheus-adapter talks to Prometheus as the pod's
                // ServiceAccount: its token and the cluster's CA (a token file wins).
                files
                    .entry("bearer_token_file")
                    .or_insert_with(|| SA_TOKEN.into());
                files.insert("ca_file", SA_CA.into());
                self.out.note(
                    "extraEnv",
                    "--prometheus-auth-incluster: prometheus-adapter authenticated to Prometheus \
                     as its ServiceAccount (token and cluster CA); the bridge does the same with \
                     the files below, under its own ServiceAccount, which Prometheus (or its \
                     proxy) must accept too",
                );
            }
        } else if flags.in_cluster {
            self.out.drop(
                "extraArguments --prometheus-auth-incluster: prometheus-adapter ignores it when \
                 --prometheus-ca-file is given; not carried over",
            );
        }
        if !files.is_empty() {
            self.out.note(
                "extraEnv",
                "prometheus-adapter's --prometheus-*-file flags become KMB_CONFIG_PROMETHEUS__* \
                 variables (the rules file's [prometheus] fields) with the same paths; the \
                 volumes they name are in extraVolumes and extraVolumeMounts. The bridge re-reads \
                 a changed token and certificate files",
            );
        }
        for (field, path) in files {
            self.env.push((
                format!("KMB_CONFIG_PROMETHEUS__{}", field.to_ascii_uppercase()),
                path,
            ));
        }
    }

    fn cache(&mut self, flags: &Flags) {
        let relist = flags
            .relist
            .clone()
            .map(|v| (v, "extraArguments --metrics-relist-interval"))
            .or_else(|| {
                self.text(&["metricsRelistInterval"])
                    .map(|v| (v, "metricsRelistInterval"))
            });
        for (value, whence, key) in [
            (relist, "discoveryInterval"),
            (
                flags
                    .max_age
                    .clone()
                    .map(|v| (v, "extraArguments --metrics-max-age")),
                "seriesMaxAge",
            ),
        ]
        .into_iter()
        .filter_map(|(v, key)| v.map(|(v, w)| (v, w, key)))
        {
            match humantime::parse_duration(&value) {
                Ok(_) => self.out.set(&["cache", key], Value::String(value)),
                Err(e) => self.out.drop(format!(
                    "{whence} {value:?}: not a duration this bridge reads ({e}); cache.{key} \
                     keeps this chart's default"
                )),
            }
        }
    }

    fn deployment(&mut self, flags: &Flags) {
        if let Some(v) = self.changed(&["replicas"]) {
            match v.as_u64() {
                Some(n) => self.out.set(&["replicaCount"], Value::Number(n.into())),
                None => self.out.drop(format!(
                    "replicas {v:?}: not a number of replicas; replicaCount keeps this chart's \
                     default"
                )),
            }
        }
        let port = flags
            .secure_port
            .clone()
            .map(|p| (p, "extraArguments --secure-port"))
            .or_else(|| {
                self.changed(&["listenPort"])
                    .and_then(|v| super::scalar_text(&v))
                    .map(|p| (p, "listenPort"))
            });
        if let Some((p, whence)) = port {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => self.out.set(&["securePort"], Value::Number(n.into())),
                _ => self.out.drop(format!(
                    "{whence} {p:?}: not a port; securePort keeps this chart's default"
                )),
            }
        }
        let verbosity = flags
            .verbosity
            .clone()
            .map(|v| (v, "extraArguments --v"))
            .or_else(|| {
                self.changed(&["logLevel"])
                    .and_then(|v| super::scalar_text(&v))
                    .map(|v| (v, "logLevel"))
            });
        if let Some((v, whence)) = verbosity {
            match rust_log(&v) {
                Some(level) => {
                    self.out
                        .set(&["logLevel"], Value::String(level.to_string()));
                    self.out.note(
                        "logLevel",
                        format!(
                            "from {whence} {v} (klog verbosity): prometheus-adapter logs each \
                             query from 6 on, the bridge at debug; logLevel is RUST_LOG"
                        ),
                    );
                }
                None => self.out.drop(format!(
                    "{whence} {v:?}: not a klog verbosity; logLevel keeps this chart's default"
                )),
            }
        }
        if let Some(format) = &flags.logging_format {
            match format.as_str() {
                "json" | "text" => self.out.set(&["logFormat"], Value::String(format.clone())),
                other => self.out.drop(format!(
                    "extraArguments --logging-format={other}: the bridge logs text or json; \
                     logFormat keeps this chart's default"
                )),
            }
        }
        // `serve --kubeconfig` is one connection for the lister, authentication and
        // authorization.
        if let Some((flag, path)) = flags.kubeconfigs.first() {
            if flags.kubeconfigs.iter().any(|(_, p)| p != path) {
                self.out.note(
                    "extraArgs",
                    format!(
                        "prometheus-adapter had different kubeconfigs for listing, authentication \
                         and authorization; the bridge uses one for all: --{flag}'s"
                    ),
                );
            }
            self.extra_args.push(format!("--kubeconfig={path}"));
        }
        for (name, value) in &flags.serve {
            self.extra_args.push(match value {
                None => format!("--{name}"),
                Some(v) => format!("--{name}={v}"),
            });
        }
        for key in ["deploymentAnnotations", "strategy", "revisionHistoryLimit"] {
            if self.changed(&[key]).is_some() {
                let why = match key {
                    "strategy" => {
                        "this chart rolls out with maxUnavailable 0 and maxSurge 1, so a serving \
                         pod is always there"
                    }
                    "revisionHistoryLimit" => "this chart keeps 5 ReplicaSets",
                    _ => {
                        "this chart has no annotations of the Deployment itself (podAnnotations \
                          are the pods')"
                    }
                };
                self.out.drop(format!("{key}: no equivalent: {why}"));
            }
        }
        if let Some(Value::Sequence(items)) = self.changed(&["env"]) {
            if items.iter().all(|i| matches!(i, Value::Mapping(_))) {
                if !items.is_empty() {
                    self.out.set(&["extraEnv"], Value::Sequence(items));
                }
            } else {
                self.out
                    .drop("env: not a list of variables (name, value); not carried over");
            }
        }
    }

    fn pod(&mut self) {
        for (theirs, ours) in [
            ("nodeSelector", "nodeSelector"),
            ("podLabels", "podLabels"),
            ("podAnnotations", "podAnnotations"),
        ] {
            if let Some(v) = self.changed(&[theirs]).filter(|v| !is_empty(v)) {
                match string_map(&v, theirs) {
                    Ok(m) => self.out.set(&[ours], Value::Mapping(m)),
                    Err(e) => self.out.drop(format!("{e}; not carried over")),
                }
            }
        }
        for key in ["tolerations", "topologySpreadConstraints"] {
            if let Some(v @ Value::Sequence(_)) = self.changed(&[key]) {
                self.out.set(&[key], v);
            }
        }
        if let Some(v @ Value::Mapping(_)) = self.changed(&["affinity"]).filter(|v| !is_empty(v)) {
            self.out.set(&["affinity"], v);
            self.out.note(
                "affinity",
                "replaces this chart's default (pods preferably on different nodes)",
            );
        }
        if let Some(Value::String(p)) = self.changed(&["priorityClassName"]) {
            if !p.is_empty() {
                self.out.set(&["priorityClassName"], Value::String(p));
            }
        }
        match self.changed(&["resources"]).filter(|v| !is_empty(v)) {
            None => {}
            Some(Value::Mapping(_)) => {
                // Exactly prometheus-adapter's: this chart's defaults it does not set are
                // cleared.
                let ours: Value = yaml_serde::from_str(OUR_DEFAULTS).unwrap_or(Value::Null);
                let theirs = self.at(&["resources"]).cloned().unwrap_or(Value::Null);
                self.out.set(
                    &["resources"],
                    replace_exactly(ours.get("resources"), &theirs),
                );
                self.out.note(
                    "resources",
                    "prometheus-adapter's, exactly (this chart's defaults it does not set are \
                     cleared with null). The bridge's default limits (connections, the 64MiB \
                     value cache) are sized for a 256Mi memory limit (README, \"Limits\"); with \
                     less, lower cache.maxBytes and --max-connections in extraArgs",
                );
            }
            Some(other) => self.out.drop(format!(
                "resources {other:?}: not a mapping; not carried over"
            )),
        }
        for key in ["podSecurityContext", "securityContext"] {
            let Some(v) = self.changed(&[key]) else {
                continue;
            };
            if !matches!(v, Value::Mapping(_)) {
                self.out
                    .drop(format!("{key} {v:?}: not a mapping; not carried over"));
                continue;
            }
            {
                self.out.set(&[key], v);
                self.out.note(
                    key,
                    format!(
                        "what differs from the prometheus-adapter chart's default {key}, over this \
                         chart's (non-root 65532, read-only root, no capabilities, RuntimeDefault \
                         seccomp); null removes one of this chart's settings"
                    ),
                );
            }
        }
        for key in ["readinessProbe", "livenessProbe", "startupProbe"] {
            if self.changed(&[key]).is_some() {
                self.out.drop(format!(
                    "{key}: not carried over: prometheus-adapter's probes call /healthz on its HTTPS \
                     port; this chart's call /readyz and /livez on the plain metrics port, with \
                     their own timing (a startupProbe covers slow starts); set {key} to change them"
                ));
            }
        }
        if self.at(&["hostNetwork"]).is_some_and(|h| {
            h.get("enabled").and_then(Value::as_bool) == Some(true) || h.as_bool() == Some(true)
        }) {
            self.out.set(&["hostNetwork"], Value::Bool(true));
            if self.at(&["dnsPolicy"]).is_none() {
                self.out.note(
                    "hostNetwork",
                    "with host networking, dnsPolicy ClusterFirstWithHostNet lets the pod resolve \
                     Service names (prometheus.url)",
                );
            }
        }
        if let Some(Value::String(p)) = self.at(&["dnsPolicy"]).cloned() {
            if ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"].contains(&p.as_str())
            {
                self.out.set(&["dnsPolicy"], Value::String(p));
            } else if !p.is_empty() {
                self.out.drop(format!(
                    "dnsPolicy {p:?}: not a DNS policy; not carried over"
                ));
            }
        }
        if let Some(v @ Value::Mapping(_)) = self.changed(&["dnsConfig"]).filter(|v| !is_empty(v)) {
            self.out.set(&["dnsConfig"], v);
        }
        for key in ["extraVolumes", "extraVolumeMounts", "extraContainers"] {
            if let Some(v @ Value::Sequence(_)) = self.changed(&[key]).filter(|v| !is_empty(v)) {
                self.out.set(&[key], v);
            }
        }
        let referenced = volume_sources(self.at(&["extraVolumes"]));
        if !referenced.is_empty() {
            self.out.note(
                "extraVolumes",
                format!(
                    "they name {}: these must exist in the bridge's namespace too",
                    referenced.join(", ")
                ),
            );
        }
        if let Some(labels) = self.at(&["customLabels"]).cloned().filter(|v| !is_empty(v)) {
            match string_map(&labels, "customLabels") {
                Ok(m) => self.out.set(&["commonLabels"], Value::Mapping(m)),
                Err(e) => self.out.drop(format!("{e}; not carried over")),
            }
        }
        if let Some(a) = self
            .at(&["customAnnotations"])
            .cloned()
            .filter(|v| !is_empty(v))
        {
            // The adapter chart puts them on every object and on the pod template; this
            // chart has a value for each.
            match string_map(&a, "customAnnotations") {
                Ok(m) => {
                    self.out
                        .set(&["commonAnnotations"], Value::Mapping(m.clone()));
                    let mut pod = m;
                    if let Some(Value::Mapping(own)) = self.out.values.get("podAnnotations") {
                        pod.extend(own.clone());
                    }
                    self.out.set(&["podAnnotations"], Value::Mapping(pod));
                    self.out.note(
                        "podAnnotations",
                        "includes customAnnotations (commonAnnotations), which the adapter chart \
                         also put on its pods",
                    );
                }
                Err(e) => self.out.drop(format!("{e}; not carried over")),
            }
        }
        if let Some(v) = self.changed(&["image", "pullPolicy"]) {
            match v.as_str() {
                Some(p @ ("Always" | "IfNotPresent" | "Never")) => self
                    .out
                    .set(&["image", "pullPolicy"], Value::String(p.to_string())),
                _ => self.out.drop(format!(
                    "image.pullPolicy {v:?}: not a pull policy; not carried over"
                )),
            }
        }
        if let Some(Value::Sequence(secrets)) = self.at(&["image", "pullSecrets"]).cloned() {
            // The adapter chart takes names; this one, LocalObjectReferences.
            let refs: Vec<Value> = secrets
                .iter()
                .map(|s| match super::scalar_text(s) {
                    Some(name) => {
                        let mut m = Mapping::new();
                        m.insert(Value::String("name".into()), Value::String(name));
                        Value::Mapping(m)
                    }
                    None => s.clone(),
                })
                .collect();
            if !refs.is_empty() {
                self.out
                    .set(&["image", "pullSecrets"], Value::Sequence(refs));
            }
        }
        for key in ["repository", "tag"] {
            if let Some(v) = self.changed(&["image", key]) {
                self.out.drop(format!(
                    "image.{key} {}: prometheus-adapter's image; set image.repository and \
                     image.tag to where kube-metrics-bridge's image is (a mirror of it, if you \
                     mirrored the adapter's)",
                    super::scalar_text(&v).unwrap_or_default()
                ));
            }
        }
    }

    fn service_and_account(&mut self) {
        if let Some(v) = self.changed(&["service", "type"]) {
            match v.as_str() {
                Some(t @ ("ClusterIP" | "NodePort" | "LoadBalancer")) => self
                    .out
                    .set(&["service", "type"], Value::String(t.to_string())),
                _ => self.out.drop(format!(
                    "service.type {}: this chart's Service is ClusterIP, NodePort or LoadBalancer; \
                     not carried over",
                    super::scalar_text(&v).unwrap_or_default()
                )),
            }
        }
        if let Some(v) = self.changed(&["service", "port"]) {
            match v.as_u64().filter(|p| (1..=65535).contains(p)) {
                Some(p) => self.out.set(&["service", "port"], Value::Number(p.into())),
                None => self
                    .out
                    .drop(format!("service.port {v:?}: not a port; not carried over")),
            }
        }
        if let Some(v) = self
            .changed(&["service", "annotations"])
            .filter(|v| !is_empty(v))
        {
            match string_map(&v, "service.annotations") {
                Ok(m) => self.out.set(&["service", "annotations"], Value::Mapping(m)),
                Err(e) => self.out.drop(format!("{e}; not carried over")),
            }
        }
        if self.at(&["service", "clusterIP"]).is_some() {
            self.out.drop(
                "service.clusterIP: no equivalent: this chart lets Kubernetes pick the Service's \
                 address (the APIServices name the Service, not an address)",
            );
        }
        if self
            .at(&["service", "ipDualStack", "enabled"])
            .and_then(Value::as_bool)
            == Some(true)
        {
            self.out.drop(
                "service.ipDualStack: no equivalent: this chart's Service takes the cluster's \
                 default IP family",
            );
        }
        if let Some(v) = self.changed(&["serviceAccount", "create"]) {
            if let Some(b) = v.as_bool() {
                self.out.set(&["serviceAccount", "create"], Value::Bool(b));
            }
        }
        if let Some(name) = self
            .text(&["serviceAccount", "name"])
            .filter(|n| !n.is_empty())
        {
            self.out
                .set(&["serviceAccount", "name"], Value::String(name));
        }
        if let Some(v) = self
            .changed(&["serviceAccount", "annotations"])
            .filter(|v| !is_empty(v))
        {
            match string_map(&v, "serviceAccount.annotations") {
                Ok(m) => {
                    self.out
                        .set(&["serviceAccount", "annotations"], Value::Mapping(m));
                    self.out.note(
                        "serviceAccount",
                        "annotations that tie a cloud identity to the ServiceAccount (e.g. \
                         eks.amazonaws.com/role-arn) work only if that identity trusts this \
                         ServiceAccount too (its name and namespace differ from the adapter's)",
                    );
                }
                Err(e) => self.out.drop(format!("{e}; not carried over")),
            }
        }
        for path in [
            &["automountServiceAccountToken"][..],
            &["serviceAccount", "automountServiceAccountToken"][..],
        ] {
            if self.at(path).and_then(Value::as_bool) == Some(false) {
                self.out.drop(format!(
                    "{}: false: no equivalent: the bridge needs its ServiceAccount's token \
                     (watches, TokenReview, SubjectAccessReview), so this chart always mounts it",
                    path.join(".")
                ));
            }
        }
        for (key, why) in [
            (
                "nameOverride",
                "this chart's objects are named after its release; the adapter's names would \
                 collide with the adapter's objects while both run side by side",
            ),
            (
                "fullnameOverride",
                "this chart's objects are named after its release; the adapter's names would \
                 collide with the adapter's objects while both run side by side",
            ),
        ] {
            if self.changed(&[key]).is_some_and(|v| !is_empty(&v)) {
                self.out.drop(format!("{key}: not carried over: {why}"));
            }
        }
        if let Some(ns) = self
            .changed(&["namespaceOverride"])
            .and_then(|v| super::scalar_text(&v))
            .filter(|n| !n.is_empty())
        {
            self.out.set(&["namespaceOverride"], Value::String(ns));
            self.out.note(
                "namespaceOverride",
                "this chart does not create that namespace (helm's --create-namespace creates \
                 the release's): it must exist",
            );
        }
        if self.at(&["psp", "create"]).and_then(Value::as_bool) == Some(true) {
            self.out.drop(
                "psp.create: no equivalent: PodSecurityPolicy was removed in Kubernetes 1.25; \
                 this chart's pods meet the restricted Pod Security Standard",
            );
        }
    }

    fn certificates(&mut self) {
        let tls = self.at(&["tls", "enable"]).and_then(Value::as_bool) == Some(true);
        let cert_manager = self
            .at(&["certManager", "enabled"])
            .and_then(Value::as_bool)
            == Some(true);
        if cert_manager {
            self.out.set(
                &["certificates", "mode"],
                Value::String("certManager".into()),
            );
            self.out.note(
                "certificates",
                "from certManager.enabled: cert-manager issues the serving certificate from a \
                 private CA this chart makes, and cainjector fills the APIServices' caBundle",
            );
            if let Some(d) = self
                .changed(&["certManager", "certDuration"])
                .and_then(|v| super::scalar_text(&v))
            {
                self.out.set(
                    &["certificates", "certManager", "duration"],
                    Value::String(d),
                );
            }
            if self.changed(&["certManager", "caCertDuration"]).is_some() {
                self.out.drop(
                    "certManager.caCertDuration: no equivalent: the CA this chart makes for \
                     cert-manager is valid for 10 years",
                );
            }
            for key in ["caCertRevisionHistoryLimit", "certRevisionHistoryLimit"] {
                if self.at(&["certManager", key]).is_some() {
                    self.out.drop(format!(
                        "certManager.{key}: no equivalent: this chart's Certificates keep \
                         cert-manager's default history"
                    ));
                }
            }
        } else {
            self.out
                .set(&["certificates", "mode"], Value::String("generate".into()));
            self.out.note(
                "certificates",
                if tls {
                    "from tls.enable: the adapter's certificate (tls.certificate, tls.key, tls.ca) \
                     names the adapter's Service, so kube-apiserver would refuse it for this \
                     one; Helm generates a CA and a certificate for this chart's Service and \
                     puts the CA in the caBundle (generate), or use certManager. A certificate \
                     of your own for <release>.<namespace>.svc goes in certificates.provided"
                } else {
                    "the adapter's APIServices had insecureSkipTLSVerify: true (no tls.enable, \
                     no certManager.enabled); this chart's carry a caBundle: Helm generates a \
                     CA and a serving certificate (generate), or use certManager"
                },
            );
        }
    }

    fn api_services(&mut self, rules: &Conversion) {
        let c = &rules.config;
        let custom = !c.rules.is_empty();
        let external = !c.external_rules.is_empty();
        let resource = c.resource_rules.is_some();
        self.out
            .set(&["apiServices", "custom"], Value::Bool(custom));
        self.out
            .set(&["apiServices", "external"], Value::Bool(external));
        self.out
            .set(&["apiServices", "resource"], Value::Bool(resource));
        let mut note = "the groups the rules serve, as the adapter chart registered them. \
            Install with all three false first, next to the adapter, and compare \
            (kube-metrics-bridge compare); then upgrade with these (docs/migration.md, cut-over)"
            .to_string();
        if resource {
            note.push_str(
                "; resource: the adapter's v1beta1.metrics.k8s.io must be deleted first, and this \
                 chart also registers v1.metrics.k8s.io",
            );
        }
        self.out.note("apiServices", note);
    }

    fn rbac(&mut self, rules: &Conversion) {
        if let Some(v) = self.changed(&["rbac", "create"]).and_then(|v| v.as_bool()) {
            self.out.set(&["rbac", "create"], Value::Bool(v));
        }
        if self
            .at(&["rbac", "useAuthReaderClusterRole"])
            .and_then(Value::as_bool)
            == Some(true)
        {
            self.out.drop(
                "rbac.useAuthReaderClusterRole: no equivalent: this chart binds the Role \
                 kube-system/extension-apiserver-authentication-reader, as kube-apiserver's \
                 aggregated servers need",
            );
        }
        for key in ["customMetrics", "externalMetrics"] {
            if self.changed(&["rbac", key, "resources"]).is_some() {
                self.out.drop(format!(
                    "rbac.{key}.resources: no equivalent: this chart's HPA reader role \
                     (rbac.hpaMetricsReader) may read every metric of the groups it serves"
                ));
            }
        }
        // Resources the rules' overrides name beyond this chart's default RBAC.
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for gap in &rules.rbac_gaps {
            if gap.missing.is_empty() {
                continue;
            }
            for GroupResource { group, resource } in &gap.missing {
                let list = extra.entry(group.clone()).or_default();
                if !list.contains(resource) {
                    list.push(resource.clone());
                }
            }
            self.out.resolved_rule_notes.push(gap.note.clone());
        }
        if !extra.is_empty() {
            // Appended to this chart's resourceRules, which stay as they are.
            let mut rules = Vec::new();
            let mut added = Vec::new();
            for (group, resources) in &extra {
                added.extend(
                    resources
                        .iter()
                        .map(|r| GroupResource::new(group, r).to_string()),
                );
                let mut m = Mapping::new();
                m.insert(
                    Value::String("apiGroups".into()),
                    Value::Sequence(vec![Value::String(group.clone())]),
                );
                m.insert(
                    Value::String("resources".into()),
                    Value::Sequence(resources.iter().cloned().map(Value::String).collect()),
                );
                m.insert(
                    Value::String("verbs".into()),
                    Value::Sequence(
                        ["get", "list", "watch"]
                            .into_iter()
                            .map(|v| Value::String(v.into()))
                            .collect(),
                    ),
                );
                rules.push(Value::Mapping(m));
            }
            self.out
                .set(&["rbac", "extraRules"], Value::Sequence(rules));
            self.out.note(
                "rbac",
                format!(
                    "extraRules: {}, which the rules' resources.overrides name and this chart's \
                     rbac.resourceRules do not (the bridge lists and watches them)",
                    added.join(", ")
                ),
            );
        }
    }

    fn leftovers(&mut self) {
        if self.at(&["extraManifests"]).is_some_and(|v| !is_empty(v)) {
            self.out.drop(
                "extraManifests: no equivalent: apply those objects yourself (kubectl apply), \
                 or from a parent chart",
            );
        }
        if let Some(v) = self.changed(&["podDisruptionBudget"]) {
            let enabled = self
                .at(&["podDisruptionBudget", "enabled"])
                .and_then(Value::as_bool)
                == Some(true);
            if enabled {
                self.out
                    .set(&["podDisruptionBudget", "enabled"], Value::Bool(true));
                // A number or a percentage, as Kubernetes takes them.
                let count =
                    |v: &&Value| v.as_u64().is_some() || v.as_str().is_some_and(|s| !s.is_empty());
                let max = self
                    .at(&["podDisruptionBudget", "maxUnavailable"])
                    .filter(count)
                    .cloned();
                let min = self
                    .at(&["podDisruptionBudget", "minAvailable"])
                    .filter(count)
                    .cloned();
                if let Some(max) = max {
                    self.out
                        .set(&["podDisruptionBudget", "maxUnavailable"], max);
                    if min.is_some() {
                        self.out.note(
                            "podDisruptionBudget",
                            "the adapter's values set both minAvailable and maxUnavailable \
                             (Kubernetes refuses such a PodDisruptionBudget); maxUnavailable is \
                             used, as this chart does",
                        );
                    }
                } else if let Some(min) = min {
                    self.out.set(&["podDisruptionBudget", "minAvailable"], min);
                }
                let replicas = self.out.values.get("replicaCount").and_then(Value::as_u64);
                if replicas.is_some_and(|r| r < 2) {
                    self.out.note(
                        "podDisruptionBudget",
                        "this chart renders it only with 2 or more replicas (with one, any \
                         PodDisruptionBudget blocks node drains)",
                    );
                }
            }
            if v.get("unhealthyPodEvictionPolicy")
                .is_some_and(|p| !p.is_null())
            {
                self.out.drop(
                    "podDisruptionBudget.unhealthyPodEvictionPolicy: no equivalent in this chart",
                );
            }
        }
    }

    /// `extraEnv` and `extraArgs` from what the flags turned into.
    fn flush_env_and_args(&mut self) {
        if !self.env.is_empty() {
            let mut list = match self.out.values.get("extraEnv") {
                Some(Value::Sequence(s)) => s.clone(),
                _ => Vec::new(),
            };
            for (name, value) in std::mem::take(&mut self.env) {
                let mut m = Mapping::new();
                m.insert(Value::String("name".into()), Value::String(name));
                m.insert(Value::String("value".into()), Value::String(value));
                list.push(Value::Mapping(m));
            }
            self.out.set(&["extraEnv"], Value::Sequence(list));
        }
        if !self.extra_args.is_empty() {
            let args = std::mem::take(&mut self.extra_args);
            self.out.note(
                "extraArgs",
                "serve flags from the adapter's extraArguments of the same meaning",
            );
            self.out.set(
                &["extraArgs"],
                Value::Sequence(args.into_iter().map(Value::String).collect()),
            );
        }
    }
}

/// `theirs` in place of `ours` (a chart default), keys of `ours` that `theirs` lacks set to
/// null so that Helm's merge leaves exactly `theirs`.
fn replace_exactly(ours: Option<&Value>, theirs: &Value) -> Value {
    match (ours, theirs) {
        (Some(Value::Mapping(o)), Value::Mapping(t)) => {
            let mut out = Mapping::new();
            for (k, v) in t {
                out.insert(k.clone(), replace_exactly(o.get(k), v));
            }
            for k in o.keys() {
                if !t.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Mapping(out)
        }
        _ => theirs.clone(),
    }
}

/// The Secrets and ConfigMaps that `extraVolumes` mount, as `Secret x`, `ConfigMap y`.
fn volume_sources(volumes: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(Value::Sequence(vols)) = volumes else {
        return out;
    };
    for v in vols {
        if let Some(name) = v
            .get("secret")
            .and_then(|s| s.get("secretName"))
            .and_then(super::scalar_text)
        {
            out.push(format!("Secret {name}"));
        }
        if let Some(name) = v
            .get("configMap")
            .and_then(|s| s.get("name"))
            .and_then(super::scalar_text)
        {
            out.push(format!("ConfigMap {name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
