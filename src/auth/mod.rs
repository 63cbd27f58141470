//! Authentication and authorization, delegated to kube-apiserver as its aggregated API
//! servers do (design §3.4, reference §5): who sent a request, and may they.
//!
//! - [`user`]: the `User` a request is made by (name, uid, groups, extra).
//! - [`attributes`]: what a request does, in SubjectAccessReview terms (RequestInfo rules).
//! - [`config`]: the trusted CAs and front-proxy headers, from ConfigMap
//!   `kube-system/extension-apiserver-authentication`.
//! - [`watch`]: keeps that config current and the TLS layer's client CAs with it.
//! - [`certs`]: CA bundles verifying client chains; certificate subjects.
//! - [`headers`]: `X-Remote-*` front-proxy headers and bearer tokens.
//! - [`reviews`]: TokenReview and SubjectAccessReview, behind the [`Reviews`] trait.
//! - [`authenticator`]: front proxy, client certificate, token, anonymous; 401 otherwise.
//! - [`authorizer`]: `system:masters`, always-allowed paths, cached SubjectAccessReviews.
//! - [`status`]: the 401/403 Status errors, worded as kube-apiserver words them.
//!
//! [`Auth::check`] runs both for one request.

pub mod attributes;
pub mod authenticator;
pub mod authorizer;
pub mod certs;
pub mod config;
pub mod headers;
pub mod reviews;
pub mod status;
pub mod user;
pub mod watch;

use std::sync::Arc;

use http::HeaderMap;

use crate::request::Route;
use crate::server::PeerInfo;

pub use attributes::{attributes_for, RequestAttributes, ResourceAttributes};
pub use authenticator::{Authenticator, ChainMemo, TokenOptions};
pub use authorizer::{AlwaysAllowPaths, Authorizer, AuthorizerOptions, Verdict};
pub use config::AuthConfig;
pub use reviews::{Decision, KubeReviews, ReviewError, Reviews};
pub use status::AuthError;
pub use user::User;
pub use watch::{AuthConfigWatch, ConfigHandle, TlsReload};

/// Authentication then authorization of each request.
#[derive(Debug)]
pub struct Auth {
    authenticator: Authenticator,
    authorizer: Authorizer,
}

impl Auth {
    pub fn new(
        config: ConfigHandle,
        reviews: Arc<dyn Reviews>,
        token: TokenOptions,
        authorization: AuthorizerOptions,
    ) -> anyhow::Result<Auth> {
        let authenticator = Authenticator::new(config.config(), Some(reviews.clone()), token)
            .map_err(anyhow::Error::msg)?;
        Ok(Auth {
            authenticator,
            authorizer: Authorizer::new(reviews, authorization),
        })
    }

    /// Default TTLs (10 s) and deadlines (5 s), with `--authorization-always-allow-paths`.
    pub fn with_defaults<S: AsRef<str>>(
        config: ConfigHandle,
        reviews: Arc<dyn Reviews>,
        always_allow_paths: &[S],
    ) -> anyhow::Result<Auth> {
        let paths = AlwaysAllowPaths::new(always_allow_paths)
            .map_err(|e| anyhow::anyhow!("--authorization-always-allow-paths: {e}"))?;
        Auth::new(
            config,
            reviews,
            TokenOptions::default(),
            AuthorizerOptions {
                always_allow_paths: paths,
                ..AuthorizerOptions::default()
            },
        )
    }

    /// Who made this GET of `path` (parsed as `route`), if they may: the user, or the 401,
    /// 403 (or 500 when no review could be had) Status to answer with.
    pub async fn check(
        &self,
        peer: Option<&PeerInfo>,
        headers: &HeaderMap,
        route: &Route,
        path: &str,
    ) -> Result<User, AuthError> {
        let user = self.authenticate(peer, headers, path).await?;
        self.authorize(peer, &user, &attributes_for(route, path))
            .await?;
        Ok(user)
    }

