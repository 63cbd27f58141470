//! `doctor`: checks a cluster installation and explains what is wrong, one line a check.
//!
//! It reads what kube-apiserver and the aggregator already know (APIService conditions,
//! the Service and its endpoints), asks kube-apiserver what the bridge's ServiceAccount and
//! the HPA controller may do (SubjectAccessReview), and checks the rules file and Prometheus
//! the way the server would. It changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

use crate::discovery::{build_registry, list_series, SeriesByQuery, SeriesSource};
use crate::kube::mapper::DiscoveryMapper;
use crate::kube::resources::{ResourceInfo, StaticMapper};
use crate::metrics::Metrics;
use crate::rules::{load_file, LoadError, Overrides, RuleSet};

/// What to check.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// kubeconfig of the cluster (else `KUBECONFIG` or `~/.kube/config` when present, then
    /// in-cluster config).
    #[arg(long, env = "KMB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace the bridge is installed in.
    #[arg(long, default_value = "custom-metrics")]
    pub namespace: String,
    /// Its Service, as the APIServices name it.
    #[arg(long, default_value = "kube-metrics-bridge")]
    pub service: String,
    /// Its ServiceAccount, whose RBAC is checked.
    #[arg(long, default_value = "kube-metrics-bridge")]
    pub service_account: String,
    /// The rules file to check and to discover metrics with (the ConfigMap's content).
    #[arg(long, env = "KMB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `[prometheus] url` (e.g. a port-forward to the in-cluster Prometheus).
    #[arg(long, env = "KMB_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// The custom and external APIServices the installation registers, comma-separated
    /// (empty: none, e.g. while prometheus-adapter still owns them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "v1beta1.custom.metrics.k8s.io,v1beta2.custom.metrics.k8s.io,v1beta1.external.metrics.k8s.io"
    )]
    pub api_services: Vec<String>,
    /// The Secret holding the serving certificate, checked against the caBundles (default
    /// `<service>-tls`); empty skips the check (e.g. for a caller that may not read Secrets).
    #[arg(long)]
    pub tls_secret: Option<String>,
}

