//! prometheus-adapter configuration -> our rules file (design §3.1, `convert FILE`).
//!
//! Reads what people actually have: prometheus-adapter's `config.yaml` (`rules`,
//! `externalRules`, `resourceRules`), a Kubernetes ConfigMap that holds one (as the Helm chart
//! and kube-prometheus ship it, possibly in a multi-document file), or the Helm chart's values
//! (`rules: {default, custom, external, resource}`, `prometheus: {url, port, path}`), where
//! `default: true` (the chart's default) expands to the six rules the chart renders.
//!
//! The meaning is kept: every field maps one to one (camelCase -> snake_case), templates pass
//! through unchanged (ours read the same `<< >>` language), and where prometheus-adapter's
//! behaviour cannot be written the same way, the rule gets a comment saying what changed.
//! Unknown keys are errors, as prometheus-adapter loads with `yaml.UnmarshalStrict`.
//! `resourceRules` (the resource metrics API, `metrics.k8s.io`) are out of scope and reported.

use std::fmt::Write as _;

use yaml_serde::{Mapping, Value};

use crate::config::{ConfigFile, GroupResourceConfig, RuleConfig, SeriesFilter};
use crate::kube::resources::{GroupResource, ResourceMapper, StaticMapper};

/// The `[prometheus] url` written when the input does not say (prometheus-adapter takes it
/// on its command line). `.invalid` never resolves, so a forgotten placeholder fails loudly.
pub const PLACEHOLDER_URL: &str = "http://prometheus.invalid:9090";

/// What `convert` produced.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The rules file text, header and per-rule comments included.
    pub toml: String,
    /// The same content as a config value (what `toml` parses back to).
    pub config: ConfigFile,
    /// Things the user must know (also written as comments in `toml` where they concern a rule).
    pub notes: Vec<String>,
    /// Whether the input had `resourceRules` (not converted).
    pub had_resource_rules: bool,
    /// Whether the URL is [`PLACEHOLDER_URL`].
    pub url_is_placeholder: bool,
}

/// Why an input could not be converted at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConvertError> {
    Err(ConvertError(msg.into()))
}

/// Converts prometheus-adapter YAML; `source` names the input in the header comment.
/// `prometheus_url` wins over anything the input says.
pub fn convert(
    yaml: &str,
    source: &str,
    prometheus_url: Option<&str>,
) -> Result<Conversion, ConvertError> {
    let input = read_input(yaml)?;
    let mut notes = input.notes;
    let mut custom = Vec::new();
    let mut external = Vec::new();
    for (i, v) in input.rules.iter().enumerate() {
        custom.push(convert_rule(v, &input.rules_place, i, false)?);
    }
    for (i, v) in input.external_rules.iter().enumerate() {
        external.push(convert_rule(v, &input.external_place, i, true)?);
    }
    if input.had_resource_rules {
        notes.push(format!(
            "{} (the resource metrics API, metrics.k8s.io: `kubectl top`, CPU/memory HPAs) is out \
             of scope and was NOT converted; keep serving metrics.k8s.io with metrics-server, or keep \
             prometheus-adapter running with only its resourceRules (and its APIService for \
             v1beta1.metrics.k8s.io), next to kube-metrics-bridge serving the custom and external \
             metrics APIs",
            input.resource_place
        ));
    }
    for (place, rule) in custom
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{}[{i}]", input.rules_place), r))
        .chain(
            external
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("{}[{i}]", input.external_place), r)),
        )
    {
        for n in &rule.notes {
            notes.push(format!("{place}: {n}"));
        }
    }
    for (i, rule) in custom.iter().enumerate() {
        if let Some(note) = rbac_note(&rule.rule) {
            notes.push(format!("{}[{i}]: {note}", input.rules_place));
        }
    }
    let (url, url_is_placeholder) = match prometheus_url.map(str::to_string).or(input.url) {
        Some(u) => (u, false),
        None => (PLACEHOLDER_URL.to_string(), true),
    };
    let mut config = ConfigFile::default();
    config.prometheus.url = url.clone();
    config.rules = custom.iter().map(|r| r.rule.clone()).collect();
    config.external_rules = external.iter().map(|r| r.rule.clone()).collect();
    if let Some(d) = &input.relist_interval {
        if let Ok(parsed) = humantime::parse_duration(d) {
            config.cache.discovery_interval = parsed;
        }
    }
    let toml = render(
        source,
        &input.kind,
        &url,
        url_is_placeholder,
        input.relist_interval.as_deref(),
        input.had_resource_rules,
        &custom,
        &external,
    );
    Ok(Conversion {
        toml,
        config,
        notes,
        had_resource_rules: input.had_resource_rules,
        url_is_placeholder,
    })
}

/// The input, whatever its wrapping, reduced to prometheus-adapter's three lists.
struct Input {
    kind: String,
    rules: Vec<Value>,
    external_rules: Vec<Value>,
    had_resource_rules: bool,
    rules_place: String,
    external_place: String,
    resource_place: String,
    url: Option<String>,
    relist_interval: Option<String>,
    notes: Vec<String>,
}

