//! Rule templates: prometheus-adapter's `metricsQuery` and `resources.template`.
//!
//! prometheus-adapter compiles both with Go `text/template` and the delimiters `<<` `>>`
//! (`pkg/naming/metrics_query.go`, `pkg/naming/resource_converter.go`). This module is a
//! hand-written, compile-once engine for the subset of that language rule authors use, with
//! Go's output for every construct it accepts, and a load-time error for everything else.
//!
//! The subset comes from what prometheus-adapter documents and its users write: the docs,
//! README, manifests and `config-gen` defaults use only `.Series`, `.LabelMatchers` and
//! `.GroupBy` (and `.Group`/`.Resource` in `resources.template`); the adapter's own tests use
//! `<<index .LabelValuesByName "x">>`, `<<.LabelValuesByName>>` and `<<.GroupBySlice>>`;
//! a public migration guide for adapter configs uses `index` lookups and
//! `range $i, $v := .GroupBySlice` with `if $i` to build a `by (...)` list. The adapter
//! registers no template functions, so Go's builtins are all there is, and only `index` is
//! needed. `{{ }}` is plain text here, as it is in the adapter. Supported:
//!
//! * text, with `<<-` / `->>` trimming the whitespace before / after an action;
//! * comments `<</* ... */>>`;
//! * fields of the template data: `<<.Series>>`, `<<.LabelMatchers>>`, `<<.GroupBy>>`,
//!   `<<.GroupBySlice>>` (printed like Go's `fmt`: `[a b]`), `<<.LabelValuesByName>>`
//!   (printed `map[k:v k2:v2]`, keys sorted) and `<<.Group>>` / `<<.Resource>>` for
//!   `resources.template`;
//! * map lookups `<<.LabelValuesByName.pod>>` (a missing key prints `<no value>`, as Go does)
//!   and `<<index .LabelValuesByName "pod">>` (a missing key prints the empty string);
//! * `$` (the template data, also inside `range`), string literals `<<"<<">>`;
//! * `<<if X>>`, `<<else if X>>`, `<<else>>`, `<<end>>` with Go's truthiness;
//! * `<<range X>>`, `<<range $v := X>>`, `<<range $i, $v := X>>` over `.GroupBySlice` (index,
//!   element) and `.LabelValuesByName` (key, value; keys sorted), with `<<else>>`.
//!
//! Everything else (other functions, pipelines, `with`, variables outside `range`, unknown
//! fields, fields of strings, unbalanced delimiters) fails [`Template::compile`] with what and
//! where. Unlike Go, unknown fields are found when the rule loads, not per request.
//!
//! A `resources.template` may only contain text, `<<.Group>>` and `<<.Resource>>`, because
//! prometheus-adapter also runs it backwards ([`Template::resource_label_regex`]).

use std::collections::BTreeMap;

use promql_parser::parser::value::ValueType;

/// Which template this is, and so which fields it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    /// `metrics_query`: `.Series`, `.LabelMatchers`, `.LabelValuesByName`, `.GroupBy`,
    /// `.GroupBySlice`.
    MetricsQuery,
    /// `resources.template`: `.Group`, `.Resource`.
    ResourceName,
}

impl TemplateKind {
    fn known_fields(self) -> &'static [Field] {
        match self {
            TemplateKind::MetricsQuery => &[
                Field::Series,
                Field::LabelMatchers,
                Field::LabelValuesByName,
                Field::GroupBy,
                Field::GroupBySlice,
            ],
            TemplateKind::ResourceName => &[Field::Group, Field::Resource],
        }
    }
}

/// The arguments of a `metrics_query` template, as prometheus-adapter builds them.
#[derive(Clone, Copy, Debug)]
pub struct QueryArgs<'a> {
    /// `.Series`: the series name.
    pub series: &'a str,
    /// `.LabelMatchers`: the matchers, already comma-joined and escaped.
    pub label_matchers: &'a str,
    /// `.LabelValuesByName`: label name to its values, pre-joined by `|`.
    pub label_values_by_name: &'a BTreeMap<String, String>,
    /// `.GroupBySlice`; `.GroupBy` is these joined by `,`.
    pub group_by: &'a [String],
}

/// Where a template error is. `line` and `column` count from 1; `column` counts characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn locate(src: &str, offset: usize) -> Position {
        let offset = offset.min(src.len());
        let before = src.get(..offset).unwrap_or(src);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            offset,
            line: before.matches('\n').count() + 1,
            column: before.get(line_start..).map_or(0, |s| s.chars().count()) + 1,
        }
    }
}

/// A template that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The source is not a template this engine accepts.
    #[error("{kind} at line {}, column {} (byte {}){}", .pos.line, .pos.column, .pos.offset, .kind.hint())]
    Syntax { kind: SyntaxError, pos: Position },
    /// A `resources.template` that cannot be turned into a label regex.
    #[error("resources.template {template:?}: {reason}")]
    ResourceRegex { template: String, reason: String },
}

impl TemplateError {
    /// What went wrong, for syntax errors.
    pub fn syntax(&self) -> Option<&SyntaxError> {
        match self {
            TemplateError::Syntax { kind, .. } => Some(kind),
            TemplateError::ResourceRegex { .. } => None,
        }
    }

    /// Where it went wrong, for syntax errors.
    pub fn position(&self) -> Option<Position> {
        match self {
            TemplateError::Syntax { pos, .. } => Some(*pos),
            TemplateError::ResourceRegex { .. } => None,
        }
    }
}