impl DoctorArgs {
    /// `--api-services` without empty entries (`--api-services=` means none).
    fn api_services(&self) -> impl Iterator<Item = &str> {
        self.api_services
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// Whether an APIService of `group` is among `--api-services`.
    fn registers(&self, group: &str) -> bool {
        self.api_services()
            .any(|name| name.split_once('.').is_some_and(|(_, g)| g == group))
    }
}
const HPA_CONTROLLER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

/// Collects results and prints them as they come.
#[derive(Default)]
struct Report {
    failures: usize,
    warnings: usize,
}

impl Report {
    fn ok(&mut self, what: &str) {
        println!("ok    {what}");
    }
    fn fail(&mut self, what: &str, why: &str) {
        self.failures += 1;
        println!("FAIL  {what}: {why}");
    }
    fn warn(&mut self, what: &str, why: &str) {
        self.warnings += 1;
        println!("warn  {what}: {why}");
    }
}

/// Runs every check; returns the process exit code (1 if anything failed).
pub async fn run(args: DoctorArgs) -> anyhow::Result<i32> {
    let mut report = Report::default();
    let client = match crate::kube::client::connect(args.kubeconfig.as_deref()).await {
        Ok(client) => {
            let available = check_api_services(&client, &args, &mut report).await;
            check_served(&client, &args, &available, &mut report).await;
            check_service(&client, &args, &mut report).await;
            check_certificate(&client, &args, &mut report).await;
            check_rbac(&client, &args, &mut report).await;
            Some(client)
        }
        Err(e) => {
            report.fail("cluster connection", &format!("{e:#}"));
            None
        }
    };
    // Whether the rules have [resource_rules]; None without a readable rules file.
    let mut resource_rules = None;
    if let Some(config) = &args.config {
        let mapper = cluster_mapper(client.as_ref(), &mut report).await;
        let (resources, has_resource_rules) =
            check_rules_and_prometheus(config, args.prometheus_url.clone(), &mapper, &mut report)
                .await;
        resource_rules = has_resource_rules;
        if let (Some(client), Some(resources)) = (&client, resources) {
            check_resource_access(client, &args, &resources, &mut report).await;
        }
    } else {
        report.warn(
            "rules",
            "no --config given: rules, Prometheus and discovery not checked",
        );
    }
    if let Some(client) = &client {
        check_resource_metrics_api(client, &args, resource_rules, &mut report).await;
    }
    println!(
        "{} failure(s), {} warning(s)",
        report.failures, report.warnings
    );
    Ok(if report.failures > 0 { 1 } else { 0 })
}

async fn get(client: &kube::Client, path: &str) -> Result<Option<Value>, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request::<Value>(request).await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks each of `--api-services`; returns the ones that are Available.
async fn check_api_services(
    client: &kube::Client,
    args: &DoctorArgs,
    report: &mut Report,
) -> Vec<String> {
    let mut available_names = Vec::new();
    for name in args.api_services() {
        let what = format!("APIService {name}");
        let svc = match get(
            client,
            &format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}"),
        )
        .await
        {
            Ok(Some(v)) => v,
            Ok(None) => {
                report.fail(
                    &what,
                    "missing: the API is not registered (apply the APIServices from deploy/)",
                );
                continue;
            }
            Err(e) => {
                report.fail(&what, &format!("cannot read it: {e}"));
                continue;
            }
        };
        let spec = &svc["spec"];
        if spec["insecureSkipTLSVerify"] == true {
            report.warn(&what, "insecureSkipTLSVerify is set: kube-apiserver does not check whom it talks to; set caBundle instead");
        } else if spec["caBundle"].as_str().unwrap_or("").is_empty() {
            report.fail(
                &what,
                "no caBundle: kube-apiserver cannot verify the bridge's certificate",
            );
        }
        let (ns, svc_name) = (
            spec["service"]["namespace"].as_str().unwrap_or(""),
            spec["service"]["name"].as_str().unwrap_or(""),
        );
        if (ns, svc_name) != (args.namespace.as_str(), args.service.as_str()) {
            report.warn(
                &what,
                &format!(
                    "points at Service {ns}/{svc_name}, not {}/{} (another adapter owns this API?)",
                    args.namespace, args.service
                ),
            );
        }
        let available = svc["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Available"))
            .cloned()
            .unwrap_or(Value::Null);
        if available["status"] == "True" {
            report.ok(&format!("{what} is Available"));
            available_names.push(name.to_string());
        } else {
            let reason = available["reason"].as_str().unwrap_or("no condition yet");
            let message = available["message"].as_str().unwrap_or("");
            report.fail(
                &what,
                &format!(
                    "not Available ({reason}): {message}{}",
                    explain_unavailable(reason, message)
                ),
            );
        }
    }
    available_names
}

/// Calls each Available APIService's API through kube-apiserver as an HPA would: its
/// discovery document, then the first metric listed there, in `--namespace`. An answer proves
/// the whole path (aggregator, caBundle, front-proxy authentication, the bridge's
/// authorization and its backend); a 404 is an answer too (no such object or no data there).
async fn check_served(
    client: &kube::Client,
    args: &DoctorArgs,
    available: &[String],
    report: &mut Report,
) {
    for name in available {
        let Some((version, group)) = name.split_once('.') else {
            continue;
        };
        let base = format!("/apis/{group}/{version}");
        let what = format!("GET {base} through kube-apiserver");
        let discovery = match call(client, &base).await {
            Ok(v) => v,
            Err((code, why)) => {
                report.fail(&what, &served_failure(code, &why));
                continue;
            }
        };
        let resources: Vec<&Value> = discovery["resources"]
            .as_array()
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        report.ok(&format!("{what}: {} resource(s)", resources.len()));
        let Some(first) = resources.first() else {
            continue;
        };
        let resource = first["name"].as_str().unwrap_or("");
        let namespaced = first["namespaced"] == true;
        let Some(path) = metric_path(group, resource, namespaced, &args.namespace) else {
            continue;
        };
        let path = format!("{base}/{path}");
        let what = format!("GET {path} through kube-apiserver");
        match call(client, &path).await {
            Ok(list) => report.ok(&format!(
                "{what}: {} item(s)",
                list["items"].as_array().map_or(0, Vec::len)
            )),
            Err((404, why)) => report.ok(&format!("{what}: answered 404 ({why})")),
            Err((code, why)) => report.fail(&what, &served_failure(code, &why)),
        }
    }
}

