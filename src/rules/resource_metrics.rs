//! `[resource_rules]` compiled: the queries behind the resource metrics API (`metrics.k8s.io`:
//! `kubectl top`, HPA `Resource` and `ContainerResource` metrics).
//!
//! Same meaning as prometheus-adapter's `resourceRules` (a CPU and a memory rule, each with a
//! container query, a node query, a label mapping and a container label, and one window),
//! with three differences that its users asked for:
//!
//! * pods are asked for a whole namespace (or the whole cluster) at a time, never as a
//!   `pod=~"a|b|..."` regex, so the query text is the same for every request and is shared in
//!   the cache (prometheus-adapter#668);
//! * every label the mapping ties to nodes is kept ([`ResourceQuery::node_labels`]), so a node
//!   can be matched by name or address through `node` or `instance` alike, where
//!   prometheus-adapter picked one label by Go map order (prometheus-adapter#385, #398);
//! * the window is checked against the queries' ranges when the file loads, and defaults to
//!   the CPU query's `rate()` range (prometheus-adapter#555).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, VectorSelector};

use super::resources::ResourceAssociation;
use super::template::{QueryArgs, Template, TemplateKind};
use super::Problem;
pub use crate::config::MissingContainers;
use crate::config::{ResourceRuleConfig, ResourceRulesConfig};
use crate::kube::resources::{ResourceInfo, ResourceMapper, StaticMapper};
use crate::promql::{self, MatchOp, Matcher};
use crate::query::QueryError;

/// The two resources of the resource metrics API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComputeResource {
    Cpu,
    Memory,
}

impl ComputeResource {
    pub const ALL: [ComputeResource; 2] = [ComputeResource::Cpu, ComputeResource::Memory];

    /// The key in `usage` maps and the rules file's table name: `cpu`, `memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeResource::Cpu => "cpu",
            ComputeResource::Memory => "memory",
        }
    }
}

impl fmt::Display for ComputeResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The compiled `[resource_rules]`.
#[derive(Debug, Clone)]
pub struct ResourceRules {
    /// What every answer reports as `window`: the file's `window`, or the range of the CPU
    /// container query's `rate()` when the file leaves it out.
    pub window: Duration,
    /// What to do with a pod some of whose containers lack a sample.
    pub missing_containers: MissingContainers,
    /// The backend the cpu and memory queries go to.
    pub backend: String,
    /// `on_error = "stale"`: how old an answer may be served when the backend is down.
    pub max_stale: Option<Duration>,
    cpu: ResourceQuery,
    memory: ResourceQuery,
}

impl ResourceRules {
    /// `promql` as this section asks its backend, for a request in `namespace` (None: nodes,
    /// or pods across namespaces).
    pub fn query<'a>(
        &'a self,
        promql: &'a str,
        namespace: Option<&'a str>,
    ) -> crate::prometheus::RuleQuery<'a> {
        crate::prometheus::RuleQuery {
            backend: &self.backend,
            promql,
            namespace,
            max_stale: self.max_stale,
        }
    }

    pub fn rule(&self, resource: ComputeResource) -> &ResourceQuery {
        match resource {
            ComputeResource::Cpu => &self.cpu,
            ComputeResource::Memory => &self.memory,
        }
    }

    /// Compiles `[resource_rules]`. Problems (the section cannot be used) and warnings (it
    /// can, but something disagrees, e.g. the window and a query's range) are pushed with
    /// `resource_rules...` places; `None` when there was any problem.
    pub fn compile(
        cfg: &ResourceRulesConfig,
        backend: String,
        problems: &mut Vec<Problem>,
        warnings: &mut Vec<Problem>,
    ) -> Option<ResourceRules> {
        let before = problems.len();
        let max_stale = super::stale_policy(cfg.on_error, cfg.max_stale, &mut |field, message| {
            problems.push(problem(SECTION, field, &message))
        });
        let cpu = ResourceQuery::compile(ComputeResource::Cpu, cfg.cpu.as_ref(), problems);
        let memory = ResourceQuery::compile(ComputeResource::Memory, cfg.memory.as_ref(), problems);
        let window = match cfg.window {
            Some(w) if w.is_zero() => {
                problems.push(problem(
                    SECTION,
                    "window",
                    "must be more than 0s: the HPA reads it as the interval the usage covers",
                ));
                None
            }
            Some(w) => Some(w),
            None => cpu.as_ref().and_then(|cpu| match infer_window(cpu) {
                Ok(w) => Some(w),
                Err(why) => {
                    problems.push(problem(SECTION, "window", &why));
                    None
                }
            }),
        };
        if problems.len() != before {
            return None;
        }
        let (cpu, memory, window) = (cpu?, memory?, window?);
        for rule in [&cpu, &memory] {
            rule.warnings(window, warnings);
        }
        Some(ResourceRules {
            window,
            missing_containers: cfg.missing_containers,
            backend,
            max_stale,
            cpu,
            memory,
        })
    }
}

pub const SECTION: &str = "resource_rules";

fn problem(place: &str, field: &str, message: &str) -> Problem {
    Problem {
        place: place.to_string(),
        field: field.to_string(),
        message: message.to_string(),
    }
}

