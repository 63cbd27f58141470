//! The backends of a rules file, checked: `[prometheus]` (one backend named `default`) or
//! named `[[backends]]`, which one is the default, and each one's failover chain.
//!
//! Everything a request or discovery needs to pick a backend is settled here, at load time:
//! every rule carries the name of an existing backend, every failover list names existing
//! backends, so choosing a backend at query time cannot fail.

use crate::config::{BackendConfig, ConfigFile};

use super::Problem;

/// The name `[prometheus]` (or a file with neither section) gets.
pub const DEFAULT_NAME: &str = "default";

/// The one variable a backend's `headers` and `query_params` may hold: the request's
/// namespace, the tenant of prom-label-proxy, Thanos' tenancy or a per-namespace Mimir org.
pub const NAMESPACE_VARIABLE: &str = "<<.Namespace>>";

/// A header or parameter value for one request's namespace.
pub fn render_tenant(template: &str, namespace: &str) -> String {
    template.replace(NAMESPACE_VARIABLE, namespace)
}

/// Whether the backend's calls depend on the request's namespace.
pub fn is_per_namespace(backend: &BackendConfig) -> bool {
    backend
        .headers
        .values()
        .chain(backend.query_params.values())
        .any(|v| v.contains(NAMESPACE_VARIABLE))
}

/// The checked backends, in file order, each with its name set.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSet {
    list: Vec<BackendConfig>,
    default: String,
}

impl BackendSet {
    /// Checks `[prometheus]`/`[[backends]]`, pushing problems with `prometheus` or
    /// `backends[i]` places. Always returns a set (with at least one backend) so that rules
    /// can still be checked against it.
    pub fn compile(file: &ConfigFile, problems: &mut Vec<Problem>) -> BackendSet {
        if file.backends.is_empty() {
            let mut one = file.prometheus.clone().unwrap_or_default();
            check_shorthand(&one, problems);
            check_connection("prometheus", &one, problems);
            one.name = Some(DEFAULT_NAME.into());
            return BackendSet {
                list: vec![one],
                default: DEFAULT_NAME.into(),
            };
        }
        if file.prometheus.is_some() {
            problems.push(problem(
                "prometheus",
                "url",
                "[prometheus] is the one-backend shorthand; with [[backends]] add it as one more \
                 [[backends]] entry with a name (KMB_CONFIG_PROMETHEUS__* and --prometheus-url \
                 set the default backend's url instead)",
            ));
        }
        let mut list = Vec::with_capacity(file.backends.len());
        for (i, backend) in file.backends.iter().enumerate() {
            let place = format!("backends[{i}]");
            match backend.name.as_deref() {
                None | Some("") => problems.push(problem(
                    &place,
                    "name",
                    "is required: rules name their backend with backend = \"<name>\"",
                )),
                Some(name) if !is_backend_name(name) => problems.push(problem(
                    &place,
                    "name",
                    &format!(
                        "{name:?} must be 1 to 63 lowercase letters, digits and '-' (it is a \
                         metric label and a log field)"
                    ),
                )),
                Some(name)
                    if list
                        .iter()
                        .any(|b: &BackendConfig| b.name.as_deref() == Some(name)) =>
                {
                    problems.push(problem(&place, "name", &format!("{name:?} is used twice")))
                }
                Some(_) => {}
            }
            check_connection(&place, backend, problems);
            let mut named = backend.clone();
            named.name.get_or_insert_with(|| format!("backends[{i}]"));
            list.push(named);
        }
        let defaults: Vec<&BackendConfig> = list.iter().filter(|b| b.default).collect();
        if defaults.len() > 1 {
            problems.push(problem(
                "backends",
                "default",
                &format!(
                    "only one backend can be the default; {} are",
                    names(defaults.iter().copied())
                ),
            ));
        }
        let default = defaults.first().copied().unwrap_or(&list[0]);
        let default = name_of(default).to_string();
        let set = BackendSet { list, default };
        for (i, backend) in set.list.iter().enumerate() {
            check_discovery_backend(&set, i, backend, problems);
            for (j, next) in backend.failover.iter().enumerate() {
                let field = format!("failover[{j}]");
                if set.get(next).is_none() {
                    problems.push(problem(
                        &format!("backends[{i}]"),
                        &field,
                        &format!(
                            "{next:?} is not a backend; known: {}",
                            names(set.list.iter())
                        ),
                    ));
                } else if next == name_of(backend) {
                    problems.push(problem(
                        &format!("backends[{i}]"),
                        &field,
                        "a backend cannot fail over to itself",
                    ));
                } else if backend.failover[..j].contains(next) {
                    problems.push(problem(
                        &format!("backends[{i}]"),
                        &field,
                        &format!("{next:?} is listed twice"),
                    ));
                }
            }
        }
        set
    }