/// The path, below `/apis/<group>/<version>/`, that reads the discovery entry `resource`
/// (`pods/<metric>`, `namespaces/<metric>`, `nodes/<metric>` or an external `<metric>`) for
/// every object in `namespace`.
fn metric_path(group: &str, resource: &str, namespaced: bool, namespace: &str) -> Option<String> {
    if group == "external.metrics.k8s.io" {
        return Some(format!("namespaces/{namespace}/{resource}"));
    }
    let (kind, metric) = resource.split_once('/')?;
    Some(match (kind, namespaced) {
        ("namespaces", false) => format!("namespaces/{namespace}/metrics/{metric}"),
        (_, true) => format!("namespaces/{namespace}/{kind}/*/{metric}"),
        (_, false) => format!("{kind}/*/{metric}"),
    })
}

fn served_failure(code: u16, why: &str) -> String {
    let hint = match code {
        401 | 403 => " -- the caller lacks RBAC on the metrics group (get, list), or the bridge cannot review it (auth-delegator)",
        503 if why.contains("unable to handle") => {
            " -- kube-apiserver cannot reach the bridge (see the APIService's condition)"
        }
        500..=599 => " -- the bridge failed to answer: its log names the query and the backend's error",
        _ => "",
    };
    format!("{code}: {why}{hint}")
}

/// GET `path` through kube-apiserver: the JSON answer, or the status code and message.
async fn call(client: &kube::Client, path: &str) -> Result<Value, (u16, String)> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| (0, e.to_string()))?;
    match client.request::<Value>(request).await {
        Ok(v) => Ok(v),
        Err(kube::Error::Api(s)) => Err((s.code, s.message.clone())),
        Err(e) => Err((0, e.to_string())),
    }
}

/// `v1beta1.metrics.k8s.io` (what HPAs read) and `v1.metrics.k8s.io` (what kubectl 1.37+ reads
/// when registered) each belong to one server at a time (metrics-server, prometheus-adapter or
/// the bridge), and both should belong to the same one. `resource_rules`: whether the rules
/// file has `[resource_rules]` (None when no file was given).
async fn check_resource_metrics_api(
    client: &kube::Client,
    args: &DoctorArgs,
    resource_rules: Option<bool>,
    report: &mut Report,
) {
    let mut owners = Vec::new();
    for version in ["v1beta1", "v1"] {
        let name = format!("{version}.metrics.k8s.io");
        let what = format!("APIService {name}");
        match get(
            client,
            &format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}"),
        )
        .await
        {
            Ok(Some(svc)) => {
                owners.push((name, apiservice_owner(&svc)));
                check_resource_apiservice(&what, &svc, args, resource_rules, report);
            }
            // Without v1, kubectl falls back to v1beta1: nothing fails.
            Ok(None) if version == "v1" => report.ok(&format!(
                "{what} is not registered (kubectl and HPAs use v1beta1)"
            )),
            Ok(None) => {
                let why = if resource_rules == Some(true) {
                    "missing, though the rules have [resource_rules]: register it (chart value apiServices.resource) once metrics-server's is removed"
                } else {
                    "missing: nothing serves kubectl top or CPU/memory HPAs (run metrics-server, or serve it from [resource_rules])"
                };
                report.warn(&what, why);
            }
            Err(e) => report.fail(&what, &format!("cannot read it: {e}")),
        }
    }
    if let [(a, owner_a), (b, owner_b)] = owners.as_slice() {
        if owner_a != owner_b {
            report.warn(
                "APIServices of metrics.k8s.io",
                &format!(
                    "{a} is served by Service {owner_a} but {b} by Service {owner_b}: kubectl top and HPAs read different servers; give both to one (docs/migration.md)"
                ),
            );
        }
    }
}