/// One resource's rule: `[resource_rules.cpu]` or `[resource_rules.memory]`.
#[derive(Debug, Clone)]
pub struct ResourceQuery {
    resource: ComputeResource,
    container_query: Template,
    node_query: Template,
    namespace_label: String,
    pod_label: String,
    container_label: String,
    node_labels: Vec<String>,
}

impl ResourceQuery {
    pub fn resource(&self) -> ComputeResource {
        self.resource
    }

    /// The label that carries a sample's namespace.
    pub fn namespace_label(&self) -> &str {
        &self.namespace_label
    }

    /// The label that carries a sample's pod name.
    pub fn pod_label(&self) -> &str {
        &self.pod_label
    }

    /// The label that carries a sample's container name.
    pub fn container_label(&self) -> &str {
        &self.container_label
    }

    /// Every label the mapping ties to nodes (never empty): overrides in label order, then
    /// the template's. A node sample may name its node through any of them.
    pub fn node_labels(&self) -> &[String] {
        &self.node_labels
    }

    /// The container query for every pod of `namespace`, or of the whole cluster with
    /// `None`: `<<.LabelMatchers>>` is `namespace="ns"` (or `namespace!=""`), `<<.GroupBy>>`
    /// is the namespace, pod and container labels, `<<.Series>>` is empty. The text depends
    /// only on the namespace, so every request for it shares one query.
    ///
    /// A namespace that is not a Kubernetes namespace name is refused (a 400 for the caller);
    /// a valid one is escaped anyway.
    pub fn pod_query(&self, namespace: Option<&str>) -> Result<String, QueryError> {
        if let Some(ns) = namespace {
            if !crate::names::is_dns_label(ns) {
                return Err(QueryError::Selector {
                    param: "namespace",
                    message: format!("{ns:?} is not a valid namespace name"),
                });
            }
        }
        Ok(self.render_pods(namespace))
    }

    /// The node query for every node: `<<.LabelMatchers>>` is `<first node label>!=""`,
    /// `<<.GroupBy>>` is every node label.
    pub fn node_query(&self) -> String {
        // One node label: only series that carry it. Several (`instance` and `node`): a series
        // may carry any one of them, and PromQL matchers can only AND, so the matcher is one
        // every series meets (`instance=~".*"`; `__name__` may not be matched beside a metric
        // name) and the answer matches nodes through each label.
        let matchers: Vec<Matcher> = match self.node_labels.as_slice() {
            [only] => vec![Matcher::not_equal(only, "")],
            labels => labels
                .first()
                .map(|l| Matcher::new(l, MatchOp::Re, ".*"))
                .into_iter()
                .collect(),
        };
        let values: BTreeMap<String, String> = self
            .node_labels
            .first()
            .map(|l| (l.clone(), ".+".to_string()))
            .into_iter()
            .collect();
        render(&self.node_query, &matchers, &values, &self.node_labels)
    }

    fn render_pods(&self, namespace: Option<&str>) -> String {
        let label = self.namespace_label.as_str();
        let (matcher, value) = match namespace {
            Some(ns) => (
                Matcher::equal(label, ns),
                string_body(&promql::regex_escape(ns)),
            ),
            None => (Matcher::not_equal(label, ""), ".+".to_string()),
        };
        let values = BTreeMap::from([(label.to_string(), value)]);
        let group_by = [
            self.namespace_label.clone(),
            self.pod_label.clone(),
            self.container_label.clone(),
        ];
        render(&self.container_query, &[matcher], &values, &group_by)
    }

    fn place(&self) -> String {
        format!("{SECTION}.{}", self.resource)
    }

    fn compile(
        resource: ComputeResource,
        cfg: Option<&ResourceRuleConfig>,
        problems: &mut Vec<Problem>,
    ) -> Option<ResourceQuery> {
        let Some(cfg) = cfg else {
            problems.push(problem(
                SECTION,
                resource.as_str(),
                &format!(
                    "is required: [resource_rules.{resource}] with container_query, node_query, \
                     resources and container_label (the resource metrics API answers cpu and \
                     memory together)"
                ),
            ));
            return None;
        };
        let place = format!("{SECTION}.{resource}");
        let before = problems.len();
        let mut push =
            |field: &str, message: String| problems.push(problem(&place, field, &message));

        let labels = match ResourceAssociation::new(
            &cfg.resources.overrides,
            cfg.resources.template.as_deref(),
        ) {
            Ok(association) => resource_labels(&association, &mut push),
            Err(list) => {
                for (field, message) in list {
                    push(&field, message);
                }
                None
            }
        };
        if cfg.resources.namespaced.is_some() {
            push(
                "resources.namespaced",
                "only applies to [[external_rules]]; pod queries are always per namespace and \
                 node queries never are"
                    .into(),
            );
        }

        let container_label = cfg.container_label.trim();
        if container_label.is_empty() {
            push(
                "container_label",
                "is required: the label that names each container, e.g. \"container\" for \
                 cAdvisor series (prometheus-adapter named every container \"\" without it)"
                    .into(),
            );
        } else if !promql::is_label_name(container_label) {
            push(
                "container_label",
                format!("{container_label:?} is not a Prometheus label name"),
            );
        } else if let Some((ns, pod, _)) = &labels {
            if container_label == ns || container_label == pod {
                push(
                    "container_label",
                    format!(
                        "{container_label:?} is also the label for {}; the container needs a \
                         label of its own",
                        if container_label == ns {
                            "namespaces"
                        } else {
                            "pods"
                        }
                    ),
                );
            }
        }

        let mut template = |field: &str, src: &str, example: &str| {
            if src.trim().is_empty() {
                push(field, format!("is required, e.g. {example}"));
                return None;
            }
            match Template::compile(src, TemplateKind::MetricsQuery) {
                Ok(t) => Some(t),
                Err(e) => {
                    push(field, e.to_string());
                    None
                }
            }
        };
        let container_query = template(
            "container_query",
            &cfg.container_query,
            "'sum by (<<.GroupBy>>) (rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>,container!=\"\"}[2m]))'",
        );
        let node_query = template(
            "node_query",
            &cfg.node_query,
            "'sum by (<<.GroupBy>>) (rate(node_cpu_usage_seconds_total{<<.LabelMatchers>>}[2m]))'",
        );
        if problems.len() != before {
            return None;
        }
        let (namespace_label, pod_label, node_labels) = labels?;
        let rule = ResourceQuery {
            resource,
            container_query: container_query?,
            node_query: node_query?,
            namespace_label,
            pod_label,
            container_label: container_label.to_string(),
            node_labels,
        };
        rule.validate(problems);
        (problems.len() == before).then_some(rule)
    }