    /// The backend a rule asked for (or the default), checked; pushes a problem at
    /// `place.backend` and returns the default when it does not exist.
    pub fn resolve(&self, asked: Option<&str>, place: &str, problems: &mut Vec<Problem>) -> String {
        match asked {
            None => self.default.clone(),
            Some(name) if self.get(name).is_some() => name.to_string(),
            Some(name) => {
                problems.push(problem(
                    place,
                    "backend",
                    &format!(
                        "{name:?} is not a backend; known: {}",
                        names(self.list.iter())
                    ),
                ));
                self.default.clone()
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&BackendConfig> {
        self.list.iter().find(|b| name_of(b) == name)
    }

    /// The default backend's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    pub fn default_backend_mut(&mut self) -> &mut BackendConfig {
        let default = self.default.clone();
        self.list
            .iter_mut()
            .find(|b| name_of(b) == default)
            .expect("the default backend is in the list by construction")
    }

    /// Every backend in file order.
    pub fn iter(&self) -> impl Iterator<Item = &BackendConfig> {
        self.list.iter()
    }

    /// The backend that lists the series of rules on `name`: its `discovery_backend`, else
    /// itself.
    pub fn discovery_for<'a>(&'a self, name: &'a str) -> &'a str {
        self.get(name)
            .and_then(|b| b.discovery_backend.as_deref())
            .filter(|d| self.get(d).is_some())
            .unwrap_or(name)
    }

    /// `name` followed by its failover backends: the order a call tries them in.
    pub fn chain(&self, name: &str) -> Vec<&BackendConfig> {
        let Some(first) = self.get(name) else {
            return Vec::new();
        };
        std::iter::once(first)
            .chain(first.failover.iter().filter_map(|n| self.get(n)))
            .collect()
    }
}

/// The name of a backend from a [`BackendSet`] (always set there).
pub fn name_of(backend: &BackendConfig) -> &str {
    backend.name.as_deref().unwrap_or(DEFAULT_NAME)
}

fn names<'a>(backends: impl Iterator<Item = &'a BackendConfig>) -> String {
    backends
        .map(|b| format!("{:?}", name_of(b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A backend whose calls need a namespace lists series through another one.
fn check_discovery_backend(
    set: &BackendSet,
    i: usize,
    backend: &BackendConfig,
    problems: &mut Vec<Problem>,
) {
    let place = format!("backends[{i}]");
    match backend.discovery_backend.as_deref() {
        None if is_per_namespace(backend) => problems.push(problem(
            &place,
            "discovery_backend",
            &format!(
                "is required: headers or query_params use {NAMESPACE_VARIABLE}, which series \
                 discovery (no request, no namespace) cannot fill; name a backend that lists \
                 series across namespaces"
            ),
        )),
        None => {}
        Some(d) => match set.get(d) {
            None => problems.push(problem(
                &place,
                "discovery_backend",
                &format!("{d:?} is not a backend; known: {}", names(set.list.iter())),
            )),
            Some(other) if is_per_namespace(other) => problems.push(problem(
                &place,
                "discovery_backend",
                &format!(
                    "{d:?} uses {NAMESPACE_VARIABLE} itself; discovery needs one that does not"
                ),
            )),
            Some(_) => {}
        },
    }
}

/// A DNS label: safe as a metric label value and in logs, and what people name services.
pub(crate) fn is_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `[prometheus]` is one backend: naming it or giving it a failover means `[[backends]]`.
fn check_shorthand(p: &BackendConfig, problems: &mut Vec<Problem>) {
    if p.name.is_some() || p.default || !p.failover.is_empty() {
        problems.push(problem(
            "prometheus",
            if !p.failover.is_empty() {
                "failover"
            } else if p.default {
                "default"
            } else {
                "name"
            },
            "name, default and failover belong to [[backends]] entries; [prometheus] is the \
             single backend named \"default\"",
        ));
    }
}

fn check_connection(place: &str, p: &BackendConfig, problems: &mut Vec<Problem>) {
    let mut push = |field: &str, message: String| problems.push(problem(place, field, &message));
    match reqwest::Url::parse(&p.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        Ok(url) => push(
            "url",
            format!("scheme {:?} is not http or https", url.scheme()),
        ),
        Err(e) => push("url", format!("{:?} is not a URL: {e}", p.url)),
    }
    if p.timeout.is_zero() {
        push(
            "timeout",
            "must be more than 0; every call to Prometheus needs a deadline".into(),
        );
    }
    if p.discovery_timeout.is_zero() {
        push(
            "discovery_timeout",
            "must be more than 0; every call to Prometheus needs a deadline".into(),
        );
    }
    if p.client_cert_file.is_some() != p.client_key_file.is_some() {
        push(
            "client_cert_file",
            "client_cert_file and client_key_file go together".into(),
        );
    }
    if p.max_response_bytes.bytes() < 1024 {
        push(
            "max_response_bytes",
            format!(
                "{} is too small: must be at least 1KiB (Prometheus' smallest answers are a few hundred bytes)",
                p.max_response_bytes
            ),
        );
    }
    for name in p.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            push(
                "headers",
                format!("{name:?} is not a valid HTTP header name"),
            );
        }
    }
    for (field, values) in [("headers", &p.headers), ("query_params", &p.query_params)] {
        for (name, value) in values {
            let rest = value.replace(NAMESPACE_VARIABLE, "");
            if rest.contains("<<") || rest.contains(">>") {
                push(
                    &format!("{field}.{name}"),
                    format!("{value:?}: the only variable here is {NAMESPACE_VARIABLE}"),
                );
            } else if field == "headers"
                && http::HeaderValue::from_str(&render_tenant(value, "namespace")).is_err()
            {
                push(
                    &format!("{field}.{name}"),
                    "is not a valid HTTP header value".into(),
                );
            }
        }
    }
    check_auth(p, &mut push);
    if let Some(proxy) = &p.proxy_url {
        // Never the URL in the message: it may carry credentials.
        match reqwest::Url::parse(proxy) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => push(
                "proxy_url",
                "is not an http:// or https:// URL with a host".into(),
            ),
        }
    }
}

/// One way to authenticate, each with what it needs.
fn check_auth(p: &BackendConfig, push: &mut impl FnMut(&str, String)) {
    let modes: Vec<&str> = [
        ("bearer_token_file", p.bearer_token_file.is_some()),
        ("basic_auth", p.basic_auth.is_some()),
        ("oauth2", p.oauth2.is_some()),
        ("sigv4", p.sigv4.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if modes.len() > 1 {
        push(
            modes[1],
            format!(
                "{} are set; a backend authenticates one way (client certificates combine with any)",
                modes.join(" and ")
            ),
        );
    }
    let empty = |path: &std::path::Path| path.as_os_str().is_empty();
    if let Some(basic) = &p.basic_auth {
        if basic.username.is_empty() {
            push("basic_auth.username", "is required".into());
        }
        if empty(&basic.password_file) {
            push(
                "basic_auth.password_file",
                "is required: the password is read from a file (a mounted Secret), never written in the rules".into(),
            );
        }
    }
    if let Some(oauth2) = &p.oauth2 {
        match reqwest::Url::parse(&oauth2.token_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => push(
                "oauth2.token_url",
                format!("{:?} is not an http(s) URL", oauth2.token_url),
            ),
        }
        if oauth2.client_id.is_empty() {
            push("oauth2.client_id", "is required".into());
        }
        if empty(&oauth2.client_secret_file) {
            push(
                "oauth2.client_secret_file",
                "is required: the secret is read from a file (a mounted Secret)".into(),
            );
        }
    }
    if let Some(sigv4) = &p.sigv4 {
        if sigv4.region.is_empty() {
            push("sigv4.region", "is required, e.g. \"us-east-1\"".into());
        }
        if sigv4.service.is_empty() {
            push(
                "sigv4.service",
                "must not be empty (\"aps\" for Amazon Managed Service for Prometheus)".into(),
            );
        }
        for (field, path) in [
            ("sigv4.access_key_id_file", &sigv4.access_key_id_file),
            (
                "sigv4.secret_access_key_file",
                &sigv4.secret_access_key_file,
            ),
        ] {
            if empty(path) {
                push(
                    field,
                    "is required: credentials are read from files (a mounted Secret)".into(),
                );
            }
        }
    }
}

pub(crate) fn problem(place: &str, field: &str, message: &str) -> Problem {
    Problem {
        place: place.into(),
        field: field.into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> (BackendSet, Vec<String>) {
        let file = crate::config::parse(text, std::path::Path::new("t.toml")).expect("parses");
        let mut problems = Vec::new();
        let set = BackendSet::compile(&file, &mut problems);
        (set, problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn prometheus_alone_is_the_default_backend() {
        let (set, problems) = compile("[prometheus]\nurl = \"http://p:9090\"\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(set.default_name(), "default");
        assert_eq!(set.chain("default")[0].url, "http://p:9090");
        let (set, problems) = compile("");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(set.iter().count(), 1);
    }

    #[test]
    fn first_backend_is_the_default_unless_one_says_so() {
        let two = "[[backends]]\nname = \"a\"\nurl = \"http://a\"\n[[backends]]\nname = \"b\"\nurl = \"http://b\"\n";
        let (set, problems) = compile(two);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(set.default_name(), "a");
        let (set, _) = compile(&format!("{two}default = true\n"));
        assert_eq!(set.default_name(), "b");
    }

    #[test]
    fn failover_chain_in_order() {
        let (set, problems) = compile(
            "[[backends]]\nname = \"a\"\nurl = \"http://a\"\nfailover = [\"c\", \"b\"]\n\
             [[backends]]\nname = \"b\"\nurl = \"http://b\"\n\
             [[backends]]\nname = \"c\"\nurl = \"http://c\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let chain: Vec<&str> = set.chain("a").into_iter().map(name_of).collect();
        assert_eq!(chain, ["a", "c", "b"]);
        assert_eq!(set.chain("b").len(), 1);
    }

    #[test]
    fn problems_name_the_backend_and_field() {
        let (_, problems) = compile(
            "[prometheus]\nurl = \"http://p\"\n\
             [[backends]]\nurl = \"http://a\"\n\
             [[backends]]\nname = \"Bad_Name\"\nurl = \"ftp://b\"\ndefault = true\n\
             [[backends]]\nname = \"c\"\nurl = \"http://c\"\nfailover = [\"c\", \"zz\"]\ndefault = true\n\
             [[backends]]\nname = \"c\"\nurl = \"http://c2\"\ntimeout = \"0s\"\ndiscovery_timeout = \"0s\"\n",
        );
        let all = problems.join("\n");
        for expected in [
            "prometheus.url: [prometheus] is the one-backend shorthand",
            "backends[0].name: is required",
            "backends[1].name: \"Bad_Name\" must be",
            "backends[1].url: scheme \"ftp\"",
            "backends[2].failover[0]: a backend cannot fail over to itself",
            "backends[2].failover[1]: \"zz\" is not a backend",
            "backends[3].name: \"c\" is used twice",
            "backends[3].timeout: must be more than 0",
            "backends[3].discovery_timeout: must be more than 0",
            "backends.default: only one backend can be the default",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in\n{all}");
        }
    }

    #[test]
    fn auth_modes_are_checked() {
        let (_, problems) = compile(
            "[prometheus]\nbearer_token_file = \"/t\"\nbasic_auth = { username = \"\" }\n\
             proxy_url = \"socks5://user:pw@proxy\"\n",
        );
        let all = problems.join("\n");
        for expected in [
            "prometheus.basic_auth: bearer_token_file and basic_auth are set",
            "prometheus.basic_auth.username: is required",
            "prometheus.basic_auth.password_file: is required",
            "prometheus.proxy_url: is not an http:// or https:// URL",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in\n{all}");
        }
        assert!(
            !all.contains("pw"),
            "no proxy credentials in messages: {all}"
        );
        let (_, problems) = compile("[prometheus]\noauth2 = { token_url = \"x\" }\n");
        let all = problems.join("\n");
        assert!(all.contains("prometheus.oauth2.token_url"), "{all}");
        assert!(
            all.contains("prometheus.oauth2.client_id: is required"),
            "{all}"
        );
        let (_, problems) = compile("[prometheus]\nsigv4 = { region = \"eu-west-1\" }\n");
        let all = problems.join("\n");
        assert!(
            all.contains("prometheus.sigv4.access_key_id_file: is required"),
            "{all}"
        );
        let (_, problems) = compile(
            "[prometheus]\nsigv4 = { region = \"eu-west-1\", access_key_id_file = \"/a\", secret_access_key_file = \"/s\" }\n\
             proxy_url = \"http://user:pw@proxy:3128\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    /// Every `[[backends]]` example of the rules guide loads without a problem.
    #[test]
    fn rules_guide_examples_load() {
        let guide = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rules-guide.md"),
        )
        .expect("docs/rules-guide.md");
        let blocks: Vec<&str> = guide
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.contains("[[backends]]"))
            .collect();
        assert!(blocks.len() >= 2, "{}", blocks.len());
        for block in blocks {
            let (set, problems) = compile(block);
            assert!(problems.is_empty(), "{problems:?} in\n{block}");
            assert!(set.iter().count() >= 3, "{block}");
        }
    }

    #[test]
    fn per_namespace_backends_need_a_discovery_backend() {
        let (set, problems) = compile(
            "[[backends]]\nname = \"tenants\"\nurl = \"http://proxy:8080\"\n\
             query_params = { namespace = \"<<.Namespace>>\" }\ndiscovery_backend = \"raw\"\n\
             [[backends]]\nname = \"raw\"\nurl = \"http://prometheus:9090\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(set.discovery_for("tenants"), "raw");
        assert_eq!(set.discovery_for("raw"), "raw");
        assert!(is_per_namespace(set.get("tenants").expect("tenants")));
        assert_eq!(render_tenant("team-<<.Namespace>>", "shop"), "team-shop");

        let (_, problems) = compile(
            "[[backends]]\nname = \"a\"\nurl = \"http://a\"\n\
             headers = { X-Scope-OrgID = \"<<.Namespace>>\", X-Other = \"<<.Pod>>\" }\n\
             [[backends]]\nname = \"b\"\nurl = \"http://b\"\n\
             query_params = { namespace = \"<<.Namespace>>\" }\ndiscovery_backend = \"a\"\n",
        );
        let all = problems.join("\n");
        for expected in [
            "backends[0].discovery_backend: is required",
            "backends[0].headers.X-Other: \"<<.Pod>>\": the only variable here is <<.Namespace>>",
            "backends[1].discovery_backend: \"a\" uses <<.Namespace>> itself",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in\n{all}");
        }
    }

    #[test]
    fn shorthand_cannot_be_named_or_fail_over() {
        let (_, problems) = compile("[prometheus]\nfailover = [\"x\"]\n");
        assert!(
            problems[0].starts_with("prometheus.failover: name, default and failover belong"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_rule_backend_is_a_problem_at_the_rule() {
        let (set, _) = compile("[[backends]]\nname = \"a\"\nurl = \"http://a\"\n");
        let mut problems = Vec::new();
        assert_eq!(set.resolve(None, "rules[0]", &mut problems), "a");
        assert_eq!(set.resolve(Some("a"), "rules[0]", &mut problems), "a");
        assert!(problems.is_empty());
        set.resolve(Some("b"), "rules[2]", &mut problems);
        assert_eq!(
            problems[0].to_string(),
            "rules[2].backend: \"b\" is not a backend; known: \"a\""
        );
    }
}