/// `namespace/name` of the Service an APIService points at.
fn apiservice_owner(svc: &Value) -> String {
    let service = &svc["spec"]["service"];
    format!(
        "{}/{}",
        service["namespace"].as_str().unwrap_or(""),
        service["name"].as_str().unwrap_or("")
    )
}

fn check_resource_apiservice(
    what: &str,
    svc: &Value,
    args: &DoctorArgs,
    resource_rules: Option<bool>,
    report: &mut Report,
) {
    let available = svc["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Available"))
        .map(|c| c["status"] == "True")
        .unwrap_or(false);
    let owner = apiservice_owner(svc);
    let ours = owner == format!("{}/{}", args.namespace, args.service);
    match (ours, resource_rules, available) {
        (true, Some(false), _) => report.fail(
            what,
            "points at the bridge, but its rules have no [resource_rules]: kubectl top and CPU/memory HPAs fail; add them or give the APIService back to metrics-server",
        ),
        (true, _, true) => report.ok(&format!("{what} is served by the bridge and Available")),
        (true, _, false) => report.fail(
            what,
            "points at the bridge but is not Available (see its status conditions)",
        ),
        (false, Some(true), _) => report.warn(
            what,
            &format!(
                "owned by Service {owner}, so the rules' [resource_rules] are not in use; docs/migration.md gives the cut-over order"
            ),
        ),
        (false, _, true) => report.ok(&format!(
            "{what} is served by Service {owner} (not the bridge) and Available"
        )),
        (false, _, false) => report.warn(
            what,
            &format!("served by Service {owner}, which is not Available: kubectl top and CPU/memory HPAs fail"),
        ),
    }
}

/// What an APIService condition usually means, in one sentence.
fn explain_unavailable(reason: &str, message: &str) -> &'static str {
    if message.contains("x509") || message.contains("certificate") {
        " -- the caBundle does not match the serving certificate, or the certificate lacks the SAN <service>.<namespace>.svc"
    } else if message.contains("connection refused")
        || message.contains("i/o timeout")
        || message.contains("no route")
    {
        " -- kube-apiserver cannot reach the pods: check the Service port, the pods' readiness, and network policies"
    } else if message.contains(" 401") || message.contains(" 403") {
        " -- the bridge refused kube-apiserver: check its RBAC (auth-delegator, extension-apiserver-authentication-reader)"
    } else {
        match reason {
            "ServiceNotFound" => " -- create the Service the APIService names",
            "MissingEndpoints" | "EndpointsNotFound" => " -- no ready pod behind the Service (check the Deployment and its readiness probe; port names must match)",
            "ServicePortError" => " -- the APIService port is not a port of the Service",
            _ => "",
        }
    }
}

async fn check_service(client: &kube::Client, args: &DoctorArgs, report: &mut Report) {
    let what = format!("Service {}/{}", args.namespace, args.service);
    let svc = match get(
        client,
        &format!(
            "/api/v1/namespaces/{}/services/{}",
            args.namespace, args.service
        ),
    )
    .await
    {
        Ok(Some(v)) => v,
        Ok(None) => return report.fail(&what, "missing"),
        Err(e) => return report.fail(&what, &format!("cannot read it: {e}")),
    };
    if svc["spec"]["type"] == "ExternalName" {
        return report.ok(&format!(
            "{what} is ExternalName {}",
            svc["spec"]["externalName"].as_str().unwrap_or("")
        ));
    }
    report.ok(&format!("{what} exists"));
    let slices = get(
        client,
        &format!("/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{}", args.namespace, args.service),
    )
    .await;
    let ready = match slices {
        Ok(Some(list)) => list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                    .filter(|e| e["conditions"]["ready"] != false)
                    .count()
            })
            .unwrap_or(0),
        Ok(None) => 0,
        Err(e) => {
            return report.fail(
                &format!("{what} endpoints"),
                &format!("cannot read them: {e}"),
            )
        }
    };
    if ready > 0 {
        report.ok(&format!("{what} has {ready} ready endpoint(s)"));
    } else {
        report.fail(&format!("{what} endpoints"), "no ready endpoint: no bridge pod is ready (see `kubectl describe pod`, /readyz waits for discovery and caches)");
    }
}

