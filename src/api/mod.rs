//! The HTTP API kube-apiserver and the HPA controller call: routing, content negotiation,
//! Status errors, and the per-request log line and metrics.
//!
//! Metric objects are answered in JSON or Kubernetes protobuf, as the Accept header asks
//! ([`accept`]). Discovery, OpenAPI, `/version` and every Status error are JSON whatever was
//! asked (and labelled so): client-go picks its decoder from the response Content-Type, so
//! a client that asked for protobuf still reads them (README: "Content negotiation").

pub mod accept;
pub mod openapi;
pub mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use crate::auth::{attributes_for, Auth};
use crate::bridge::{Bridge, Readiness};
use crate::not_found::NotFound;
use crate::request::{self, Route};
use crate::resource_answer::ResourceAnswer;
use crate::response::discovery;
use crate::response::resource::{self, ResourceVersion, RESOURCE_GROUP};
use crate::response::table;
use crate::server::PeerInfo;
use accept::{Accept, Encoding};
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
) -> impl Filter<Extract = (Response<Bytes>,), Error = Infallible> + Clone + Send + Sync + 'static {
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

/// Answers one request: a metric object in the negotiated encoding, any other outcome JSON
/// (or plain `ok` for health). The order is kube-apiserver's: authenticate (401) -> route and
/// validate (400, 404, 405) -> authorize (403) -> negotiate (406) -> answer, so a client
/// without credentials learns nothing about the API.
pub async fn handle(
    bridge: &Bridge,
    auth: Option<&Auth>,
    peer: Option<&PeerInfo>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Response<Bytes> {
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
        if let Some(to) = forward_target(bridge, &route) {
            // The upstream's authorization decides: it sees the caller as kube-apiserver
            // would have shown it. Without authentication (--standalone) that is anonymous.
            label = "forwarded";
            let user = user.unwrap_or_else(crate::auth::user::User::anonymous);
            let accept = headers.get(http::header::ACCEPT);
            return to
                .upstream
                .forward(method, path, query, &user, accept)
                .await;
        }
        if let (Some(auth), Some(user)) = (auth, &user) {
            auth.authorize(peer, user, &attributes_for(&route, path))
                .await?;
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
    bridge
        .metrics
        .count_response(label, encoding_label(&response));
    tracing::debug!(%method, %path, %query, user = %caller, code, route = label, elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

/// The upstream a custom or external metric request goes to, when the registry does not
/// serve its metric and an upstream answers its group version ([`crate::upstream`]).
fn forward_target(bridge: &Bridge, route: &Route) -> Option<crate::upstream::Forward> {
    let registry = bridge.registry.load();
    let upstreams = &registry.upstreams;
    if upstreams.is_empty() {
        return None;
    }
    let (to, metric) = match route {
        Route::Custom(req) => (
            upstreams.for_custom(&registry, bridge.mapper.as_ref(), req)?,
            &req.metric,
        ),
        Route::External(req) => (upstreams.for_external(&registry, req)?, &req.metric),
        _ => return None,
    };
    if !to.listed {
        // No upstream lists it: maybe a metric of the bridge's own that discovery has not
        // seen yet.
        if let Some(on_miss) = &bridge.on_miss {
            on_miss.missed(metric);
        }
    }
    Some(to)
}

async fn answer(
    bridge: &Bridge,
    route: Route,
    accept: &Accept<'_>,
) -> Result<Response<Bytes>, ApiError> {
    // Everything but the metric lists exists in JSON only: answered in JSON to any client
    // that accepts something served (client-go decodes by the response's Content-Type), 406
    // to the others.
    let document = |body: String| {
        accept
            .negotiate(accept::any_conversion)
            .map(|_| json_response(StatusCode::OK, body))
    };
    let registry = bridge.registry.load_full();
    // The registry's own documents, or merged with the upstreams'.
    let documents = registry.upstreams.documents(&registry);
    let resource_metrics = documents.resource_v1beta1.is_some();
    let not_served = || Err(ApiError::not_found(&NotFound::Path));
    match route {
        // Metric lists: JSON or protobuf, negotiated before the query (a 406 costs nothing).
        // They convert nothing (`no_conversions`); the Resource Metrics API's Table will pass
        // its own `Conversions` and answer per `Negotiated::conversion` (JSON only).
        Route::Custom(req) => {
            let negotiated = accept.negotiate(accept::no_conversions)?;
            let list = bridge.custom(&req).await?;
            Ok(object_response(
                negotiated.encoding,
                || list.to_json(),
                || list.to_protobuf(),
            ))
        }
        Route::External(req) => {
            let negotiated = accept.negotiate(accept::no_conversions)?;
            let list = bridge.external(&req).await?;
            Ok(object_response(
                negotiated.encoding,
                || list.to_json(),
                || list.to_protobuf(),
            ))
        }
        Route::Health(which) => Ok(health_response(which, &bridge.readiness()).map(Bytes::from)),
        Route::RootDiscovery if accept.aggregated_discovery() => {
            let mut r = document(documents.aggregated.clone())?;
            if let Ok(v) = http::HeaderValue::from_str(discovery::AGGREGATED_V2) {
                r.headers_mut().insert(http::header::CONTENT_TYPE, v);
            }
            Ok(r)
        }
        Route::RootDiscovery => document(documents.group_list.clone()),
        Route::GroupDiscovery(RESOURCE_GROUP) if !resource_metrics => not_served(),
        Route::GroupDiscovery(group) => document(discovery::api_group(group)),
        Route::ResourceMetricsResources(version) => {
            let list = match version {
                ResourceVersion::V1 => &documents.resource_v1,
                ResourceVersion::V1beta1 => &documents.resource_v1beta1,
            };
            match list {
                Some(list) => document(list.clone()),
                None => not_served(),
            }
        }
        // The Resource Metrics API also converts to a Table (JSON only), as metrics-server does
        // for `kubectl get podmetrics`.
        Route::ResourceMetrics(req) => {
            let negotiated = accept.negotiate(table_in_json)?;
            let answer = bridge.resource_metrics(&req).await?;
            if negotiated.conversion.is_some() {
                let table = match &answer {
                    ResourceAnswer::Pod(p) => {
                        table::pods(std::slice::from_ref(p), req.include_object, req.version)
                    }
                    ResourceAnswer::Pods(p) => table::pods(p, req.include_object, req.version),
                    ResourceAnswer::Node(n) => {
                        table::nodes(std::slice::from_ref(n), req.include_object, req.version)
                    }
                    ResourceAnswer::Nodes(n) => table::nodes(n, req.include_object, req.version),
                };
                return Ok(json_response(StatusCode::OK, table));
            }
            let (encoding, v) = (negotiated.encoding, req.version);
            Ok(match answer {
                ResourceAnswer::Pod(p) => {
                    object_response(encoding, || p.to_json(v), || p.to_protobuf(v))
                }
                ResourceAnswer::Pods(p) => object_response(
                    encoding,
                    || resource::pod_list_json(&p, v),
                    || resource::pod_list_protobuf(&p, v),
                ),
                ResourceAnswer::Node(n) => {
                    object_response(encoding, || n.to_json(v), || n.to_protobuf(v))
                }
                ResourceAnswer::Nodes(n) => object_response(
                    encoding,
                    || resource::node_list_json(&n, v),
                    || resource::node_list_protobuf(&n, v),
                ),
            })
        }
        Route::CustomResources(request::CustomVersion::V1beta1) => {
            document(documents.custom_v1beta1.clone())
        }
        Route::CustomResources(request::CustomVersion::V1beta2) => {
            document(documents.custom_v1beta2.clone())
        }
        Route::ExternalResources => document(documents.external_v1beta1.clone()),
        Route::OpenApiV2 => document(openapi::v2(resource_metrics)),
        Route::OpenApiV3Index => document(openapi::v3_index(resource_metrics)),
        Route::OpenApiV3(RESOURCE_GROUP, _) if !resource_metrics => not_served(),
        Route::OpenApiV3(group, version) => document(openapi::v3(group, version)),
        Route::Version => document(version_json()),
    }
}

/// The Resource Metrics API's conversions: a `meta.k8s.io/v1` Table, in JSON only (kube-apiserver
/// offers Table for JSON and YAML, never protobuf).
fn table_in_json(encoding: Encoding, conversion: &accept::Conversion<'_>) -> bool {
    encoding == Encoding::Json
        && conversion.kind == "Table"
        && conversion.group == "meta.k8s.io"
        && conversion.version == "v1"
}

/// A metric object in `encoding`; only the chosen encoder runs.
fn object_response(
    encoding: Encoding,
    json: impl FnOnce() -> String,
    protobuf: impl FnOnce() -> Vec<u8>,
) -> Response<Bytes> {
    let body = match encoding {
        Encoding::Json => Bytes::from(json()),
        Encoding::Protobuf => Bytes::from(protobuf()),
    };
    let mut r = Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(encoding.media_type()),
    );
    r
}

/// The `encoding` label of a response, read from its Content-Type.
fn encoding_label(response: &Response<Bytes>) -> &'static str {
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type == Encoding::Protobuf.media_type() {
        Encoding::Protobuf.label()
    } else if content_type.starts_with(JSON) {
        Encoding::Json.label()
    } else {
        "text"
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

fn json_response(code: StatusCode, body: String) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body));
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
