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
//! `resourceRules` (the resource metrics API, `metrics.k8s.io`) become `[resource_rules]`; the
//! chart's `rules.resource` does too (`{}`, its default, means none), while `rules.default`
//! only ever adds the six custom rules.

use std::fmt::Write as _;

use yaml_serde::{Mapping, Value};

use crate::config::{
    ConfigFile, GroupResourceConfig, MissingContainers, ResourceMapping, ResourceRuleConfig,
    ResourceRulesConfig, RuleConfig, SeriesFilter,
};
use crate::kube::resources::{GroupResource, ResourceMapper, StaticMapper};

/// The `[prometheus] url` written when the input does not say (prometheus-adapter takes it
/// on its command line). `.invalid` never resolves, so a forgotten placeholder fails loudly.
pub const PLACEHOLDER_URL: &str = "http://prometheus.invalid:9090";

/// What `convert` produced.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The rules file text, header and per-rule comments included.
    pub toml: String,
    /// Only the rules tables of `toml` (`[[rules]]`, `[[external_rules]]`,
    /// `[resource_rules]`, with their comments): what a Helm chart's `rules` value holds,
    /// the chart writing `[prometheus]` and `[cache]` itself.
    pub rules_toml: String,
    /// The same content as a config value (what `toml` parses back to).
    pub config: ConfigFile,
    /// Things the user must know (also written as comments in `toml` where they concern a rule).
    pub notes: Vec<String>,
    /// Whether the URL is [`PLACEHOLDER_URL`].
    pub url_is_placeholder: bool,
    /// Custom rules that can tie metrics to resources the chart's default RBAC
    /// (`rbac.resourceRules`) does not grant; each one's note is also in `notes`.
    pub rbac_gaps: Vec<RbacGap>,
}

/// A rule whose resources the chart's default RBAC may not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacGap {
    /// The note, as in [`Conversion::notes`] (names the rule).
    pub note: String,
    /// The resources its `resources.overrides` name that are not granted; empty for a
    /// `resources.template`, which can name any resource.
    pub missing: Vec<GroupResource>,
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
    convert_input(read_input(yaml)?, source, prometheus_url)
}

/// The rules of a prometheus-adapter Helm chart's values (already parsed; `rules` must be a
/// mapping), as [`convert`] converts them: what `convert --helm-values` puts into this
/// chart's `rules` value ([`Conversion::rules_toml`]).
pub fn convert_helm_rules(
    values: &Mapping,
    source: &str,
    prometheus_url: Option<&str>,
) -> Result<Conversion, ConvertError> {
    if !matches!(values.get("rules"), Some(Value::Mapping(_))) {
        return err("rules: expected a mapping (default, custom, external, resource, existing)");
    }
    convert_input(helm_values(values)?, source, prometheus_url)
}