    /// Renders every query this rule can produce and parses it as PromQL, so that a broken
    /// rule fails `check` and reload, never a request.
    fn validate(&self, problems: &mut Vec<Problem>) {
        let place = self.place();
        let cases = [
            (
                "container_query",
                "pods in a namespace",
                &self.container_query,
                self.render_pods(Some("default")),
            ),
            (
                "container_query",
                "pods in every namespace",
                &self.container_query,
                self.render_pods(None),
            ),
            (
                "node_query",
                "every node",
                &self.node_query,
                self.node_query(),
            ),
        ];
        for (field, case, template, query) in cases {
            if problems
                .iter()
                .any(|p| p.place == place && p.field == field)
            {
                continue;
            }
            if let Err(message) = check_query(case, template, &query) {
                problems.push(problem(&place, field, &message));
            }
        }
    }

    /// Things that load but are probably wrong: ranges that disagree with the window, and a
    /// container query that lets cAdvisor's pod-level series in as a container named "".
    fn warnings(&self, window: Duration, warnings: &mut Vec<Problem>) {
        let place = self.place();
        for (field, query) in [
            ("container_query", self.render_pods(Some("default"))),
            ("node_query", self.node_query()),
        ] {
            let Ok(expr) = promql::parse(&query) else {
                continue;
            };
            let mut uses = Vec::new();
            range_uses(&expr, &mut uses);
            for message in window_findings(window, &uses) {
                warnings.push(problem(&place, field, &message));
            }
            if field == "container_query" {
                if let Some(message) = self.empty_container_finding(&expr) {
                    warnings.push(problem(&place, field, &message));
                }
            }
        }
    }

    /// prometheus-adapter#211: cAdvisor also exports each pod's own cgroup with
    /// `container=""`; unless the query drops it, it is counted next to the real containers.
    fn empty_container_finding(&self, expr: &Expr) -> Option<String> {
        let mut selectors = Vec::new();
        vector_selectors(expr, &mut selectors);
        let label = self.container_label.as_str();
        let open: Vec<String> = selectors
            .iter()
            .filter(|vs| {
                // Only the selectors that carry <<.LabelMatchers>> select container series.
                vs.matchers
                    .matchers
                    .iter()
                    .any(|m| m.name == self.namespace_label)
                    && vs.matchers.or_matchers.is_empty()
                    && !vs
                        .matchers
                        .matchers
                        .iter()
                        .any(|m| m.name == label && !m.is_match(""))
            })
            .map(|vs| vs.to_string())
            .collect();
        (!open.is_empty()).then(|| {
            format!(
                "{} does not exclude an empty {label:?} label: cAdvisor also exports every pod's \
                 own cgroup with {label}=\"\"; the bridge ignores those series (prometheus-adapter \
                 counted them twice, #211), but a `sum by` that drops {label:?} would add them \
                 in, and excluding them saves work; add {label}!=\"\"",
                open.join(", ")
            )
        })
    }
}

/// The namespace, pod and node labels of a rule, or `None` after pushing why not.
fn resource_labels(
    association: &ResourceAssociation,
    push: &mut impl FnMut(&str, String),
) -> Option<(String, String, Vec<String>)> {
    let mapper = StaticMapper::builtin();
    let find = |name: &str| mapper.lookup(name);
    let (Some(namespaces), Some(pods), Some(nodes)) =
        (find("namespaces"), find("pods"), find("nodes"))
    else {
        push(
            "resources",
            "internal error: the built-in resource list lacks namespaces, pods or nodes".into(),
        );
        return None;
    };
    let namespace = single_label(association, &namespaces, &mapper, "namespace", push);
    let pod = single_label(association, &pods, &mapper, "pod", push);
    let node_labels = association.labels_for_resource(&nodes, &mapper);
    if node_labels.is_empty() {
        push(
            "resources",
            "no label maps to nodes, so node_query cannot name its nodes: add \
             resources.overrides.node = { resource = \"node\" } (and instance = { resource = \
             \"node\" } if the node series name nodes by instance)"
                .into(),
        );
    }
    let (namespace, pod) = (namespace?, pod?);
    if namespace == pod {
        push(
            "resources",
            format!("{namespace:?} maps to both namespaces and pods"),
        );
        return None;
    }
    (!node_labels.is_empty()).then_some((namespace, pod, node_labels))
}

