//! Delegated authorization, as Go's `DelegatingAuthorizationOptions` builds it (a union,
//! first decision wins):
//!
//! 1. group `system:masters`: allowed, no review (`NewPrivilegedGroups`);
//! 2. non-resource paths in `--authorization-always-allow-paths` (default
//!    `/healthz,/readyz,/livez`; a trailing `*` matches a prefix): allowed, no review;
//! 3. a SubjectAccessReview. Answers are cached by the whole review spec (user, uid,
//!    groups, extra, attributes): allowed ones for the authorized TTL, refusals for the
//!    unauthorized TTL (10 s each by default). A review that cannot be had within the
//!    deadline is an error (500, as in Go), and is not cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::attributes::RequestAttributes;
use super::reviews::{access_review_spec, Decision, ReviewError, Reviews};
use super::user::{User, MASTERS};

/// Reviews bigger than this are not cached (Go's `maxControlledAttrCacheSize` is the same
/// idea: a client must not fill the cache with huge keys).
const MAX_CACHED_KEY: usize = 10_000;

/// The outcome of authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; the reviewer's reason, possibly empty.
    Forbidden(String),
}

/// Why no verdict could be reached (the client sees a 500; the log says this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    #[error("SubjectAccessReview failed: {0}")]
    Review(#[from] ReviewError),
    #[error("SubjectAccessReview returned both allow and deny")]
    Contradiction,
}

/// `--authorization-always-allow-paths`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlwaysAllowPaths {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl AlwaysAllowPaths {
    /// Go's `path.NewAuthorizer`: leading `/` optional, `*` only at the end.
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Result<AlwaysAllowPaths, String> {
        let mut out = AlwaysAllowPaths::default();
        for p in paths {
            let p = p.as_ref().trim();
            let p = p.strip_prefix('/').unwrap_or(p);
            match p.strip_suffix('*') {
                Some(prefix) if prefix.contains('*') => {
                    return Err(format!("only a trailing * is allowed in {p:?}"))
                }
                Some(prefix) => out.prefixes.push(prefix.to_string()),
                None if p.contains('*') => {
                    return Err(format!("only a trailing * is allowed in {p:?}"))
                }
                None => out.exact.push(p.to_string()),
            }
        }
        Ok(out)
    }

    /// Only non-resource requests can match (a resource request has no opinion here).
    pub fn allows(&self, attrs: &RequestAttributes) -> bool {
        let RequestAttributes::NonResource { path, .. } = attrs else {
            return false;
        };
        let path = path.strip_prefix('/').unwrap_or(path);
        self.exact.iter().any(|p| p == path)
            || self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// Settings of the SubjectAccessReview cache and deadline.
#[derive(Debug, Clone)]
pub struct AuthorizerOptions {
    pub always_allow_paths: AlwaysAllowPaths,
    /// `--authorization-webhook-cache-authorized-ttl`
    pub allowed_ttl: Duration,
    /// `--authorization-webhook-cache-unauthorized-ttl`
    pub denied_ttl: Duration,
    /// The longest a SubjectAccessReview may take, retries included.
    pub deadline: Duration,
}

impl Default for AuthorizerOptions {
    fn default() -> Self {
        AuthorizerOptions {
            always_allow_paths: AlwaysAllowPaths::new(&["/healthz", "/readyz", "/livez"])
                .unwrap_or_default(),
            allowed_ttl: Duration::from_secs(10),
            denied_ttl: Duration::from_secs(10),
            deadline: Duration::from_secs(5),
        }
    }
}

pub struct Authorizer {
    options: AuthorizerOptions,
    reviews: Arc<dyn Reviews>,
    cache: moka::future::Cache<String, Decision>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Allowed and refused answers live for different times.
struct DecisionExpiry {
    allowed: Duration,
    denied: Duration,
}

impl moka::Expiry<String, Decision> for DecisionExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Decision,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.allowed {
            self.allowed
        } else {
            self.denied
        })
    }
}

impl Authorizer {
    pub fn new(reviews: Arc<dyn Reviews>, options: AuthorizerOptions) -> Authorizer {
        let cache = moka::future::Cache::builder()
            .max_capacity(8_192)
            .expire_after(DecisionExpiry {
                allowed: options.allowed_ttl,
                denied: options.denied_ttl,
            })
            .build();
        Authorizer {
            options,
            reviews,
            cache,
        }
    }

    /// The path is served to anyone, authenticated or not.
    pub fn always_allows(&self, attrs: &RequestAttributes) -> bool {
        self.options.always_allow_paths.allows(attrs)
    }