/// The serving certificate in the Secret the shipped manifests use, checked the way
/// kube-aggregator checks it: against each APIService's caBundle, for `<svc>.<ns>.svc`.
async fn check_certificate(client: &kube::Client, args: &DoctorArgs, report: &mut Report) {
    use base64::Engine as _;
    let secret_name = match &args.tls_secret {
        Some(name) if name.is_empty() => return,
        Some(name) => name.clone(),
        None => format!("{}-tls", args.service),
    };
    let secret = match get(client, &format!("/api/v1/namespaces/{}/secrets/{secret_name}", args.namespace)).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return report.warn(
                "serving certificate",
                &format!("no Secret {}/{secret_name}: certificate not checked (cert-manager or another Secret name?)", args.namespace),
            )
        }
        Err(e) => return report.warn("serving certificate", &format!("cannot read Secret {secret_name}: {e}")),
    };
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_default()
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&decode(&secret["data"]["tls.crt"]))
            .filter_map(Result::ok)
            .collect();
    let Some((leaf, intermediates)) = chain.split_first() else {
        return report.fail(
            "serving certificate",
            &format!("Secret {secret_name} has no tls.crt certificate"),
        );
    };
    let dns = format!("{}.{}.svc", args.service, args.namespace);
    for name in args.api_services() {
        let what = format!("serving certificate for APIService {name}");
        let bundle = match get(
            client,
            &format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}"),
        )
        .await
        {
            Ok(Some(svc)) => decode(&svc["spec"]["caBundle"]),
            _ => continue, // reported by the APIService check
        };
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&bundle).filter_map(Result::ok) {
            let _ = roots.add(ca);
        }
        if roots.is_empty() {
            continue;
        }
        match verify_serving(leaf, intermediates, roots, &dns) {
            Ok(()) => report.ok(&format!("{what} is trusted by its caBundle for {dns}")),
            Err(e) => report.fail(&what, &format!("{e} -- kube-apiserver will refuse it; put the CA that signed tls.crt into caBundle (hack/deploy.sh does)")),
        }
    }
}

fn verify_serving(
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    roots: rustls::RootCertStore,
    dns: &str,
) -> Result<(), String> {
    crate::tls::install_crypto_provider();
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| e.to_string())?;
    let server =
        rustls_pki_types::ServerName::try_from(dns.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &server,
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn access(
    client: &kube::Client,
    user: &str,
    groups: &[&str],
    attrs: Value,
) -> Result<(bool, String), String> {
    let mut spec = json!({"user": user, "groups": groups});
    let key = if attrs.get("path").is_some() {
        "nonResourceAttributes"
    } else {
        "resourceAttributes"
    };
    spec[key] = attrs;
    let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec});
    let request = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string().into_bytes())
        .map_err(|e| e.to_string())?;
    let review: Value = client.request(request).await.map_err(|e| e.to_string())?;
    Ok((
        review["status"]["allowed"] == true,
        review["status"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    ))
}