/// What is wrong with a template's source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("unclosed action: `<<` without `>>`")]
    UnclosedAction,
    #[error("unclosed comment: `/*` without `*/`")]
    UnclosedComment,
    #[error("comment ends before closing delimiter: `*/` must be followed by `>>` or ` ->>`")]
    CommentNotClosed,
    #[error("unterminated quoted string")]
    UnterminatedString,
    #[error("invalid escape {0:?} in quoted string")]
    BadEscape(String),
    #[error("empty action `<<>>`")]
    EmptyAction,
    #[error("trim marker `->>` must have a space before it")]
    RightTrimWithoutSpace,
    #[error("unexpected {0:?} in action")]
    UnexpectedChar(char),
    #[error("numbers are not supported in rule templates")]
    Number,
    #[error("pipelines (`|`) are not supported in rule templates")]
    Pipeline,
    #[error("parentheses are not supported in rule templates")]
    Paren,
    #[error("unknown field .{name}")]
    UnknownField { name: String, kind: TemplateKind },
    #[error("can't evaluate field .{name} in type {ty}")]
    FieldOfNonStruct { name: String, ty: &'static str },
    #[error("function {0:?} not defined")]
    UnknownFunction(String),
    #[error("function {0:?} is not supported in rule templates")]
    UnsupportedFunction(String),
    #[error("{0:?} is not supported in rule templates")]
    UnsupportedKeyword(String),
    #[error("undefined variable \"${0}\"")]
    UndefinedVariable(String),
    #[error("variables can only be declared in `range`")]
    Declaration,
    #[error("unexpected {0} in action")]
    UnexpectedToken(String),
    #[error("unexpected <<{0}>>")]
    UnexpectedKeyword(&'static str),
    #[error("<<{0}>> without matching <<end>>")]
    UnclosedBlock(&'static str),
    #[error("missing value for {0}")]
    MissingValue(&'static str),
    #[error("range can't iterate over {0}")]
    CannotRange(&'static str),
    #[error("index of {0}")]
    CannotIndex(&'static str),
    #[error("index key must be a string, not {0}")]
    IndexKey(&'static str),
    #[error("index takes a map and exactly one key")]
    IndexArity,
    #[error("range declares one or two variables (`$v :=` or `$i, $v :=`)")]
    RangeVars,
    #[error("cannot print the whole template data; use one of its fields")]
    PrintRoot,
    #[error("{0} is not allowed in resources.template")]
    NotInResourceTemplate(String),
}

impl SyntaxError {
    /// Extra advice printed after the position.
    fn hint(&self) -> String {
        match self {
            SyntaxError::UnknownField { name, kind } => {
                let known: Vec<String> = kind
                    .known_fields()
                    .iter()
                    .map(|f| format!(".{}", f.name()))
                    .collect();
                let suggestion = suggest(name, kind.known_fields())
                    .map(|f| format!("did you mean .{}? ", f.name()))
                    .unwrap_or_default();
                format!(" ({suggestion}known: {})", known.join(", "))
            }
            SyntaxError::UnknownFunction(_) | SyntaxError::UnsupportedFunction(_) => {
                " (rule templates support only the function `index`)".to_string()
            }
            SyntaxError::UnsupportedKeyword(_) => {
                " (supported actions: if, else, else if, range, end)".to_string()
            }
            SyntaxError::UnexpectedChar(_) => {
                " (to print `<<` or `>>` literally write <<\"<<\">> or <<\">>\">>)".to_string()
            }
            _ => String::new(),
        }
    }
}

/// The closest known field, for "did you mean".
fn suggest(name: &str, known: &[Field]) -> Option<Field> {
    if name == "LabelMatchersByName" {
        // prometheus-adapter's own doc comment names this field, which does not exist.
        return Some(Field::LabelValuesByName);
    }
    known
        .iter()
        .map(|f| {
            (
                edit_distance(&name.to_ascii_lowercase(), &f.name().to_ascii_lowercase()),
                *f,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, f)| f)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A field of the template data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Series,
    LabelMatchers,
    LabelValuesByName,
    GroupBy,
    GroupBySlice,
    Group,
    Resource,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Series => "Series",
            Field::LabelMatchers => "LabelMatchers",
            Field::LabelValuesByName => "LabelValuesByName",
            Field::GroupBy => "GroupBy",
            Field::GroupBySlice => "GroupBySlice",
            Field::Group => "Group",
            Field::Resource => "Resource",
        }
    }

    fn ty(self) -> Ty {
        match self {
            Field::LabelValuesByName => Ty::Map,
            Field::GroupBySlice => Ty::List,
            _ => Ty::Str,
        }
    }
}

/// The static type of a value; every value's type is known when the template compiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Root,
    Str,
    /// A map lookup by field syntax: the value, or Go's `<no value>` for a missing key.
    MaybeStr,
    List,
    Map,
    Int,
}

impl Ty {
    fn go_name(self, kind: TemplateKind) -> &'static str {
        match self {
            Ty::Root => match kind {
                TemplateKind::MetricsQuery => "queryTemplateArgs",
                TemplateKind::ResourceName => "schema.GroupResource",
            },
            Ty::Str | Ty::MaybeStr => "string",
            Ty::List => "[]string",
            Ty::Map => "map[string]string",
            Ty::Int => "int",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Compiled form

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Print(Expr),
    If {
        branches: Vec<(Expr, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        over: Expr,
        key_slot: Option<usize>,
        value_slot: Option<usize>,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Clone, Debug)]
enum Expr {
    Lit(String),
    Operand { base: Base, steps: Vec<Step> },
    Index { map: Box<Expr>, key: Box<Expr> },
}

#[derive(Clone, Copy, Debug)]
enum Base {
    Dot,
    Root,
    Var(usize),
}

#[derive(Clone, Debug)]
enum Step {
    Field(Field),
    Key(String),
}

/// A compiled rule template.
#[derive(Clone, Debug)]
pub struct Template {
    source: String,
    kind: TemplateKind,
    nodes: Vec<Node>,
    slots: usize,
    uses_group_by: bool,
}

impl Template {
    /// Compiles `src`; fails on anything this engine would not render as Go does.
    pub fn compile(src: &str, kind: TemplateKind) -> Result<Template, TemplateError> {
        let items = lex(src)?;
        let mut parser = Parser {
            src,
            kind,
            items,
            next: 0,
            scope: Scope {
                dots: vec![Ty::Root],
                vars: Vec::new(),
            },
            slots: 0,
            uses_group_by: false,
        };
        let (nodes, end) = parser.parse_list()?;
        match end {
            ListEnd::Eof => {}
            ListEnd::End(at) => return Err(parser.err(SyntaxError::UnexpectedKeyword("end"), at)),
            ListEnd::Else { at, .. } => {
                return Err(parser.err(SyntaxError::UnexpectedKeyword("else"), at))
            }
        }
        Ok(Template {
            source: src.to_string(),
            kind,
            nodes,
            slots: parser.slots,
            uses_group_by: parser.uses_group_by,
        })
    }

    /// The source the template was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Which template this is.
    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// Renders a `metrics_query` template. (Fields of the other kind render empty.)
    pub fn render_query(&self, args: &QueryArgs<'_>) -> String {
        let joined = if self.uses_group_by {
            args.group_by.join(",")
        } else {
            String::new()
        };
        let ctx = Ctx {
            data: Data::Query {
                args,
                group_by: &joined,
            },
        };
        self.render(&ctx)
    }

    /// Renders a `resources.template`. As in prometheus-adapter, the caller passes the group
    /// with `.` and `-` replaced by `_` and the resource singularized.
    pub fn render_resource(&self, group: &str, resource: &str) -> String {
        let ctx = Ctx {
            data: Data::Resource { group, resource },
        };
        self.render(&ctx)
    }

    fn render(&self, ctx: &Ctx<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 64);
        let mut vars = vec![Val::NoValue; self.slots];
        ctx.walk(&self.nodes, Val::Root, &mut vars, &mut out);
        out
    }

    /// The regex that finds `group` and `resource` in a Prometheus label name, as
    /// prometheus-adapter's `newLabelGroupResExtractor` builds it: the template rendered with
    /// `(?P<group>.+?)` and `(?P<resource>.+?)`, anchored with `^` and `$`. Unlike the
    /// adapter, the literal text is regex-escaped. The template must use `<<.Resource>>`
    /// once; `<<.Group>>` is optional (then the group is the core group, "").
    pub fn resource_label_regex(&self) -> Result<regex::Regex, TemplateError> {
        let fail = |reason: &str| TemplateError::ResourceRegex {
            template: self.source.clone(),
            reason: reason.to_string(),
        };
        if self.kind != TemplateKind::ResourceName {
            return Err(fail("is a metrics query, not a resource template"));
        }
        let mut pattern = String::from("^");
        let (mut groups, mut resources) = (0, 0);
        for node in &self.nodes {
            match node {
                Node::Text(t) => pattern.push_str(&regex::escape(t)),
                Node::Print(Expr::Operand { steps, .. }) => match steps.as_slice() {
                    [Step::Field(Field::Group)] => {
                        groups += 1;
                        pattern.push_str("(?P<group>.+?)");
                    }
                    [Step::Field(Field::Resource)] => {
                        resources += 1;
                        pattern.push_str("(?P<resource>.+?)");
                    }
                    _ => return Err(fail("may only use <<.Group>> and <<.Resource>>")),
                },
                _ => return Err(fail("may only use <<.Group>> and <<.Resource>>")),
            }
        }
        pattern.push('$');
        match (groups, resources) {
            (_, 0) => Err(fail("must include <<.Resource>>")),
            (_, 2..) => Err(fail("uses <<.Resource>> more than once")),
            (2.., _) => Err(fail("uses <<.Group>> more than once")),
            _ => regex::Regex::new(&pattern).map_err(|e| fail(&e.to_string())),
        }
    }
}

/// Which rule a `metrics_query` belongs to; decides the arguments it can be rendered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// `[[rules]]`: `LabelMatchers` always holds the object's resource label; `GroupBy` is
    /// that label.
    Custom,
    /// `[[external_rules]]`: `GroupBy` is empty. With `namespaced = true` the request's
    /// namespace is always a matcher; with `false` and no label selector, `LabelMatchers` is
    /// empty.
    External { namespaced: bool },
}

/// Load-time PromQL check of a `metrics_query` for any rule: renders it as for a custom
/// rule (`namespace="default",pod=~"a|b"` grouped by `pod`, and `namespace=~"a|b"` grouped
/// by `namespace`), parses each query and requires an instant vector or a scalar. The error
/// names the case, the parser's message and the rendered query.
///
/// It does not render empty `LabelMatchers`: prometheus-adapter's own documented rules
/// (`{<<.LabelMatchers>>,container!="POD"}`) would fail, yet a custom rule never sees them.
/// Use [`validate_query_for`] with the rule's kind to check exactly what that rule can get.
pub fn validate_query(t: &Template, series_example: &str) -> Result<(), String> {
    validate_query_for(t, series_example, RuleKind::Custom)
}

/// [`validate_query`] with arguments like those prometheus-adapter builds for this kind of
/// rule: custom rules always have matchers and a `GroupBy`; external rules have an empty
/// `GroupBy`, and with `namespaced = false` a request without a label selector renders empty
/// `LabelMatchers`. Only that case renders them. `metric{}` is valid PromQL (Prometheus and
/// promql-parser both accept it); `{}` and `{,a="b"}` are not, and a rule producing them is
/// rejected because it would fail for those requests.
pub fn validate_query_for(
    t: &Template,
    series_example: &str,
    rule: RuleKind,
) -> Result<(), String> {
    if t.kind() != TemplateKind::MetricsQuery {
        return Err("not a metrics query template".to_string());
    }
    struct Case {
        what: &'static str,
        label_matchers: &'static str,
        values: &'static [(&'static str, &'static str)],
        group_by: &'static [&'static str],
    }
    let cases: [Case; 2] = match rule {
        RuleKind::Custom => [
            Case {
                what: "pods in a namespace",
                label_matchers: r#"namespace="default",pod=~"a|b""#,
                values: &[("namespace", "default"), ("pod", "a|b")],
                group_by: &["pod"],
            },
            Case {
                what: "namespaces",
                label_matchers: r#"namespace=~"a|b""#,
                values: &[("namespace", "a|b")],
                group_by: &["namespace"],
            },
        ],
        RuleKind::External { namespaced: true } => [
            Case {
                what: "request with a label selector",
                label_matchers: r#"queue=~"a|b",namespace="default""#,
                values: &[("namespace", "default"), ("queue", "a|b")],
                group_by: &[],
            },
            Case {
                what: "request without a label selector",
                label_matchers: r#"namespace="default""#,
                values: &[("namespace", "default")],
                group_by: &[],
            },
        ],
        RuleKind::External { namespaced: false } => [
            Case {
                what: "request with a label selector",
                label_matchers: r#"queue=~"a|b""#,
                values: &[("queue", "a|b")],
                group_by: &[],
            },
            Case {
                what: "request without a label selector (empty LabelMatchers)",
                label_matchers: "",
                values: &[],
                group_by: &[],
            },
        ],
    };
    for case in &cases {
        let values: BTreeMap<String, String> = case
            .values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let group_by: Vec<String> = case.group_by.iter().map(|g| g.to_string()).collect();
        let query = t.render_query(&QueryArgs {
            series: series_example,
            label_matchers: case.label_matchers,
            label_values_by_name: &values,
            group_by: &group_by,
        });
        let case = case.what;
        if query.trim().is_empty() {
            return Err(format!("{case}: the template renders an empty query"));
        }
        let expr = crate::promql::parse(&query)
            .map_err(|e| format!("{case}: invalid PromQL: {e}; rendered query: {query}"))?;
        let ty = expr.value_type();
        if !matches!(ty, ValueType::Vector | ValueType::Scalar) {
            return Err(format!(
                "{case}: the query returns a {ty}, not an instant vector or scalar; rendered query: {query}"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rendering

#[derive(Clone, Copy, Debug)]
enum Val<'a> {
    Root,
    Str(&'a str),
    NoValue,
    List(&'a [String]),
    Map(&'a BTreeMap<String, String>),
    Int(usize),
}

impl Val<'_> {
    fn truthy(self) -> bool {
        match self {
            Val::Root => true,
            Val::Str(s) => !s.is_empty(),
            Val::NoValue => false,
            Val::List(l) => !l.is_empty(),
            Val::Map(m) => !m.is_empty(),
            Val::Int(i) => i != 0,
        }
    }

    /// Go's `fmt.Fprint` of the value.
    fn print(self, out: &mut String) {
        match self {
            Val::Root => {}
            Val::Str(s) => out.push_str(s),
            Val::NoValue => out.push_str("<no value>"),
            Val::List(l) => {
                out.push('[');
                for (i, s) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(s);
                }
                out.push(']');
            }
            Val::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    out.push_str(v);
                }
                out.push(']');
            }
            Val::Int(i) => out.push_str(&i.to_string()),
        }
    }
}

enum Data<'a> {
    Query {
        args: &'a QueryArgs<'a>,
        group_by: &'a str,
    },
    Resource {
        group: &'a str,
        resource: &'a str,
    },
}

struct Ctx<'a> {
    data: Data<'a>,
}

impl<'a> Ctx<'a> {
    fn field(&self, f: Field) -> Val<'a> {
        match (&self.data, f) {
            (Data::Query { args, .. }, Field::Series) => Val::Str(args.series),
            (Data::Query { args, .. }, Field::LabelMatchers) => Val::Str(args.label_matchers),
            (Data::Query { args, .. }, Field::LabelValuesByName) => {
                Val::Map(args.label_values_by_name)
            }
            (Data::Query { group_by, .. }, Field::GroupBy) => Val::Str(group_by),
            (Data::Query { args, .. }, Field::GroupBySlice) => Val::List(args.group_by),
            (Data::Resource { group, .. }, Field::Group) => Val::Str(group),
            (Data::Resource { resource, .. }, Field::Resource) => Val::Str(resource),
            _ => Val::Str(""),
        }
    }

    fn eval(&self, e: &'a Expr, dot: Val<'a>, vars: &[Val<'a>]) -> Val<'a> {
        match e {
            Expr::Lit(s) => Val::Str(s),
            Expr::Operand { base, steps } => {
                let mut v = match base {
                    Base::Dot => dot,
                    Base::Root => Val::Root,
                    Base::Var(slot) => vars.get(*slot).copied().unwrap_or(Val::NoValue),
                };
                for step in steps {
                    v = match (step, v) {
                        (Step::Field(f), Val::Root) => self.field(*f),
                        (Step::Key(k), Val::Map(m)) => {
                            m.get(k).map_or(Val::NoValue, |s| Val::Str(s))
                        }
                        _ => Val::NoValue,
                    };
                }
                v
            }
            Expr::Index { map, key } => {
                match (self.eval(map, dot, vars), self.eval(key, dot, vars)) {
                    // Go's `index` yields the zero value for a missing key.
                    (Val::Map(m), Val::Str(k)) => Val::Str(m.get(k).map_or("", |s| s.as_str())),
                    _ => Val::Str(""),
                }
            }
        }
    }

    fn walk(&self, nodes: &'a [Node], dot: Val<'a>, vars: &mut Vec<Val<'a>>, out: &mut String) {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Print(e) => self.eval(e, dot, vars).print(out),
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let taken = branches
                        .iter()
                        .find(|(cond, _)| self.eval(cond, dot, vars).truthy());
                    match taken {
                        Some((_, body)) => self.walk(body, dot, vars, out),
                        None => self.walk(otherwise, dot, vars, out),
                    }
                }
                Node::Range {
                    over,
                    key_slot,
                    value_slot,
                    body,
                    otherwise,
                } => {
                    let set = |vars: &mut Vec<Val<'a>>, key: Val<'a>, value: Val<'a>| {
                        for (slot, v) in [(key_slot, key), (value_slot, value)] {
                            if let Some(cell) = slot.and_then(|s| vars.get_mut(s)) {
                                *cell = v;
                            }
                        }
                    };
                    match self.eval(over, dot, vars) {
                        Val::List(l) if !l.is_empty() => {
                            for (i, s) in l.iter().enumerate() {
                                set(vars, Val::Int(i), Val::Str(s));
                                self.walk(body, Val::Str(s), vars, out);
                            }
                        }
                        Val::Map(m) if !m.is_empty() => {
                            for (k, v) in m {
                                set(vars, Val::Str(k), Val::Str(v));
                                self.walk(body, Val::Str(v), vars, out);
                            }
                        }
                        _ => self.walk(otherwise, dot, vars, out),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lexing: source to text and action items

/// Go's whitespace for trim markers and between tokens.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

const SPACE_CHARS: &[char] = &[' ', '\t', '\r', '\n'];

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// `.` alone.
    Dot,
    /// `.A.b`, `$.A`, `$v`, `$v.A`: a base and its field chain.
    Operand {
        var: Option<String>,
        fields: Vec<(String, usize)>,
    },
    Ident(String),
    Str(String),
    Declare,
    Comma,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Dot => "\".\"".to_string(),
            Tok::Operand { var, fields } => {
                let mut s = var.as_ref().map(|v| format!("${v}")).unwrap_or_default();
                for (f, _) in fields {
                    s.push('.');
                    s.push_str(f);
                }
                format!("{s:?}")
            }
            Tok::Ident(i) => format!("{i:?}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Declare => "\":=\"".to_string(),
            Tok::Comma => "\",\"".to_string(),
        }
    }
}

#[derive(Debug)]
enum Item {
    Text(String),
    /// The tokens with their byte offsets, and the offset of the `<<`.
    Action {
        toks: Vec<(Tok, usize)>,
        at: usize,
    },
}

fn syntax(src: &str, kind: SyntaxError, at: usize) -> TemplateError {
    TemplateError::Syntax {
        kind,
        pos: Position::locate(src, at),
    }
}

fn lex(src: &str) -> Result<Vec<Item>, TemplateError> {
    let b = src.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut trim_next = false;
    loop {
        let rest = src.get(pos..).unwrap_or("");
        let Some(rel) = rest.find("<<") else {
            let text = if trim_next {
                rest.trim_start_matches(SPACE_CHARS)
            } else {
                rest
            };
            if !text.is_empty() {
                items.push(Item::Text(text.to_string()));
            }
            return Ok(items);
        };
        let start = pos + rel;
        let mut text = src.get(pos..start).unwrap_or("");
        if trim_next {
            text = text.trim_start_matches(SPACE_CHARS);
        }
        let mut p = start + 2;
        if b.get(p) == Some(&b'-') && b.get(p + 1).is_some_and(|c| is_space(*c)) {
            text = text.trim_end_matches(SPACE_CHARS);
            p += 2;
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        if src.get(p..).is_some_and(|s| s.starts_with("/*")) {
            let close = src
                .get(p + 2..)
                .and_then(|s| s.find("*/"))
                .ok_or_else(|| syntax(src, SyntaxError::UnclosedComment, start))?;
            let after = p + 2 + close + 2;
            let tail = src.get(after..).unwrap_or("");
            if tail.starts_with(">>") {
                pos = after + 2;
                trim_next = false;
            } else if tail.len() >= 4
                && is_space(tail.as_bytes()[0])
                && tail[1..].starts_with("->>")
            {
                pos = after + 4;
                trim_next = true;
            } else {
                return Err(syntax(src, SyntaxError::CommentNotClosed, after));
            }
            continue;
        }
        let (toks, end, trim) = lex_action(src, p, start)?;
        items.push(Item::Action { toks, at: start });
        pos = end;
        trim_next = trim;
    }
}

/// Lexes one action from `p` (after `<<` and any trim marker) to its `>>`. Returns the
/// tokens, the offset after the closing delimiter, and whether it was `->>`.
#[allow(clippy::type_complexity)]
fn lex_action(
    src: &str,
    mut p: usize,
    start: usize,
) -> Result<(Vec<(Tok, usize)>, usize, bool), TemplateError> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    loop {
        let rest = src.get(p..).unwrap_or("");
        if rest.is_empty() {
            return Err(syntax(src, SyntaxError::UnclosedAction, start));
        }
        if rest.starts_with(">>") {
            return Ok((toks, p + 2, false));
        }
        if is_space(b[p]) && rest[1..].starts_with("->>") {
            return Ok((toks, p + 4, true));
        }
        let Some(c) = rest.chars().next() else {
            return Err(syntax(src, SyntaxError::UnclosedAction, start));
        };
        match c {
            ' ' | '\t' | '\r' | '\n' => p += 1,
            '"' => {
                let (s, end) = lex_quoted(src, p)?;
                toks.push((Tok::Str(s), p));
                p = end;
            }
            '`' => {
                let close = rest[1..]
                    .find('`')
                    .ok_or_else(|| syntax(src, SyntaxError::UnterminatedString, p))?;
                toks.push((Tok::Str(rest[1..1 + close].to_string()), p));
                p += close + 2;
            }
            '.' | '$' => {
                let at = p;
                let mut var = None;
                if c == '$' {
                    let name: String = rest[1..]
                        .chars()
                        .take_while(|c| is_ident_char(*c))
                        .collect();
                    p += 1 + name.len();
                    var = Some(name);
                }
                let mut fields = Vec::new();
                loop {
                    let tail = src.get(p..).unwrap_or("");
                    let mut chars = tail.chars();
                    if chars.next() != Some('.') {
                        break;
                    }
                    let name: String = chars.take_while(|c| is_ident_char(*c)).collect();
                    if name.is_empty() {
                        break;
                    }
                    fields.push((name.clone(), p));
                    p += 1 + name.len();
                }
                if var.is_none() && fields.is_empty() {
                    toks.push((Tok::Dot, at));
                    p += 1;
                } else {
                    toks.push((Tok::Operand { var, fields }, at));
                }
            }
            ':' if rest[1..].starts_with('=') => {
                toks.push((Tok::Declare, p));
                p += 2;
            }
            ',' => {
                toks.push((Tok::Comma, p));
                p += 1;
            }
            '|' => return Err(syntax(src, SyntaxError::Pipeline, p)),
            '(' | ')' => return Err(syntax(src, SyntaxError::Paren, p)),
            '-' if rest[1..].starts_with(">>") => {
                return Err(syntax(src, SyntaxError::RightTrimWithoutSpace, p))
            }
            '-' | '+' | '0'..='9' => return Err(syntax(src, SyntaxError::Number, p)),
            c if c == '_' || c.is_alphabetic() => {
                let word: String = rest.chars().take_while(|c| is_ident_char(*c)).collect();
                let len = word.len();
                toks.push((Tok::Ident(word), p));
                p += len;
            }
            c => return Err(syntax(src, SyntaxError::UnexpectedChar(c), p)),
        }
    }
}

/// A Go interpreted string literal starting at `p`; returns its value and the end offset.
fn lex_quoted(src: &str, p: usize) -> Result<(String, usize), TemplateError> {
    let mut out = String::new();
    let mut chars = src.get(p + 1..).unwrap_or("").char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, p + 1 + i + 1)),
            '\n' => break,
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    _ => {
                        return Err(syntax(
                            src,
                            SyntaxError::BadEscape(format!("\\{e}")),
                            p + 1 + i,
                        ))
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(syntax(src, SyntaxError::UnterminatedString, p))
}

// ---------------------------------------------------------------------------------------
// Parsing: items to nodes, with static types

const GO_BUILTINS: &[&str] = &[
    "and", "call", "html", "js", "len", "not", "or", "print", "printf", "println", "slice",
    "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
];
const GO_KEYWORDS: &[&str] = &[
    "with", "define", "template", "block", "break", "continue", "nil", "true", "false",
];

enum ListEnd {
    Eof,
    End(usize),
    /// `else`, and the tokens after it (`else if X` has them).
    Else {
        at: usize,
        rest: Vec<(Tok, usize)>,
    },
}

struct Scope {
    /// The type of `.`, innermost last.
    dots: Vec<Ty>,
    /// Declared variables: name, type, slot.
    vars: Vec<(String, Ty, usize)>,
}

struct Parser<'s> {
    src: &'s str,
    kind: TemplateKind,
    items: Vec<Item>,
    next: usize,
    scope: Scope,
    slots: usize,
    uses_group_by: bool,
}

impl Parser<'_> {
    fn err(&self, kind: SyntaxError, at: usize) -> TemplateError {
        syntax(self.src, kind, at)
    }

    fn parse_list(&mut self) -> Result<(Vec<Node>, ListEnd), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.get_mut(self.next) {
            self.next += 1;
            let (toks, at) = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(std::mem::take(t)));
                    continue;
                }
                Item::Action { toks, at } => (std::mem::take(toks), *at),
            };
            let Some((first, first_at)) = toks.first().cloned() else {
                return Err(self.err(SyntaxError::EmptyAction, at));
            };
            if self.kind == TemplateKind::ResourceName {
                self.check_resource_action(&toks, at)?;
            }
            match first {
                Tok::Ident(w) if w == "end" => {
                    if let Some((t, a)) = toks.get(1) {
                        return Err(self.err(SyntaxError::UnexpectedToken(t.describe()), *a));
                    }
                    return Ok((nodes, ListEnd::End(at)));
                }
                Tok::Ident(w) if w == "else" => {
                    return Ok((
                        nodes,
                        ListEnd::Else {
                            at,
                            rest: toks.get(1..).unwrap_or(&[]).to_vec(),
                        },
                    ));
                }
                Tok::Ident(w) if w == "if" => nodes.push(self.parse_if(&toks[1..], at)?),
                Tok::Ident(w) if w == "range" => nodes.push(self.parse_range(&toks[1..], at)?),
                Tok::Operand { var: Some(_), .. }
                    if toks.get(1).is_some_and(|t| t.0 == Tok::Declare) =>
                {
                    return Err(self.err(SyntaxError::Declaration, first_at));
                }
                _ => {
                    let (expr, ty) = self.parse_expr(&toks, at, "print")?;
                    if ty == Ty::Root {
                        return Err(self.err(SyntaxError::PrintRoot, first_at));
                    }
                    nodes.push(Node::Print(expr));
                }
            }
        }
        Ok((nodes, ListEnd::Eof))
    }

    /// A `resources.template` is run backwards, so it may only print `.Group`/`.Resource`.
    fn check_resource_action(&self, toks: &[(Tok, usize)], at: usize) -> Result<(), TemplateError> {
        match toks {
            [(Tok::Operand { var: None, fields }, _)] if fields.len() == 1 => Ok(()),
            [(Tok::Ident(w), a), ..] if matches!(w.as_str(), "if" | "else" | "end" | "range") => {
                Err(self.err(SyntaxError::NotInResourceTemplate(format!("<<{w}>>")), *a))
            }
            _ => Err(self.err(
                SyntaxError::NotInResourceTemplate(
                    "anything but <<.Group>> and <<.Resource>>".to_string(),
                ),
                at,
            )),
        }
    }

    fn parse_if(&mut self, cond: &[(Tok, usize)], at: usize) -> Result<Node, TemplateError> {
        let mut branches = Vec::new();
        let mut cond = cond.to_vec();
        let mut cond_at = at;
        loop {
            let (expr, _) = self.parse_expr(&cond, cond_at, "if")?;
            let (body, end) = self.parse_list()?;
            branches.push((expr, body));
            match end {
                ListEnd::Eof => return Err(self.err(SyntaxError::UnclosedBlock("if"), at)),
                ListEnd::End(_) => {
                    return Ok(Node::If {
                        branches,
                        otherwise: Vec::new(),
                    })
                }
                ListEnd::Else { at: else_at, rest } => match rest.first() {
                    None => {
                        let otherwise = self.parse_else_body("if", at)?;
                        return Ok(Node::If {
                            branches,
                            otherwise,
                        });
                    }
                    Some((Tok::Ident(w), _)) if w == "if" => {
                        cond = rest[1..].to_vec();
                        cond_at = else_at;
                    }
                    Some((t, a)) => {
                        return Err(self.err(SyntaxError::UnexpectedToken(t.describe()), *a))
                    }
                },
            }
        }
    }

    /// The list after a plain `else`, which must end with `end`.
    fn parse_else_body(
        &mut self,
        block: &'static str,
        at: usize,
    ) -> Result<Vec<Node>, TemplateError> {
        let (otherwise, end) = self.parse_list()?;
        match end {
            ListEnd::End(_) => Ok(otherwise),
            ListEnd::Eof => Err(self.err(SyntaxError::UnclosedBlock(block), at)),
            ListEnd::Else { at, .. } => Err(self.err(SyntaxError::UnexpectedKeyword("else"), at)),
        }
    }

    fn parse_range(&mut self, toks: &[(Tok, usize)], at: usize) -> Result<Node, TemplateError> {
        // `range X`, `range $v := X`, `range $i, $v := X`
        let declare = toks.iter().position(|(t, _)| *t == Tok::Declare);
        let (names, expr_toks) = match declare {
            None => (Vec::new(), toks),
            Some(d) => {
                let mut names = Vec::new();
                let decl = &toks[..d];
                for (i, (t, a)) in decl.iter().enumerate() {
                    match (i % 2, t) {
                        (
                            0,
                            Tok::Operand {
                                var: Some(v),
                                fields,
                            },
                        ) if fields.is_empty() && !v.is_empty() => names.push((v.clone(), *a)),
                        (1, Tok::Comma) => {}
                        _ => return Err(self.err(SyntaxError::UnexpectedToken(t.describe()), *a)),
                    }
                }
                if names.is_empty() || names.len() > 2 || decl.len().is_multiple_of(2) {
                    return Err(self.err(SyntaxError::RangeVars, toks[d].1));
                }
                (names, &toks[d + 1..])
            }
        };
        let (over, ty) = self.parse_expr(expr_toks, at, "range")?;
        let (key_ty, elem_ty) = match ty {
            Ty::List => (Ty::Int, Ty::Str),
            Ty::Map => (Ty::Str, Ty::Str),
            other => {
                let pos = expr_toks.first().map_or(at, |t| t.1);
                return Err(self.err(SyntaxError::CannotRange(other.go_name(self.kind)), pos));
            }
        };
        let slot = |p: &mut Self, name: &str, ty: Ty| {
            let s = p.slots;
            p.slots += 1;
            p.scope.vars.push((name.to_string(), ty, s));
            s
        };
        let vars_before = self.scope.vars.len();
        // Go: one variable gets the element; two get index/key and element.
        let (key_slot, value_slot) = match names.as_slice() {
            [] => (None, None),
            [(v, _)] => (None, Some(slot(self, v, elem_ty))),
            [(k, _), (v, _), ..] => {
                let k = slot(self, k, key_ty);
                (Some(k), Some(slot(self, v, elem_ty)))
            }
        };
        // Range variables are visible in the body only. (Go also lets `<<else>>` see them,
        // holding the empty collection; nothing useful can be done with that.)
        self.scope.dots.push(elem_ty);
        let body = self.parse_list();
        self.scope.dots.pop();
        self.scope.vars.truncate(vars_before);
        let (body, end) = body?;
        let otherwise = match end {
            ListEnd::End(_) => Vec::new(),
            ListEnd::Eof => return Err(self.err(SyntaxError::UnclosedBlock("range"), at)),
            ListEnd::Else { at: else_at, rest } => {
                if let Some((t, a)) = rest.first() {
                    let _ = else_at;
                    return Err(self.err(SyntaxError::UnexpectedToken(t.describe()), *a));
                }
                self.parse_else_body("range", at)?
            }
        };
        Ok(Node::Range {
            over,
            key_slot,
            value_slot,
            body,
            otherwise,
        })
    }

    /// An expression: a single operand or string, or `index MAP KEY`.
    fn parse_expr(
        &mut self,
        toks: &[(Tok, usize)],
        at: usize,
        what: &'static str,
    ) -> Result<(Expr, Ty), TemplateError> {
        let Some((first, first_at)) = toks.first() else {
            return Err(self.err(SyntaxError::MissingValue(what), at));
        };
        if let Tok::Ident(w) = first {
            if w != "index" {
                return Err(self.err(classify_word(w), *first_at));
            }
            let args = &toks[1..];
            let [(map_tok, map_at), (key_tok, key_at)] = args else {
                return Err(self.err(SyntaxError::IndexArity, *first_at));
            };
            let (map, map_ty) = self.operand(map_tok, *map_at)?;
            if map_ty != Ty::Map {
                return Err(self.err(SyntaxError::CannotIndex(map_ty.go_name(self.kind)), *map_at));
            }
            let (key, key_ty) = self.operand(key_tok, *key_at)?;
            if key_ty != Ty::Str {
                return Err(self.err(SyntaxError::IndexKey(key_ty.go_name(self.kind)), *key_at));
            }
            return Ok((
                Expr::Index {
                    map: Box::new(map),
                    key: Box::new(key),
                },
                Ty::Str,
            ));
        }
        let result = self.operand(first, *first_at)?;
        if let Some((t, a)) = toks.get(1) {
            return Err(self.err(SyntaxError::UnexpectedToken(t.describe()), *a));
        }
        Ok(result)
    }

    fn operand(&mut self, tok: &Tok, at: usize) -> Result<(Expr, Ty), TemplateError> {
        let (base, mut ty, fields) = match tok {
            Tok::Str(s) => return Ok((Expr::Lit(s.clone()), Ty::Str)),
            Tok::Dot => (Base::Dot, self.dot_ty(), &[][..]),
            Tok::Operand { var: None, fields } => (Base::Dot, self.dot_ty(), fields.as_slice()),
            Tok::Operand {
                var: Some(name),
                fields,
            } if name.is_empty() => (Base::Root, Ty::Root, fields.as_slice()),
            Tok::Operand {
                var: Some(name),
                fields,
            } => {
                let Some((_, ty, slot)) = self.scope.vars.iter().rev().find(|(n, _, _)| n == name)
                else {
                    return Err(self.err(SyntaxError::UndefinedVariable(name.clone()), at));
                };
                (Base::Var(*slot), *ty, fields.as_slice())
            }
            Tok::Ident(w) => return Err(self.err(classify_word(w), at)),
            other => return Err(self.err(SyntaxError::UnexpectedToken(other.describe()), at)),
        };
        let mut steps = Vec::with_capacity(fields.len());
        for (name, field_at) in fields {
            match ty {
                Ty::Root => {
                    let Some(f) = self.kind.known_fields().iter().find(|f| f.name() == name) else {
                        return Err(self.err(
                            SyntaxError::UnknownField {
                                name: name.clone(),
                                kind: self.kind,
                            },
                            *field_at,
                        ));
                    };
                    if *f == Field::GroupBy {
                        self.uses_group_by = true;
                    }
                    ty = f.ty();
                    steps.push(Step::Field(*f));
                }
                Ty::Map => {
                    ty = Ty::MaybeStr;
                    steps.push(Step::Key(name.clone()));
                }
                other => {
                    return Err(self.err(
                        SyntaxError::FieldOfNonStruct {
                            name: name.clone(),
                            ty: other.go_name(self.kind),
                        },
                        *field_at,
                    ))
                }
            }
        }
        Ok((Expr::Operand { base, steps }, ty))
    }

    fn dot_ty(&self) -> Ty {
        self.scope.dots.last().copied().unwrap_or(Ty::Root)
    }
}