    pub async fn authorize(
        &self,
        user: &User,
        attrs: &RequestAttributes,
    ) -> Result<Verdict, AuthorizeError> {
        if user.in_group(MASTERS) || self.options.always_allow_paths.allows(attrs) {
            return Ok(Verdict::Allowed);
        }
        let key = serde_json::to_string(&access_review_spec(user, attrs)).unwrap_or_default();
        let deadline = self.options.deadline;
        let review = async {
            tokio::time::timeout(deadline, self.reviews.access_review(user, attrs))
                .await
                .unwrap_or(Err(ReviewError::Timeout(deadline)))
        };
        let decision = if key.is_empty() || key.len() > MAX_CACHED_KEY {
            review.await?
        } else {
            self.cache
                .try_get_with(key, review)
                .await
                .map_err(|e| AuthorizeError::Review((*e).clone()))?
        };
        match decision {
            Decision {
                allowed: true,
                denied: true,
                ..
            } => Err(AuthorizeError::Contradiction),
            Decision { allowed: true, .. } => Ok(Verdict::Allowed),
            Decision { reason, .. } => Ok(Verdict::Forbidden(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::attributes::ResourceAttributes;
    use super::super::reviews::testing::CountingReviews;
    use super::*;

    fn pods(metric: &str, ns: &str) -> RequestAttributes {
        RequestAttributes::Resource(ResourceAttributes {
            verb: "get".into(),
            group: "custom.metrics.k8s.io".into(),
            version: "v1beta2".into(),
            resource: "pods".into(),
            subresource: metric.into(),
            namespace: ns.into(),
            name: "*".into(),
        })
    }

    fn path(p: &str) -> RequestAttributes {
        RequestAttributes::NonResource {
            verb: "get".into(),
            path: p.into(),
        }
    }

    fn setup() -> (Arc<CountingReviews>, Authorizer) {
        let reviews = Arc::new(CountingReviews::default());
        reviews
            .decisions
            .lock()
            .expect("lock")
            .insert("hpa".into(), Decision::allow());
        reviews
            .decisions
            .lock()
            .expect("lock")
            .insert("mallory".into(), Decision::deny("explicitly denied"));
        let authz = Authorizer::new(reviews.clone(), AuthorizerOptions::default());
        (reviews, authz)
    }

    #[tokio::test]
    async fn allowed_answers_are_cached_and_new_attributes_reviewed() {
        let (reviews, authz) = setup();
        let hpa = User::new("hpa", vec!["system:authenticated".into()]);
        assert_eq!(
            authz.authorize(&hpa, &pods("qps", "default")).await,
            Ok(Verdict::Allowed)
        );
        assert_eq!(
            authz.authorize(&hpa, &pods("qps", "default")).await,
            Ok(Verdict::Allowed)
        );
        assert_eq!(
            reviews.access_calls(),
            1,
            "the identical check made no call"
        );
        authz
            .authorize(&hpa, &pods("qps", "other"))
            .await
            .expect("other namespace");
        authz
            .authorize(&hpa, &pods("latency", "default"))
            .await
            .expect("other metric");
        assert_eq!(
            reviews.access_calls(),
            3,
            "different attributes, new reviews"
        );
        let mut with_group = hpa.clone();
        with_group.groups.push("extra-group".into());
        authz
            .authorize(&with_group, &pods("qps", "default"))
            .await
            .expect("other groups");
        assert_eq!(
            reviews.access_calls(),
            4,
            "the user's groups are part of the key"
        );
        let sent = reviews
            .last_spec
            .lock()
            .expect("lock")
            .clone()
            .expect("spec");
        assert_eq!(sent.groups, Some(with_group.groups.clone()));
    }

    #[tokio::test]
    async fn refusals_are_cached_too_with_their_reason() {
        let (reviews, authz) = setup();
        let nobody = User::new("nobody", vec![]);
        let mallory = User::new("mallory", vec![]);
        for _ in 0..3 {
            assert_eq!(
                authz.authorize(&nobody, &pods("qps", "default")).await,
                Ok(Verdict::Forbidden("no RBAC rule".into()))
            );
            assert_eq!(
                authz.authorize(&mallory, &pods("qps", "default")).await,
                Ok(Verdict::Forbidden("explicitly denied".into()))
            );
        }
        assert_eq!(reviews.access_calls(), 2);
    }

    #[tokio::test]
    async fn allowed_and_denied_answers_expire_on_their_own_ttls() {
        let (reviews, _) = setup();
        let authz = Authorizer::new(
            reviews.clone(),
            AuthorizerOptions {
                allowed_ttl: Duration::from_secs(60),
                denied_ttl: Duration::from_millis(30),
                ..AuthorizerOptions::default()
            },
        );
        let (hpa, nobody) = (User::new("hpa", vec![]), User::new("nobody", vec![]));
        let attrs = pods("qps", "default");
        authz.authorize(&hpa, &attrs).await.expect("allowed");
        authz.authorize(&nobody, &attrs).await.expect("denied");
        tokio::time::sleep(Duration::from_millis(80)).await;
        authz
            .authorize(&hpa, &attrs)
            .await
            .expect("allowed, cached");
        authz
            .authorize(&nobody, &attrs)
            .await
            .expect("denied, reviewed again");
        assert_eq!(reviews.access_calls(), 3);
    }

    #[tokio::test]
    async fn masters_and_always_allowed_paths_skip_the_review() {
        let (reviews, authz) = setup();
        let admin = User::new("system:kube-aggregator", vec!["system:masters".into()]);
        assert_eq!(
            authz.authorize(&admin, &pods("qps", "default")).await,
            Ok(Verdict::Allowed)
        );
        assert_eq!(
            authz.authorize(&admin, &path("/apis")).await,
            Ok(Verdict::Allowed)
        );
        let anon = User::anonymous();
        for p in ["/healthz", "/readyz", "/livez"] {
            assert_eq!(
                authz.authorize(&anon, &path(p)).await,
                Ok(Verdict::Allowed),
                "{p}"
            );
        }
        assert_eq!(reviews.access_calls(), 0);
        assert_eq!(
            authz.authorize(&anon, &path("/healthz/ping")).await,
            Ok(Verdict::Forbidden("no RBAC rule".into())),
            "exact paths match exactly"
        );
        assert_eq!(reviews.access_calls(), 1);
    }

    #[test]
    fn always_allow_path_patterns() {
        let p = AlwaysAllowPaths::new(&["/healthz", "openapi/*", "/"]).expect("valid");
        assert!(p.allows(&path("/healthz")));
        assert!(p.allows(&path("/openapi/v2")));
        assert!(p.allows(&path("/openapi/")));
        assert!(p.allows(&path("/")));
        assert!(!p.allows(&path("/healthz/x")));
        assert!(!p.allows(&path("/openapi")));
        assert!(
            !p.allows(&pods("healthz", "x")),
            "resource requests never match"
        );
        assert!(AlwaysAllowPaths::new(&["/a*b"]).is_err());
        assert!(AlwaysAllowPaths::new(&["/a**"]).is_err());
        let all = AlwaysAllowPaths::new(&["*"]).expect("everything");
        assert!(all.allows(&path("/apis")));
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_errors_not_cached() {
        let (reviews, _) = setup();
        let authz = Authorizer::new(
            reviews.clone(),
            AuthorizerOptions {
                deadline: Duration::from_millis(50),
                ..AuthorizerOptions::default()
            },
        );
        let hpa = User::new("hpa", vec![]);
        reviews
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            authz.authorize(&hpa, &pods("qps", "default")).await,
            Err(AuthorizeError::Review(ReviewError::Failed(_)))
        ));
        reviews
            .fail
            .store(false, std::sync::atomic::Ordering::SeqCst);
        *reviews.delay.lock().expect("lock") = Some(Duration::from_secs(60));
        assert_eq!(
            authz.authorize(&hpa, &pods("qps", "default")).await,
            Err(AuthorizeError::Review(ReviewError::Timeout(
                Duration::from_millis(50)
            )))
        );
        *reviews.delay.lock().expect("lock") = None;
        assert_eq!(
            authz.authorize(&hpa, &pods("qps", "default")).await,
            Ok(Verdict::Allowed)
        );
        assert_eq!(reviews.access_calls(), 3, "neither failure was cached");
    }

    #[tokio::test]
    async fn contradictory_answers_are_errors() {
        let (reviews, authz) = setup();
        reviews.decisions.lock().expect("lock").insert(
            "odd".into(),
            Decision {
                allowed: true,
                denied: true,
                reason: String::new(),
            },
        );
        assert_eq!(
            authz
                .authorize(&User::new("odd", vec![]), &pods("qps", "default"))
                .await,
            Err(AuthorizeError::Contradiction)
        );
    }
}