fn read_input(yaml: &str) -> Result<Input, ConvertError> {
    let mut docs = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| ConvertError(format!("not valid YAML: {e}")))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    let doc = match docs.len() {
        0 => return err("the file is empty"),
        1 => docs.remove(0),
        _ => {
            // A rendered chart or `kubectl get -o yaml` list: take the one adapter ConfigMap.
            let mut maps: Vec<Value> = docs
                .into_iter()
                .filter(|d| is_config_map(d) && config_map_entry(d).is_ok())
                .collect();
            match maps.len() {
                1 => maps.remove(0),
                0 => return err("the file has several YAML documents and none is a ConfigMap with a prometheus-adapter config.yaml"),
                n => return err(format!("the file has {n} ConfigMaps with a prometheus-adapter config; split it and convert one")),
            }
        }
    };
    if is_config_map(&doc) {
        let (key, text) = config_map_entry(&doc)?;
        let inner: Value = yaml_serde::from_str(&text)
            .map_err(|e| ConvertError(format!("ConfigMap data {key:?} is not valid YAML: {e}")))?;
        let mut input = adapter_config(&inner)?;
        input.kind = format!("prometheus-adapter config (ConfigMap data {key:?})");
        return Ok(input);
    }
    let map = as_map(&doc, "the top level")?;
    if matches!(map.get("rules"), Some(Value::Mapping(_))) {
        return helm_values(map);
    }
    adapter_config(&doc)
}

fn is_config_map(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("ConfigMap")
}

fn config_map_entry(v: &Value) -> Result<(String, String), ConvertError> {
    let Some(Value::Mapping(data)) = v.get("data") else {
        return err("the ConfigMap has no data");
    };
    let entries: Vec<(String, String)> = data
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect();
    if let Some(e) = entries.iter().find(|(k, _)| k == "config.yaml") {
        return Ok(e.clone());
    }
    match entries.as_slice() {
        [one] => Ok(one.clone()),
        _ => err(
            "the ConfigMap has no data key \"config.yaml\" (prometheus-adapter's --config file)",
        ),
    }
}

/// prometheus-adapter's own file: `rules`, `externalRules`, `resourceRules`.
fn adapter_config(doc: &Value) -> Result<Input, ConvertError> {
    let map = as_map(doc, "the top level")?;
    check_keys(
        map,
        "the top level",
        &["rules", "externalRules", "resourceRules"],
    )?;
    Ok(Input {
        kind: "prometheus-adapter config".into(),
        rules: seq(map.get("rules"), "rules")?,
        external_rules: seq(map.get("externalRules"), "externalRules")?,
        had_resource_rules: map.get("resourceRules").is_some_and(|v| !v.is_null()),
        rules_place: "rules".into(),
        external_place: "externalRules".into(),
        resource_place: "resourceRules".into(),
        url: None,
        relist_interval: None,
        notes: Vec::new(),
    })
}

/// The prometheus-adapter Helm chart's values (prometheus-community/prometheus-adapter).
/// Only `rules`, `prometheus` and `metricsRelistInterval` matter; other chart values are
/// about the Deployment and are left alone.
fn helm_values(map: &Mapping) -> Result<Input, ConvertError> {
    let Some(Value::Mapping(rules)) = map.get("rules") else {
        unreachable!("checked by the caller")
    };
    check_keys(
        rules,
        "rules",
        &["default", "custom", "external", "resource", "existing"],
    )?;
    let mut notes = Vec::new();
    if let Some(name) = rules.get("existing").filter(|v| !v.is_null()) {
        return err(format!(
            "rules.existing = {} : the chart reads its rules from that ConfigMap; convert it instead \
             (kubectl get configmap NAME -o yaml > adapter.yaml)",
            scalar_text(name).unwrap_or_default()
        ));
    }
    // The chart's values.yaml has `default: true`; a values file that leaves it out gets it.
    let default = match rules.get("default") {
        None => {
            notes.push("rules.default is not set; the chart's default (true) applies, so its six default rules were converted".into());
            true
        }
        Some(v) => boolean(v, "rules.default")?,
    };
    let mut all = Vec::new();
    if default {
        let defaults: Value = yaml_serde::from_str(HELM_DEFAULT_RULES).expect("built-in YAML");
        all.extend(seq(defaults.get("rules"), "default rules")?);
    }
    let custom = seq(rules.get("custom"), "rules.custom")?;
    all.extend(custom);
    let url = match map.get("prometheus") {
        Some(Value::Mapping(p)) => {
            let base = p.get("url").and_then(scalar_text);
            let port = p
                .get("port")
                .and_then(scalar_text)
                .filter(|s| !s.is_empty());
            let path = p.get("path").and_then(scalar_text).unwrap_or_default();
            base.map(|b| match port {
                Some(port) => format!("{b}:{port}{path}"),
                None => format!("{b}{path}"),
            })
        }
        _ => None,
    };
    if url.as_deref().is_some_and(|u| u.contains("{{")) {
        notes.push("prometheus.url uses Helm templating; set [prometheus] url by hand".into());
    }
    Ok(Input {
        kind: format!(
            "prometheus-adapter Helm chart values{}",
            if default {
                " (rules.default: true, expanded to the chart's default rules)"
            } else {
                ""
            }
        ),
        // With default rules in front, indices no longer match `rules.custom`, so rules are
        // named by their place in the config.yaml the chart renders.
        rules: all,
        external_rules: seq(rules.get("external"), "rules.external")?,
        had_resource_rules: rules.get("resource").is_some_and(|v| !v.is_null()),
        rules_place: if default { "rules" } else { "rules.custom" }.into(),
        external_place: "rules.external".into(),
        resource_place: "rules.resource".into(),
        url: url.filter(|u| !u.contains("{{")),
        relist_interval: map.get("metricsRelistInterval").and_then(scalar_text),
        notes,
    })
}