    /// Who sent the request, before anything about it is looked at (design §3.4: 401 before
    /// any routing or validation, so an unauthenticated client learns nothing of the API).
    /// Anonymous requests pass only for the always-allowed paths (health); every one that
    /// fails gets the same 401 body.
    pub async fn authenticate(
        &self,
        peer: Option<&PeerInfo>,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<User, AuthError> {
        let chain = peer.map(|p| p.client_certs.as_slice()).unwrap_or(&[]);
        let remote = peer.map(|p| p.remote_addr);
        let fresh;
        let memo = match peer {
            Some(p) => &*p.chain_memo,
            None => {
                fresh = ChainMemo::default();
                &fresh
            }
        };
        let user = match self
            .authenticator
            .authenticate_on(chain, memo, headers)
            .await
        {
            Ok(user) => user,
            Err(why) => {
                // Debug, not info: anyone can send bad credentials as fast as they like. The
                // request metric counts them (code 401, route "unauthenticated").
                tracing::debug!(remote = ?remote, reason = %why, "request not authenticated");
                return Err(status::unauthorized());
            }
        };
        // No anonymous access (design §3.4: unauthenticated requests get 401), except to the
        // always-allowed health paths. Everything kube-apiserver proxies carries the
        // front-proxy certificate, so nothing legitimate is anonymous.
        if user.is_anonymous()
            && !self
                .authorizer
                .always_allows(&attributes::non_resource(path))
        {
            tracing::debug!(remote = ?remote, "request without credentials");
            return Err(status::unauthorized());
        }
        Ok(user)
    }

    /// May `user` do what `attrs` say: Ok, or the 403 (or 500 when no review could be had)
    /// Status to answer with.
    pub async fn authorize(
        &self,
        peer: Option<&PeerInfo>,
        user: &User,
        attrs: &RequestAttributes,
    ) -> Result<(), AuthError> {
        let remote = peer.map(|p| p.remote_addr);
        // An always-allowed non-resource path let an anonymous user through authentication;
        // the routed request must still be one of those.
        if user.is_anonymous() && !self.authorizer.always_allows(attrs) {
            return Err(status::unauthorized());
        }
        match self.authorizer.authorize(user, attrs).await {
            Ok(Verdict::Allowed) => Ok(()),
            Ok(Verdict::Forbidden(reason)) => {
                let error = status::forbidden(user, attrs, &reason);
                tracing::debug!(remote = ?remote, message = %error, "request forbidden");
                Err(error)
            }
            Err(e) => {
                tracing::warn!(remote = ?remote, user = %user.name, error = %e, "request could not be authorized");
                Err(status::authorization_unavailable())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::certs::testing::TestCa;
    use super::reviews::testing::CountingReviews;
    use super::*;
    use crate::request;
    use std::collections::BTreeMap;

    struct Fixture {
        proxy_ca: TestCa,
        reviews: Arc<CountingReviews>,
        auth: Auth,
    }

    fn fixture() -> Fixture {
        let proxy_ca = TestCa::new("front-proxy-ca");
        let client_ca = TestCa::new("client-ca");
        let data: BTreeMap<String, String> = [
            (config::CLIENT_CA, client_ca.pem.clone()),
            (config::REQUESTHEADER_CA, proxy_ca.pem.clone()),
            (
                config::ALLOWED_NAMES,
                r#"["front-proxy-client"]"#.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let config = ConfigHandle::fixed(AuthConfig::from_configmap_data(&data).expect("config"));
        let reviews = Arc::new(CountingReviews::default());
        reviews.decisions.lock().expect("lock").insert(
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler".into(),
            Decision::allow(),
        );
        let auth = Auth::with_defaults(config, reviews.clone(), &["/healthz", "/readyz", "/livez"])
            .expect("auth");
        Fixture {
            proxy_ca,
            reviews,
            auth,
        }
    }

    fn peer(chain: Vec<rustls::pki_types::CertificateDer<'static>>) -> PeerInfo {
        PeerInfo::new(([10, 0, 0, 1], 40000).into(), chain)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    const PODS: &str =
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/%2A/http_requests";

    async fn check(
        f: &Fixture,
        peer: Option<&PeerInfo>,
        h: &HeaderMap,
        path: &str,
    ) -> Result<User, AuthError> {
        let route = request::parse(path, "").expect("route");
        f.auth.check(peer, h, &route, path).await
    }

    #[tokio::test]
    async fn hpa_through_the_aggregator_is_reviewed_once() {
        let f = fixture();
        let proxy = peer(f.proxy_ca.client("front-proxy-client", &[]));
        let h = headers(&[
            (
                "x-remote-user",
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            ),
            ("x-remote-group", "system:serviceaccounts"),
        ]);
        for _ in 0..3 {
            let user = check(&f, Some(&proxy), &h, PODS).await.expect("allowed");
            assert_eq!(
                user.groups,
                ["system:serviceaccounts", "system:authenticated"]
            );
        }
        assert_eq!(f.reviews.access_calls(), 1);
        let spec = f
            .reviews
            .last_spec
            .lock()
            .expect("lock")
            .clone()
            .expect("spec");
        let attrs = spec.resource_attributes.expect("resource");
        assert_eq!(attrs.resource.as_deref(), Some("pods"));
        assert_eq!(attrs.subresource.as_deref(), Some("http_requests"));
        assert_eq!(attrs.name.as_deref(), Some("*"));
    }

    #[tokio::test]
    async fn aggregator_availability_probe_needs_no_review() {
        let f = fixture();
        let proxy = peer(f.proxy_ca.client("front-proxy-client", &[]));
        let h = headers(&[
            ("x-remote-user", "system:kube-aggregator"),
            ("x-remote-group", "system:masters"),
        ]);
        check(&f, Some(&proxy), &h, "/apis/custom.metrics.k8s.io/v1beta2")
            .await
            .expect("allowed");
        assert_eq!(f.reviews.access_calls(), 0);
    }

    #[tokio::test]
    async fn forged_headers_without_certificate_are_not_believed() {
        let f = fixture();
        let h = headers(&[
            ("x-remote-user", "admin"),
            ("x-remote-group", "system:masters"),
        ]);
        let plain = peer(vec![]);
        let e = check(&f, Some(&plain), &h, PODS)
            .await
            .expect_err("unauthorized");
        assert_eq!(
            e,
            AuthError::Unauthorized,
            "no credentials: 401, never system:masters"
        );
        assert_eq!(
            f.reviews.access_calls(),
            0,
            "no review for an anonymous request"
        );
    }

    #[tokio::test]
    async fn bad_credentials_are_401_and_health_is_always_allowed() {
        let f = fixture();
        let stranger = peer(f.proxy_ca.client("not-the-proxy", &[]));
        let e = check(&f, Some(&stranger), &HeaderMap::new(), PODS)
            .await
            .expect_err("401");
        assert_eq!(e, status::unauthorized());
        let bad = headers(&[("authorization", "Bearer nope")]);
        assert_eq!(
            check(&f, None, &bad, "/version").await.map(|_| ()),
            Err(AuthError::Unauthorized)
        );
        let anon = check(&f, None, &HeaderMap::new(), "/healthz")
            .await
            .expect("health");
        assert!(anon.is_anonymous());
        assert_eq!(f.reviews.access_calls(), 0);
    }

    #[tokio::test]
    async fn unreachable_reviewer_is_500() {
        let f = fixture();
        f.reviews
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let proxy = peer(f.proxy_ca.client("front-proxy-client", &[]));
        let alice = headers(&[("x-remote-user", "alice")]);
        let e = check(&f, Some(&proxy), &alice, "/apis")
            .await
            .expect_err("500");
        assert_eq!(e, AuthError::Unavailable);
        assert!(
            !e.to_string().contains("connection refused"),
            "internals stay in the log"
        );
    }

    #[test]
    fn always_allowed_paths_are_validated() {
        let reviews = Arc::new(CountingReviews::default());
        assert!(Auth::with_defaults(ConfigHandle::new(), reviews, &["/a*b"]).is_err());
    }
}
