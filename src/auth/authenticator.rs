//! Delegated authentication, in the order and with the outcomes of Go's
//! `DelegatingAuthenticatorConfig.New()` (`k8s.io/apiserver/pkg/authentication/authenticatorfactory`):
//!
//! 1. **Front proxy.** A client chain that verifies against the request-header CA (clientAuth)
//!    and whose leaf CN is allowed (an empty list allows any) is believed about the user in
//!    the `X-Remote-*` headers. The headers are read only in this case: from anyone else they
//!    are ignored.
//! 2. **Client certificate.** A chain that verifies against the client CA: user = CN, groups =
//!    O, extra `authentication.kubernetes.io/credential-id` = `X509SHA256=<leaf hash>`.
//! 3. **Bearer token** through TokenReview, answers (yes and no) cached by an HMAC of the
//!    token for the cache TTL. Failures to get an answer are not cached.
//! 4. **Anonymous** (`system:anonymous`, group `system:unauthenticated`), but only when none
//!    of the above *failed*: as Go's union, a step that fails (a chain that does not verify
//!    against its CA, a CN not allowed, a token refused or not reviewable) does not stop the
//!    later steps, yet if none succeeds the request is refused with 401 instead of becoming
//!    anonymous.
//!
//! Every user but the anonymous one gets `system:authenticated`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderMap;
use rustls_pki_types::CertificateDer;

use super::certs;
use super::config::AuthConfig;
use super::headers;
use super::reviews::{ReviewError, Reviews};
use super::user::User;

/// Why a request was refused (for the log; the client only sees 401 Unauthorized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated {
    pub reasons: Vec<String>,
}

impl std::fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reasons.join("; "))
    }
}

/// How long a connection's checked certificate chain is believed before it is checked again
/// (so a certificate that expires on a long-lived connection stops working within this).
const CHAIN_RECHECK: Duration = Duration::from_secs(10);

/// What one connection's certificate chain proved, kept for the connection's later requests.
/// Checking a chain (a signature verification, x509 parsing, a SHA-256 of the leaf) costs more
/// than everything else a cached answer needs (hack/bench's floor), and the chain cannot change
/// within a TLS connection. Checked again when the CAs change (a new configuration) and every
/// [`CHAIN_RECHECK`]. One per connection: never share it between chains.
#[derive(Debug, Default)]
pub struct ChainMemo {
    verdict: Mutex<Option<Arc<ChainVerdict>>>,
}

impl ChainMemo {
    fn verdict(
        &self,
        chain: &[CertificateDer<'static>],
        config: &Arc<AuthConfig>,
    ) -> Arc<ChainVerdict> {
        if let Ok(memo) = self.verdict.lock() {
            if let Some(v) = memo.as_ref() {
                if Arc::ptr_eq(&v.config, config) && v.checked.elapsed() < CHAIN_RECHECK {
                    return v.clone();
                }
            }
        }
        let fresh = Arc::new(ChainVerdict::check(chain, config));
        if let Ok(mut memo) = self.verdict.lock() {
            *memo = Some(fresh.clone());
        }
        fresh
    }
}

/// Steps 1 and 2's certificate checks of one chain under one configuration.
#[derive(Debug)]
struct ChainVerdict {
    config: Arc<AuthConfig>,
    checked: Instant,
    /// Step 1: verified by the request-header CA with an allowed CN, or why not; `None`
    /// without a request-header configuration.
    front_proxy: Option<Result<(), String>>,
    /// Step 2: the certificate's user (`None` without a CN), or why it did not verify; `None`
    /// without a client CA.
    client: Option<Result<Option<User>, String>>,
}

impl ChainVerdict {
    fn check(chain: &[CertificateDer<'static>], config: &Arc<AuthConfig>) -> ChainVerdict {
        ChainVerdict {
            config: config.clone(),
            checked: Instant::now(),
            front_proxy: config
                .request_header
                .as_ref()
                .map(|rh| front_proxy(chain, rh)),
            client: config
                .client_ca
                .as_ref()
                .map(|ca| ca.verify(chain).map(|()| certificate_user(chain))),
        }
    }
}

/// Settings of token authentication.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// How long a TokenReview answer is reused (`--authentication-token-webhook-cache-ttl`).
    pub cache_ttl: Duration,
    /// The longest a TokenReview may take, retries included.
    pub deadline: Duration,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            cache_ttl: Duration::from_secs(10),
            deadline: Duration::from_secs(5),
        }
    }
}

