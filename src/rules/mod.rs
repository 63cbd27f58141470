//! Rules: the rules file compiled into something requests can use, and every problem in it
//! reported with the rule and field it is in.
//!
//! A rule is compiled once when the file loads (regexes, templates, a trial render of the
//! query parsed as PromQL), so that a broken rule fails `check` and reload, never a request.

pub mod backends;
pub mod naming;
pub mod resource_metrics;
pub mod resources;
pub mod template;
pub mod upstreams;

use std::fmt;
use std::time::Duration;

use crate::config::{CacheConfig, ConfigFile, OnError, OnMissing, RuleConfig, UpstreamConfig};
use backends::BackendSet;
use naming::{MetricNamer, SeriesFilter};
use resource_metrics::ResourceRules;
use resources::ResourceAssociation;
use template::{Template, TemplateKind};

/// Which API a rule serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Custom,
    External,
}

/// `rules[3]` or `external_rules[0]`: how problems and logs name a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId {
    pub api: Api,
    pub index: usize,
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.api {
            Api::Custom => write!(f, "rules[{}]", self.index),
            Api::External => write!(f, "external_rules[{}]", self.index),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: RuleId,
    pub series_query: String,
    filters: Vec<SeriesFilter>,
    namer: MetricNamer,
    pub resources: ResourceAssociation,
    pub metrics_query: Template,
    pub on_missing: OnMissing,
    /// External rules: add the request's namespace as a matcher.
    pub namespaced: bool,
    /// Label that carries the namespace, when the rule associates one.
    pub namespace_label: Option<String>,
    pub window: Option<Duration>,
    /// The backend its metrics queries go to (an existing one, checked at load).
    pub backend: String,
    /// The backend its series are listed on: the backend's `discovery_backend`, else itself.
    pub discovery_backend: String,
    /// `on_error = "stale"`: how old an answer may be served when the backend is down.
    pub max_stale: Option<Duration>,
}

impl Rule {
    /// Series filters and the name pattern, both as prometheus-adapter applies them.
    pub fn keeps_series(&self, series_name: &str) -> bool {
        self.filters.iter().all(|f| f.keeps(series_name)) && self.namer.keeps(series_name)
    }

    pub fn metric_name(&self, series_name: &str) -> Option<String> {
        self.namer.metric_name(series_name)
    }
}

/// One thing wrong in a rules file (or, in [`RuleSet::warnings`], probably wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `rules[0]`, `external_rules[2]`, `resource_rules.cpu`, or a top-level section like
    /// `prometheus`.
    pub place: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}: {}", self.place, self.field, self.message)
    }
}

/// A whole problem list, for `?` at the edges.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in the rules: {}", .0.len(), .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct Problems(pub Vec<Problem>);

/// Why a rules file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Problems(#[from] Problems),
}

/// Settings given on the command line that win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub prometheus_url: Option<String>,
}

/// Reads, type-checks and compiles a rules file.
pub fn load_file(path: &std::path::Path, overrides: &Overrides) -> Result<RuleSet, LoadError> {
    let mut file = crate::config::load(path)?;
    if let Some(url) = &overrides.prometheus_url {
        set_default_url(&mut file, url);
    }
    Ok(RuleSet::compile(&file)?)
}

/// `--prometheus-url`: the url of `[prometheus]`, or of the default `[[backends]]` entry.
fn set_default_url(file: &mut ConfigFile, url: &str) {
    if file.backends.is_empty() {
        file.prometheus.get_or_insert_with(Default::default).url = url.to_string();
        return;
    }
    let index = file.backends.iter().position(|b| b.default).unwrap_or(0);
    file.backends[index].url = url.to_string();
}

/// The compiled rules file.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub backends: BackendSet,
    pub cache: CacheConfig,
    pub custom: Vec<Rule>,
    pub external: Vec<Rule>,
    /// `[resource_rules]`: the resource metrics API is served only when this is set.
    pub resource_rules: Option<ResourceRules>,
    /// Metrics servers that answer the custom and external metrics these rules lack.
    pub upstreams: Vec<UpstreamConfig>,
    /// What loads but is probably wrong (e.g. a window that disagrees with a query's range).
    /// `check` prints these without failing; `serve` logs them.
    pub warnings: Vec<Problem>,
}