/// The rules the Helm chart renders for `rules.default: true`
/// (templates/configmap.yaml of prometheus-community/prometheus-adapter).
pub const HELM_DEFAULT_RULES: &str = r#"
rules:
- seriesQuery: '{__name__=~"^container_.*",container!="POD",namespace!="",pod!=""}'
  seriesFilters: []
  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
  name: {matches: '^container_(.*)_seconds_total$', as: ""}
  metricsQuery: sum(rate(<<.Series>>{<<.LabelMatchers>>,container!="POD"}[5m])) by (<<.GroupBy>>)
- seriesQuery: '{__name__=~"^container_.*",container!="POD",namespace!="",pod!=""}'
  seriesFilters: [{isNot: '^container_.*_seconds_total$'}]
  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
  name: {matches: '^container_(.*)_total$', as: ""}
  metricsQuery: sum(rate(<<.Series>>{<<.LabelMatchers>>,container!="POD"}[5m])) by (<<.GroupBy>>)
- seriesQuery: '{__name__=~"^container_.*",container!="POD",namespace!="",pod!=""}'
  seriesFilters: [{isNot: '^container_.*_total$'}]
  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
  name: {matches: '^container_(.*)$', as: ""}
  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>,container!="POD"}) by (<<.GroupBy>>)
- seriesQuery: '{namespace!="",__name__!~"^container_.*"}'
  seriesFilters: [{isNot: '.*_total$'}]
  resources: {template: <<.Resource>>}
  name: {matches: "", as: ""}
  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)
- seriesQuery: '{namespace!="",__name__!~"^container_.*"}'
  seriesFilters: [{isNot: '.*_seconds_total'}]
  resources: {template: <<.Resource>>}
  name: {matches: '^(.*)_total$', as: ""}
  metricsQuery: sum(rate(<<.Series>>{<<.LabelMatchers>>}[5m])) by (<<.GroupBy>>)
- seriesQuery: '{namespace!="",__name__!~"^container_.*"}'
  seriesFilters: []
  resources: {template: <<.Resource>>}
  name: {matches: '^(.*)_seconds_total$', as: ""}
  metricsQuery: sum(rate(<<.Series>>{<<.LabelMatchers>>}[5m])) by (<<.GroupBy>>)
"#;

/// One converted rule and what changed.
#[derive(Debug, Clone)]
struct Converted {
    rule: RuleConfig,
    notes: Vec<String>,
}