pub struct Authenticator {
    config: Arc<ArcSwap<AuthConfig>>,
    /// `None`: no token authentication (bearer tokens are ignored).
    reviews: Option<Arc<dyn Reviews>>,
    tokens: moka::future::Cache<[u8; 32], Option<User>>,
    /// Cache keys are HMAC-SHA256(token) under a per-process random key, so neither the
    /// token nor a plain hash of it is kept in memory.
    token_key: ring::hmac::Key,
    deadline: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("token_authentication", &self.reviews.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(
        config: Arc<ArcSwap<AuthConfig>>,
        reviews: Option<Arc<dyn Reviews>>,
        options: TokenOptions,
    ) -> Result<Authenticator, String> {
        let rng = ring::rand::SystemRandom::new();
        let token_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| "no randomness for the token cache key".to_string())?;
        Ok(Authenticator {
            config,
            reviews,
            tokens: moka::future::Cache::builder()
                .max_capacity(16_384)
                .time_to_live(options.cache_ttl)
                .build(),
            token_key,
            deadline: options.deadline,
        })
    }

    /// Who sent this request. `chain` is the client's certificate chain as presented (empty
    /// without one).
    pub async fn authenticate(
        &self,
        chain: &[CertificateDer<'static>],
        headers: &HeaderMap,
    ) -> Result<User, Unauthenticated> {
        self.authenticate_on(chain, &ChainMemo::default(), headers)
            .await
    }

    /// [`Authenticator::authenticate`] for a request on a connection whose chain checks are
    /// kept in `memo` (the connection's own).
    pub async fn authenticate_on(
        &self,
        chain: &[CertificateDer<'static>],
        memo: &ChainMemo,
        headers: &HeaderMap,
    ) -> Result<User, Unauthenticated> {
        let config = self.config.load_full();
        let mut failures = Vec::new();

        if !chain.is_empty() {
            let verdict = memo.verdict(chain, &config);
            if let (Some(rh), Some(front_proxy)) = (&config.request_header, &verdict.front_proxy) {
                match front_proxy {
                    Ok(()) => {
                        if let Some(user) = headers::request_header_user(headers, rh) {
                            return Ok(user.with_authenticated_group());
                        }
                    }
                    Err(e) => failures.push(format!("front proxy: {e}")),
                }
            }
            match &verdict.client {
                Some(Ok(Some(user))) => return Ok(user.clone().with_authenticated_group()),
                Some(Err(e)) => failures.push(format!("client certificate: {e}")),
                Some(Ok(None)) | None => {}
            }
        }

        if let (Some(reviews), Some(token)) = (&self.reviews, headers::bearer_token(headers)) {
            match self.review_token(reviews, &token).await {
                Ok(Some(user)) => return Ok(user.with_authenticated_group()),
                Ok(None) => failures.push("invalid bearer token".into()),
                Err(e) => failures.push(format!("TokenReview failed: {e}")),
            }
        }

        if failures.is_empty() {
            Ok(User::anonymous())
        } else {
            Err(Unauthenticated { reasons: failures })
        }
    }

    async fn review_token(
        &self,
        reviews: &Arc<dyn Reviews>,
        token: &str,
    ) -> Result<Option<User>, Arc<ReviewError>> {
        let tag = ring::hmac::sign(&self.token_key, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        let deadline = self.deadline;
        self.tokens
            .try_get_with(key, async move {
                tokio::time::timeout(deadline, reviews.token_review(token))
                    .await
                    .unwrap_or(Err(ReviewError::Timeout(deadline)))
            })
            .await
    }
}

/// Step 1's certificate check: verified by the request-header CA, CN allowed.
fn front_proxy(
    chain: &[CertificateDer<'static>],
    rh: &super::config::RequestHeaderConfig,
) -> Result<(), String> {
    rh.ca.verify(chain)?;
    if rh.allowed_names.is_empty() {
        return Ok(());
    }
    let cn = chain
        .first()
        .and_then(certs::subject)
        .map(|s| s.common_name)
        .unwrap_or_default();
    if rh.allowed_names.contains(&cn) {
        Ok(())
    } else {
        Err(format!(
            "x509: subject with cn={cn} is not in the allowed list"
        ))
    }
}

/// `x509.CommonNameUserConversion`: no CN, no opinion.
fn certificate_user(chain: &[CertificateDer<'static>]) -> Option<User> {
    let leaf = chain.first()?;
    let subject = certs::subject(leaf)?;
    if subject.common_name.is_empty() {
        return None;
    }
    let mut user = User::new(subject.common_name, subject.organizations);
    user.extra.insert(
        "authentication.kubernetes.io/credential-id".into(),
        vec![format!("X509SHA256={}", certs::fingerprint(leaf))],
    );
    Some(user)
}

#[cfg(test)]
mod tests {
    use super::super::certs::testing::TestCa;
    use super::super::config::{self, RequestHeaderConfig};
    use super::super::reviews::testing::CountingReviews;
    use super::super::user::AUTHENTICATED;
    use super::*;
    use std::collections::BTreeMap;

    struct Fixture {
        proxy_ca: TestCa,
        client_ca: TestCa,
        other_ca: TestCa,
        reviews: Arc<CountingReviews>,
        auth: Authenticator,
    }

    /// The fixture's configuration and reviewer with other token options.
    fn with_options(f: &Fixture, options: TokenOptions) -> Authenticator {
        Authenticator::new(
            f.auth.config.clone(),
            Some(f.reviews.clone() as Arc<dyn Reviews>),
            options,
        )
        .expect("authenticator")
    }

    fn fixture(allowed: &[&str]) -> Fixture {
        let proxy_ca = TestCa::new("front-proxy-ca");
        let client_ca = TestCa::new("kubernetes-ca");
        let other_ca = TestCa::new("someone-else");
        let data: BTreeMap<String, String> = [
            (config::CLIENT_CA, client_ca.pem.clone()),
            (config::REQUESTHEADER_CA, proxy_ca.pem.clone()),
            (
                config::ALLOWED_NAMES,
                serde_json::to_string(allowed).expect("json"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cfg = AuthConfig::from_configmap_data(&data).expect("config");
        let reviews = Arc::new(CountingReviews::default());
        reviews.tokens.lock().expect("lock").insert(
            "good-token".into(),
            User::new(
                "system:serviceaccount:kube-system:hpa",
                vec!["system:serviceaccounts".into()],
            ),
        );
        let auth = Authenticator::new(
            Arc::new(ArcSwap::from_pointee(cfg)),
            Some(reviews.clone() as Arc<dyn Reviews>),
            TokenOptions::default(),
        )
        .expect("authenticator");
        Fixture {
            proxy_ca,
            client_ca,
            other_ca,
            reviews,
            auth,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    fn proxy_headers() -> HeaderMap {
        headers(&[
            ("x-remote-user", "jane"),
            ("x-remote-group", "dev"),
            ("x-remote-group", "ops"),
            ("x-remote-extra-scopes", "view"),
        ])
    }

    #[tokio::test]
    async fn allowed_front_proxy_asserts_the_header_user() {
        let f = fixture(&["front-proxy-client"]);
        let chain = f.proxy_ca.client("front-proxy-client", &[]);
        let user = f
            .auth
            .authenticate(&chain, &proxy_headers())
            .await
            .expect("authenticated");
        assert_eq!(user.name, "jane");
        assert_eq!(user.groups, ["dev", "ops", AUTHENTICATED]);
        assert_eq!(user.extra.get("scopes"), Some(&vec!["view".to_string()]));
    }

    #[tokio::test]
    async fn any_cn_when_the_allowed_list_is_empty() {
        let f = fixture(&[]);
        let chain = f.proxy_ca.client("whatever", &[]);
        let user = f
            .auth
            .authenticate(&chain, &proxy_headers())
            .await
            .expect("authenticated");
        assert_eq!(user.name, "jane");
    }

    #[tokio::test]
    async fn disallowed_front_proxy_cn_is_401() {
        let f = fixture(&["front-proxy-client"]);
        let chain = f.proxy_ca.client("intruder", &[]);
        let err = f
            .auth
            .authenticate(&chain, &proxy_headers())
            .await
            .expect_err("refused");
        assert!(
            err.to_string()
                .contains("cn=intruder is not in the allowed list"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn front_proxy_cert_without_user_header_is_not_anonymous() {
        // Go: the front-proxy step has no opinion, the client-CA step fails -> 401.
        let f = fixture(&["front-proxy-client"]);
        let chain = f.proxy_ca.client("front-proxy-client", &[]);
        assert!(f
            .auth
            .authenticate(&chain, &HeaderMap::new())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn client_ca_certificate_is_its_cn_and_organizations() {
        let f = fixture(&["front-proxy-client"]);
        let chain = f.client_ca.client("alice", &["dev", "system:masters"]);
        // Headers are not believed from a client-CA certificate.
        let user = f
            .auth
            .authenticate(&chain, &proxy_headers())
            .await
            .expect("authenticated");
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "system:masters", AUTHENTICATED]);
        let id = &user.extra["authentication.kubernetes.io/credential-id"];
        assert!(
            id[0].starts_with("X509SHA256=") && id[0].len() == 11 + 64,
            "{id:?}"
        );
    }

    #[tokio::test]
    async fn client_ca_certificate_named_like_the_proxy_is_not_the_proxy() {
        let f = fixture(&["front-proxy-client"]);
        let chain = f.client_ca.client("front-proxy-client", &[]);
        let user = f
            .auth
            .authenticate(&chain, &proxy_headers())
            .await
            .expect("authenticated");
        assert_eq!(user.name, "front-proxy-client", "the CN, not X-Remote-User");
    }

    #[tokio::test]
    async fn certificate_from_another_ca_is_neither() {
        let f = fixture(&[]);
        let chain = f.other_ca.client("front-proxy-client", &[]);
        let err = f
            .auth
            .authenticate(&chain, &proxy_headers())
            .await
            .expect_err("refused");
        assert_eq!(err.reasons.len(), 2, "{err}");
    }

    #[tokio::test]
    async fn forged_remote_headers_without_a_certificate_are_ignored() {
        let f = fixture(&["front-proxy-client"]);
        let mut forged = proxy_headers();
        forged.insert(
            "x-remote-group",
            http::HeaderValue::from_static("system:masters"),
        );
        let user = f.auth.authenticate(&[], &forged).await.expect("anonymous");
        assert_eq!(user, User::anonymous());
    }

    #[tokio::test]
    async fn bearer_tokens_are_reviewed_once_per_ttl() {
        let f = fixture(&[]);
        let h = headers(&[("authorization", "Bearer good-token")]);
        let user = f.auth.authenticate(&[], &h).await.expect("token user");
        assert_eq!(user.name, "system:serviceaccount:kube-system:hpa");
        assert_eq!(user.groups, ["system:serviceaccounts", AUTHENTICATED]);
        f.auth.authenticate(&[], &h).await.expect("cached");
        assert_eq!(f.reviews.token_calls(), 1, "the second check made no call");

        let bad = headers(&[("authorization", "Bearer bad-token")]);
        for _ in 0..3 {
            let err = f.auth.authenticate(&[], &bad).await.expect_err("invalid");
            assert_eq!(err.reasons, ["invalid bearer token"]);
        }
        assert_eq!(f.reviews.token_calls(), 2, "a refusal is cached too");
    }

    #[tokio::test]
    async fn token_answers_expire() {
        let f = fixture(&[]);
        let options = TokenOptions {
            cache_ttl: Duration::from_millis(30),
            ..TokenOptions::default()
        };
        let auth = with_options(&f, options);
        let h = headers(&[("authorization", "Bearer good-token")]);
        auth.authenticate(&[], &h).await.expect("first");
        auth.authenticate(&[], &h).await.expect("cached");
        tokio::time::sleep(Duration::from_millis(80)).await;
        auth.authenticate(&[], &h).await.expect("reviewed again");
        assert_eq!(f.reviews.token_calls(), 2);
    }

    #[tokio::test]
    async fn review_failures_are_401_and_not_cached() {
        let f = fixture(&[]);
        f.reviews
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let h = headers(&[("authorization", "Bearer good-token")]);
        let err = f.auth.authenticate(&[], &h).await.expect_err("unreachable");
        assert!(err.to_string().contains("TokenReview failed"), "{err}");
        assert!(
            !err.to_string().contains("good-token"),
            "the token is never in a message"
        );
        f.reviews
            .fail
            .store(false, std::sync::atomic::Ordering::SeqCst);
        f.auth.authenticate(&[], &h).await.expect("retried");
        assert_eq!(f.reviews.token_calls(), 2);
    }

    /// A flood of random tokens behind [`super::super::reviews::LimitedReviews`]: reviews stop
    /// at the burst, throttled tokens are refused (401) without being cached as invalid, and
    /// a token already in the cache keeps passing without a review.
    #[tokio::test]
    async fn throttled_token_reviews_are_401_and_cached_tokens_still_pass() {
        let f = fixture(&[]);
        let counts = prometheus_client::metrics::family::Family::default();
        let limited = super::super::reviews::LimitedReviews::new(
            f.reviews.clone(),
            super::super::reviews::ReviewLimits {
                qps: 0.01,
                burst: 3,
                ..Default::default()
            },
            counts,
        );
        let auth = Authenticator::new(
            f.auth.config.clone(),
            Some(Arc::new(limited) as Arc<dyn Reviews>),
            TokenOptions::default(),
        )
        .expect("authenticator");
        let good = headers(&[("authorization", "Bearer good-token")]);
        auth.authenticate(&[], &good).await.expect("good token");
        let mut throttled = 0;
        for i in 0..50 {
            let value = http::HeaderValue::from_str(&format!("Bearer random-{i}")).expect("header");
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, value);
            let err = auth.authenticate(&[], &h).await.expect_err("refused");
            if err.to_string().contains("too many TokenReviews") {
                throttled += 1;
            }
        }
        assert_eq!(f.reviews.token_calls(), 3, "the burst, then nothing");
        assert_eq!(throttled, 48);
        // Cached: no review needed, so not throttled.
        auth.authenticate(&[], &good)
            .await
            .expect("cached good token");
        // A throttled token was not remembered as invalid: it is throttled again, not refused
        // from the cache.
        let value = http::HeaderValue::from_static("Bearer random-49");
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value);
        let err = auth.authenticate(&[], &h).await.expect_err("still refused");
        assert!(err.to_string().contains("too many TokenReviews"), "{err}");
        assert_eq!(f.reviews.token_calls(), 3);
    }

    #[tokio::test]
    async fn slow_token_reviews_hit_the_deadline() {
        let f = fixture(&[]);
        *f.reviews.delay.lock().expect("lock") = Some(Duration::from_secs(60));
        let options = TokenOptions {
            deadline: Duration::from_millis(50),
            ..TokenOptions::default()
        };
        let auth = with_options(&f, options);
        let h = headers(&[("authorization", "Bearer good-token")]);
        let err = auth.authenticate(&[], &h).await.expect_err("deadline");
        assert!(err.to_string().contains("within 50ms"), "{err}");
    }

    #[tokio::test]
    async fn no_credentials_is_anonymous_and_without_token_review_tokens_are_ignored() {
        let f = fixture(&[]);
        assert_eq!(
            f.auth.authenticate(&[], &HeaderMap::new()).await,
            Ok(User::anonymous())
        );
        let cfg = Arc::new(ArcSwap::from_pointee(AuthConfig::default()));
        let no_tokens = Authenticator::new(cfg, None, TokenOptions::default()).expect("auth");
        let h = headers(&[("authorization", "Bearer good-token")]);
        assert_eq!(no_tokens.authenticate(&[], &h).await, Ok(User::anonymous()));
    }

    /// The request-header CA rotates to `other_ca`.
    fn rotate_request_header_ca(f: &Fixture) {
        let rotated = RequestHeaderConfig {
            ca: certs::CaBundle::from_pem(&f.other_ca.pem).expect("ca"),
            ..f.auth.config.load().request_header.clone().expect("rh")
        };
        let mut cfg = (**f.auth.config.load()).clone();
        cfg.request_header = Some(rotated);
        f.auth.config.store(Arc::new(cfg));
    }

    #[tokio::test]
    async fn config_swaps_apply_to_the_next_request() {
        let f = fixture(&["front-proxy-client"]);
        let chain = f.proxy_ca.client("front-proxy-client", &[]);
        f.auth
            .authenticate(&chain, &proxy_headers())
            .await
            .expect("before");
        // The request-header CA rotates to another CA: the old proxy certificate stops
        // being believed.
        rotate_request_header_ca(&f);
        assert!(f.auth.authenticate(&chain, &proxy_headers()).await.is_err());
    }

    /// The verdict a connection's memo holds now.
    fn held(memo: &ChainMemo) -> Arc<ChainVerdict> {
        memo.verdict
            .lock()
            .expect("memo")
            .clone()
            .expect("a verdict")
    }

    #[tokio::test]
    async fn a_connection_checks_its_chain_once_and_again_after_a_ca_rotation() {
        let f = fixture(&["front-proxy-client"]);
        let memo = ChainMemo::default();
        let proxy = f.proxy_ca.client("front-proxy-client", &[]);
        let first = f
            .auth
            .authenticate_on(&proxy, &memo, &proxy_headers())
            .await
            .expect("front proxy");
        let checked = held(&memo);
        // The next request on the connection is the same user (each its own headers) without
        // checking the chain again.
        let h = headers(&[("x-remote-user", "bob")]);
        let second = f
            .auth
            .authenticate_on(&proxy, &memo, &h)
            .await
            .expect("front proxy again");
        assert_eq!((first.name.as_str(), second.name.as_str()), ("jane", "bob"));
        assert!(Arc::ptr_eq(&checked, &held(&memo)), "checked twice");
        // The request-header CA rotates: the same connection's next request is checked
        // against the new CA and refused.
        rotate_request_header_ca(&f);
        let err = f
            .auth
            .authenticate_on(&proxy, &memo, &proxy_headers())
            .await
            .expect_err("refused after the rotation");
        assert!(err.to_string().contains("front proxy"), "{err}");
        assert!(!Arc::ptr_eq(&checked, &held(&memo)));
    }

    #[tokio::test]
    async fn a_memo_keeps_refusals_and_client_certificate_users_alike() {
        let f = fixture(&["front-proxy-client"]);
        let (memo, stranger_memo) = (ChainMemo::default(), ChainMemo::default());
        let alice = f.client_ca.client("alice", &["dev"]);
        for _ in 0..2 {
            let user = f
                .auth
                .authenticate_on(&alice, &memo, &HeaderMap::new())
                .await
                .expect("client certificate");
            assert_eq!(user.name, "alice");
            assert_eq!(user.groups, ["dev", AUTHENTICATED]);
        }
        let stranger = f.other_ca.client("mallory", &[]);
        for _ in 0..2 {
            assert!(f
                .auth
                .authenticate_on(&stranger, &stranger_memo, &proxy_headers())
                .await
                .is_err());
        }
    }

    #[test]
    fn a_verdict_is_checked_again_after_the_recheck_interval() {
        let f = fixture(&[]);
        let memo = ChainMemo::default();
        let chain = f.client_ca.client("alice", &[]);
        let config = f.auth.config.load_full();
        let first = memo.verdict(&chain, &config);
        assert!(Arc::ptr_eq(&first, &memo.verdict(&chain, &config)));
        // Age the held verdict past the interval.
        let aged = Arc::new(ChainVerdict {
            checked: Instant::now() - CHAIN_RECHECK - Duration::from_millis(1),
            ..ChainVerdict::check(&chain, &config)
        });
        *memo.verdict.lock().expect("memo") = Some(aged.clone());
        assert!(!Arc::ptr_eq(&aged, &memo.verdict(&chain, &config)));
    }
}