/// The one label for namespaces or pods: an override, else the template (as
/// prometheus-adapter prefers). Two overrides for one resource are ambiguous: samples are
/// grouped by exactly one label.
fn single_label(
    association: &ResourceAssociation,
    resource: &ResourceInfo,
    mapper: &StaticMapper,
    singular: &str,
    push: &mut impl FnMut(&str, String),
) -> Option<String> {
    let overrides = association.override_labels_for_resource(resource, mapper);
    match overrides.as_slice() {
        [one] => Some(one.clone()),
        [] => association
            .template_label_for_resource(resource)
            .or_else(|| {
                push(
                    "resources",
                    format!(
                        "no label maps to {}: add resources.overrides.{singular} = {{ resource = \
                         \"{singular}\" }} (or a resources.template)",
                        resource.group_resource
                    ),
                );
                None
            }),
        many => {
            push(
                "resources.overrides",
                format!(
                    "{} all map to {}; a resource rule groups by exactly one {singular} label",
                    many.join(", "),
                    resource.group_resource
                ),
            );
            None
        }
    }
}

fn render(
    template: &Template,
    matchers: &[Matcher],
    values: &BTreeMap<String, String>,
    group_by: &[String],
) -> String {
    let label_matchers = promql::join_matchers(matchers);
    template.render_query(&QueryArgs {
        series: "",
        label_matchers: &label_matchers,
        label_values_by_name: values,
        group_by,
    })
}

/// The inside of a PromQL string literal (what goes between the quotes).
fn string_body(s: &str) -> String {
    let quoted = promql::quote(s);
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

/// One rendered query must be PromQL that returns an instant vector (samples with labels),
/// and must not use `<<.Series>>`, which is always empty here.
fn check_query(case: &str, template: &Template, query: &str) -> Result<(), String> {
    let probe = template.render_query(&QueryArgs {
        series: "series_probe",
        label_matchers: "",
        label_values_by_name: &BTreeMap::new(),
        group_by: &[],
    });
    let blank = template.render_query(&QueryArgs {
        series: "",
        label_matchers: "",
        label_values_by_name: &BTreeMap::new(),
        group_by: &[],
    });
    if probe != blank {
        return Err(
            "uses <<.Series>>, which is empty in resource queries (as in prometheus-adapter); \
             write the series name"
                .into(),
        );
    }
    if query.trim().is_empty() {
        return Err(format!("{case}: the template renders an empty query"));
    }
    let expr = promql::parse(query)
        .map_err(|e| format!("{case}: invalid PromQL: {e}; rendered query: {query}"))?;
    match expr.value_type() {
        ValueType::Vector => Ok(()),
        ty => Err(format!(
            "{case}: the query returns a {ty}, not an instant vector with a sample per \
             container or node; rendered query: {query}"
        )),
    }
}

/// Functions whose result covers exactly their range.
const WINDOW_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "deriv",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "mad_over_time",
];

/// Functions that look only at the last two samples inside their range.
const LAST_TWO_FUNCTIONS: &[&str] = &["irate", "idelta"];

/// A function applied to a range (`rate(x[2m])`, or a subquery `rate(x[5m:1m])`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RangeUse {
    func: &'static str,
    range: Duration,
}

fn range_uses(expr: &Expr, out: &mut Vec<RangeUse>) {
    match expr {
        Expr::Aggregate(a) => {
            range_uses(&a.expr, out);
            if let Some(p) = &a.param {
                range_uses(p, out);
            }
        }
        Expr::Unary(u) => range_uses(&u.expr, out),
        Expr::Binary(b) => {
            range_uses(&b.lhs, out);
            range_uses(&b.rhs, out);
        }
        Expr::Paren(p) => range_uses(&p.expr, out),
        Expr::Subquery(s) => range_uses(&s.expr, out),
        Expr::Call(c) => {
            for arg in &c.args.args {
                match arg.as_ref() {
                    Expr::MatrixSelector(m) => out.push(RangeUse {
                        func: c.func.name,
                        range: m.range,
                    }),
                    Expr::Subquery(s) => {
                        out.push(RangeUse {
                            func: c.func.name,
                            range: s.range,
                        });
                        range_uses(&s.expr, out);
                    }
                    other => range_uses(other, out),
                }
            }
        }
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => {}
    }
}