fn convert_rule(
    v: &Value,
    list: &str,
    index: usize,
    external: bool,
) -> Result<Converted, ConvertError> {
    let place = format!("{list}[{index}]");
    let map = as_map(v, &place)?;
    check_keys(
        map,
        &place,
        &[
            "seriesQuery",
            "seriesFilters",
            "resources",
            "name",
            "metricsQuery",
        ],
    )?;
    let mut rule = RuleConfig::default();
    let mut notes = Vec::new();
    rule.series_query = string(map.get("seriesQuery"), &format!("{place}.seriesQuery"))?;
    rule.metrics_query = string(map.get("metricsQuery"), &format!("{place}.metricsQuery"))?;

    for (i, f) in seq(map.get("seriesFilters"), &format!("{place}.seriesFilters"))?
        .iter()
        .enumerate()
    {
        let fplace = format!("{place}.seriesFilters[{i}]");
        let fmap = as_map(f, &fplace)?;
        check_keys(fmap, &fplace, &["is", "isNot"])?;
        // Go reads a missing field and "" alike: "not set".
        rule.series_filters.push(SeriesFilter {
            is: non_empty(string(fmap.get("is"), &format!("{fplace}.is"))?),
            is_not: non_empty(string(fmap.get("isNot"), &format!("{fplace}.isNot"))?),
        });
    }

    let mut namespaced = None;
    if let Some(r) = map.get("resources").filter(|r| !r.is_null()) {
        let rplace = format!("{place}.resources");
        let rmap = as_map(r, &rplace)?;
        check_keys(rmap, &rplace, &["template", "overrides", "namespaced"])?;
        rule.resources.template =
            non_empty(string(rmap.get("template"), &format!("{rplace}.template"))?);
        if let Some(o) = rmap.get("overrides").filter(|o| !o.is_null()) {
            let oplace = format!("{rplace}.overrides");
            for (label, gr) in as_map(o, &oplace)? {
                let label = scalar_text(label).ok_or_else(|| {
                    ConvertError(format!("{oplace}: a label name must be a string"))
                })?;
                let gplace = format!("{oplace}.{label}");
                let gmap = as_map(gr, &gplace)?;
                check_keys(gmap, &gplace, &["group", "resource"])?;
                rule.resources.overrides.insert(
                    label,
                    GroupResourceConfig {
                        group: string(gmap.get("group"), &format!("{gplace}.group"))?,
                        resource: string(gmap.get("resource"), &format!("{gplace}.resource"))?,
                    },
                );
            }
        }
        if let Some(n) = rmap.get("namespaced").filter(|n| !n.is_null()) {
            namespaced = Some(boolean(n, &format!("{rplace}.namespaced"))?);
        }
    }

    if let Some(n) = map.get("name").filter(|n| !n.is_null()) {
        let nplace = format!("{place}.name");
        let nmap = as_map(n, &nplace)?;
        check_keys(nmap, &nplace, &["matches", "as"])?;
        rule.name.matches = non_empty(string(nmap.get("matches"), &format!("{nplace}.matches"))?);
        rule.name.as_ = non_empty(string(nmap.get("as"), &format!("{nplace}.as"))?);
    }

    match (external, namespaced) {
        (false, Some(v)) => notes.push(format!(
            "resources.namespaced: {v} dropped: prometheus-adapter ignores it on custom-metrics rules \
             (a custom metric's scope comes from its resource)"
        )),
        (true, Some(false)) => rule.namespaced = Some(false),
        _ => {}
    }
    if external && namespaced != Some(false) && !maps_namespaces(&rule) {
        rule.resources.overrides.insert(
            "namespace".into(),
            GroupResourceConfig {
                group: String::new(),
                resource: "namespace".into(),
            },
        );
        notes.push(
            "added resources.overrides.namespace = { resource = \"namespace\" }: the rule is namespaced \
             (the default) but maps no label to namespaces, so prometheus-adapter fails every request \
             for it (\"unable to convert resource namespaces into label\"); its docs say the request's \
             namespace becomes a `namespace` matcher, which is what this does. If the series have no \
             namespace label, set namespaced = false instead"
                .into(),
        );
    }
    for (field, text) in [
        ("metricsQuery", &rule.metrics_query),
        ("seriesQuery", &rule.series_query),
    ] {
        if text.contains("{{") {
            notes.push(format!(
                "{field} contains `{{{{ }}}}`, which prometheus-adapter (and this bridge) sends to \
                 Prometheus as literal text; kept as is. If it is Helm templating that was never \
                 rendered, render the chart first (helm template) and convert the result"
            ));
        }
    }
    Ok(Converted { rule, notes })
}

/// The resources the chart's default `rbac.resourceRules` grant list/watch on (a unit test
/// keeps this equal to deploy/chart's values.yaml).
const CHART_RBAC: &[(&str, &[&str])] = &[
    ("", &["namespaces", "pods", "services", "nodes"]),
    (
        "apps",
        &["deployments", "statefulsets", "daemonsets", "replicasets"],
    ),
    ("batch", &["jobs"]),
    ("networking.k8s.io", &["ingresses"]),
];

fn chart_grants(group: &str, resource: &str) -> bool {
    CHART_RBAC
        .iter()
        .any(|(g, rs)| *g == group && rs.contains(&resource))
}

/// A warning when the rule can tie metrics to resources the chart's RBAC does not let the
/// bridge list and watch: their metrics would be answered with a 503 until it is granted.
fn rbac_note(rule: &RuleConfig) -> Option<String> {
    const HOW: &str = "grant list and watch on them with the chart's rbac.resourceRules (or the \
                       bridge's ClusterRole); `kube-metrics-bridge doctor --config` lists the \
                       resources discovery ties metrics to and checks each";
    if let Some(template) = &rule.resources.template {
        return Some(format!(
            "resources.template {template:?} turns every label of the matching series that names \
             a resource into one (kubelet and kube-state-metrics series carry labels such as \
             persistentvolumeclaim, secret, configmap, cronjob); the chart's RBAC grants only {}; \
             metrics of other resources are answered with a 503 until you {HOW}",
            chart_rbac_list()
        ));
    }
    let builtin = StaticMapper::builtin();
    let mut missing: Vec<String> = rule
        .resources
        .overrides
        .values()
        .filter_map(|o| {
            let name = if o.group.is_empty() {
                o.resource.clone()
            } else {
                format!("{}.{}", o.resource, o.group)
            };
            let gr = builtin
                .lookup(&name)
                .map(|info| info.group_resource)
                .unwrap_or_else(|| GroupResource::new(&o.group, &o.resource));
            (gr != GroupResource::namespaces() && !chart_grants(&gr.group, &gr.resource))
                .then(|| gr.to_string())
        })
        .collect();
    missing.sort();
    missing.dedup();
    (!missing.is_empty()).then(|| {
        format!(
            "resources.overrides name {} that the chart's RBAC does not cover; their metrics are \
             answered with a 503 until you {HOW}",
            missing.join(", ")
        )
    })
}