fn convert_input(
    input: Input,
    source: &str,
    prometheus_url: Option<&str>,
) -> Result<Conversion, ConvertError> {
    let mut notes = input.notes;
    let mut custom = Vec::new();
    let mut external = Vec::new();
    for (i, v) in input.rules.iter().enumerate() {
        custom.push(convert_rule(v, &input.rules_place, i, false)?);
    }
    for (i, v) in input.external_rules.iter().enumerate() {
        external.push(convert_rule(v, &input.external_place, i, true)?);
    }
    let resources = match &input.resource_rules {
        Some(v) => Some(convert_resource_rules(v, &input.resource_place)?),
        None => None,
    };
    if let Some(r) = &resources {
        notes.extend(
            r.notes
                .iter()
                .map(|n| format!("{}: {n}", input.resource_place)),
        );
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
    let mut rbac_gaps = Vec::new();
    for (i, rule) in custom.iter().enumerate() {
        if let Some((note, missing)) = rbac_note(&rule.rule) {
            let note = format!("{}[{i}]: {note}", input.rules_place);
            notes.push(note.clone());
            rbac_gaps.push(RbacGap { note, missing });
        }
    }
    let (url, url_is_placeholder) = match prometheus_url.map(str::to_string).or(input.url) {
        Some(u) => (u, false),
        None => (PLACEHOLDER_URL.to_string(), true),
    };
    let mut config = ConfigFile::default();
    config.prometheus = Some(crate::config::BackendConfig {
        url: url.clone(),
        ..Default::default()
    });
    config.rules = custom.iter().map(|r| r.rule.clone()).collect();
    config.external_rules = external.iter().map(|r| r.rule.clone()).collect();
    config.resource_rules = resources.as_ref().map(|r| r.config.clone());
    // Written to the file only when it reads back as what `config` holds: a value the
    // duration parser refuses would make the whole converted file fail to load.
    let mut relist = None;
    if let Some(d) = &input.relist_interval {
        match humantime::parse_duration(d) {
            Ok(parsed) => {
                config.cache.discovery_interval = parsed;
                relist = Some(d.as_str());
            }
            Err(e) => notes.push(format!(
                "metricsRelistInterval {d:?} is not a duration this bridge reads ({e}); \
                 [cache] discovery_interval is left at its default ({})",
                humantime::format_duration(config.cache.discovery_interval)
            )),
        }
    }
    let rules_toml = render_rules(&custom, &external, resources.as_ref());
    let toml = render(
        source,
        &input.kind,
        &url,
        url_is_placeholder,
        relist,
        &rules_toml,
    );
    Ok(Conversion {
        toml,
        rules_toml,
        rbac_gaps,
        config,
        notes,
        url_is_placeholder,
    })
}

/// The input, whatever its wrapping, reduced to prometheus-adapter's three lists.
struct Input {
    kind: String,
    rules: Vec<Value>,
    external_rules: Vec<Value>,
    /// `resourceRules` (or the chart's `rules.resource`), when there are any.
    resource_rules: Option<Value>,
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
        resource_rules: map.get("resourceRules").filter(|v| !v.is_null()).cloned(),
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
        resource_rules: helm_resource_rules(rules.get("resource"))?,
        rules_place: if default { "rules" } else { "rules.custom" }.into(),
        external_place: "rules.external".into(),
        resource_place: "rules.resource".into(),
        url: url.filter(|u| !u.contains("{{")),
        relist_interval: map.get("metricsRelistInterval").and_then(scalar_text),
        notes,
    })
}

/// The chart's `rules.resource`: its templates/configmap.yaml writes it out as
/// `resourceRules` only when it is truthy for Go templates, so a missing, null or empty
/// mapping (`resource: {}`, the chart's default) means none.
fn helm_resource_rules(v: Option<&Value>) -> Result<Option<Value>, ConvertError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Mapping(m)) if m.is_empty() => Ok(None),
        Some(v @ Value::Mapping(_)) => Ok(Some(v.clone())),
        Some(other) => err(format!(
            "rules.resource: expected a mapping (prometheus-adapter's resourceRules), found {}",
            kind(other)
        )),
    }
}

/// `resourceRules` converted, and what changed.
#[derive(Debug, Clone)]
struct ConvertedResources {
    config: ResourceRulesConfig,
    notes: Vec<String>,
}