fn vector_selectors<'a>(expr: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match expr {
        Expr::Aggregate(a) => {
            vector_selectors(&a.expr, out);
            if let Some(p) = &a.param {
                vector_selectors(p, out);
            }
        }
        Expr::Unary(u) => vector_selectors(&u.expr, out),
        Expr::Binary(b) => {
            vector_selectors(&b.lhs, out);
            vector_selectors(&b.rhs, out);
        }
        Expr::Paren(p) => vector_selectors(&p.expr, out),
        Expr::Subquery(s) => vector_selectors(&s.expr, out),
        Expr::Call(c) => {
            for arg in &c.args.args {
                vector_selectors(arg, out);
            }
        }
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(m) => out.push(&m.vs),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// What disagrees between the window and the ranges a query uses.
fn window_findings(window: Duration, uses: &[RangeUse]) -> Vec<String> {
    let mut out = Vec::new();
    let w = fmt_duration(window);
    for u in uses {
        let r = fmt_duration(u.range);
        if WINDOW_FUNCTIONS.contains(&u.func) && u.range != window {
            out.push(format!(
                "{}(...[{r}]) covers {r}, but window is {w}: the answer would claim the usage \
                 covers {w} (the HPA skips CPU samples whose window overlaps a pod's start); \
                 set window = \"{r}\" or change the range",
                u.func
            ));
        } else if LAST_TWO_FUNCTIONS.contains(&u.func) && window > u.range {
            out.push(format!(
                "{}(...[{r}]) uses only the last two samples inside {r}, so the usage covers one \
                 scrape interval (never more than {r}), but window is {w} \
                 (prometheus-adapter#555); set window to the scrape interval",
                u.func
            ));
        }
    }
    out.dedup();
    out
}