fn chart_rbac_list() -> String {
    CHART_RBAC
        .iter()
        .flat_map(|(g, rs)| {
            rs.iter().map(move |r| {
                if g.is_empty() {
                    r.to_string()
                } else {
                    format!("{r}.{g}")
                }
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Does the rule map a label to namespaces (an override, or a template, which always can)?
fn maps_namespaces(rule: &RuleConfig) -> bool {
    rule.resources.template.is_some()
        || rule.resources.overrides.values().any(|gr| {
            gr.group.is_empty() && matches!(gr.resource.as_str(), "namespace" | "namespaces" | "ns")
        })
}

// ---- YAML helpers ----------------------------------------------------------------------

fn as_map<'a>(v: &'a Value, place: &str) -> Result<&'a Mapping, ConvertError> {
    match v {
        Value::Mapping(m) => Ok(m),
        other => err(format!(
            "{place}: expected a mapping, found {}",
            kind(other)
        )),
    }
}

fn check_keys(map: &Mapping, place: &str, known: &[&str]) -> Result<(), ConvertError> {
    for key in map.keys() {
        let name = scalar_text(key).unwrap_or_else(|| format!("{key:?}"));
        if !known.contains(&name.as_str()) {
            return err(format!(
                "{place}: unknown key `{name}` (prometheus-adapter knows: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

fn seq(v: Option<&Value>, place: &str) -> Result<Vec<Value>, ConvertError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(s)) => Ok(s.clone()),
        Some(other) => err(format!("{place}: expected a list, found {}", kind(other))),
    }
}

/// A string field; like Go's yaml.v2, numbers and booleans are read as their text.
fn string(v: Option<&Value>, place: &str) -> Result<String, ConvertError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(v) => scalar_text(v)
            .ok_or_else(|| ConvertError(format!("{place}: expected a string, found {}", kind(v)))),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A boolean, accepting YAML 1.1's spellings (`yes`, `on`, ...) as Go's yaml.v2 does.
fn boolean(v: &Value, place: &str) -> Result<bool, ConvertError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
                Ok(true)
            }
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
            | "FALSE" => Ok(false),
            _ => err(format!("{place}: expected true or false, found {s:?}")),
        },
        other => err(format!(
            "{place}: expected true or false, found {}",
            kind(other)
        )),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

// ---- TOML output -----------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn render(
    source: &str,
    kind: &str,
    url: &str,
    url_is_placeholder: bool,
    relist: Option<&str>,
    had_resource_rules: bool,
    custom: &[Converted],
    external: &[Converted],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Converted by `kube-metrics-bridge convert` from {source}"
    );
    let _ = writeln!(out, "# ({kind}).");
    out.push_str(
        "# Same meaning as prometheus-adapter's rules; comments below say where something changed.\n\
         # Validate with `kube-metrics-bridge check FILE`.\n",
    );
    if had_resource_rules {
        out.push_str(
            "#\n# resourceRules (metrics.k8s.io) were NOT converted: this bridge serves only the custom\n\
             # and external metrics APIs. Keep metrics-server (or prometheus-adapter with only its\n\
             # resourceRules) for `kubectl top` and CPU/memory autoscaling.\n",
        );
    }
    out.push_str("\n[prometheus]\n");
    if url_is_placeholder {
        out.push_str(
            "# prometheus-adapter takes the Prometheus URL on its command line (--prometheus-url);\n\
             # set it here (or pass --prometheus-url / KMB_PROMETHEUS_URL to `serve`).\n\
             # PLACEHOLDER: this address does not exist.\n",
        );
    } else {
        out.push_str("# prometheus-adapter's --prometheus-url.\n");
    }
    let _ = writeln!(out, "url = {}", quote(url));
    out.push_str(
        "# prometheus-adapter's other Prometheus flags map to: --prometheus-ca-file -> ca_file,\n\
         # --prometheus-client-tls-cert-file/-key-file -> client_cert_file/client_key_file,\n\
         # --prometheus-token-file -> bearer_token_file, --prometheus-header -> headers,\n\
         # --prometheus-verb -> method. --prometheus-auth-config (a kubeconfig) has no equivalent.\n",
    );
    out.push_str("\n[cache]\n");
    match relist {
        Some(d) => {
            out.push_str("# the chart's metricsRelistInterval (prometheus-adapter's --metrics-relist-interval)\n");
            let _ = writeln!(out, "discovery_interval = {}", quote(d));
        }
        None => out.push_str(
            "# prometheus-adapter's --metrics-relist-interval (default there: 10m) and --metrics-max-age\n\
             # (default: the relist interval); here they default to 1m.\n\
             # discovery_interval = \"10m\"\n\
             # series_max_age = \"10m\"\n",
        ),
    }
    for (table, rules) in [("rules", custom), ("external_rules", external)] {
        for (i, c) in rules.iter().enumerate() {
            out.push('\n');
            for n in &c.notes {
                for (k, line) in wrap(n, 90).iter().enumerate() {
                    let lead = if k == 0 { "# NOTE: " } else { "#       " };
                    let _ = writeln!(out, "{lead}{line}");
                }
            }
            let _ = writeln!(out, "[[{table}]] # {table}[{i}]");
            render_rule(&mut out, &c.rule);
        }
    }
    out
}

fn render_rule(out: &mut String, r: &RuleConfig) {
    let _ = writeln!(out, "series_query = {}", quote(&r.series_query));
    if !r.series_filters.is_empty() {
        let items: Vec<String> = r
            .series_filters
            .iter()
            .map(|f| {
                let mut parts = Vec::new();
                if let Some(is) = &f.is {
                    parts.push(format!("is = {}", quote(is)));
                }
                if let Some(not) = &f.is_not {
                    parts.push(format!("is_not = {}", quote(not)));
                }
                format!("{{ {} }}", parts.join(", "))
            })
            .collect();
        let _ = writeln!(out, "series_filters = [{}]", items.join(", "));
    }
    if let Some(t) = &r.resources.template {
        let _ = writeln!(out, "resources.template = {}", quote(t));
    }
    if !r.resources.overrides.is_empty() {
        let items: Vec<String> = r
            .resources
            .overrides
            .iter()
            .map(|(label, gr)| {
                let value = if gr.group.is_empty() {
                    format!("{{ resource = {} }}", quote(&gr.resource))
                } else {
                    format!(
                        "{{ group = {}, resource = {} }}",
                        quote(&gr.group),
                        quote(&gr.resource)
                    )
                };
                format!("{} = {value}", key(label))
            })
            .collect();
        let _ = writeln!(out, "resources.overrides = {{ {} }}", items.join(", "));
    }
    let mut name = Vec::new();
    if let Some(m) = &r.name.matches {
        name.push(format!("matches = {}", quote(m)));
    }
    if let Some(a) = &r.name.as_ {
        name.push(format!("as = {}", quote(a)));
    }
    if !name.is_empty() {
        let _ = writeln!(out, "name = {{ {} }}", name.join(", "));
    }
    let _ = writeln!(out, "metrics_query = {}", quote(&r.metrics_query));
    if let Some(n) = r.namespaced {
        let _ = writeln!(out, "namespaced = {n}");
    }
}

/// A TOML bare key if possible, else a quoted one.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        basic_string(k)
    }
}