/// prometheus-adapter's `resourceRules`: `{cpu, memory, window}`, each rule
/// `{containerQuery, nodeQuery, resources, containerLabel}`.
fn convert_resource_rules(v: &Value, place: &str) -> Result<ConvertedResources, ConvertError> {
    let map = as_map(v, place)?;
    check_keys(map, place, &["cpu", "memory", "window"])?;
    let mut notes = Vec::new();
    let mut config = ResourceRulesConfig {
        // prometheus-adapter fills in 0 for the other resource of a container that has only
        // one; that is what `zero` does.
        missing_containers: MissingContainers::Zero,
        ..ResourceRulesConfig::default()
    };
    notes.push(
        "missing_containers = \"zero\" keeps prometheus-adapter's answer for a container with \
         only one of cpu and memory (the other reads 0); \"drop_pod\" leaves such pods out as \
         metrics-server does, which the HPA then counts conservatively"
            .into(),
    );
    let wplace = format!("{place}.window");
    match map.get("window").filter(|w| !w.is_null()) {
        None => notes.push(
            "window is not set, so prometheus-adapter reports a window of 0s; here it defaults to \
             the range of the CPU container query's rate() (`check` says if it cannot), or set \
             [resource_rules] window"
                .into(),
        ),
        Some(w) => {
            let text = string(Some(w), &wplace)?;
            let d = prometheus_duration(&text).ok_or_else(|| {
                ConvertError(format!(
                    "{wplace}: {text:?} is not a Prometheus duration (like 5m or 1h30m)"
                ))
            })?;
            // The file must read back as this config (the convert fuzz target's invariant).
            let written = humantime::format_duration(d).to_string();
            if humantime::parse_duration(&written).ok() != Some(d) {
                return err(format!("{wplace}: {text:?} is too long to be a window"));
            }
            if d.is_zero() {
                notes.push(format!(
                    "window {text:?} is zero, which prometheus-adapter reports as is; here the \
                     window defaults to the range of the CPU container query's rate() instead"
                ));
            } else {
                config.window = Some(d);
            }
        }
    }
    for (key, slot) in [("cpu", &mut config.cpu), ("memory", &mut config.memory)] {
        let rplace = format!("{place}.{key}");
        let Some(r) = map.get(key).filter(|r| !r.is_null()) else {
            notes.push(format!(
                "{key} is not set; prometheus-adapter then fails every request, and `check` \
                 reports resource_rules.{key} as required"
            ));
            continue;
        };
        let rmap = as_map(r, &rplace)?;
        check_keys(
            rmap,
            &rplace,
            &["containerQuery", "nodeQuery", "resources", "containerLabel"],
        )?;
        let (resources, namespaced) =
            resource_mapping(rmap.get("resources"), &format!("{rplace}.resources"))?;
        if let Some(n) = namespaced {
            notes.push(format!(
                "{key}.resources.namespaced: {n} dropped: prometheus-adapter ignores it in \
                 resourceRules"
            ));
        }
        let container_label = string(
            rmap.get("containerLabel"),
            &format!("{rplace}.containerLabel"),
        )?;
        if container_label.is_empty() {
            notes.push(format!(
                "{key}.containerLabel is not set: prometheus-adapter then names every container \
                 \"\"; set container_label (\"container\" for cAdvisor series), which `check` \
                 requires"
            ));
        }
        *slot = Some(ResourceRuleConfig {
            container_query: string(
                rmap.get("containerQuery"),
                &format!("{rplace}.containerQuery"),
            )?,
            node_query: string(rmap.get("nodeQuery"), &format!("{rplace}.nodeQuery"))?,
            resources,
            container_label,
        });
    }
    // What `check` will warn about (a window that disagrees with a query's range, most often
    // prometheus-adapter's own 5m window over irate(...[4m])) is said here too.
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    crate::rules::resource_metrics::ResourceRules::compile(
        &config,
        crate::rules::backends::DEFAULT_NAME.into(),
        &mut problems,
        &mut warnings,
    );
    for w in warnings {
        notes.push(format!("kept as is, but `check` warns: {w}"));
    }
    Ok(ConvertedResources { config, notes })
}

/// A Prometheus duration (`model.ParseDuration`): units y (365d), w, d, h, m, s, ms, each at
/// most once and in that order, whole numbers; or `0`.
pub fn prometheus_duration(text: &str) -> Option<std::time::Duration> {
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = text;
    let mut millis: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (number, tail) = rest.split_at(digits);
        let number: u64 = number.parse().ok()?;
        // "ms" before "m", since "m" is a prefix of it.
        let unit = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| tail.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        let (index, (name, size)) = unit;
        millis = millis.checked_add(number.checked_mul(*size)?)?;
        next_unit = index + 1;
        rest = &tail[name.len()..];
    }
    (!text.is_empty()).then(|| std::time::Duration::from_millis(millis))
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

    let (resources, namespaced) =
        resource_mapping(map.get("resources"), &format!("{place}.resources"))?;
    rule.resources = resources;

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