impl RuleSet {
    pub fn compile(file: &ConfigFile) -> Result<RuleSet, Problems> {
        let mut problems = Vec::new();
        let backends = BackendSet::compile(file, &mut problems);
        check_cache(&file.cache, &mut problems);
        let compile_all = |api: Api, rules: &[RuleConfig], problems: &mut Vec<Problem>| {
            rules
                .iter()
                .enumerate()
                .filter_map(|(index, cfg)| {
                    let id = RuleId { api, index };
                    let backend =
                        backends.resolve(cfg.backend.as_deref(), &id.to_string(), problems);
                    let discovery = backends.discovery_for(&backend).to_string();
                    compile_rule(id, cfg, backend, problems).map(|rule| Rule {
                        discovery_backend: discovery,
                        ..rule
                    })
                })
                .collect::<Vec<_>>()
        };
        let custom = compile_all(Api::Custom, &file.rules, &mut problems);
        let external = compile_all(Api::External, &file.external_rules, &mut problems);
        let mut warnings = Vec::new();
        for rule in custom.iter().chain(&external) {
            if let Some(cost) = broad_series_query(&rule.series_query, &backends, rule) {
                warnings.push(Problem {
                    place: rule.id.to_string(),
                    field: "series_query".into(),
                    message: cost,
                });
            }
        }
        let resource_rules = file.resource_rules.as_ref().and_then(|cfg| {
            let backend = backends.resolve(
                cfg.backend.as_deref(),
                resource_metrics::SECTION,
                &mut problems,
            );
            ResourceRules::compile(cfg, backend, &mut problems, &mut warnings)
        });
        let upstreams = upstreams::compile(&file.upstreams, &mut problems, &mut warnings);
        if file.rules.is_empty()
            && file.external_rules.is_empty()
            && file.resource_rules.is_none()
            && upstreams.is_empty()
        {
            problems.push(Problem {
                place: "rules".into(),
                field: "rules".into(),
                message: "the file has no [[rules]], no [[external_rules]], no \
                          [resource_rules] and no [[upstreams]]; nothing would be served"
                    .into(),
            });
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        Ok(RuleSet {
            backends,
            cache: file.cache.clone(),
            custom,
            external,
            resource_rules,
            upstreams,
            warnings,
        })
    }

    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        match id.api {
            Api::Custom => self.custom.get(id.index),
            Api::External => self.external.get(id.index),
        }
    }

    pub fn all_rules(&self) -> impl Iterator<Item = &Rule> {
        self.custom.iter().chain(self.external.iter())
    }

    /// The longest `max_stale` of any rule: how long last good answers must be kept. None
    /// when no rule serves stale answers (then none are kept).
    pub fn longest_stale(&self) -> Option<Duration> {
        self.all_rules()
            .map(|r| r.max_stale)
            .chain(self.resource_rules.as_ref().map(|r| r.max_stale))
            .flatten()
            .max()
    }
}

fn check_cache(c: &CacheConfig, problems: &mut Vec<Problem>) {
    let mut push = |field: &str, message: String| {
        problems.push(Problem {
            place: "cache".into(),
            field: field.into(),
            message,
        })
    };
    if c.discovery_interval < Duration::from_secs(1) {
        push("discovery_interval", "must be at least 1s".into());
    }
    if c.max_bytes.bytes() < 1024 {
        push(
            "max_bytes",
            format!(
                "{} is too small: must be at least 1KiB (set ttl = \"0s\" to turn the cache off)",
                c.max_bytes
            ),
        );
    }
}