/// A TOML string for `s`: a literal string ('...') when it can be one, since PromQL is full
/// of `"` and regexes of `\`; a multi-line literal for multi-line queries; else a basic string.
fn quote(s: &str) -> String {
    let plain = |c: char| c == '\t' || !c.is_control();
    if !s.contains('\'') && s.chars().all(plain) {
        return format!("'{s}'");
    }
    if !s.contains("'''")
        && !s.ends_with('\'')
        && s.chars().all(|c| c == '\n' || plain(c))
        && !s.contains('\r')
    {
        // A newline right after the opening delimiter is trimmed by TOML, so add one.
        return format!("'''\n{s}'''");
    }
    basic_string(s)
}

fn basic_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod equivalence_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Format as _;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn conv(yaml: &str) -> Conversion {
        convert(yaml, "test.yaml", None).expect("converts")
    }

    /// The TOML we print reads back as exactly the config we built.
    fn roundtrip(c: &Conversion) {
        let parsed = crate::config::parse(&c.toml, Path::new("out.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(parsed, c.config, "{}", c.toml);
    }

    #[test]
    fn warns_when_the_chart_rbac_cannot_cover_a_rule() {
        let c = conv(
            "rules:\n- seriesQuery: 'x{namespace!=\"\"}'\n  resources: {template: '<<.Resource>>'}\n  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n\
             - seriesQuery: 'y{namespace!=\"\",persistentvolumeclaim!=\"\"}'\n  resources: {overrides: {namespace: {resource: namespace}, persistentvolumeclaim: {resource: persistentvolumeclaim}, cronjob: {group: batch, resource: cronjob}}}\n  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n\
             - seriesQuery: 'z{namespace!=\"\",pod!=\"\"}'\n  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}, deployment: {group: apps, resource: deployment}}}\n  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n",
        );
        let notes = c.notes.join("\n");
        assert!(
            notes.contains("rules[0]: resources.template \"<<.Resource>>\"")
                && notes.contains("rbac.resourceRules"),
            "{notes}"
        );
        assert!(
            notes.contains("rules[1]: resources.overrides name cronjobs.batch, persistentvolumeclaims that the chart's RBAC does not cover"),
            "{notes}"
        );
        assert!(
            !notes.contains("rules[2]"),
            "pods and deployments are granted: {notes}"
        );
    }

    /// CHART_RBAC is what the chart's values.yaml grants by default.
    #[test]
    fn chart_rbac_matches_the_chart() {
        let values = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/chart/kube-metrics-bridge/values.yaml"),
        )
        .expect("values.yaml");
        let values: Value = yaml_serde::from_str(&values).expect("values.yaml parses");
        let mut granted = Vec::new();
        for rule in values["rbac"]["resourceRules"]
            .as_sequence()
            .expect("resourceRules")
        {
            for group in rule["apiGroups"].as_sequence().expect("apiGroups") {
                for resource in rule["resources"].as_sequence().expect("resources") {
                    granted.push((
                        group.as_str().expect("group").to_string(),
                        resource.as_str().expect("resource").to_string(),
                    ));
                }
            }
        }
        let ours: Vec<(String, String)> = CHART_RBAC
            .iter()
            .flat_map(|(g, rs)| rs.iter().map(move |r| (g.to_string(), r.to_string())))
            .collect();
        assert_eq!(ours, granted);
    }

    #[test]
    fn maps_every_field() {
        let c = conv(
            r#"
rules:
- seriesQuery: 'http_requests_total{kubernetes_namespace!="",kubernetes_pod_name!=""}'
  seriesFilters: [{isNot: "^.*_bucket$"}, {is: "^http_.*"}]
  resources:
    template: "kube_<<.Group>>_<<.Resource>>"
    overrides:
      kubernetes_namespace: {resource: "namespace"}
      kubernetes_pod_name: {resource: "pod"}
      microservice: {group: "apps", resource: "deployment"}
  name: {matches: "^(.*)_total", as: "${1}_per_second"}
  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)'
externalRules:
- seriesQuery: '{__name__="queue_depth",topic!=""}'
  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (name)
  resources: {namespaced: false}
"#,
        );
        roundtrip(&c);
        let r = &c.config.rules[0];
        assert_eq!(r.series_filters.len(), 2);
        assert_eq!(r.series_filters[0].is_not.as_deref(), Some("^.*_bucket$"));
        assert_eq!(r.series_filters[1].is.as_deref(), Some("^http_.*"));
        assert_eq!(
            r.resources.template.as_deref(),
            Some("kube_<<.Group>>_<<.Resource>>")
        );
        assert_eq!(r.resources.overrides["microservice"].group, "apps");
        assert_eq!(r.name.as_.as_deref(), Some("${1}_per_second"));
        let e = &c.config.external_rules[0];
        assert_eq!(e.namespaced, Some(false));
        assert_eq!(e.resources.namespaced, None);
        // Only the RBAC warning for its template: nothing else needed a note.
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        assert!(c.notes[0].contains("rbac.resourceRules"), "{:?}", c.notes);
        assert!(c.url_is_placeholder);
        assert!(c.toml.contains("--prometheus-url"), "{}", c.toml);
        crate::rules::RuleSet::compile(&c.config).expect("compiles");
    }

    #[test]
    fn empty_strings_mean_unset_as_in_go() {
        let c = conv(
            "rules:\n- seriesQuery: 'x{namespace!=\"\"}'\n  seriesFilters: []\n  resources: {template: '<<.Resource>>'}\n  name: {matches: \"\", as: \"\"}\n  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n",
        );
        roundtrip(&c);
        assert_eq!(c.config.rules[0].name.matches, None);
        assert_eq!(c.config.rules[0].name.as_, None);
        assert!(c.config.rules[0].series_filters.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_rule() {
        let e = convert(
            "rules:\n- seriesQuery: x\n  metricsQuery: y\nexternalRules:\n- seriesQuery: q\n  metricQuery: y\n",
            "t",
            None,
        )
        .expect_err("typo");
        assert!(e.0.contains("externalRules[0]"), "{e}");
        assert!(e.0.contains("`metricQuery`"), "{e}");
        let e = convert(
            "rules:\n- seriesQuery: x\n  resources: {overides: {}}\n",
            "t",
            None,
        )
        .expect_err("typo");
        assert!(
            e.0.contains("rules[0].resources: unknown key `overides`"),
            "{e}"
        );
        let e = convert("rule: []\n", "t", None).expect_err("typo");
        assert!(e.0.contains("the top level: unknown key `rule`"), "{e}");
    }

    #[test]
    fn resource_rules_are_reported_not_converted() {
        let c = conv(
            "rules:\n- seriesQuery: 'x{namespace!=\"\",pod!=\"\"}'\n  resources: {template: '<<.Resource>>'}\n  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\nresourceRules:\n  cpu: {containerQuery: x, nodeQuery: y}\n  window: 3m\n",
        );
        roundtrip(&c);
        assert!(c.had_resource_rules);
        assert_eq!(c.config.rules.len(), 1);
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("resourceRules") && n.contains("metrics-server")),
            "{:?}",
            c.notes
        );
        assert!(c
            .toml
            .contains("resourceRules (metrics.k8s.io) were NOT converted"));
    }

    #[test]
    fn custom_namespaced_is_dropped_with_a_note() {
        let c = conv(
            "rules:\n- seriesQuery: 'x{namespace!=\"\",pod!=\"\"}'\n  resources: {template: '<<.Resource>>', namespaced: false}\n  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n",
        );
        roundtrip(&c);
        assert_eq!(c.config.rules[0].namespaced, None);
        assert!(c.notes[0].starts_with("rules[0]: resources.namespaced: false dropped"));
        assert!(
            c.toml
                .contains("# NOTE: resources.namespaced: false dropped"),
            "{}",
            c.toml
        );
        crate::rules::RuleSet::compile(&c.config).expect("compiles");
    }

    #[test]
    fn namespaced_external_rule_without_namespace_label_gets_one() {
        let c = conv(
            "externalRules:\n- seriesQuery: '{__name__=\"queue_consumer_lag\",name!=\"\"}'\n  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (name)\n",
        );
        roundtrip(&c);
        assert_eq!(
            c.config.external_rules[0].resources.overrides["namespace"].resource,
            "namespace"
        );
        assert!(c.notes[0].contains("added resources.overrides.namespace"));
        crate::rules::RuleSet::compile(&c.config).expect("compiles");
    }

    #[test]
    fn curly_braces_are_kept_and_warned_about() {
        let c = conv(
            "rules:\n- seriesQuery: 'x{namespace!=\"\",pod!=\"\"}'\n  resources: {template: '<<.Resource>>'}\n  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[{{ .Values.window }}])) by (<<.GroupBy>>)'\n",
        );
        roundtrip(&c);
        assert!(c.config.rules[0]
            .metrics_query
            .contains("[{{ .Values.window }}]"));
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("metricsQuery contains `{{ }}`")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn multi_line_and_quoted_queries_survive() {
        let c = conv(
            "externalRules:\n- seriesQuery: 'q{namespace!=\"\"}'\n  resources: {overrides: {namespace: {resource: namespace}}}\n  metricsQuery: |\n    sum by (name) (\n      label_replace(<<.Series>>{<<.LabelMatchers>>}, 'x', '$1', \"y\", '(.*)')\n    )\n",
        );
        roundtrip(&c);
        assert!(c.config.external_rules[0]
            .metrics_query
            .starts_with("sum by (name) (\n"));
        crate::rules::RuleSet::compile(&c.config).expect("compiles");
    }

    #[test]
    fn quoting() {
        for s in [
            "a",
            "it's",
            "a\nb",
            "'''",
            "x'",
            "tab\there",
            "\u{1}",
            r#"a\"b"#,
            "a\r\nb",
        ] {
            let doc = format!("v = {}\n", quote(s));
            let parsed: BTreeMap<String, String> =
                figment::Figment::from(figment::providers::Toml::string(&doc))
                    .extract()
                    .unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(parsed["v"], s, "{doc}");
        }
    }

    #[test]
    fn config_map_is_unwrapped() {
        let c = conv(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: adapter-config}\ndata:\n  config.yaml: |\n    externalRules:\n    - seriesQuery: 'q{namespace!=\"\"}'\n      resources: {overrides: {namespace: {resource: namespace}}}\n      metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (name)\n",
        );
        roundtrip(&c);
        assert_eq!(c.config.external_rules.len(), 1);
        assert!(c.toml.contains("ConfigMap data \"config.yaml\""));
    }

    #[test]
    fn helm_values_default_true_expands_chart_rules() {
        let c = conv(
            "image: {tag: v0.12.0}\nprometheus: {url: http://prometheus.monitoring.svc, port: 9090, path: \"\"}\nmetricsRelistInterval: 1m\nrules:\n  default: true\n  custom:\n  - seriesQuery: 'x{namespace!=\"\",pod!=\"\"}'\n    resources: {template: '<<.Resource>>'}\n    metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n  resource:\n    window: 3m\n",
        );
        roundtrip(&c);
        assert_eq!(c.config.rules.len(), 7);
        assert_eq!(
            c.config.prometheus.url,
            "http://prometheus.monitoring.svc:9090"
        );
        assert!(!c.url_is_placeholder);
        assert!(c.had_resource_rules);
        assert!(
            c.notes.iter().any(|n| n.contains("rules.resource")),
            "{:?}",
            c.notes
        );
        crate::rules::RuleSet::compile(&c.config).expect("compiles");

        let off = conv("rules:\n  default: false\n  external:\n  - seriesQuery: 'q{namespace!=\"\"}'\n    resources: {overrides: {namespace: {resource: namespace}}}\n    metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>})\n");
        assert_eq!(off.config.rules.len(), 0);
        assert_eq!(off.config.external_rules.len(), 1);
        let e = convert("rules:\n  existing: my-rules\n", "t", None).expect_err("existing");
        assert!(e.0.contains("my-rules"), "{e}");
    }

    #[test]
    fn url_flag_wins() {
        let c = convert("rules: []\n", "t", Some("http://p:9090")).expect("converts");
        assert_eq!(c.config.prometheus.url, "http://p:9090");
        assert!(!c.toml.contains("PLACEHOLDER"));
    }

    #[test]
    fn yaml_1_1_booleans() {
        let c = conv("externalRules:\n- seriesQuery: q\n  metricsQuery: sum(<<.Series>>)\n  resources: {namespaced: no}\n");
        assert_eq!(c.config.external_rules[0].namespaced, Some(false));
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(convert("", "t", None).is_err());
        assert!(convert("rules: {a: 1}\n", "t", None).is_err());
        assert!(convert("rules: 3\n", "t", None).is_err());
        assert!(convert("rules:\n- seriesQuery: [1]\n", "t", None).is_err());
        assert!(convert(": :\n  - [", "t", None).is_err());
    }
}