/// `resources: {template, overrides, namespaced}`; `namespaced` comes back on its own since
/// its meaning depends on the kind of rule.
fn resource_mapping(
    v: Option<&Value>,
    rplace: &str,
) -> Result<(ResourceMapping, Option<bool>), ConvertError> {
    let mut mapping = ResourceMapping::default();
    let mut namespaced = None;
    let Some(r) = v.filter(|r| !r.is_null()) else {
        return Ok((mapping, namespaced));
    };
    let rmap = as_map(r, rplace)?;
    check_keys(rmap, rplace, &["template", "overrides", "namespaced"])?;
    mapping.template = non_empty(string(rmap.get("template"), &format!("{rplace}.template"))?);
    if let Some(o) = rmap.get("overrides").filter(|o| !o.is_null()) {
        let oplace = format!("{rplace}.overrides");
        for (label, gr) in as_map(o, &oplace)? {
            let label = scalar_text(label)
                .ok_or_else(|| ConvertError(format!("{oplace}: a label name must be a string")))?;
            let gplace = format!("{oplace}.{label}");
            let gmap = as_map(gr, &gplace)?;
            check_keys(gmap, &gplace, &["group", "resource"])?;
            mapping.overrides.insert(
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
    Ok((mapping, namespaced))
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
fn rbac_note(rule: &RuleConfig) -> Option<(String, Vec<GroupResource>)> {
    const HOW: &str = "grant list and watch on them with the chart's rbac.resourceRules (or the \
                       bridge's ClusterRole); `kube-metrics-bridge doctor --config` lists the \
                       resources discovery ties metrics to and checks each";
    if let Some(template) = &rule.resources.template {
        let note = format!(
            "resources.template {template:?} turns every label of the matching series that names \
             a resource into one (kubelet and kube-state-metrics series carry labels such as \
             persistentvolumeclaim, secret, configmap, cronjob); the chart's RBAC grants only {}; \
             metrics of other resources are answered with a 503 until you {HOW}",
            chart_rbac_list()
        );
        return Some((note, Vec::new()));
    }
    let builtin = StaticMapper::builtin();
    let mut missing: Vec<GroupResource> = rule
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
                .then_some(gr)
        })
        .collect();
    missing.sort_by_key(|gr| gr.to_string());
    missing.dedup();
    (!missing.is_empty()).then(|| {
        let names: Vec<String> = missing.iter().map(GroupResource::to_string).collect();
        let note = format!(
            "resources.overrides name {} that the chart's RBAC does not cover; their metrics are \
             answered with a 503 until you {HOW}",
            names.join(", ")
        );
        (note, missing)
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

fn render(
    source: &str,
    kind: &str,
    url: &str,
    url_is_placeholder: bool,
    relist: Option<&str>,
    rules_toml: &str,
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
    out.push_str(rules_toml);
    out
}

/// The rules tables, each after a blank line, with their notes as comments.
fn render_rules(
    custom: &[Converted],
    external: &[Converted],
    resources: Option<&ConvertedResources>,
) -> String {
    let mut out = String::new();
    for (table, rules) in [("rules", custom), ("external_rules", external)] {
        for (i, c) in rules.iter().enumerate() {
            out.push('\n');
            write_notes(&mut out, &c.notes);
            let _ = writeln!(out, "[[{table}]] # {table}[{i}]");
            render_rule(&mut out, &c.rule);
        }
    }
    if let Some(r) = resources {
        render_resource_rules(&mut out, r);
    }
    out
}

/// `[resource_rules]` and its two tables, the notes as comments above them.
fn render_resource_rules(out: &mut String, r: &ConvertedResources) {
    out.push_str(
        "\n# prometheus-adapter's resourceRules: the resource metrics API (metrics.k8s.io) for\n\
         # `kubectl top` and CPU/memory HPAs.\n",
    );
    write_notes(out, &r.notes);
    out.push_str("[resource_rules]\n");
    if let Some(w) = r.config.window {
        let _ = writeln!(
            out,
            "window = {}",
            quote(&humantime::format_duration(w).to_string())
        );
    }
    let policy = match r.config.missing_containers {
        MissingContainers::DropPod => "drop_pod",
        MissingContainers::Zero => "zero",
    };
    let _ = writeln!(out, "missing_containers = {}", quote(policy));
    for (key, rule) in [("cpu", &r.config.cpu), ("memory", &r.config.memory)] {
        let Some(rule) = rule else { continue };
        let _ = writeln!(out, "\n[resource_rules.{key}]");
        let _ = writeln!(out, "container_query = {}", quote(&rule.container_query));
        let _ = writeln!(out, "node_query = {}", quote(&rule.node_query));
        render_resources(out, &rule.resources);
        if !rule.container_label.is_empty() {
            let _ = writeln!(out, "container_label = {}", quote(&rule.container_label));
        }
    }
}

fn write_notes(out: &mut String, notes: &[String]) {
    for n in notes {
        for (k, line) in wrap(n, 90).iter().enumerate() {
            let lead = if k == 0 { "# NOTE: " } else { "#       " };
            let _ = writeln!(out, "{lead}{line}");
        }
    }
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
    render_resources(out, &r.resources);
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

fn render_resources(out: &mut String, r: &ResourceMapping) {
    if let Some(t) = &r.template {
        let _ = writeln!(out, "resources.template = {}", quote(t));
    }
    if !r.overrides.is_empty() {
        let items: Vec<String> = r
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

pub mod helm;

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
    fn adapter_config_resource_rules_convert() {
        let c = conv(
            r#"
rules:
- seriesQuery: 'x{namespace!="",pod!=""}'
  resources: {template: '<<.Resource>>'}
  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)
resourceRules:
  cpu:
    containerQuery: sum(rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>,container!=""}[3m])) by (<<.GroupBy>>)
    nodeQuery: sum(rate(node_cpu_usage_seconds_total{<<.LabelMatchers>>}[3m])) by (<<.GroupBy>>)
    resources:
      overrides:
        node: {resource: node}
        namespace: {resource: namespace}
        pod: {resource: pod}
    containerLabel: container
  memory:
    containerQuery: sum(container_memory_working_set_bytes{<<.LabelMatchers>>,container!=""}) by (<<.GroupBy>>)
    nodeQuery: sum(node_memory_working_set_bytes{<<.LabelMatchers>>}) by (<<.GroupBy>>)
    resources: {template: '<<.Resource>>', namespaced: false}
    containerLabel: container
  window: 3m
"#,
        );
        roundtrip(&c);
        assert_eq!(c.config.rules.len(), 1);
        let rr = c.config.resource_rules.as_ref().expect("converted");
        assert_eq!(rr.window, Some(std::time::Duration::from_secs(180)));
        assert_eq!(rr.missing_containers, MissingContainers::Zero);
        let cpu = rr.cpu.as_ref().expect("cpu");
        assert_eq!(cpu.container_label, "container");
        assert_eq!(cpu.resources.overrides["node"].resource, "node");
        assert!(cpu.node_query.contains("node_cpu_usage_seconds_total"));
        let memory = rr.memory.as_ref().expect("memory");
        assert_eq!(memory.resources.template.as_deref(), Some("<<.Resource>>"));
        assert_eq!(memory.resources.namespaced, None);
        let notes = c.notes.join("\n");
        assert!(
            notes.contains("resourceRules: memory.resources.namespaced: false dropped"),
            "{notes}"
        );
        assert!(notes.contains("missing_containers = \"zero\""), "{notes}");
        assert!(!notes.contains("NOT converted"), "{notes}");
        assert!(c.toml.contains("\n[resource_rules]\n"), "{}", c.toml);
        assert!(c.toml.contains("\n[resource_rules.memory]\n"), "{}", c.toml);
        let set = crate::rules::RuleSet::compile(&c.config).expect("compiles");
        assert!(set.resource_rules.is_some());
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    }

    #[test]
    fn prometheus_adapter_shipped_defaults_keep_their_meaning_with_a_note() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("integration/testdata/adapter/adapter-defaults.yaml"),
        )
        .expect("fixture");
        let c = conv(&text);
        roundtrip(&c);
        let rr = c.config.resource_rules.as_ref().expect("converted");
        assert_eq!(rr.window, Some(std::time::Duration::from_secs(300)));
        let cpu = rr.cpu.as_ref().expect("cpu");
        assert!(
            cpu.container_query.contains("[4m]"),
            "{}",
            cpu.container_query
        );
        assert!(c.toml.contains("window = '5m'"), "{}", c.toml);
        let notes: Vec<&String> = c
            .notes
            .iter()
            .filter(|n| n.contains("prometheus-adapter#555"))
            .collect();
        assert_eq!(notes.len(), 2, "{:#?}", c.notes);
        assert!(
            notes[0].starts_with("resourceRules: kept as is, but `check` warns: resource_rules.cpu.container_query: irate(...[4m])")
                && notes[0].contains("window is 5m"),
            "{notes:#?}"
        );
        assert!(
            c.toml.contains("# NOTE: resourceRules") || c.toml.contains("# NOTE: kept as is"),
            "{}",
            c.toml
        );
        crate::rules::RuleSet::compile(&c.config).expect("compiles");
    }

    #[test]
    fn kube_prometheus_config_map_converts() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("integration/testdata/adapter/kube-prometheus.yaml"),
        )
        .expect("fixture");
        let c = conv(&text);
        roundtrip(&c);
        let rr = c.config.resource_rules.as_ref().expect("converted");
        let memory = rr.memory.as_ref().expect("memory");
        assert_eq!(memory.resources.overrides["instance"].resource, "node");
        let cpu = rr.cpu.as_ref().expect("cpu");
        assert_eq!(cpu.resources.overrides["node"].resource, "node");
        assert!(c.toml.contains("ConfigMap data \"config.yaml\""));
        crate::rules::RuleSet::compile(&c.config).expect("compiles");
    }

    #[test]
    fn resource_rules_problems_and_notes() {
        // Unknown keys are errors with their place, as prometheus-adapter's strict loading.
        let e =
            convert("resourceRules:\n  cpu: {containerQuerry: x}\n", "t", None).expect_err("typo");
        assert!(
            e.0.contains("resourceRules.cpu: unknown key `containerQuerry`"),
            "{e}"
        );
        let e = convert("resourceRules:\n  windows: 5m\n", "t", None).expect_err("typo");
        assert!(e.0.contains("resourceRules: unknown key `windows`"), "{e}");
        // Huge windows either read back exactly or are refused, never written wrong.
        match convert("resourceRules:\n  window: 500000000y\n", "t", None) {
            Ok(c) => roundtrip(&c),
            Err(e) => assert!(e.0.contains("too long to be a window"), "{e}"),
        }
        let e = convert("resourceRules:\n  window: 5 minutes\n", "t", None).expect_err("bad");
        assert!(e.0.contains("resourceRules.window: \"5 minutes\""), "{e}");
        // Missing pieces convert as they are and are named: check will refuse them.
        let c = conv("resourceRules:\n  cpu: {containerQuery: x, nodeQuery: y}\n");
        roundtrip(&c);
        let notes = c.notes.join("\n");
        assert!(notes.contains("window is not set"), "{notes}");
        assert!(notes.contains("memory is not set"), "{notes}");
        assert!(notes.contains("cpu.containerLabel is not set"), "{notes}");
        assert!(crate::rules::RuleSet::compile(&c.config).is_err());
        // A zero window is what prometheus-adapter serves; here it is left to the default.
        let c = conv("resourceRules:\n  window: 0s\n");
        roundtrip(&c);
        assert_eq!(c.config.resource_rules.as_ref().expect("rr").window, None);
        assert!(
            c.notes.iter().any(|n| n.contains("is zero")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn prometheus_durations() {
        let ms = |n: u64| Some(std::time::Duration::from_millis(n));
        for (text, want) in [
            ("5m", ms(300_000)),
            ("120s", ms(120_000)),
            ("1h30m", ms(5_400_000)),
            (
                "1y2w3d4h5m6s7ms",
                ms((((365 + 14 + 3) * 24 + 4) * 60 + 5) * 60_000 + 6_007),
            ),
            ("500ms", ms(500)),
            ("0", ms(0)),
            ("0s", ms(0)),
        ] {
            assert_eq!(prometheus_duration(text), want, "{text}");
        }
        for bad in [
            "",
            "5",
            "m",
            "5m5m",
            "5s5m",
            "1.5m",
            "-1m",
            "5 m",
            "5M",
            "99999999999999999999y",
            "5mm",
        ] {
            assert_eq!(prometheus_duration(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Any Prometheus duration reads back as the sum of its parts, and written as this
        /// bridge writes durations, reads back the same through the rules file.
        #[test]
        fn prometheus_durations_read_back(parts in proptest::collection::vec(proptest::option::of(0u64..1000), 7)) {
            let units = ["y", "w", "d", "h", "m", "s", "ms"];
            let sizes = [365 * 86_400_000u64, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1_000, 1];
            let mut text = String::new();
            let mut millis = 0;
            for ((part, unit), size) in parts.iter().zip(units).zip(sizes) {
                if let Some(n) = part {
                    text.push_str(&format!("{n}{unit}"));
                    millis += n * size;
                }
            }
            let parsed = prometheus_duration(&text);
            if text.is_empty() {
                proptest::prop_assert_eq!(parsed, None);
            } else {
                let d = std::time::Duration::from_millis(millis);
                proptest::prop_assert_eq!(parsed, Some(d));
                let written = humantime::format_duration(d).to_string();
                proptest::prop_assert_eq!(humantime::parse_duration(&written).ok(), Some(d));
            }
        }

        #[test]
        fn prometheus_duration_never_panics(text in "\\PC{0,24}") {
            let _ = prometheus_duration(&text);
        }
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

    /// Found by the `convert` fuzz target (fuzz/regressions/convert/): an interval the
    /// duration parser refuses was written into `[cache]` as it stood, so the converted
    /// file failed to load (`cache.discovery_interval: invalid value string "default:1m"`).
    #[test]
    fn unreadable_relist_interval_is_a_note_not_a_broken_file() {
        for bad in ["default:1m", "5", "1 fortnight"] {
            let c = conv(&format!(
                "prometheus: {{url: http://p.monitoring.svc, port: 9090}}\nmetricsRelistInterval: {bad}\nrules:\n  default: true\n"
            ));
            roundtrip(&c);
            assert!(!c.toml.contains("\ndiscovery_interval ="), "{}", c.toml);
            assert!(
                c.notes.iter().any(|n| n.contains("metricsRelistInterval")
                    && n.contains(&format!("{bad:?}"))),
                "{:?}",
                c.notes
            );
        }
        for good in ["90s", "1.5m", "1h30m"] {
            let c = conv(&format!(
                "prometheus: {{url: http://p.monitoring.svc, port: 9090}}\nmetricsRelistInterval: {good}\nrules:\n  default: true\n"
            ));
            roundtrip(&c);
            assert!(
                c.toml.contains(&format!("\ndiscovery_interval = '{good}'")),
                "{}",
                c.toml
            );
        }
    }

    #[test]
    fn helm_values_default_true_expands_chart_rules() {
        let mut c = conv(
            "image: {tag: v0.12.0}\nprometheus: {url: http://prometheus.monitoring.svc, port: 9090, path: \"\"}\nmetricsRelistInterval: 1m\nrules:\n  default: true\n  custom:\n  - seriesQuery: 'x{namespace!=\"\",pod!=\"\"}'\n    resources: {template: '<<.Resource>>'}\n    metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n  resource:\n    window: 3m\n",
        );
        roundtrip(&c);
        assert_eq!(c.config.rules.len(), 7);
        assert_eq!(
            c.config.prometheus.as_ref().map(|p| p.url.as_str()),
            Some("http://prometheus.monitoring.svc:9090")
        );
        assert!(!c.url_is_placeholder);
        // rules.resource has only cpu here: converted, and check will ask for memory.
        let rr = c
            .config
            .resource_rules
            .as_ref()
            .expect("rules.resource converted");
        assert_eq!(rr.window, Some(std::time::Duration::from_secs(180)));
        assert!(rr.memory.is_none());
        assert!(
            c.notes
                .iter()
                .any(|n| n.starts_with("rules.resource: memory is not set")),
            "{:?}",
            c.notes
        );
        c.config.resource_rules = None;
        crate::rules::RuleSet::compile(&c.config).expect("compiles");

        let off = conv("rules:\n  default: false\n  external:\n  - seriesQuery: 'q{namespace!=\"\"}'\n    resources: {overrides: {namespace: {resource: namespace}}}\n    metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>})\n");
        assert_eq!(off.config.rules.len(), 0);
        assert_eq!(off.config.external_rules.len(), 1);
        let e = convert("rules:\n  existing: my-rules\n", "t", None).expect_err("existing");
        assert!(e.0.contains("my-rules"), "{e}");
    }

    /// The chart writes `rules.resource` out as `resourceRules` only when it is a non-empty
    /// mapping; `rules.default` never adds resource rules.
    #[test]
    fn helm_rules_resource_and_default() {
        for values in [
            "rules:\n  default: true\n",
            "rules:\n  default: true\n  resource: {}\n",
            "rules:\n  default: true\n  resource:\n",
        ] {
            let c = conv(values);
            roundtrip(&c);
            assert_eq!(c.config.rules.len(), 6, "{values}");
            assert_eq!(c.config.resource_rules, None, "{values}");
            assert!(!c.toml.contains("resource_rules"), "{values}: {}", c.toml);
        }
        let rule = "{containerQuery: 'sum by (<<.GroupBy>>) (rate(c{<<.LabelMatchers>>,container!=\"\"}[3m]))', nodeQuery: 'sum by (<<.GroupBy>>) (rate(n{<<.LabelMatchers>>}[3m]))', containerLabel: container, resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}, node: {resource: node}}}}";
        let c = conv(&format!(
            "rules:\n  default: false\n  resource:\n    cpu: {rule}\n    memory: {rule}\n    window: 3m\n"
        ));
        roundtrip(&c);
        assert!(c.config.rules.is_empty());
        let set = crate::rules::RuleSet::compile(&c.config).expect("resource rules alone");
        assert!(set.resource_rules.is_some());
        let e = convert("rules:\n  resource: yes\n", "t", None).expect_err("not a mapping");
        assert!(e.0.contains("rules.resource: expected a mapping"), "{e}");
    }

    #[test]
    fn url_flag_wins() {
        let c = convert("rules: []\n", "t", Some("http://p:9090")).expect("converts");
        assert_eq!(
            c.config.prometheus.as_ref().map(|p| p.url.as_str()),
            Some("http://p:9090")
        );
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
