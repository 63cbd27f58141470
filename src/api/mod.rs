//! The HTTP API kube-apiserver and the HPA controller call: routing, content negotiation,
//! Status errors, and the per-request log line and latency metric.

pub mod accept;
pub mod openapi;
pub mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use crate::auth::{attributes_for, Auth};
use crate::bridge::{Bridge, Readiness};
use crate::not_found::NotFound;
use crate::request::{self, Route};
use crate::resource_answer::ResourceAnswer;
use crate::response::discovery;
use crate::response::resource::{self, RESOURCE_GROUP};
use crate::server::PeerInfo;
use accept::Accept;
use status::ApiError;

const JSON: &str = "application/json";

/// The warp filter for the secure port. `auth` is `None` only with `--standalone`.
///
/// warp is the service adapter here, not the router: its path filters would match (and
/// reject, with warp's own plain-text bodies) before anything else ran, while kube-apiserver's
/// order is authenticate -> route -> authorize, and every answer, a 404 included, must be a
/// `metav1.Status`. So the one filter extracts what a request carries (method, raw path,
/// query, headers, the connection's [`PeerInfo`]) and [`handle`] does the rest in that order.
pub fn routes(
    bridge: Arc<Bridge>,
    auth: Option<Arc<Auth>>,
) -> impl Filter<Extract = (Response<String>,), Error = Infallible> + Clone + Send + Sync + 'static
{
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PeerInfo>())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  peer: Option<PeerInfo>| {
                let (bridge, auth) = (bridge.clone(), auth.clone());
                async move {
                    let auth = auth.as_deref();
                    let peer = peer.as_ref();
                    handle(
                        &bridge,
                        auth,
                        peer,
                        &method,
                        path.as_str(),
                        &query,
                        &headers,
                    )
                    .await
                }
            },
        )
}

/// Answers one request; every outcome is a JSON body (or plain `ok` for health). The order
/// is kube-apiserver's: authenticate (401) -> route and validate (400, 404, 405) -> authorize
/// (403) -> answer, so a client without credentials learns nothing about the API.
pub async fn handle(
    bridge: &Bridge,
    auth: Option<&Auth>,
    peer: Option<&PeerInfo>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Response<String> {
    let started = Instant::now();
    let accept = Accept::parse(
        headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let mut label = "unauthenticated";
    let mut caller = String::new();
    let result = async {
        let user = match auth {
            Some(auth) => Some(auth.authenticate(peer, headers, path).await?),
            None => None,
        };
        if let Some(user) = &user {
            caller.clone_from(&user.name);
        }
        let route = request::parse(path, query);
        label = route.as_ref().map(Route::label).unwrap_or("other");
        let route = route?;
        if method != Method::GET && method != Method::HEAD {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        if let (Some(auth), Some(user)) = (auth, &user) {
            auth.authorize(peer, user, &attributes_for(&route, path))
                .await?;
        }
        if !accept.json() && !matches!(route, Route::Health(_)) {
            return Err(ApiError::not_acceptable());
        }
        answer(bridge, route, &accept).await
    }
    .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            if e.code >= 500 {
                tracing::warn!(%path, user = %caller, code = e.code, message = %e.message, "request failed");
            }
            json_response(
                StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                e.body(),
            )
        }
    };
    let code = response.status().as_u16();
    bridge
        .metrics
        .observe_request(label, code, started.elapsed());
    tracing::debug!(%method, %path, %query, user = %caller, code, route = label, elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

async fn answer(
    bridge: &Bridge,
    route: Route,
    accept: &Accept<'_>,
) -> Result<Response<String>, ApiError> {
    let registry = bridge.registry.load_full();
    let ok = |body: String| Ok(json_response(StatusCode::OK, body));
    let resource_metrics = registry.documents.resource_v1beta1.is_some();
    match route {
        Route::RootDiscovery if accept.aggregated_discovery() => {
            let mut r = json_response(StatusCode::OK, registry.documents.aggregated.clone());
            if let Ok(v) = http::HeaderValue::from_str(discovery::AGGREGATED_V2) {
                r.headers_mut().insert(http::header::CONTENT_TYPE, v);
            }
            Ok(r)
        }
        Route::RootDiscovery => ok(registry.documents.group_list.clone()),
        Route::GroupDiscovery(RESOURCE_GROUP) if registry.documents.resource_v1beta1.is_none() => {
            Err(ApiError::not_found(&NotFound::Path))
        }
        Route::GroupDiscovery(group) => ok(discovery::api_group(group)),
        Route::ResourceMetricsResources => match &registry.documents.resource_v1beta1 {
            Some(list) => ok(list.clone()),
            None => Err(ApiError::not_found(&NotFound::Path)),
        },
        Route::ResourceMetrics(req) => ok(match bridge.resource_metrics(&req).await? {
            ResourceAnswer::Pod(p) => p.to_json(),
            ResourceAnswer::Pods(p) => resource::pod_list_json(&p),
            ResourceAnswer::Node(n) => n.to_json(),
            ResourceAnswer::Nodes(n) => resource::node_list_json(&n),
        }),
        Route::CustomResources(request::CustomVersion::V1beta1) => {
            ok(registry.documents.custom_v1beta1.clone())
        }
        Route::CustomResources(request::CustomVersion::V1beta2) => {
            ok(registry.documents.custom_v1beta2.clone())
        }
        Route::ExternalResources => ok(registry.documents.external_v1beta1.clone()),
        Route::Custom(req) => ok(bridge.custom(&req).await?),
        Route::External(req) => ok(bridge.external(&req).await?),
        Route::OpenApiV2 => ok(openapi::v2(resource_metrics)),
        Route::OpenApiV3Index => ok(openapi::v3_index(resource_metrics)),
        Route::OpenApiV3(RESOURCE_GROUP, _) if !resource_metrics => {
            Err(ApiError::not_found(&NotFound::Path))
        }
        Route::OpenApiV3(group, version) => ok(openapi::v3(group, version)),
        Route::Version => ok(version_json()),
        Route::Health(which) => Ok(health_response(which, &bridge.readiness())),
    }
}

/// `/healthz` and `/livez` say the process serves; `/readyz` also waits for the first
/// discovery run and the object caches' first lists, so a new replica gets traffic only once
/// it can answer. A failing check is named with its reason, as kube-apiserver's verbose
/// health output does.
pub fn health_response(which: &str, readiness: &Readiness) -> Response<String> {
    let (code, body) = if which == "readyz" && !readiness.ready() {
        let mut body = String::new();
        for (name, result) in &readiness.checks {
            match result {
                Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
                Err(why) => body.push_str(&format!("[-]{name} failed: {why}\n")),
            }
        }
        body.push_str("readyz check failed\n");
        (StatusCode::INTERNAL_SERVER_ERROR, body)
    } else {
        (StatusCode::OK, "ok".to_string())
    };
    let mut r = Response::new(body);
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(code: StatusCode, body: String) -> Response<String> {
    let mut r = Response::new(body);
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(JSON),
    );
    r
}

fn version_json() -> String {
    serde_json::json!({
        "major": "0", "minor": env!("CARGO_PKG_VERSION").split('.').nth(1).unwrap_or("0"),
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")), "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        "compiler": "rustc", "goVersion": ""
    })
    .to_string()
}