async fn check_rbac(client: &kube::Client, args: &DoctorArgs, report: &mut Report) {
    let bridge = bridge_user(args);
    let bridge_groups = ["system:serviceaccounts", "system:authenticated"];
    let mut checks: Vec<(String, &str, &[&str], Value, &str)> = vec![
        (
            format!("{bridge} may create TokenReviews"),
            &bridge,
            &bridge_groups,
            json!({"verb": "create", "group": "authentication.k8s.io", "resource": "tokenreviews"}),
            "bind ClusterRole system:auth-delegator",
        ),
        (
            format!("{bridge} may create SubjectAccessReviews"),
            &bridge,
            &bridge_groups,
            json!({"verb": "create", "group": "authorization.k8s.io", "resource": "subjectaccessreviews"}),
            "bind ClusterRole system:auth-delegator",
        ),
        (
            format!("{bridge} may read the authentication ConfigMap"),
            &bridge,
            &bridge_groups,
            json!({"verb": "watch", "resource": "configmaps", "namespace": "kube-system", "name": "extension-apiserver-authentication"}),
            "bind Role extension-apiserver-authentication-reader in kube-system",
        ),
    ];
    // The HPA's access matters only for the groups this installation serves.
    if args.registers("custom.metrics.k8s.io") {
        checks.push(("the HPA controller may read custom metrics".into(), HPA_CONTROLLER, &["system:serviceaccounts", "system:authenticated"],
         json!({"verb": "get", "group": "custom.metrics.k8s.io", "resource": "pods", "subresource": "any", "name": "*", "namespace": "default"}),
         "bind a ClusterRole with get/list on custom.metrics.k8s.io to kube-system/horizontal-pod-autoscaler"));
    }
    if args.registers("external.metrics.k8s.io") {
        checks.push(("the HPA controller may read external metrics".into(), HPA_CONTROLLER, &["system:serviceaccounts", "system:authenticated"],
         json!({"verb": "list", "group": "external.metrics.k8s.io", "resource": "any", "namespace": "default"}),
         "bind a ClusterRole with get/list on external.metrics.k8s.io to kube-system/horizontal-pod-autoscaler"));
    }
    for (what, user, groups, attrs, fix) in checks {
        report_access(client, report, &what, user, groups, attrs, fix).await;
    }
}

/// The bridge's own identity as SubjectAccessReviews name it.
fn bridge_user(args: &DoctorArgs) -> String {
    format!(
        "system:serviceaccount:{}:{}",
        args.namespace, args.service_account
    )
}

