//! `convert --helm-values`: what each prometheus-adapter chart value becomes, and that every
//! result is values this chart's `values.schema.json` accepts and that read back as written.

use serde_json::Value as Json;
use yaml_serde::{Mapping, Value};

use super::*;

const SCHEMA: &str = include_str!("../../../deploy/chart/kube-metrics-bridge/values.schema.json");

fn conv(yaml: &str) -> ValuesConversion {
    let c =
        convert_values(yaml, "values.yaml", None, None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    check_schema(&c);
    c
}

fn at<'a>(c: &'a ValuesConversion, path: &[&str]) -> Option<&'a Value> {
    let mut cur = c.values.get(path[0])?;
    for k in &path[1..] {
        cur = cur.get(*k)?;
    }
    Some(cur)
}

fn yaml(text: &str) -> Value {
    yaml_serde::from_str(text).expect("test YAML")
}

fn keys(c: &ValuesConversion) -> Vec<String> {
    c.values
        .keys()
        .filter_map(super::super::scalar_text)
        .collect()
}

fn notes(c: &ValuesConversion) -> String {
    c.notes.join("\n")
}

// ---- a small JSON Schema check (the keywords values.schema.json uses) ------------------

/// The values, as JSON, against values.schema.json: `type`, `properties`,
/// `additionalProperties`, `required`, `enum`, `const`, `pattern`, `minimum`, `maximum`,
/// `minLength`, `minItems`, `items` and `allOf` of `if`/`then`. What helm checks too; here
/// every unit test's result is checked without helm.
fn check_schema(c: &ValuesConversion) {
    let schema: Json = serde_json::from_str(SCHEMA).expect("values.schema.json");
    let values: Json = serde_json::to_value(&c.values).expect("values as JSON");
    let mut errors = Vec::new();
    validate(&schema, &values, "", &mut errors);
    assert!(
        errors.is_empty(),
        "the values break values.schema.json:\n{}\n{}",
        errors.join("\n"),
        c.yaml
    );
}