fn compile_rule(
    id: RuleId,
    cfg: &RuleConfig,
    backend: String,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let before = problems.len();
    let mut push = |field: &str, message: String| {
        problems.push(Problem {
            place: id.to_string(),
            field: field.to_string(),
            message,
        })
    };

    if cfg.series_query.trim().is_empty() {
        push(
            "series_query",
            "is required (the selector that lists this rule's series)".into(),
        );
    } else if let Err(e) = check_series_query(&cfg.series_query) {
        push("series_query", e);
    }

    let mut filters = Vec::new();
    for (i, f) in cfg.series_filters.iter().enumerate() {
        match SeriesFilter::new(f.is.as_deref(), f.is_not.as_deref()) {
            Ok(filter) => filters.push(filter),
            Err(e) => push(&format!("series_filters[{i}]"), e),
        }
    }

    let namer = match MetricNamer::new(cfg.name.matches.as_deref(), cfg.name.as_.as_deref()) {
        Ok(n) => Some(n),
        Err(naming::NamingError::Matches(e)) => {
            push("name.matches", e);
            None
        }
        Err(naming::NamingError::As(e)) => {
            push("name.as", e);
            None
        }
    };

    let resources =
        match ResourceAssociation::new(&cfg.resources.overrides, cfg.resources.template.as_deref())
        {
            Ok(r) => Some(r),
            Err(list) => {
                for (field, message) in list {
                    push(&field, message);
                }
                None
            }
        };

    let namespaced = match (cfg.namespaced, cfg.resources.namespaced) {
        (Some(a), Some(b)) if a != b => {
            push(
                "namespaced",
                "differs from resources.namespaced; set one of them".into(),
            );
            true
        }
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => true,
    };
    let rule_kind = match id.api {
        Api::Custom => template::RuleKind::Custom,
        Api::External => template::RuleKind::External { namespaced },
    };
    let metrics_query = if cfg.metrics_query.trim().is_empty() {
        push(
            "metrics_query",
            "is required, e.g. 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'".into(),
        );
        None
    } else {
        match Template::compile(&cfg.metrics_query, TemplateKind::MetricsQuery) {
            Ok(t) => {
                match template::validate_query_for(&t, series_example(&cfg.series_query), rule_kind)
                {
                    Ok(()) => Some(t),
                    Err(e) => {
                        push("metrics_query", e);
                        None
                    }
                }
            }
            Err(e) => {
                push("metrics_query", e.to_string());
                None
            }
        }
    };

    if id.api == Api::Custom && (cfg.namespaced.is_some() || cfg.resources.namespaced.is_some()) {
        push(
            "namespaced",
            "only applies to [[external_rules]]; a custom metric's scope comes from its resource"
                .into(),
        );
    }
    if id.api == Api::Custom && resources.as_ref().is_some_and(|r| r.is_empty()) {
        push(
            "resources",
            "a custom-metrics rule needs resources.overrides or resources.template to tie series to objects".into(),
        );
    }
    let namespace_label = resources.as_ref().and_then(|r| r.namespace_label());
    if id.api == Api::External && namespaced && resources.is_some() && namespace_label.is_none() {
        push(
            "resources",
            "a namespaced external rule needs a label for namespaces (resources.overrides.namespace = \
             { resource = \"namespace\" }) or namespaced = false"
                .into(),
        );
    }
    if cfg.window.is_some_and(|w| w.as_secs() == 0) {
        push("window", "must be at least 1s".into());
    }
    let max_stale = stale_policy(cfg.on_error, cfg.max_stale, &mut push);

    if problems.len() != before {
        return None;
    }
    Some(Rule {
        id,
        series_query: cfg.series_query.clone(),
        filters,
        namer: namer?,
        resources: resources?,
        metrics_query: metrics_query?,
        on_missing: cfg.on_missing,
        namespaced,
        namespace_label,
        window: cfg.window,
        backend,
        discovery_backend: String::new(),
        max_stale,
    })
}

/// `on_error`/`max_stale`: how long a stale answer may be served, when the rule allows it.
pub(crate) fn stale_policy(
    on_error: OnError,
    max_stale: Option<Duration>,
    push: &mut impl FnMut(&str, String),
) -> Option<Duration> {
    match (on_error, max_stale) {
        (OnError::Stale, Some(age)) if age >= Duration::from_secs(1) => Some(age),
        (OnError::Stale, Some(_)) => {
            push("max_stale", "must be at least 1s".into());
            None
        }
        (OnError::Stale, None) => {
            push(
                "max_stale",
                "is required with on_error = \"stale\": the oldest answer that may be served \
                 while the backend is down, e.g. \"5m\""
                    .into(),
            );
            None
        }
        (OnError::Unavailable, Some(_)) => {
            push("max_stale", "only applies with on_error = \"stale\"".into());
            None
        }
        (OnError::Unavailable, None) => None,
    }
}

/// A series query with no metric name (`{namespace!=""}`) matches every series that has the
/// label: what its discovery costs, said once at load.
fn broad_series_query(query: &str, backends: &BackendSet, rule: &Rule) -> Option<String> {
    use promql_parser::parser::Expr;
    let Ok(Expr::VectorSelector(selector)) = crate::promql::parse(query) else {
        return None;
    };
    let named = selector.name.is_some()
        || selector
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == "__name__");
    if named {
        return None;
    }
    let api = backends
        .get(&rule.discovery_backend)
        .map(|b| b.discovery_api)
        .unwrap_or_default();
    let how = match api {
        crate::config::DiscoveryApi::Series => {
            "with discovery_api = \"series\" every run downloads every one of those series \
             (about 200 bytes each: 200 MB for a million), decoded as a stream"
        }
        _ => {
            "with the label API (discovery_api \"auto\" or \"labels\") each run costs one call \
             for the names plus one per distinct name; where a backend falls back to the series \
             API, every matching series is downloaded (about 200 bytes each: 200 MB for a million)"
        }
    };
    Some(format!(
        "{query:?} names no metric, so it matches every series with these labels on backend {:?}, \
         every discovery_interval: {how}. Name the metric, or narrow it with \
         {{__name__=~\"http_.*\", ...}}, when the backend holds many series",
        rule.discovery_backend
    ))
}