fn classify_word(w: &str) -> SyntaxError {
    match w {
        "end" => SyntaxError::UnexpectedKeyword("end"),
        "else" => SyntaxError::UnexpectedKeyword("else"),
        "if" | "range" | "index" => SyntaxError::UnexpectedToken(format!("{w:?}")),
        w if GO_BUILTINS.contains(&w) => SyntaxError::UnsupportedFunction(w.to_string()),
        w if GO_KEYWORDS.contains(&w) => SyntaxError::UnsupportedKeyword(w.to_string()),
        w => SyntaxError::UnknownFunction(w.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn query(t: &str) -> Template {
        match Template::compile(t, TemplateKind::MetricsQuery) {
            Ok(t) => t,
            Err(e) => panic!("{t:?} should compile: {e}"),
        }
    }

    fn resource(t: &str) -> Template {
        match Template::compile(t, TemplateKind::ResourceName) {
            Ok(t) => t,
            Err(e) => panic!("{t:?} should compile: {e}"),
        }
    }

    fn err(t: &str, kind: TemplateKind) -> TemplateError {
        match Template::compile(t, kind) {
            Ok(_) => panic!("{t:?} should not compile"),
            Err(e) => e,
        }
    }

    /// Expected outputs produced by Go 1.26 `text/template` with `Delims("<<", ">>")` and
    /// prometheus-adapter's `queryTemplateArgs` (full arguments, then all-empty arguments).
    #[test]
    fn renders_exactly_like_go() {
        let values = map(&[("pod", "a|b"), ("namespace", "default")]);
        let group_by = strings(&["pod", "namespace"]);
        let full = QueryArgs {
            series: "http_requests_total",
            label_matchers: r#"namespace="default",pod=~"a|b""#,
            label_values_by_name: &values,
            group_by: &group_by,
        };
        let no_values = BTreeMap::new();
        let empty = QueryArgs {
            series: "",
            label_matchers: "",
            label_values_by_name: &no_values,
            group_by: &[],
        };
        let cases: &[(&str, &str, &str)] = &[
            ("sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)", "sum(rate(http_requests_total{namespace=\"default\",pod=~\"a|b\"}[2m])) by (pod,namespace)", "sum(rate({}[2m])) by ()"),
            ("sum(rate(<<.Series>>{<<.LabelMatchers>>,container!=\"POD\"}[2m])) by (<<.GroupBy>>)", "sum(rate(http_requests_total{namespace=\"default\",pod=~\"a|b\",container!=\"POD\"}[2m])) by (pod,namespace)", "sum(rate({,container!=\"POD\"}[2m])) by ()"),
            ("sum(<<.Series>>{<<.LabelMatchers>>}) by (name)", "sum(http_requests_total{namespace=\"default\",pod=~\"a|b\"}) by (name)", "sum({}) by (name)"),
            ("sum(foo_total{<<.LabelMatchers>>}) by (<<.GroupBy>>) / sum(foo_count{<<.LabelMatchers>>}) by (<<.GroupBy>>)", "sum(foo_total{namespace=\"default\",pod=~\"a|b\"}) by (pod,namespace) / sum(foo_count{namespace=\"default\",pod=~\"a|b\"}) by (pod,namespace)", "sum(foo_total{}) by () / sum(foo_count{}) by ()"),
            ("<<.LabelValuesByName.pod>>|<<.LabelValuesByName.nope>>|<<index .LabelValuesByName \"nope\">>|<<index .LabelValuesByName \"pod\">>", "a|b|<no value>||a|b", "<no value>|<no value>||"),
            ("<<.GroupBySlice>>", "[pod namespace]", "[]"),
            ("<<.LabelValuesByName>>", "map[namespace:default pod:a|b]", "map[]"),
            ("a <<- .Series ->> b", "ahttp_requests_totalb", "ab"),
            ("a \n\\t <<- .Series>> \n b", "a \n\\thttp_requests_total \n b", "a \n\\t \n b"),
            ("a <<.Series ->> \n b", "a http_requests_totalb", "a b"),
            ("<<range $i, $v := .GroupBySlice>><<if $i>>,<<end>><<$v>><<end>>", "pod,namespace", ""),
            ("<<range .GroupBySlice>><<.>><<else>>none<<end>>", "podnamespace", "none"),
            ("<<range $k, $v := .LabelValuesByName>><<$k>>=<<$v>>;<<end>>", "namespace=default;pod=a|b;", ""),
            ("<<range .LabelValuesByName>><<.>>;<<end>>", "default;a|b;", ""),
            ("<<range $v := .LabelValuesByName>><<$v>>;<<end>>", "default;a|b;", ""),
            ("<<range $i := .GroupBySlice>><<$i>><<end>>", "podnamespace", ""),
            ("<<range .GroupBySlice>><<$.Series>>:<<.>>:<<index $.LabelValuesByName .>> <<end>>", "http_requests_total:pod:a|b http_requests_total:namespace:default ", ""),
            ("<</* hi */>>x", "x", "x"),
            ("a  <<- /* hi */ ->>  x", "ax", "ax"),
            ("<<if .LabelValuesByName.nope>>y<<else>>n<<end>>", "n", "n"),
            ("<<if .LabelValuesByName.pod>>y<<else>>n<<end>>", "y", "n"),
            ("<<if index .LabelValuesByName \"namespace\">>ns=<<index .LabelValuesByName \"namespace\">><<else>>nons<<end>>", "ns=default", "nons"),
            ("<<if .GroupBySlice>>y<<else if .Series>>s<<else>>none<<end>>", "y", "none"),
            ("<<if .LabelMatchers>><<.LabelMatchers>><<end>>", "namespace=\"default\",pod=~\"a|b\"", ""),
            ("<<$.Series>>", "http_requests_total", ""),
            ("<<\"<<\">>x<<\">>\">>", "<<x>>", "<<x>>"),
            ("<<`raw\n`>>", "raw\n", "raw\n"),
            ("<<index .LabelValuesByName \">>\">>", "", ""),
            ("<<.GroupBy>>/<<.GroupBySlice>>", "pod,namespace/[pod namespace]", "/[]"),
            ("<<range $i, $v := .GroupBySlice>><<$i>>=<<$v>> <<end>>", "0=pod 1=namespace ", ""),
            ("sum by (\n  <<- range $i, $v := .GroupBySlice>><<if $i>>,<<end>><<$v>><<end ->>\n) (<<.Series>>{<<.LabelMatchers>>})", "sum by (pod,namespace) (http_requests_total{namespace=\"default\",pod=~\"a|b\"})", "sum by () ({})"),
            ("x>>y", "x>>y", "x>>y"),
            ("<<range .GroupBySlice>><<range $.GroupBySlice>><<.>><<end>>|<<end>>", "podnamespace|podnamespace|", ""),
        ];
        for (src, want_full, want_empty) in cases {
            let t = query(src);
            assert_eq!(t.render_query(&full), *want_full, "template {src:?}");
            assert_eq!(t.render_query(&empty), *want_empty, "template {src:?}");
            assert_eq!(t.source(), *src);
        }
    }

    #[test]
    fn go_output_quirks() {
        let values = map(&[("pod", "a b|c")]);
        let group_by = strings(&["x y", "z"]);
        let args = QueryArgs {
            series: "s",
            label_matchers: "",
            label_values_by_name: &values,
            group_by: &group_by,
        };
        // fmt.Sprint of []string and map[string]string does not quote elements.
        assert_eq!(query("<<.GroupBySlice>>").render_query(&args), "[x y z]");
        assert_eq!(
            query("<<.LabelValuesByName>>").render_query(&args),
            "map[pod:a b|c]"
        );
        // A missing key: `<no value>` by field syntax, "" through `index`.
        assert_eq!(
            query("<<.LabelValuesByName.namespace>>").render_query(&args),
            "<no value>"
        );
        assert_eq!(
            query(r#"<<index .LabelValuesByName "namespace">>"#).render_query(&args),
            ""
        );
        // One range variable is the element, not the index.
        assert_eq!(
            query("<<range $x := .GroupBySlice>>(<<$x>>)<<end>>").render_query(&args),
            "(x y)(z)"
        );
        // GroupBy joins with "," and no space.
        assert_eq!(query("<<.GroupBy>>").render_query(&args), "x y,z");
        // Trimming removes spaces, tabs and newlines, not other whitespace.
        assert_eq!(
            query("a\u{a0} \t\r\n<<- .Series ->> \n\u{a0}b").render_query(&args),
            "a\u{a0}s\u{a0}b"
        );
        // `<<-3>>` is a number in Go, not a trim marker; `<<- 3>>` trims. Both unsupported.
        assert!(Template::compile("<<-3>>", TemplateKind::MetricsQuery).is_err());
    }

    /// Every metricsQuery in prometheus-adapter's docs, README, deploy manifests and
    /// config-gen defaults compiles, renders as Go would and passes PromQL validation.
    #[test]
    fn adapter_documentation_examples() {
        let values = map(&[("namespace", "default"), ("pod", "a|b")]);
        let group_by = strings(&["pod"]);
        let args = QueryArgs {
            series: "http_requests_total",
            label_matchers: r#"namespace="default",pod=~"a|b""#,
            label_values_by_name: &values,
            group_by: &group_by,
        };
        let custom: &[(&str, &str)] = &[
            (
                "sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)",
                r#"sum(rate(http_requests_total{namespace="default",pod=~"a|b"}[2m])) by (pod)"#,
            ),
            (
                r#"sum(rate(<<.Series>>{<<.LabelMatchers>>,container!="POD"}[2m])) by (<<.GroupBy>>)"#,
                r#"sum(rate(http_requests_total{namespace="default",pod=~"a|b",container!="POD"}[2m])) by (pod)"#,
            ),
            (
                r#"sum(<<.Series>>{<<.LabelMatchers>>,container!="POD"}) by (<<.GroupBy>>)"#,
                r#"sum(http_requests_total{namespace="default",pod=~"a|b",container!="POD"}) by (pod)"#,
            ),
            (
                "sum(foo_total{<<.LabelMatchers>>}) by (<<.GroupBy>>) / sum(foo_count{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                r#"sum(foo_total{namespace="default",pod=~"a|b"}) by (pod) / sum(foo_count{namespace="default",pod=~"a|b"}) by (pod)"#,
            ),
            (
                "sum(rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>, id='/'}[1m])) by (<<.GroupBy>>)",
                r#"sum(rate(container_cpu_usage_seconds_total{namespace="default",pod=~"a|b", id='/'}[1m])) by (pod)"#,
            ),
            (
                "sum by (<<.GroupBy>>) (\n  irate (\n    container_cpu_usage_seconds_total{<<.LabelMatchers>>,container!=\"\",pod!=\"\"}[4m]\n  )\n)\n",
                "sum by (pod) (\n  irate (\n    container_cpu_usage_seconds_total{namespace=\"default\",pod=~\"a|b\",container!=\"\",pod!=\"\"}[4m]\n  )\n)\n",
            ),
            (
                "sum by (<<.GroupBy>>) (\n  rate (\n    <<.Series>>{<<.LabelMatchers>>}[1m]\n  )\n)\n",
                "sum by (pod) (\n  rate (\n    http_requests_total{namespace=\"default\",pod=~\"a|b\"}[1m]\n  )\n)\n",
            ),
            (
                // A public config: index lookups plus a range/if join of GroupBySlice.
                "sum(rate(<<.Series>>{<<.LabelMatchers>>,pod=~\"<<index .LabelValuesByName \"pod\">>\",namespace=\"<<index .LabelValuesByName \"namespace\">>\"}[2m])) by (<<- range $i, $v := .GroupBySlice>><<if $i>>,<<end>><<$v>><<- end>>)",
                r#"sum(rate(http_requests_total{namespace="default",pod=~"a|b",pod=~"a|b",namespace="default"}[2m])) by (pod)"#,
            ),
        ];
        for (src, want) in custom {
            let t = query(src);
            assert_eq!(t.render_query(&args), *want);
            assert_eq!(validate_query(&t, "http_requests_total"), Ok(()));
        }
        // docs/externalmetrics.md and docs/sample-config.yaml externalRules.
        let t = query("sum(<<.Series>>{<<.LabelMatchers>>}) by (name)");
        for namespaced in [true, false] {
            assert_eq!(
                validate_query_for(&t, "queue_depth", RuleKind::External { namespaced }),
                Ok(())
            );
        }
        let values = map(&[("namespace", "default")]);
        let external = QueryArgs {
            series: "queue_depth",
            label_matchers: r#"namespace="default""#,
            label_values_by_name: &values,
            group_by: &[],
        };
        assert_eq!(
            t.render_query(&external),
            r#"sum(queue_depth{namespace="default"}) by (name)"#
        );
    }

    fn message(src: &str, kind: TemplateKind) -> String {
        err(src, kind).to_string()
    }

    #[test]
    fn error_messages_say_what_and_where() {
        use TemplateKind::MetricsQuery as Q;
        let cases: &[(&str, &str)] = &[
            (
                "sum(<<.Sereis>>)",
                "unknown field .Sereis at line 1, column 7 (byte 6) (did you mean .Series? known: .Series, .LabelMatchers, .LabelValuesByName, .GroupBy, .GroupBySlice)",
            ),
            (
                "<<.LabelMatchersByName>>",
                "unknown field .LabelMatchersByName at line 1, column 3 (byte 2) (did you mean .LabelValuesByName? known: .Series, .LabelMatchers, .LabelValuesByName, .GroupBy, .GroupBySlice)",
            ),
            (
                "<<.Nope>>",
                "unknown field .Nope at line 1, column 3 (byte 2) (known: .Series, .LabelMatchers, .LabelValuesByName, .GroupBy, .GroupBySlice)",
            ),
            (
                r#"<<join .GroupBySlice ",">>"#,
                "function \"join\" not defined at line 1, column 3 (byte 2) (rule templates support only the function `index`)",
            ),
            (
                r#"<<printf "%s" .Series>>"#,
                "function \"printf\" is not supported in rule templates at line 1, column 3 (byte 2) (rule templates support only the function `index`)",
            ),
            ("x <<.Series", "unclosed action: `<<` without `>>` at line 1, column 3 (byte 2)"),
            ("<</* x", "unclosed comment: `/*` without `*/` at line 1, column 1 (byte 0)"),
            (
                "<</* x */ >>",
                "comment ends before closing delimiter: `*/` must be followed by `>>` or ` ->>` at line 1, column 10 (byte 9)",
            ),
            ("<<>>", "empty action `<<>>` at line 1, column 1 (byte 0)"),
            ("<< >>", "empty action `<<>>` at line 1, column 1 (byte 0)"),
            (
                "<<.Series->>",
                "trim marker `->>` must have a space before it at line 1, column 10 (byte 9)",
            ),
            (
                r#"<<.Series | printf "%s">>"#,
                "pipelines (`|`) are not supported in rule templates at line 1, column 11 (byte 10)",
            ),
            ("<<(.Series)>>", "parentheses are not supported in rule templates at line 1, column 3 (byte 2)"),
            ("<<index .GroupBySlice 0>>", "numbers are not supported in rule templates at line 1, column 23 (byte 22)"),
            (
                "<<with .Series>><<end>>",
                "\"with\" is not supported in rule templates at line 1, column 3 (byte 2) (supported actions: if, else, else if, range, end)",
            ),
            ("a<<end>>", "unexpected <<end>> at line 1, column 2 (byte 1)"),
            ("<<else>>", "unexpected <<else>> at line 1, column 1 (byte 0)"),
            ("<<if .Series>>a<<else>>b<<else>>c<<end>>", "unexpected <<else>> at line 1, column 25 (byte 24)"),
            ("<<if .Series>>x", "<<if>> without matching <<end>> at line 1, column 1 (byte 0)"),
            ("<<if>>x<<end>>", "missing value for if at line 1, column 1 (byte 0)"),
            ("<<range .GroupBySlice>>x", "<<range>> without matching <<end>> at line 1, column 1 (byte 0)"),
            ("<<range .GroupBySlice>>x<<else>>", "<<range>> without matching <<end>> at line 1, column 1 (byte 0)"),
            ("<<range .Series>>x<<end>>", "range can't iterate over string at line 1, column 9 (byte 8)"),
            ("<<.Series.Foo>>", "can't evaluate field .Foo in type string at line 1, column 10 (byte 9)"),
            ("<<.GroupBySlice.x>>", "can't evaluate field .x in type []string at line 1, column 16 (byte 15)"),
            ("<<.LabelValuesByName.pod.x>>", "can't evaluate field .x in type string at line 1, column 25 (byte 24)"),
            ("<<range .GroupBySlice>><<.Series>><<end>>", "can't evaluate field .Series in type string at line 1, column 26 (byte 25)"),
            ("<<$x>>", "undefined variable \"$x\" at line 1, column 3 (byte 2)"),
            ("<<range $i, $v := .GroupBySlice>><<end>><<$v>>", "undefined variable \"$v\" at line 1, column 43 (byte 42)"),
            ("<<$x := .Series>>", "variables can only be declared in `range` at line 1, column 3 (byte 2)"),
            ("<<index .LabelValuesByName>>", "index takes a map and exactly one key at line 1, column 3 (byte 2)"),
            (r#"<<index .LabelValuesByName "a" "b">>"#, "index takes a map and exactly one key at line 1, column 3 (byte 2)"),
            (r#"<<index .Series "a">>"#, "index of string at line 1, column 9 (byte 8)"),
            ("<<index .LabelValuesByName .GroupBySlice>>", "index key must be a string, not []string at line 1, column 28 (byte 27)"),
            ("<<.>>", "cannot print the whole template data; use one of its fields at line 1, column 3 (byte 2)"),
            ("<<$>>", "cannot print the whole template data; use one of its fields at line 1, column 3 (byte 2)"),
            ("<<\"open>>", "unterminated quoted string at line 1, column 3 (byte 2)"),
            ("<<`open>>", "unterminated quoted string at line 1, column 3 (byte 2)"),
            (r#"<<"bad\q">>"#, "invalid escape \"\\\\q\" in quoted string at line 1, column 7 (byte 6)"),
            ("<<.Series .GroupBy>>", "unexpected \".GroupBy\" in action at line 1, column 11 (byte 10)"),
            ("<<end 1>>", "numbers are not supported in rule templates at line 1, column 7 (byte 6)"),
            ("<<end .Series>>", "unexpected \".Series\" in action at line 1, column 7 (byte 6)"),
            ("<<if .Series>><<else .Series>><<end>>", "unexpected \".Series\" in action at line 1, column 22 (byte 21)"),
            (
                "<<.Series>> <<@>>",
                "unexpected '@' in action at line 1, column 15 (byte 14) (to print `<<` or `>>` literally write <<\"<<\">> or <<\">>\">>)",
            ),
            (
                "<<range $a, $b, $c := .GroupBySlice>><<end>>",
                "range declares one or two variables (`$v :=` or `$i, $v :=`) at line 1, column 20 (byte 19)",
            ),
            ("<<range $a $b := .GroupBySlice>><<end>>", "unexpected \"$b\" in action at line 1, column 12 (byte 11)"),
            ("<<index>>", "index takes a map and exactly one key at line 1, column 3 (byte 2)"),
            ("<<.Series index>>", "unexpected \"index\" in action at line 1, column 11 (byte 10)"),
            ("<<.Group>>", "unknown field .Group at line 1, column 3 (byte 2) (did you mean .GroupBy? known: .Series, .LabelMatchers, .LabelValuesByName, .GroupBy, .GroupBySlice)"),
        ];
        for (src, want) in cases {
            assert_eq!(message(src, Q), *want, "template {src:?}");
        }
    }

    #[test]
    fn error_positions_count_lines_and_characters() {
        let e = err(
            "sum(\n  rate(<<.Series>>{ä<<.Sereis>>}[2m])\n)",
            TemplateKind::MetricsQuery,
        );
        assert_eq!(
            e.position(),
            Some(Position {
                offset: 28,
                line: 2,
                column: 23
            })
        );
        assert!(matches!(
            e.syntax(),
            Some(SyntaxError::UnknownField { name, .. }) if name == "Sereis"
        ));
    }

    #[test]
    fn resource_templates() {
        let t = resource("kube_<<.Group>>_<<.Resource>>");
        assert_eq!(
            t.render_resource("apps", "deployment"),
            "kube_apps_deployment"
        );
        assert_eq!(t.kind(), TemplateKind::ResourceName);
        assert_eq!(resource("<<.Resource>>").render_resource("", "pod"), "pod");
        assert_eq!(
            resource("kubernetes_<<- .Resource>>").render_resource("", "pod"),
            "kubernetes_pod"
        );
        assert_eq!(
            message("<<.Series>>", TemplateKind::ResourceName),
            "unknown field .Series at line 1, column 3 (byte 2) (known: .Group, .Resource)"
        );
        assert_eq!(
            message("<<.Resorce>>", TemplateKind::ResourceName),
            "unknown field .Resorce at line 1, column 3 (byte 2) (did you mean .Resource? known: .Group, .Resource)"
        );
        for (src, what) in [
            ("<<if .Group>>x<<end>>", "<<if>>"),
            ("<<range .Group>>x<<end>>", "<<range>>"),
            ("x<<end>>", "<<end>>"),
            (
                r#"<<index .Group "x">>"#,
                "anything but <<.Group>> and <<.Resource>>",
            ),
            ("<<$.Group>>", "anything but <<.Group>> and <<.Resource>>"),
            (r#"<<"lit">>"#, "anything but <<.Group>> and <<.Resource>>"),
        ] {
            assert_eq!(
                err(src, TemplateKind::ResourceName).syntax(),
                Some(&SyntaxError::NotInResourceTemplate(what.to_string())),
                "template {src:?}"
            );
        }
    }

    fn captures(re: &regex::Regex, label: &str) -> Option<(String, String)> {
        let c = re.captures(label)?;
        let group = c.name("group").map_or("", |m| m.as_str()).to_string();
        let resource = c.name("resource")?.as_str().to_string();
        Some((group, resource))
    }

    #[test]
    fn resource_label_regex_reverses_the_template() {
        let re = match resource("kube_<<.Group>>_<<.Resource>>").resource_label_regex() {
            Ok(re) => re,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(re.as_str(), "^kube_(?P<group>.+?)_(?P<resource>.+?)$");
        let pair = |g: &str, r: &str| Some((g.to_string(), r.to_string()));
        assert_eq!(
            captures(&re, "kube_apps_deployment"),
            pair("apps", "deployment")
        );
        // Lazy group: the first `_` after `kube_` splits, as in Go's RE2.
        assert_eq!(
            captures(&re, "kube_extensions_k8s_io_ingress"),
            pair("extensions", "k8s_io_ingress")
        );
        assert_eq!(captures(&re, "kube_pod"), None);
        assert_eq!(captures(&re, "xkube_apps_deployment"), None);

        // Without .Group, the group is "" (the core group).
        let re = match resource("<<.Resource>>").resource_label_regex() {
            Ok(re) => re,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(re.as_str(), "^(?P<resource>.+?)$");
        assert_eq!(captures(&re, "pod"), pair("", "pod"));
        assert_eq!(captures(&re, ""), None);

        // Literal text is escaped (prometheus-adapter does not escape it).
        let re = match resource("a.b_<<.Resource>>").resource_label_regex() {
            Ok(re) => re,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(captures(&re, "a.b_pod"), pair("", "pod"));
        assert_eq!(captures(&re, "aXb_pod"), None);
    }

    #[test]
    fn resource_label_regex_errors() {
        let reason = |src: &str, kind: TemplateKind| -> String {
            let t = match Template::compile(src, kind) {
                Ok(t) => t,
                Err(e) => panic!("{e}"),
            };
            match t.resource_label_regex() {
                Ok(re) => panic!("{src:?} gave {re}"),
                Err(e) => e.to_string(),
            }
        };
        assert_eq!(
            reason("kube_<<.Group>>", TemplateKind::ResourceName),
            "resources.template \"kube_<<.Group>>\": must include <<.Resource>>"
        );
        assert_eq!(
            reason("", TemplateKind::ResourceName),
            "resources.template \"\": must include <<.Resource>>"
        );
        assert_eq!(
            reason("<<.Resource>>_<<.Resource>>", TemplateKind::ResourceName),
            "resources.template \"<<.Resource>>_<<.Resource>>\": uses <<.Resource>> more than once"
        );
        assert_eq!(
            reason("<<.Group>><<.Group>>_<<.Resource>>", TemplateKind::ResourceName),
            "resources.template \"<<.Group>><<.Group>>_<<.Resource>>\": uses <<.Group>> more than once"
        );
        assert_eq!(
            reason("<<.Series>>", TemplateKind::MetricsQuery),
            "resources.template \"<<.Series>>\": is a metrics query, not a resource template"
        );
    }

    #[test]
    fn validation_rejects_bad_promql_with_the_rendered_query() {
        let check = |src: &str, rule: RuleKind| {
            validate_query_for(&query(src), "http_requests_total", rule)
        };
        let e = check(
            "sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m]) by (<<.GroupBy>>)",
            RuleKind::Custom,
        )
        .err()
        .unwrap_or_default();
        assert!(
            e.starts_with("pods in a namespace: invalid PromQL: "),
            "{e}"
        );
        assert!(
            e.ends_with(r#"rendered query: sum(rate(http_requests_total{namespace="default",pod=~"a|b"}[2m]) by (pod)"#),
            "{e}"
        );
        let e = check(
            "rate(<<.Series>>{<<.LabelMatchers>>}[2m])[5m:]",
            RuleKind::Custom,
        )
        .err()
        .unwrap_or_default();
        assert!(
            e.contains("returns a matrix, not an instant vector or scalar"),
            "{e}"
        );
        let e = check("<<.Series>>{<<.LabelMatchers>>}[2m]", RuleKind::Custom)
            .err()
            .unwrap_or_default();
        assert!(e.contains("returns a matrix"), "{e}");
        let e = check(r#""<<.Series>>""#, RuleKind::Custom)
            .err()
            .unwrap_or_default();
        assert!(e.contains("returns a string"), "{e}");
        let e = check("<<if .Series>><<end>>", RuleKind::Custom)
            .err()
            .unwrap_or_default();
        assert_eq!(
            e,
            "pods in a namespace: the template renders an empty query"
        );
        assert_eq!(
            check(
                "scalar(sum(<<.Series>>{<<.LabelMatchers>>}))",
                RuleKind::Custom
            ),
            Ok(())
        );
        assert_eq!(check("42", RuleKind::Custom), Ok(()));
        let e = validate_query(&resource("<<.Resource>>"), "x");
        assert_eq!(e, Err("not a metrics query template".to_string()));
    }

    #[test]
    fn validation_of_empty_label_matchers() {
        let check =
            |src: &str, rule: RuleKind| validate_query_for(&query(src), "queue_depth", rule);
        let not_namespaced = RuleKind::External { namespaced: false };
        let namespaced = RuleKind::External { namespaced: true };
        // `metric{}` is valid PromQL: the metric name is a non-empty matcher.
        assert_eq!(
            check("sum(<<.Series>>{<<.LabelMatchers>>})", not_namespaced),
            Ok(())
        );
        // `{}` and `{,a="b"}` are not; they can only happen without matchers.
        for src in [
            "sum({<<.LabelMatchers>>})",
            r#"sum(<<.Series>>{<<.LabelMatchers>>,container!="POD"})"#,
        ] {
            assert_eq!(check(src, RuleKind::Custom), Ok(()), "{src}");
            assert_eq!(validate_query(&query(src), "queue_depth"), Ok(()), "{src}");
            assert_eq!(check(src, namespaced), Ok(()), "{src}");
            let e = check(src, not_namespaced).err().unwrap_or_default();
            assert!(
                e.starts_with(
                    "request without a label selector (empty LabelMatchers): invalid PromQL: "
                ),
                "{e}"
            );
        }
        let e = check("sum({<<.LabelMatchers>>})", not_namespaced)
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("vector selector must contain at least one non-empty matcher"),
            "{e}"
        );
        assert!(e.ends_with("rendered query: sum({})"), "{e}");
        // External rules group by nothing: `by ()` is valid.
        assert_eq!(
            check(
                "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                namespaced
            ),
            Ok(())
        );
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("<<".to_string()),
            Just(">>".to_string()),
            Just("<<- ".to_string()),
            Just(" ->>".to_string()),
            Just("/*".to_string()),
            Just("*/".to_string()),
            Just(".Series".to_string()),
            Just(".LabelValuesByName".to_string()),
            Just(".GroupBySlice".to_string()),
            Just(".Group".to_string()),
            Just(".Resource".to_string()),
            Just(".pod".to_string()),
            Just(".".to_string()),
            Just("$".to_string()),
            Just("$i".to_string()),
            Just("$v".to_string()),
            Just(", ".to_string()),
            Just(" := ".to_string()),
            Just("range ".to_string()),
            Just("if ".to_string()),
            Just("else ".to_string()),
            Just("end".to_string()),
            Just("index ".to_string()),
            Just("\"".to_string()),
            Just("`".to_string()),
            Just("\\".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("-".to_string()),
            "[a-zé{}()|=~,0-9]{0,3}",
        ]
    }

    fn exercise(src: &str) {
        for kind in [TemplateKind::MetricsQuery, TemplateKind::ResourceName] {
            if let Ok(t) = Template::compile(src, kind) {
                let values = map(&[("pod", "a")]);
                let group_by = strings(&["pod", "ns"]);
                let _ = t.render_query(&QueryArgs {
                    series: "s",
                    label_matchers: "l",
                    label_values_by_name: &values,
                    group_by: &group_by,
                });
                let _ = t.render_resource("g", "r");
                let _ = t.resource_label_regex();
                let _ = validate_query_for(&t, "s", RuleKind::External { namespaced: false });
                let _ = validate_query(&t, "s");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_source_never_panics(src in any::<String>()) {
            exercise(&src);
        }

        #[test]
        fn template_like_source_never_panics(parts in proptest::collection::vec(token(), 0..24)) {
            exercise(&parts.concat());
        }

        #[test]
        fn literal_text_renders_unchanged(src in "[^<]*") {
            let t = query(&src);
            prop_assert_eq!(t.render_resource("g", "r"), src);
        }
    }
}