fn validate(schema: &Json, v: &Json, place: &str, errors: &mut Vec<String>) {
    let mut fail = |e: String| errors.push(format!("{place}: {e}"));
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Json::String(s) => vec![s.as_str()],
            Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            fail(format!("{v} is not {types:?}"));
            return;
        }
    }
    if let Some(Json::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(v) {
            fail(format!("{v} not in {allowed:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            fail(format!("{v} is not {c}"));
        }
    }
    if let (Some(Json::String(p)), Json::String(s)) = (schema.get("pattern"), v) {
        if !regex::Regex::new(p).expect("schema pattern").is_match(s) {
            fail(format!("{s:?} does not match {p}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Json::as_f64), v.as_f64()) {
        if n < min {
            fail(format!("{n} < {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Json::as_f64), v.as_f64()) {
        if n > max {
            fail(format!("{n} > {max}"));
        }
    }
    if let (Some(min), Json::String(s)) = (schema.get("minLength").and_then(Json::as_u64), v) {
        if (s.chars().count() as u64) < min {
            fail(format!("{s:?} shorter than {min}"));
        }
    }
    if let (Some(min), Json::Array(a)) = (schema.get("minItems").and_then(Json::as_u64), v) {
        if (a.len() as u64) < min {
            fail(format!("fewer than {min} items"));
        }
    }
    if let (Some(items), Json::Array(a)) = (schema.get("items"), v) {
        for (i, item) in a.iter().enumerate() {
            validate(items, item, &format!("{place}[{i}]"), errors);
        }
    }
    if let Json::Object(obj) = v {
        let props = schema.get("properties").and_then(Json::as_object);
        for req in schema
            .get("required")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
        {
            if !obj.contains_key(req) {
                errors.push(format!("{place}: {req} is required"));
            }
        }
        for (k, item) in obj {
            let sub = format!("{place}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(s, item, &sub, errors),
                (None, Some(Json::Bool(false))) => errors.push(format!("{sub}: not allowed")),
                (None, Some(s @ Json::Object(_))) => validate(s, item, &sub, errors),
                (None, _) => {}
            }
        }
    }
    for part in schema
        .get("allOf")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(cond), Some(then)) = (part.get("if"), part.get("then")) {
            let mut e = Vec::new();
            validate(cond, v, place, &mut e);
            if e.is_empty() {
                validate(then, v, place, errors);
            }
        }
    }
}

#[test]
fn the_schema_check_catches_what_helm_would() {
    let bad = |values: &str| {
        let schema: Json = serde_json::from_str(SCHEMA).expect("schema");
        let v: Json = serde_json::to_value(yaml(values)).expect("json");
        let mut errors = Vec::new();
        validate(&schema, &v, "", &mut errors);
        errors
    };
    assert!(bad("replicaCount: 2\nprometheus: {url: 'http://p:9090'}\n").is_empty());
    for values in [
        "replicaCount: two\n",
        "prometheus: {url: 'p:9090'}\n",
        "prometheus: {method: PUT, url: 'http://p'}\n",
        "nosuchvalue: 1\n",
        "service: {port: 70000}\n",
        "certificates: {mode: provided, provided: {secretName: ''}}\n",
        "dnsPolicy: Sometimes\n",
        "nodeSelector: {a: {b: c}}\n",
    ] {
        assert!(!bad(values).is_empty(), "accepted: {values}");
    }
}

// ---- defaults ---------------------------------------------------------------------------

/// The adapter chart's own defaults, whole or as an empty file, say only what the adapter
/// chart always said: its Prometheus URL, its relist interval, its six default rules (so the
/// custom APIService), and that its APIServices skipped TLS verification.
#[test]
fn the_adapter_charts_defaults_carry_only_what_they_mean() {
    let whole = conv(ADAPTER_DEFAULTS);
    let empty = conv("");
    assert_eq!(whole.values, empty.values);
    assert_eq!(
        keys(&whole),
        [
            "prometheus",
            "cache",
            "rules",
            "certificates",
            "apiServices"
        ],
        "{}",
        whole.yaml
    );
    assert_eq!(
        at(&whole, &["prometheus", "url"]),
        Some(&yaml("http://prometheus.default.svc:9090"))
    );
    assert_eq!(
        at(&whole, &["cache", "discoveryInterval"]),
        Some(&yaml("1m"))
    );
    assert_eq!(whole.rules.config.rules.len(), 6);
    assert_eq!(
        at(&whole, &["apiServices"]),
        Some(&yaml("{custom: true, external: false, resource: false}"))
    );
    assert_eq!(
        at(&whole, &["certificates", "mode"]),
        Some(&yaml("generate"))
    );
    assert!(
        notes(&whole).contains("insecureSkipTLSVerify: true"),
        "{}",
        notes(&whole)
    );
    // The three template rules share one note, which says what RBAC cannot be added.
    assert!(
        notes(&whole).contains("rules[3], rules[4], rules[5]: resources.template"),
        "{}",
        notes(&whole)
    );
    assert!(
        notes(&empty).contains("rules.default is not set"),
        "{}",
        notes(&empty)
    );
    // The rules value is the TOML tables only, and they read back as converted.
    let rules = at(&whole, &["rules"])
        .and_then(Value::as_str)
        .expect("rules");
    assert!(
        !rules.contains("[prometheus]") && !rules.contains("[cache]"),
        "{rules}"
    );
    let parsed = crate::config::parse(rules, std::path::Path::new("rules")).expect("rules TOML");
    assert_eq!(parsed.rules, whole.rules.config.rules);
}

#[test]
fn pod_settings_are_carried_only_where_they_differ() {
    let c = conv(
        "replicas: 3\npriorityClassName: platform\nnodeSelector: {disk: ssd, zone: 1}\n\
         tolerations: [{key: k, operator: Exists}]\npodLabels: {a: b}\npodAnnotations: {x: 'y'}\n\
         topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]\n\
         affinity: {nodeAffinity: {}}\ndnsConfig: {options: [{name: ndots, value: '2'}]}\n\
         hostNetwork: {enabled: true}\nlistenPort: 8443\n",
    );
    assert_eq!(at(&c, &["replicaCount"]), Some(&yaml("3")));
    assert_eq!(at(&c, &["priorityClassName"]), Some(&yaml("platform")));
    // Label values are strings in this chart's schema.
    assert_eq!(
        at(&c, &["nodeSelector"]),
        Some(&yaml("{disk: ssd, zone: '1'}"))
    );
    assert_eq!(
        at(&c, &["tolerations"]),
        Some(&yaml("[{key: k, operator: Exists}]"))
    );
    assert_eq!(at(&c, &["affinity"]), Some(&yaml("{nodeAffinity: {}}")));
    assert_eq!(at(&c, &["hostNetwork"]), Some(&Value::Bool(true)));
    assert_eq!(at(&c, &["securePort"]), Some(&yaml("8443")));
    assert!(at(&c, &["dnsConfig"]).is_some());
    assert!(at(&c, &["topologySpreadConstraints"]).is_some());
    assert!(
        notes(&c).contains("ClusterFirstWithHostNet"),
        "{}",
        notes(&c)
    );

    // At the adapter chart's defaults: this chart's apply (two replicas, its priority class).
    let c =
        conv("replicas: 1\npriorityClassName: ''\nresources: {}\nhostNetwork: {enabled: false}\n");
    for key in [
        "replicaCount",
        "priorityClassName",
        "resources",
        "hostNetwork",
    ] {
        assert!(at(&c, &[key]).is_none(), "{key}: {}", c.yaml);
    }
}

#[test]
fn resources_are_the_adapters_exactly() {
    let c = conv("resources: {requests: {cpu: 100m}}\n");
    // Helm merges over this chart's defaults; the nulls clear what the adapter did not set.
    assert_eq!(
        at(&c, &["resources"]),
        Some(&yaml("{requests: {cpu: 100m, memory: null}, limits: null}"))
    );
    let c = conv("resources: {requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 2, memory: 2Gi}}\n");
    assert_eq!(
        at(&c, &["resources"]),
        Some(&yaml(
            "{requests: {cpu: 1, memory: 1Gi}, limits: {cpu: 2, memory: 2Gi}}"
        ))
    );
    assert!(notes(&c).contains("256Mi"), "{}", notes(&c));
}

#[test]
fn security_contexts_carry_what_differs_from_the_adapter_charts() {
    // The adapter chart's own defaults: nothing (this chart's locked-down ones apply).
    let c = conv("securityContext: {runAsUser: 10001, readOnlyRootFilesystem: true}\npodSecurityContext: {fsGroup: 10001}\n");
    assert!(at(&c, &["securityContext"]).is_none(), "{}", c.yaml);
    assert!(at(&c, &["podSecurityContext"]).is_none(), "{}", c.yaml);
    // OpenShift: the fixed user removed, which must remove this chart's too.
    let c = conv("securityContext: {runAsUser: null}\npodSecurityContext: {fsGroup: 2000, runAsUser: 1000}\n");
    assert_eq!(
        at(&c, &["securityContext"]),
        Some(&yaml("{runAsUser: null}"))
    );
    assert_eq!(
        at(&c, &["podSecurityContext"]),
        Some(&yaml("{fsGroup: 2000, runAsUser: 1000}"))
    );
}

// ---- Prometheus -------------------------------------------------------------------------

#[test]
fn prometheus_url_is_url_port_and_path_and_flags_win() {
    let url = |c: &ValuesConversion| {
        at(c, &["prometheus", "url"])
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let c = conv("prometheus: {url: 'https://thanos.monitoring.svc', port: 10902, path: /select/0/prometheus}\n");
    assert_eq!(
        url(&c).as_deref(),
        Some("https://thanos.monitoring.svc:10902/select/0/prometheus")
    );
    let c = conv("prometheus: {url: 'http://vm.svc/api', port: ''}\n");
    assert_eq!(url(&c).as_deref(), Some("http://vm.svc/api"));
    let c =
        conv("prometheus: {port: 9091}\nextraArguments: ['--prometheus-url=http://other:9090']\n");
    assert_eq!(url(&c).as_deref(), Some("http://other:9090"));
    let c = convert_values(
        "prometheus: {port: 9091}\n",
        "v",
        None,
        Some("http://given:9090"),
    )
    .expect("converts");
    assert_eq!(url(&c).as_deref(), Some("http://given:9090"));
    // Helm templating (the chart runs url through tpl) cannot be rendered here.
    let c = conv("prometheus: {url: 'http://prometheus.{{ .Release.Namespace }}.svc'}\n");
    assert_eq!(url(&c).as_deref(), Some(PLACEHOLDER_URL));
    assert!(notes(&c).contains("PLACEHOLDER"), "{}", notes(&c));
    let c = conv("prometheus: {url: 'prometheus.monitoring.svc'}\n");
    assert_eq!(url(&c).as_deref(), Some(PLACEHOLDER_URL));
}

#[test]
fn relist_interval_and_max_age_become_the_cache_values() {
    let c = conv("metricsRelistInterval: 90s\n");
    assert_eq!(at(&c, &["cache", "discoveryInterval"]), Some(&yaml("90s")));
    let c = conv(
        "metricsRelistInterval: 90s\nextraArguments: [--metrics-relist-interval=2m, --metrics-max-age, 10m]\n",
    );
    assert_eq!(
        at(&c, &["cache"]),
        Some(&yaml("{discoveryInterval: 2m, seriesMaxAge: 10m}"))
    );
    let c = conv("metricsRelistInterval: soon\n");
    assert!(at(&c, &["cache", "discoveryInterval"]).is_none());
    assert!(notes(&c).contains("not a duration"), "{}", notes(&c));
}

// ---- extraArguments ---------------------------------------------------------------------

#[test]
fn every_known_flag_is_mapped_or_explained() {
    // Every flag of the table, written as a user would, with a value where it takes one.
    let mut args = Vec::new();
    for (name, boolean, _) in FLAGS {
        let value = match *name {
            "prometheus-url" => "=http://p:9090",
            "prometheus-header" => "=X-A=b",
            "prometheus-verb" => "=POST",
            "secure-port" => "=8443",
            "v" => "=2",
            "logging-format" => "=json",
            "metrics-relist-interval" | "metrics-max-age" | "discovery-interval" => "=5m",
            "http2-max-streams-per-connection" => "=100",
            _ if *boolean => "",
            _ => "=/etc/x",
        };
        if *name == "config" || *name == "help" {
            continue;
        }
        args.push(format!("'--{name}{value}'"));
    }
    args.push("--audit-log-maxage=3".into());
    let c = conv(&format!("extraArguments: [{}]\n", args.join(", ")));
    let n = notes(&c);
    assert!(!n.contains("no such flag"), "{n}");
    for (name, _, flag) in FLAGS {
        if let Flag::Nothing(_) = flag {
            assert!(
                n.contains(&format!("extraArguments --{name}")),
                "{name}: {n}"
            );
        }
    }
    assert!(
        n.contains("extraArguments --audit-log-maxage=3: no equivalent"),
        "{n}"
    );
    assert_eq!(at(&c, &["prometheus", "method"]), Some(&yaml("POST")));
    assert_eq!(at(&c, &["prometheus", "headers"]), Some(&yaml("{X-A: b}")));
    assert_eq!(at(&c, &["securePort"]), Some(&yaml("8443")));
    assert_eq!(at(&c, &["logFormat"]), Some(&yaml("json")));
    assert_eq!(
        at(&c, &["extraArgs"]),
        Some(&yaml(
            "['--kubeconfig=/etc/x', '--api-discovery-interval=5m', '--bind-address=/etc/x', \
             '--http2-max-streams-per-connection=100', '--authentication-tolerate-lookup-failure', \
             '--authorization-always-allow-paths=/etc/x']"
        ))
    );
}

#[test]
fn prometheus_files_become_variables_with_the_same_paths() {
    let env = |c: &ValuesConversion| at(c, &["extraEnv"]).cloned();
    let c = conv(
        "env: [{name: TZ, value: UTC}]\nextraArguments:\n- --prometheus-ca-file=/tls/ca.crt\n\
         - --prometheus-client-tls-cert-file=/tls/tls.crt\n- --prometheus-client-tls-key-file\n- /tls/tls.key\n\
         - --prometheus-token-file=/auth/token\n",
    );
    assert_eq!(
        env(&c),
        Some(yaml(
            "[{name: TZ, value: UTC}, \
              {name: KMB_CONFIG_PROMETHEUS__BEARER_TOKEN_FILE, value: /auth/token}, \
              {name: KMB_CONFIG_PROMETHEUS__CA_FILE, value: /tls/ca.crt}, \
              {name: KMB_CONFIG_PROMETHEUS__CLIENT_CERT_FILE, value: /tls/tls.crt}, \
              {name: KMB_CONFIG_PROMETHEUS__CLIENT_KEY_FILE, value: /tls/tls.key}]"
        ))
    );
    // prometheus-adapter uses a client certificate only with a CA file.
    let c = conv("extraArguments: [--prometheus-client-tls-cert-file=/c, --prometheus-client-tls-key-file=/k]\n");
    assert_eq!(env(&c), None);
    assert!(
        notes(&c).contains("only together with --prometheus-ca-file"),
        "{}",
        notes(&c)
    );
    // In-cluster credentials: the pod's ServiceAccount token and the cluster CA; a token
    // file wins over the token; a CA file turns it off.
    let c = conv("extraArguments: [--prometheus-auth-incluster]\n");
    assert_eq!(
        env(&c),
        Some(yaml(&format!(
            "[{{name: KMB_CONFIG_PROMETHEUS__BEARER_TOKEN_FILE, value: {SA_TOKEN}}}, \
              {{name: KMB_CONFIG_PROMETHEUS__CA_FILE, value: {SA_CA}}}]"
        )))
    );
    let c =
        conv("extraArguments: [--prometheus-auth-incluster=true, --prometheus-token-file=/t]\n");
    assert_eq!(
        env(&c),
        Some(yaml(&format!(
            "[{{name: KMB_CONFIG_PROMETHEUS__BEARER_TOKEN_FILE, value: /t}}, \
              {{name: KMB_CONFIG_PROMETHEUS__CA_FILE, value: {SA_CA}}}]"
        )))
    );
    let c = conv("extraArguments: [--prometheus-auth-incluster=false]\n");
    assert_eq!(env(&c), None);
    let c = conv("extraArguments: [--prometheus-auth-incluster, --prometheus-ca-file=/ca]\n");
    assert_eq!(
        env(&c),
        Some(yaml("[{name: KMB_CONFIG_PROMETHEUS__CA_FILE, value: /ca}]"))
    );
    assert!(
        notes(&c).contains("ignores it when --prometheus-ca-file"),
        "{}",
        notes(&c)
    );
}

#[test]
fn flags_parse_as_pflag_reads_them() {
    let c = conv(
        "extraArguments:\n- stray\n- -v=7\n- --secure-port\n- '9443'\n- --authentication-tolerate-lookup-failure=false\n\
         - --prometheus-header=X-A=1\n- --prometheus-header=X-A=2\n- --no-such-flag\n\
         - --prometheus-verb=PUT\n- --lister-kubeconfig=/a\n- --authorization-kubeconfig=/b\n",
    );
    assert_eq!(
        at(&c, &["logLevel"]),
        Some(&yaml("info,kube_metrics_bridge=debug"))
    );
    assert_eq!(at(&c, &["securePort"]), Some(&yaml("9443")));
    assert_eq!(
        at(&c, &["prometheus", "headers"]),
        Some(&yaml("{X-A: '2'}"))
    );
    assert!(at(&c, &["prometheus", "method"]).is_none());
    assert_eq!(at(&c, &["extraArgs"]), Some(&yaml("['--kubeconfig=/a']")));
    let n = notes(&c);
    for needle in [
        "X-A is given more than once",
        "--no-such-flag: prometheus-adapter v0.12.0 has no such flag",
        "\"stray\": not a flag",
        "--prometheus-verb=PUT",
        "different kubeconfigs",
    ] {
        assert!(n.contains(needle), "{needle}: {n}");
    }
    let c = conv("logLevel: 2\n");
    assert_eq!(at(&c, &["logLevel"]), Some(&yaml("info")));
}

// ---- certificates, APIServices, RBAC ------------------------------------------------------

#[test]
fn the_adapters_certificate_is_not_reused() {
    let c = conv("tls: {enable: true, ca: x, key: y, certificate: z}\n");
    assert_eq!(at(&c, &["certificates"]), Some(&yaml("{mode: generate}")));
    assert!(
        notes(&c).contains("names the adapter's Service"),
        "{}",
        notes(&c)
    );
    assert!(!c.yaml.contains("certificate: z"), "{}", c.yaml);
    let c = conv("certManager: {enabled: true, certDuration: 2160h0m0s, caCertDuration: 1h}\n");
    assert_eq!(
        at(&c, &["certificates"]),
        Some(&yaml(
            "{mode: certManager, certManager: {duration: 2160h0m0s}}"
        ))
    );
    assert!(
        notes(&c).contains("certManager.caCertDuration"),
        "{}",
        notes(&c)
    );
}

#[test]
fn api_services_follow_the_rules() {
    let rule = "{seriesQuery: 'q{namespace!=\"\"}', resources: {overrides: {namespace: {resource: namespace}}}, metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'}";
    let c = conv(&format!("rules: {{default: false, external: [{rule}]}}\n"));
    assert_eq!(
        at(&c, &["apiServices"]),
        Some(&yaml("{custom: false, external: true, resource: false}"))
    );
    let e = convert_values("rules: {default: false}\n", "v", None, None)
        .map(|c| c.rules.config.rules.len());
    assert_eq!(
        e.ok(),
        Some(0),
        "converted, and `convert` then says there is nothing"
    );
}

#[test]
fn resources_the_rules_name_are_added_to_rbac() {
    let c = conv(
        "rules:\n  default: false\n  custom:\n  - seriesQuery: 'x{namespace!=\"\",cronjob!=\"\",persistentvolumeclaim!=\"\"}'\n    resources: {overrides: {namespace: {resource: namespace}, cronjob: {group: batch, resource: cronjob}, persistentvolumeclaim: {resource: persistentvolumeclaim}}}\n    metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'\n",
    );
    assert_eq!(
        at(&c, &["rbac"]),
        Some(&yaml(
            "{extraRules: [\
               {apiGroups: [''], resources: [persistentvolumeclaims], verbs: [get, list, watch]}, \
               {apiGroups: [batch], resources: [cronjobs], verbs: [get, list, watch]}]}"
        )),
        "appended; this chart's resourceRules stay"
    );
    let n = notes(&c);
    assert!(n.contains("persistentvolumeclaims, cronjobs.batch"), "{n}");
    assert!(
        !n.contains("does not cover"),
        "the warning is resolved: {n}"
    );
}

#[test]
fn pod_disruption_budget() {
    let c = conv("replicas: 2\npodDisruptionBudget: {enabled: true}\n");
    assert_eq!(
        at(&c, &["podDisruptionBudget"]),
        Some(&yaml("{enabled: true, maxUnavailable: 1}"))
    );
    let c = conv("podDisruptionBudget: {enabled: true, minAvailable: 1, maxUnavailable: null}\n");
    assert_eq!(
        at(&c, &["podDisruptionBudget"]),
        Some(&yaml("{enabled: true, minAvailable: 1}"))
    );
    let c = conv("replicas: 1\npodDisruptionBudget: {enabled: true, minAvailable: 50%, unhealthyPodEvictionPolicy: AlwaysAllow}\n");
    assert_eq!(
        at(&c, &["podDisruptionBudget"]),
        Some(&yaml("{enabled: true, maxUnavailable: 1}"))
    );
    let n = notes(&c);
    assert!(n.contains("both minAvailable and maxUnavailable"), "{n}");
    assert!(n.contains("unhealthyPodEvictionPolicy"), "{n}");
    // Disabled (the adapter chart's default): this chart's own PDB applies.
    let c = conv("podDisruptionBudget: {enabled: false}\n");
    assert!(at(&c, &["podDisruptionBudget"]).is_none());
}

#[test]
fn what_has_no_equivalent_is_listed_with_why() {
    let c = conv(
        "fullnameOverride: prometheus-adapter\nnamespaceOverride: monitoring\nstrategy: {type: Recreate}\n\
         deploymentAnnotations: {a: b}\nrevisionHistoryLimit: 3\nextraManifests: [{kind: ConfigMap}]\n\
         automountServiceAccountToken: false\npsp: {create: true}\nservice: {ipDualStack: {enabled: true}, clusterIP: 10.0.0.9}\n\
         rbac: {useAuthReaderClusterRole: true, customMetrics: {resources: [pods/x]}}\n\
         image: {repository: mirror/prometheus-adapter, tag: v0.12.0, pullSecrets: [creds]}\n\
         livenessProbe: {initialDelaySeconds: 5}\nsomethingElse: 1\n\
         customAnnotations: {owner: platform}\ncustomLabels: {team: platform}\n",
    );
    let n = notes(&c);
    for needle in [
        "fullnameOverride: not carried over",
        "strategy: no equivalent",
        "deploymentAnnotations: no equivalent",
        "revisionHistoryLimit: no equivalent",
        "extraManifests: no equivalent",
        "automountServiceAccountToken: false: no equivalent",
        "psp.create: no equivalent",
        "service.ipDualStack: no equivalent",
        "service.clusterIP: no equivalent",
        "rbac.useAuthReaderClusterRole: no equivalent",
        "rbac.customMetrics.resources: no equivalent",
        "image.repository mirror/prometheus-adapter",
        "image.tag v0.12.0",
        "livenessProbe: not carried over",
        "somethingElse: not a value of the prometheus-adapter chart",
    ] {
        assert!(n.contains(needle), "{needle}: {n}");
    }
    assert!(c.yaml.contains("# Not carried over"), "{}", c.yaml);
    assert_eq!(
        at(&c, &["image"]),
        Some(&yaml("{pullSecrets: [{name: creds}]}"))
    );
    assert_eq!(at(&c, &["commonLabels"]), Some(&yaml("{team: platform}")));
    assert_eq!(
        at(&c, &["commonAnnotations"]),
        Some(&yaml("{owner: platform}"))
    );
    assert_eq!(
        at(&c, &["podAnnotations"]),
        Some(&yaml("{owner: platform}"))
    );
    assert_eq!(at(&c, &["namespaceOverride"]), Some(&yaml("monitoring")));
}

// ---- rules from elsewhere ----------------------------------------------------------------

#[test]
fn rules_existing_or_config_flag_need_the_rules_file() {
    let e = convert_values("rules: {existing: adapter-rules}\n", "v", None, None)
        .expect_err("existing");
    assert!(
        e.0.contains("adapter-rules") && e.0.contains("--helm-values"),
        "{e}"
    );
    let e = convert_values(
        "extraArguments: [--config=/etc/my/config.yaml]\n",
        "v",
        None,
        None,
    )
    .expect_err("--config");
    assert!(e.0.contains("/etc/my/config.yaml"), "{e}");
    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: adapter-rules}\ndata:\n  config.yaml: |\n    externalRules:\n    - seriesQuery: 'q{namespace!=\"\"}'\n      resources: {overrides: {namespace: {resource: namespace}}}\n      metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n";
    let c = convert_values(
        "rules: {existing: adapter-rules}\n",
        "v",
        Some(RulesInput {
            text: config_map,
            source: "cm.yaml",
        }),
        None,
    )
    .expect("converts");
    check_schema(&c);
    assert_eq!(c.rules.config.external_rules.len(), 1);
    assert_eq!(
        at(&c, &["apiServices"]),
        Some(&yaml("{custom: false, external: true, resource: false}"))
    );
    assert!(
        notes(&c).contains("converted from cm.yaml (the chart's rules.existing (adapter-rules))"),
        "{}",
        notes(&c)
    );
}

// ---- the YAML written -------------------------------------------------------------------

#[test]
fn the_rules_block_keeps_every_byte() {
    for text in [
        "a\n",
        "a",
        "a\n\n\n",
        "  leading spaces\nnext\n",
        "x = '''\n  indented\n\n\ttab and trailing  \n'''\n",
        "# comment first\n[[rules]]\n",
    ] {
        let doc = format!("rules: {}", literal_block(text));
        let back: Value = yaml_serde::from_str(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        assert_eq!(
            back.get("rules").and_then(Value::as_str),
            Some(text),
            "{doc}"
        );
    }
}

#[test]
fn multi_line_queries_survive_into_the_values() {
    let c = conv(
        "rules:\n  default: false\n  custom:\n  - seriesQuery: 'x{namespace!=\"\",pod!=\"\"}'\n    resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}\n    metricsQuery: |\n      sum by (<<.GroupBy>>) (\n        rate(<<.Series>>{<<.LabelMatchers>>}[2m])\n      )\n",
    );
    let rules = at(&c, &["rules"]).and_then(Value::as_str).expect("rules");
    let parsed = crate::config::parse(rules, std::path::Path::new("rules")).expect("TOML");
    assert_eq!(
        parsed.rules[0].metrics_query,
        "sum by (<<.GroupBy>>) (\n  rate(<<.Series>>{<<.LabelMatchers>>}[2m])\n)\n"
    );
    // Comments carry the notes; the file reads back as the values.
    let back: Value = yaml_serde::from_str(&c.yaml).expect("YAML");
    assert_eq!(back, Value::Mapping(c.values.clone()));
    assert!(
        c.yaml.starts_with("# kube-metrics-bridge chart values"),
        "{}",
        c.yaml
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    for text in [
        "[1, 2]\n",
        "rules: 3\n",
        ": : [",
        "extraArguments: {a: 1}\n",
    ] {
        assert!(convert_values(text, "v", None, None).is_err(), "{text}");
    }
    // Odd but harmless shapes are notes.
    let c = conv(
        "nodeSelector: {a: {b: c}}\nservice: {type: ExternalName, port: 0}\ndnsPolicy: Sometimes\n",
    );
    let n = notes(&c);
    assert!(
        n.contains("nodeSelector: every key and value must be a string"),
        "{n}"
    );
    assert!(n.contains("service.type ExternalName"), "{n}");
    assert!(n.contains("service.port"), "{n}");
    assert!(n.contains("dnsPolicy \"Sometimes\""), "{n}");
}

#[test]
fn helm_merge_and_diff() {
    let merged = helm_merge(
        &yaml("{a: {b: 1, c: 2}, d: [1], e: x}"),
        &yaml("{a: {c: 3, f: 4}, d: [2], e: null}"),
    );
    assert_eq!(merged, yaml("{a: {b: 1, c: 3, f: 4}, d: [2]}"));
    let d = diff(
        Some(&yaml("{b: 1, c: 3, f: 4}")),
        Some(&yaml("{b: 1, c: 2, g: 5}")),
    );
    assert_eq!(d, Some(yaml("{c: 3, f: 4, g: null}")));
    assert_eq!(diff(Some(&yaml("1")), Some(&yaml("1"))), None);
    assert_eq!(diff(None, Some(&yaml("1"))), Some(Value::Null));
}

// ---- any input -----------------------------------------------------------------------------

mod any_input {
    use super::*;
    use proptest::prelude::*;

    /// Where values go: every top-level value of the adapter chart and some nested ones.
    fn paths() -> Vec<Vec<&'static str>> {
        let mut out: Vec<Vec<&str>> = KNOWN_KEYS.iter().map(|k| vec![*k]).collect();
        for nested in [
            &["prometheus", "url"][..],
            &["prometheus", "port"],
            &["prometheus", "path"],
            &["image", "pullPolicy"],
            &["image", "pullSecrets"],
            &["image", "repository"],
            &["service", "type"],
            &["service", "port"],
            &["service", "annotations"],
            &["serviceAccount", "name"],
            &["serviceAccount", "create"],
            &["serviceAccount", "annotations"],
            &["podDisruptionBudget", "enabled"],
            &["podDisruptionBudget", "minAvailable"],
            &["podDisruptionBudget", "maxUnavailable"],
            &["certManager", "enabled"],
            &["certManager", "certDuration"],
            &["tls", "enable"],
            &["hostNetwork", "enabled"],
            &["rbac", "create"],
            &["securityContext", "runAsUser"],
            &["resources", "limits"],
            &["rules", "default"],
        ] {
            out.push(nested.to_vec());
        }
        out
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| Value::Number(n.into())),
            (-1e6f64..1e6).prop_map(|f| Value::Number(f.into())),
            "[ -~]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "http://p:9090",
                "GET",
                "POST",
                "1m",
                "50%",
                "ClusterFirst",
                "NodePort",
                "--v=9",
                "--prometheus-header",
                "--secure-port",
                "{{ .Release.Namespace }}",
                "IfNotPresent",
            ])
            .prop_map(|s| Value::String(s.to_string())),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
                prop::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|kv| {
                    Value::Mapping(
                        kv.into_iter()
                            .map(|(k, v)| (Value::String(k), v))
                            .collect::<Mapping>(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Whatever the values hold, the result is an error that names the problem, or values
        /// the chart's schema accepts (and that read back as written: checked inside).
        #[test]
        fn any_values_give_valid_values_or_an_error(
            entries in prop::collection::vec((0..1000usize, value()), 0..10)
        ) {
            let paths = paths();
            let mut doc = Value::Mapping(Mapping::new());
            for (i, v) in entries {
                let path = &paths[i % paths.len()];
                let mut cur = &mut doc;
                for (n, key) in path.iter().enumerate() {
                    if !matches!(cur, Value::Mapping(_)) {
                        *cur = Value::Mapping(Mapping::new());
                    }
                    let Value::Mapping(m) = cur else { unreachable!() };
                    let k = Value::String((*key).to_string());
                    if n + 1 == path.len() {
                        m.insert(k, v.clone());
                        break;
                    }
                    cur = m.entry(k).or_insert(Value::Mapping(Mapping::new()));
                }
            }
            let text = yaml_serde::to_string(&doc).expect("YAML");
            match convert_values(&text, "values.yaml", None, None) {
                Ok(c) => check_schema(&c),
                Err(e) => prop_assert!(!e.0.contains("internal error"), "{e}\n{text}"),
            }
        }
    }
}