/// The window a rule file leaves out: the CPU container query's single `rate()`-like range.
fn infer_window(cpu: &ResourceQuery) -> Result<Duration, String> {
    let query = cpu.render_pods(Some("default"));
    let expr = promql::parse(&query).map_err(|e| format!("cannot be inferred: {e}"))?;
    let mut uses = Vec::new();
    range_uses(&expr, &mut uses);
    let mut ranges: Vec<Duration> = uses
        .iter()
        .filter(|u| WINDOW_FUNCTIONS.contains(&u.func))
        .map(|u| u.range)
        .collect();
    ranges.sort();
    ranges.dedup();
    match ranges.as_slice() {
        [one] => Ok(*one),
        [] if uses.iter().any(|u| LAST_TWO_FUNCTIONS.contains(&u.func)) => Err(
            "is required: the CPU container query uses irate(), whose usage covers the interval \
             between the last two samples (one scrape interval), which the rules cannot know; \
             set window to your scrape interval, e.g. \"30s\""
                .into(),
        ),
        [] => Err(
            "is required: the CPU container query has no rate(), increase() or *_over_time() \
             range to take it from; set it to the interval the usage covers"
                .into(),
        ),
        many => Err(format!(
            "is required: the CPU container query uses several ranges ({}); set it to the \
             interval the usage covers",
            many.iter()
                .map(|d| fmt_duration(*d))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ConfigFile;

    fn config(text: &str) -> ResourceRulesConfig {
        let file: ConfigFile =
            crate::config::parse(text, std::path::Path::new("t.toml")).expect("parses");
        file.resource_rules.expect("[resource_rules]")
    }

    fn compile(text: &str) -> (Option<ResourceRules>, Vec<Problem>, Vec<Problem>) {
        let (mut problems, mut warnings) = (Vec::new(), Vec::new());
        let rules = ResourceRules::compile(
            &config(text),
            "default".into(),
            &mut problems,
            &mut warnings,
        );
        (rules, problems, warnings)
    }

    fn good(text: &str) -> (ResourceRules, Vec<String>) {
        let (rules, problems, warnings) = compile(text);
        assert!(problems.is_empty(), "{problems:#?}");
        (
            rules.expect("compiles"),
            warnings.iter().map(|w| w.to_string()).collect(),
        )
    }

    fn problems(text: &str) -> Vec<String> {
        let (rules, problems, _) = compile(text);
        assert!(rules.is_none(), "must not compile");
        assert!(!problems.is_empty());
        problems.iter().map(|p| p.to_string()).collect()
    }

    /// The example from the issue: cAdvisor containers and kubelet node series.
    pub(crate) const EXAMPLE: &str = r#"
[resource_rules]
window = "2m"
missing_containers = "drop_pod"
[resource_rules.cpu]
container_query = 'sum by (<<.GroupBy>>) (rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>,container!=""}[2m]))'
node_query = 'sum by (<<.GroupBy>>) (rate(node_cpu_usage_seconds_total{<<.LabelMatchers>>}[2m]))'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" }, node = { resource = "node" } }
container_label = "container"
[resource_rules.memory]
container_query = 'sum by (<<.GroupBy>>) (container_memory_working_set_bytes{<<.LabelMatchers>>,container!=""})'
node_query = 'sum by (<<.GroupBy>>) (node_memory_working_set_bytes{<<.LabelMatchers>>})'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" }, node = { resource = "node" }, instance = { resource = "node" } }
container_label = "container"
"#;

    #[test]
    fn compute_resources() {
        assert_eq!(
            ComputeResource::ALL.map(ComputeResource::as_str),
            ["cpu", "memory"]
        );
        assert_eq!(ComputeResource::Memory.to_string(), "memory");
    }

    #[test]
    fn renders_one_query_per_namespace_and_for_the_cluster() {
        let (rules, warnings) = good(EXAMPLE);
        assert!(warnings.is_empty(), "{warnings:#?}");
        assert_eq!(rules.window, Duration::from_secs(120));
        assert_eq!(rules.missing_containers, MissingContainers::DropPod);
        let cpu = rules.rule(ComputeResource::Cpu);
        assert_eq!(cpu.resource(), ComputeResource::Cpu);
        assert_eq!(
            (
                cpu.namespace_label(),
                cpu.pod_label(),
                cpu.container_label()
            ),
            ("namespace", "pod", "container")
        );
        assert_eq!(
            cpu.pod_query(Some("shop")).expect("query"),
            r#"sum by (namespace,pod,container) (rate(container_cpu_usage_seconds_total{namespace="shop",container!=""}[2m]))"#
        );
        assert_eq!(
            cpu.pod_query(None).expect("query"),
            r#"sum by (namespace,pod,container) (rate(container_cpu_usage_seconds_total{namespace!="",container!=""}[2m]))"#
        );
        assert_eq!(cpu.node_labels(), ["node"]);
        assert_eq!(
            cpu.node_query(),
            r#"sum by (node) (rate(node_cpu_usage_seconds_total{node!=""}[2m]))"#
        );
        let memory = rules.rule(ComputeResource::Memory);
        assert_eq!(memory.node_labels(), ["instance", "node"]);
        assert_eq!(
            memory.node_query(),
            r#"sum by (instance,node) (node_memory_working_set_bytes{instance=~".*"})"#
        );
        assert_eq!(
            memory.pod_query(Some("kube-system")).expect("query"),
            r#"sum by (namespace,pod,container) (container_memory_working_set_bytes{namespace="kube-system",container!=""})"#
        );
    }

    #[test]
    fn template_arguments_are_consistent() {
        let text = EXAMPLE.replace(
            "sum by (<<.GroupBy>>) (container_memory_working_set_bytes{<<.LabelMatchers>>,container!=\"\"})",
            "sum by (<<range $i, $l := .GroupBySlice>><<if $i>>,<<end>><<$l>><<end>>) (container_memory_working_set_bytes{namespace=~\"<<index .LabelValuesByName \"namespace\">>\",container!=\"\"})",
        );
        let (rules, _) = good(&text);
        let memory = rules.rule(ComputeResource::Memory);
        assert_eq!(
            memory.pod_query(Some("shop")).expect("query"),
            r#"sum by (namespace,pod,container) (container_memory_working_set_bytes{namespace=~"shop",container!=""})"#
        );
        assert_eq!(
            memory.pod_query(None).expect("query"),
            r#"sum by (namespace,pod,container) (container_memory_working_set_bytes{namespace=~".+",container!=""})"#
        );
    }

    #[test]
    fn bad_namespaces_are_refused_not_rendered() {
        let (rules, _) = good(EXAMPLE);
        let cpu = rules.rule(ComputeResource::Cpu);
        for bad in ["", "Shop", r#"x"} or vector(1) #"#, "a.b", &"a".repeat(64)] {
            match cpu.pod_query(Some(bad)) {
                Err(QueryError::Selector { param, .. }) => assert_eq!(param, "namespace"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn labels_from_a_template_and_overrides() {
        let text = r#"
[resource_rules]
window = "1m"
[resource_rules.cpu]
container_query = 'sum by (<<.GroupBy>>) (rate(c{<<.LabelMatchers>>,container_name!=""}[1m]))'
node_query = 'sum by (<<.GroupBy>>) (rate(n{<<.LabelMatchers>>}[1m]))'
resources.template = "<<.Resource>>"
resources.overrides = { kubernetes_pod_name = { resource = "pod" }, instance = { resource = "node" } }
container_label = "container_name"
[resource_rules.memory]
container_query = 'sum by (<<.GroupBy>>) (m{<<.LabelMatchers>>,container_name!=""})'
node_query = 'sum by (<<.GroupBy>>) (nm{<<.LabelMatchers>>})'
resources.template = "<<.Resource>>"
container_label = "container_name"
"#;
        let (rules, warnings) = good(text);
        assert!(warnings.is_empty(), "{warnings:#?}");
        let cpu = rules.rule(ComputeResource::Cpu);
        assert_eq!(cpu.pod_label(), "kubernetes_pod_name", "an override wins");
        assert_eq!(cpu.namespace_label(), "namespace", "from the template");
        assert_eq!(cpu.node_labels(), ["instance", "node"]);
        assert_eq!(
            cpu.node_query(),
            r#"sum by (instance,node) (rate(n{instance=~".*"}[1m]))"#
        );
        let memory = rules.rule(ComputeResource::Memory);
        assert_eq!(memory.node_labels(), ["node"]);
        assert_eq!(
            memory.pod_query(None).expect("query"),
            r#"sum by (namespace,pod,container_name) (m{namespace!="",container_name!=""})"#
        );
    }

    #[test]
    fn missing_parts_are_problems_naming_the_field() {
        let all = problems("[resource_rules]\nwindow = \"0s\"\n").join("\n");
        assert!(all.contains("resource_rules.cpu: is required"), "{all}");
        assert!(all.contains("resource_rules.memory: is required"), "{all}");
        assert!(
            all.contains("resource_rules.window: must be more than 0s"),
            "{all}"
        );

        let all = problems(
            r#"
[resource_rules]
window = "2m"
[resource_rules.cpu]
resources.overrides = { pod = { resource = "pod" }, pod_name = { resource = "pods" } }
[resource_rules.memory]
container_query = 'sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})'
node_query = 'sum by (<<.GroupBy>>) (x{<<.LabelMatchers>>}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" }, node = { resource = "node" } }
resources.namespaced = false
container_label = "pod"
"#,
        )
        .join("\n");
        for needle in [
            "resource_rules.cpu.resources: no label maps to namespaces",
            "resource_rules.cpu.resources.overrides: pod, pod_name all map to pods",
            "resource_rules.cpu.resources: no label maps to nodes",
            "resource_rules.cpu.container_label: is required",
            "resource_rules.cpu.container_query: is required",
            "resource_rules.cpu.node_query: is required",
            "resource_rules.memory.resources.namespaced: only applies to [[external_rules]]",
            "resource_rules.memory.container_label: \"pod\" is also the label for pods",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn queries_are_checked_when_the_file_loads() {
        let with = |cpu_container: &str, cpu_node: &str| {
            EXAMPLE
                .replace(
                    "sum by (<<.GroupBy>>) (rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>,container!=\"\"}[2m]))",
                    cpu_container,
                )
                .replace(
                    "sum by (<<.GroupBy>>) (rate(node_cpu_usage_seconds_total{<<.LabelMatchers>>}[2m]))",
                    cpu_node,
                )
        };
        let all = problems(&with(
            "sum by (<<.GroupBy>>) (rate(c{<<.LabelMatchers>>}[2m])",
            "sum by (<<.GroupBy>>) (n{<<.LabelMatchers>>})",
        ))
        .join("\n");
        assert!(
            all.contains("resource_rules.cpu.container_query: pods in a namespace: invalid PromQL"),
            "{all}"
        );
        let all = problems(&with(
            "sum by (<<.GroupBy>>) (rate(c{<<.LabelMatchers>>}[2m]))",
            "sum(<<.Nodes>>)",
        ))
        .join("\n");
        assert!(
            all.contains("resource_rules.cpu.node_query: unknown field .Nodes"),
            "{all}"
        );
        let all = problems(&with(
            "sum by (<<.GroupBy>>) (rate(<<.Series>>{<<.LabelMatchers>>,container!=\"\"}[2m]))",
            "scalar(sum(n{<<.LabelMatchers>>}))",
        ))
        .join("\n");
        assert!(
            all.contains("resource_rules.cpu.container_query: uses <<.Series>>"),
            "{all}"
        );
        assert!(
            all.contains("resource_rules.cpu.node_query: every node: the query returns a scalar"),
            "{all}"
        );
    }

    #[test]
    fn window_defaults_to_the_cpu_rate_range() {
        let text = EXAMPLE.replace("window = \"2m\"\n", "");
        let (rules, warnings) = good(&text);
        assert_eq!(rules.window, Duration::from_secs(120));
        assert!(warnings.is_empty(), "{warnings:#?}");

        let irate = text.replace("(rate(container_cpu", "(irate(container_cpu");
        let all = problems(&irate).join("\n");
        assert!(
            all.contains(
                "resource_rules.window: is required: the CPU container query uses irate()"
            ),
            "{all}"
        );
        let none = text.replace(
            "sum by (<<.GroupBy>>) (rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>,container!=\"\"}[2m]))",
            "sum by (<<.GroupBy>>) (container_cpu_cores{<<.LabelMatchers>>,container!=\"\"})",
        );
        let all = problems(&none).join("\n");
        assert!(
            all.contains(
                "resource_rules.window: is required: the CPU container query has no rate()"
            ),
            "{all}"
        );
    }

    #[test]
    fn window_and_ranges_that_disagree_are_warnings() {
        let (rules, warnings) = good(&EXAMPLE.replace("window = \"2m\"", "window = \"5m\""));
        assert_eq!(rules.window, Duration::from_secs(300));
        let all = warnings.join("\n");
        assert_eq!(warnings.len(), 2, "{all}");
        assert!(
            all.contains(
                "resource_rules.cpu.container_query: rate(...[2m]) covers 2m, but window is 5m"
            ),
            "{all}"
        );
        assert!(
            all.contains("resource_rules.cpu.node_query: rate(...[2m]) covers 2m"),
            "{all}"
        );

        // irate: a window up to the range is fine, a longer one is not.
        let irate = EXAMPLE.replace("(rate(", "(irate(");
        let (_, warnings) = good(&irate.replace("window = \"2m\"", "window = \"30s\""));
        assert!(warnings.is_empty(), "{warnings:#?}");
        let (_, warnings) = good(&irate.replace("window = \"2m\"", "window = \"3m\""));
        let all = warnings.join("\n");
        assert_eq!(warnings.len(), 2, "{all}");
        assert!(
            all.contains("irate(...[2m]) uses only the last two samples inside 2m")
                && all.contains("prometheus-adapter#555"),
            "{all}"
        );

        // Memory ranges count too; subqueries are ranges.
        let (_, warnings) = good(&EXAMPLE.replace(
            "sum by (<<.GroupBy>>) (node_memory_working_set_bytes{<<.LabelMatchers>>})",
            "sum by (<<.GroupBy>>) (avg_over_time(node_memory_working_set_bytes{<<.LabelMatchers>>}[5m:30s]))",
        ));
        let all = warnings.join("\n");
        assert!(
            all.contains("resource_rules.memory.node_query: avg_over_time(...[5m]) covers 5m, but window is 2m"),
            "{all}"
        );
    }

    #[test]
    fn a_container_query_without_container_filter_is_a_warning() {
        let (_, warnings) = good(&EXAMPLE.replace(
            "container_memory_working_set_bytes{<<.LabelMatchers>>,container!=\"\"}",
            "container_memory_working_set_bytes{<<.LabelMatchers>>}",
        ));
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].starts_with("resource_rules.memory.container_query: container_memory_working_set_bytes{namespace=\"default\"} does not exclude an empty \"container\" label"),
            "{warnings:#?}"
        );
        // Other ways of excluding "" count.
        for filter in [
            r#"container=~".+""#,
            r#"container!~"""#,
            r#"container="app""#,
        ] {
            let (_, warnings) = good(&EXAMPLE.replace(
                "container_memory_working_set_bytes{<<.LabelMatchers>>,container!=\"\"}",
                &format!("container_memory_working_set_bytes{{<<.LabelMatchers>>,{filter}}}"),
            ));
            assert!(warnings.is_empty(), "{filter}: {warnings:#?}");
        }
    }

    /// rules/resource-metrics.toml compiles without warnings and renders what its comments
    /// (and docs/rules-guide.md) say it does.
    #[test]
    fn the_shipped_example_renders_what_it_says() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/resource-metrics.toml");
        let text = std::fs::read_to_string(&path).expect("rules/resource-metrics.toml");
        let (rules, warnings) = good(&text);
        assert!(warnings.is_empty(), "{warnings:#?}");
        let cpu = rules.rule(ComputeResource::Cpu);
        let memory = rules.rule(ComputeResource::Memory);
        assert_eq!(cpu.node_labels(), ["instance", "node"]);
        assert_eq!(memory.node_labels(), ["instance", "node"]);
        let guide = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rules-guide.md"),
        )
        .expect("docs/rules-guide.md");
        for query in [
            cpu.pod_query(Some("shop")).expect("query"),
            cpu.pod_query(None).expect("query"),
            cpu.node_query(),
            memory.pod_query(Some("shop")).expect("query"),
            memory.node_query(),
        ] {
            assert!(guide.contains(&query), "docs/rules-guide.md lacks {query}");
        }
        for query in [
            cpu.pod_query(Some("shop")).expect("query"),
            cpu.node_query(),
        ] {
            assert!(text.contains(&query), "the file's comments lack {query}");
        }
    }

    /// prometheus-adapter's deploy/manifests/config-map.yaml, as `convert` writes it.
    const ADAPTER_DEFAULTS: &str = r#"
[resource_rules]
window = "5m"
[resource_rules.cpu]
container_query = '''
sum by (<<.GroupBy>>) (
  irate (
      container_cpu_usage_seconds_total{<<.LabelMatchers>>,container!="",pod!=""}[4m]
  )
)
'''
node_query = '''
sum by (<<.GroupBy>>) (
  irate(
      node_cpu_usage_seconds_total{<<.LabelMatchers>>}[4m]
  )
)
'''
resources.overrides = { namespace = { resource = "namespace" }, node = { resource = "node" }, pod = { resource = "pod" } }
container_label = "container"
[resource_rules.memory]
container_query = '''
sum by (<<.GroupBy>>) (
  container_memory_working_set_bytes{<<.LabelMatchers>>,container!="",pod!=""}
)
'''
node_query = '''
sum by (<<.GroupBy>>) (
  node_memory_working_set_bytes{<<.LabelMatchers>>}
)
'''
resources.overrides = { namespace = { resource = "namespace" }, node = { resource = "node" }, pod = { resource = "pod" } }
container_label = "container"
"#;

    #[test]
    fn prometheus_adapter_defaults_load_with_the_555_warning() {
        let (rules, warnings) = good(ADAPTER_DEFAULTS);
        assert_eq!(rules.window, Duration::from_secs(300));
        let all = warnings.join("\n");
        assert_eq!(warnings.len(), 2, "{all}");
        assert!(
            all.contains("resource_rules.cpu.container_query: irate(...[4m])"),
            "{all}"
        );
        assert!(
            all.contains("resource_rules.cpu.node_query: irate(...[4m])"),
            "{all}"
        );
        let cpu = rules.rule(ComputeResource::Cpu);
        assert_eq!(
            cpu.pod_query(Some("default")).expect("query"),
            "sum by (namespace,pod,container) (\n  irate (\n      container_cpu_usage_seconds_total{namespace=\"default\",container!=\"\",pod!=\"\"}[4m]\n  )\n)\n"
        );
        assert_eq!(cpu.node_labels(), ["node"]);
    }
}