/// A series query must be a plain vector selector: it goes to `/api/v1/series`.
fn check_series_query(query: &str) -> Result<(), String> {
    match crate::promql::parse(query) {
        Ok(promql_parser::parser::Expr::VectorSelector(_)) => Ok(()),
        Ok(_) => Err(format!(
            "{query:?} must be a series selector like 'http_requests_total{{namespace!=\"\"}}', not an expression"
        )),
        Err(e) => Err(format!("{query:?} is not valid PromQL: {e}")),
    }
}

/// A plausible series name to try-render the query with: the selector's metric name if it
/// has one.
fn series_example(series_query: &str) -> &str {
    let end = series_query
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(series_query.len());
    if end == 0 {
        "example_series"
    } else {
        &series_query[..end]
    }
}

/// Rule sets for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Problems, RuleSet};

    /// One custom rule (requests per second per pod/namespace) and one external rule.
    pub const EXAMPLE: &str = r#"
[[rules]]
series_query = 'http_requests_total{namespace!="",pod!=""}'
series_filters = [{ is_not = "_bucket$" }]
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
name = { matches = "^(.*)_total$", as = "${1}_per_second" }
metrics_query = 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)'

[[external_rules]]
series_query = 'queue_messages_ready{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"#;

    pub fn compile(text: &str) -> Result<RuleSet, Problems> {
        let file = crate::config::parse(text, std::path::Path::new("t.toml")).expect("parses");
        RuleSet::compile(&file)
    }

    pub fn example() -> RuleSet {
        compile(EXAMPLE).expect("the example compiles")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{compile, EXAMPLE as GOOD};

    #[test]
    fn good_file_compiles() {
        let set = compile(GOOD).expect("compiles");
        assert_eq!(set.custom.len(), 1);
        assert_eq!(set.external.len(), 1);
        let rule = &set.custom[0];
        assert!(rule.keeps_series("http_requests_total"));
        assert_eq!(
            rule.metric_name("http_requests_total").as_deref(),
            Some("http_requests_per_second")
        );
        assert_eq!(rule.namespace_label.as_deref(), Some("namespace"));
        assert!(set.external[0].namespaced);
    }

    #[test]
    fn every_problem_is_reported_with_rule_and_field() {
        let err = compile(
            r#"
[prometheus]
url = "ftp://x"

[[rules]]
series_query = 'sum(x)'
series_filters = [{ is = "(" }]
name = { matches = "^(a)(b)$" }
resources.overrides = { pod = { resource = "pod" } }
metrics_query = 'sum(<<.Sereis>>)'

[[external_rules]]
series_query = 'q'
metrics_query = 'rate(<<.Series>>{<<.LabelMatchers>>}[1m]'
"#,
        )
        .expect_err("broken");
        let text: Vec<String> = err.0.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| text.iter().any(|t| t.starts_with(needle));
        assert!(has("prometheus.url"), "{text:#?}");
        assert!(has("rules[0].series_query"), "{text:#?}");
        assert!(has("rules[0].series_filters[0]"), "{text:#?}");
        assert!(has("rules[0].name.as"), "{text:#?}");
        assert!(has("rules[0].metrics_query"), "{text:#?}");
        assert!(has("external_rules[0].metrics_query"), "{text:#?}");
    }

    #[test]
    fn namespaced_external_rule_needs_namespace_label() {
        let err = compile(
            "[[external_rules]]\nseries_query = 'q'\nmetrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'\n",
        )
        .expect_err("no namespace label");
        assert!(
            err.0
                .iter()
                .any(|p| p.place == "external_rules[0]" && p.field == "resources"),
            "{err}"
        );
        compile("[[external_rules]]\nseries_query = 'q'\nnamespaced = false\nmetrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'\n")
            .expect("not namespaced: fine");
    }

    #[test]
    fn size_limits_must_be_usable() {
        let err = compile(&format!(
            "[prometheus]\nmax_response_bytes = 10\n[cache]\nmax_bytes = \"0\"\n{GOOD}"
        ))
        .expect_err("too small");
        let text = err.to_string();
        assert!(
            text.contains("prometheus.max_response_bytes: 10B is too small"),
            "{text}"
        );
        assert!(text.contains("cache.max_bytes: 0B is too small"), "{text}");
    }

    #[test]
    fn rules_carry_their_backend_and_an_unknown_one_is_a_problem() {
        let backends = "[[backends]]\nname = \"main\"\nurl = \"http://a\"\n\
                        [[backends]]\nname = \"long-term\"\nurl = \"http://b\"\n";
        let set = compile(&format!("{backends}{GOOD}")).expect("compiles");
        assert!(set.all_rules().all(|r| r.backend == "main"));
        let with_backend = GOOD.replacen("[[rules]]\n", "[[rules]]\nbackend = \"long-term\"\n", 1);
        assert_ne!(with_backend, GOOD);
        let set = compile(&format!("{backends}{with_backend}")).expect("compiles");
        assert_eq!(set.custom[0].backend, "long-term");
        let err = compile(&format!(
            "{backends}{}",
            with_backend.replace("long-term", "lt")
        ))
        .expect_err("unknown backend");
        assert!(
            err.to_string()
                .contains("rules[0].backend: \"lt\" is not a backend"),
            "{err}"
        );
    }

    #[test]
    fn stale_answers_need_a_bound() {
        let stale = |extra: &str| GOOD.replacen("[[rules]]\n", &format!("[[rules]]\n{extra}\n"), 1);
        let set = compile(&stale("on_error = \"stale\"\nmax_stale = \"5m\"")).expect("compiles");
        assert_eq!(
            set.custom[0].max_stale,
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(set.external[0].max_stale, None);
        assert_eq!(
            set.longest_stale(),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(compile(GOOD).expect("compiles").longest_stale(), None);
        for (extra, message) in [
            ("on_error = \"stale\"", "rules[0].max_stale: is required"),
            (
                "on_error = \"stale\"\nmax_stale = \"0s\"",
                "rules[0].max_stale: must be at least 1s",
            ),
            ("max_stale = \"1m\"", "rules[0].max_stale: only applies"),
        ] {
            let err = compile(&stale(extra)).expect_err(extra).to_string();
            assert!(err.contains(message), "{extra}: {err}");
        }
        let err = crate::config::parse(&stale("on_error = \"later\""), std::path::Path::new("t"))
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("rules[0].on_error: unknown variant"), "{err}");
    }

    #[test]
    fn broad_series_queries_are_warned_about_with_their_cost() {
        let set = compile(GOOD).expect("compiles");
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        let broad = GOOD.replace(
            "http_requests_total{namespace!=\"\",pod!=\"\"}",
            "{namespace!=\"\",pod!=\"\"}",
        );
        let set = compile(&broad).expect("compiles");
        assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
        let warning = set.warnings[0].to_string();
        assert!(
            warning.starts_with(
                "rules[0].series_query: \"{namespace!=\\\"\\\",pod!=\\\"\\\"}\" names no metric"
            ) && warning.contains("one per distinct name"),
            "{warning}"
        );
        let named = broad.replace(
            "{namespace!=\"\",pod!=",
            "{__name__=~\"http_.*\",namespace!=\"\",pod!=",
        );
        assert!(compile(&named).expect("compiles").warnings.is_empty());
    }

    #[test]
    fn empty_file_is_a_problem() {
        assert!(compile("").is_err());
    }

    #[test]
    fn resource_rules_alone_are_a_file_and_their_warnings_are_kept() {
        let text =
            super::resource_metrics::tests::EXAMPLE.replace("window = \"2m\"", "window = \"1m\"");
        let set = compile(&text).expect("resource rules alone are enough");
        assert!(set.custom.is_empty() && set.external.is_empty());
        let rr = set.resource_rules.as_ref().expect("compiled");
        assert_eq!(rr.window, std::time::Duration::from_secs(60));
        assert_eq!(set.warnings.len(), 2, "{:#?}", set.warnings);
        assert!(set.warnings.iter().all(|w| w.place == "resource_rules.cpu"));

        let set = compile(GOOD).expect("compiles");
        assert!(set.resource_rules.is_none() && set.warnings.is_empty());

        let err = compile(&format!("{GOOD}\n[resource_rules]\nwindow = \"1m\"\n"))
            .expect_err("no cpu, no memory");
        let text = err.to_string();
        assert!(text.contains("resource_rules.cpu: is required"), "{text}");
    }
}