/// One SubjectAccessReview, reported as ok or as a failure with `fix`.
async fn report_access(
    client: &kube::Client,
    report: &mut Report,
    what: &str,
    user: &str,
    groups: &[&str],
    attrs: Value,
    fix: &str,
) {
    match access(client, user, groups, attrs).await {
        Ok((true, _)) => report.ok(what),
        Ok((false, reason)) => report.fail(
            what,
            &format!(
                "denied{}: {fix}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
        ),
        Err(e) => report.fail(what, &format!("cannot ask: {e}")),
    }
}

/// list and watch on every resource the discovered metrics are tied to: the bridge's watch
/// caches and per-request LISTs need both. A resource without them is served with a 503 (its
/// metrics alone; the rest of the API is unaffected).
async fn check_resource_access(
    client: &kube::Client,
    args: &DoctorArgs,
    resources: &[ResourceInfo],
    report: &mut Report,
) {
    let bridge = bridge_user(args);
    let groups = ["system:serviceaccounts", "system:authenticated"];
    for info in resources {
        let gr = &info.group_resource;
        for verb in ["list", "watch"] {
            report_access(
                client,
                report,
                &format!("{bridge} may {verb} {gr} (its rules tie metrics to them)"),
                &bridge,
                &groups,
                json!({"verb": verb, "group": gr.group, "resource": gr.resource}),
                &format!(
                    "add {gr} to the chart's rbac.resourceRules (or the bridge's ClusterRole) with list and watch"
                ),
            )
            .await;
        }
    }
}

/// The cluster's own resource table (CRDs included), else the built-in one.
async fn cluster_mapper(client: Option<&kube::Client>, report: &mut Report) -> StaticMapper {
    let Some(client) = client else {
        return StaticMapper::builtin();
    };
    let mapper = DiscoveryMapper::new();
    match mapper.refresh(client).await {
        Ok(_) => mapper.snapshot(),
        Err(e) => {
            report.warn(
                "API discovery",
                &format!("{e:#}; resources are named from the built-in table"),
            );
            StaticMapper::builtin()
        }
    }
}

/// Checks the rules and Prometheus and runs one discovery; returns the resources the
/// discovered metrics are tied to.
async fn check_rules_and_prometheus(
    config: &std::path::Path,
    prometheus_url: Option<String>,
    mapper: &StaticMapper,
    report: &mut Report,
) -> (Option<Vec<ResourceInfo>>, Option<bool>) {
    let rules = match load_file(config, &Overrides { prometheus_url }) {
        Ok(r) => {
            report.ok(&format!(
                "rules {} ({} custom, {} external)",
                config.display(),
                r.custom.len(),
                r.external.len()
            ));
            Arc::new(r)
        }
        Err(LoadError::File(e)) => {
            report.fail("rules", &e.to_string());
            return (None, None);
        }
        Err(LoadError::Problems(p)) => {
            for problem in &p.0 {
                report.fail("rules", &problem.to_string());
            }
            return (None, None);
        }
    };
    let has_resource_rules = rules.resource_rules.is_some();
    let metrics = Metrics::new();
    let backends = match crate::prometheus::Backends::new(&rules.backends) {
        Ok(b) => b,
        Err(e) => {
            report.fail("Prometheus client", &format!("{e:#}"));
            return (None, Some(has_resource_rules));
        }
    };
    // Every backend, so a dead failover target shows before it is needed.
    let mut default_answers = false;
    for client in backends.iter() {
        let what = backend_title(&rules, client);
        match client.query("vector(1)", Some("default")).await {
            Ok(_) => {
                default_answers |= client.name() == backends.default_name();
                report.ok(&format!("{what} answers queries"));
            }
            Err(e) => report.fail(&what, &e.to_string()),
        }
    }
    if !default_answers {
        return (None, Some(has_resource_rules));
    }
    let (series, errors) = list_series(&rules, &backends, &SeriesByQuery::new(), &metrics).await;
    let multiple = rules.backends.iter().count() > 1;
    let series_title = |source: &SeriesSource| {
        if multiple {
            format!(
                "series_query {:?} on backend {:?}",
                source.query, source.backend
            )
        } else {
            format!("series_query {:?}", source.query)
        }
    };
    for (source, e) in &errors {
        report.fail(&series_title(source), &e.to_string());
    }
    let registry = build_registry(rules.clone(), &series, mapper);
    for (source, set) in &series {
        if set.invalid_names > 0 || set.invalid_label_names > 0 {
            report.warn(
                &series_title(source),
                &format!(
                    "{} series left out because their name is not a classic PromQL metric name (e.g. {:?}), {} label names left out for the same reason (e.g. {:?}): they would be pasted into queries unquoted",
                    set.invalid_names,
                    set.invalid_examples.iter().take(3).collect::<Vec<_>>(),
                    set.invalid_label_names,
                    set.invalid_label_examples.iter().take(3).collect::<Vec<_>>(),
                ),
            );
        }
    }
    for rule in rules.all_rules() {
        let found = series
            .get(&SeriesSource::of(rule))
            .map(|s| s.names().filter(|(n, _)| rule.keeps_series(n)).count())
            .unwrap_or(0);
        if found == 0 {
            report.warn(
                &rule.id.to_string(),
                &format!(
                    "series_query {:?} finds no series (after filters): it serves no metric",
                    rule.series_query
                ),
            );
        }
    }
    let custom: Vec<String> = registry
        .custom_metrics()
        .iter()
        .map(|(gr, m)| format!("{gr}/{m}"))
        .collect();
    let external: Vec<&str> = registry.external_metrics().collect();
    report.ok(&format!(
        "discovery: {} custom metric(s) {}",
        custom.len(),
        preview(&custom)
    ));
    report.ok(&format!(
        "discovery: {} external metric(s) {}",
        external.len(),
        preview(&external)
    ));
    if let Some(resource_rules) = &rules.resource_rules {
        check_resource_queries(resource_rules, &backends, &metrics, report).await;
    }
    (Some(registry.resources()), Some(has_resource_rules))
}

/// "Prometheus at URL" for the one-backend shorthand, "backend NAME at URL" otherwise.
fn backend_title(rules: &RuleSet, client: &crate::prometheus::PrometheusClient) -> String {
    let url = rules
        .backends
        .get(client.name())
        .map_or_else(|| client.base_url().to_string(), |b| b.url.clone());
    if rules.backends.iter().count() > 1 {
        format!("backend {:?} at {url}", client.name())
    } else {
        format!("Prometheus at {url}")
    }
}

/// Runs each resource rule's cluster-wide pod query and its node query once and says how
/// many series came back: an empty answer means `kubectl top` will say "metrics not
/// available yet".
async fn check_resource_queries(
    rules: &crate::rules::resource_metrics::ResourceRules,
    backends: &crate::prometheus::Backends,
    metrics: &Metrics,
    report: &mut Report,
) {
    use crate::rules::resource_metrics::ComputeResource;
    for resource in ComputeResource::ALL {
        let rule = rules.rule(resource);
        let queries = [
            (
                "container_query",
                rule.pod_query(None).map_err(|e| e.to_string()),
            ),
            ("node_query", Ok(rule.node_query())),
        ];
        for (field, query) in queries {
            let what = format!("resource_rules.{}.{field}", resource.as_str());
            let query = match query {
                Ok(q) => q,
                Err(e) => {
                    report.fail(&what, &e);
                    continue;
                }
            };
            match backends.query(&rules.backend, &query, None, metrics).await {
                Ok(result) if result.result.samples().is_empty() => report.warn(
                    &what,
                    &format!("{query} returns no series: kubectl top will find no metrics"),
                ),
                Ok(result) => {
                    report.ok(&format!("{what}: {} series", result.result.samples().len()))
                }
                Err(e) => report.fail(&what, &format!("{query}: {e}")),
            }
        }
    }
}

fn preview<S: AsRef<str>>(names: &[S]) -> String {
    let shown: Vec<&str> = names.iter().take(8).map(AsRef::as_ref).collect();
    let more = names.len().saturating_sub(shown.len());
    if shown.is_empty() {
        String::new()
    } else if more > 0 {
        format!("({} and {more} more)", shown.join(", "))
    } else {
        format!("({})", shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_common_conditions() {
        assert!(explain_unavailable(
            "FailedDiscoveryCheck",
            "x509: certificate signed by unknown authority"
        )
        .contains("caBundle"));
        assert!(explain_unavailable(
            "FailedDiscoveryCheck",
            "dial tcp 10.0.0.1:443: connect: connection refused"
        )
        .contains("reach"));
        assert!(explain_unavailable("MissingEndpoints", "").contains("ready pod"));
        assert_eq!(explain_unavailable("Passed", ""), "");
        assert_eq!(preview(&["a", "b"]), "(a, b)");
        assert!(preview(&(0..10).map(|i| i.to_string()).collect::<Vec<_>>()).contains("2 more"));
    }

    #[test]
    fn metric_paths_read_every_object_of_the_namespace() {
        let custom = "custom.metrics.k8s.io";
        assert_eq!(
            metric_path(custom, "pods/rps", true, "shop").as_deref(),
            Some("namespaces/shop/pods/*/rps")
        );
        assert_eq!(
            metric_path(custom, "namespaces/rps", false, "shop").as_deref(),
            Some("namespaces/shop/metrics/rps")
        );
        assert_eq!(
            metric_path(custom, "nodes/load", false, "shop").as_deref(),
            Some("nodes/*/load")
        );
        assert_eq!(
            metric_path("external.metrics.k8s.io", "queue_depth", true, "shop").as_deref(),
            Some("namespaces/shop/queue_depth")
        );
        assert_eq!(metric_path(custom, "rps", true, "shop"), None);
    }

    #[test]
    fn api_services_flag_names_what_is_checked() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            doctor: DoctorArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("doctor").chain(args.iter().copied()))
                .expect("flags parse")
                .doctor
        };
        let default = parse(&[]);
        assert_eq!(default.api_services().count(), 3);
        assert!(default.registers("external.metrics.k8s.io"));
        let none = parse(&["--api-services="]);
        assert_eq!(none.api_services().count(), 0);
        assert!(!none.registers("custom.metrics.k8s.io"));
        let external = parse(&["--api-services=v1beta1.external.metrics.k8s.io"]);
        assert!(external.registers("external.metrics.k8s.io"));
        assert!(!external.registers("custom.metrics.k8s.io"));
        assert_eq!(parse(&["--tls-secret="]).tls_secret.as_deref(), Some(""));
    }
}
