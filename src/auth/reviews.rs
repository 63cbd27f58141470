//! The two questions asked of kube-apiserver: TokenReview (who holds this token?) and
//! SubjectAccessReview (may this user do this?). Behind a trait so the caches in front of
//! them can be tested by counting calls; [`KubeReviews`] is the real thing.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::attributes::RequestAttributes;
use super::user::User;

/// A SubjectAccessReview's answer (`status.allowed`, `status.denied`, `status.reason`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// An explicit denial; without it a refusal is "no opinion", which is also a 403 here.
    pub denied: bool,
    pub reason: String,
}

impl Decision {
    pub fn allow() -> Decision {
        Decision {
            allowed: true,
            ..Decision::default()
        }
    }

    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision {
            denied: true,
            reason: reason.into(),
            ..Decision::default()
        }
    }
}

/// A review that could not be had: the API server unreachable, slow, or erroring. Never a
/// "no": an invalid token is `Ok(None)`, a refusal is a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
    /// Not sent: the TokenReview rate or concurrency limit was reached ([`LimitedReviews`]).
    #[error("too many TokenReviews at once; not reviewed")]
    Throttled,
}

/// What authentication and authorization ask kube-apiserver.
pub trait Reviews: Send + Sync + 'static {
    /// `Ok(Some(user))` when the token authenticates, `Ok(None)` when the API server says it
    /// does not. Implementations must never log the token.
    fn token_review<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ReviewError>>;

    /// May `user` do `attrs`? The review sent is [`access_review_spec`]`(user, attrs)`.
    fn access_review<'a>(
        &'a self,
        user: &'a User,
        attrs: &'a RequestAttributes,
    ) -> BoxFuture<'a, Result<Decision, ReviewError>>;
}

/// The spec of the SubjectAccessReview for `user` doing `attrs`, as Go's webhook authorizer
/// fills it: user, uid, groups, extra, and resource or non-resource attributes (empty
/// strings and lists left out).
pub fn access_review_spec(user: &User, attrs: &RequestAttributes) -> SubjectAccessReviewSpec {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (resource_attributes, non_resource_attributes) = match attrs {
        RequestAttributes::Resource(r) => (
            Some(ResourceAttributes {
                verb: opt(&r.verb),
                group: opt(&r.group),
                version: opt(&r.version),
                resource: opt(&r.resource),
                subresource: opt(&r.subresource),
                namespace: opt(&r.namespace),
                name: opt(&r.name),
                ..ResourceAttributes::default()
            }),
            None,
        ),
        RequestAttributes::NonResource { verb, path } => (
            None,
            Some(NonResourceAttributes {
                verb: opt(verb),
                path: opt(path),
            }),
        ),
    };
    SubjectAccessReviewSpec {
        user: opt(&user.name),
        uid: opt(&user.uid),
        groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        resource_attributes,
        non_resource_attributes,
    }
}

/// Reviews through kube-apiserver (`create` on `tokenreviews.authentication.k8s.io/v1` and
/// `subjectaccessreviews.authorization.k8s.io/v1`; ClusterRole `system:auth-delegator`).
///
/// Transient failures (connection errors, 429, 500, 504) are retried with Go's webhook
/// backoff (500 ms, ×1.5, 5 steps); the caller's deadline bounds the whole.
#[derive(Clone)]
pub struct KubeReviews {
    client: kube::Client,
}

impl KubeReviews {
    pub fn new(client: kube::Client) -> KubeReviews {
        KubeReviews { client }
    }

    async fn create<K>(&self, object: &K) -> Result<K, ReviewError>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match api.create(&PostParams::default(), object).await {
                Ok(answer) => return Ok(answer),
                Err(e) if attempt < RETRY_STEPS && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "review failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.mul_f32(1.5);
                    attempt += 1;
                }
                Err(e) => return Err(ReviewError::Failed(e.to_string())),
            }
        }
    }
}

const RETRY_STEPS: u32 = 5;

/// Go's `webhook.DefaultShouldRetry`: connection trouble, 500, 504 (timeout), 429.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

impl Reviews for KubeReviews {
    fn token_review<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ReviewError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: None,
                },
                ..TokenReview::default()
            };
            let answer = self.create(&review).await?;
            let status = answer.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                if let Some(why) = status.error.filter(|e| !e.is_empty()) {
                    tracing::debug!(error = %why, "token not authenticated");
                }
                return Ok(None);
            }
            let info = status.user.unwrap_or_default();
            Ok(Some(User {
                name: info.username.unwrap_or_default(),
                uid: info.uid.unwrap_or_default(),
                groups: info.groups.unwrap_or_default(),
                extra: info.extra.unwrap_or_default(),
            }))
        })
    }

    fn access_review<'a>(
        &'a self,
        user: &'a User,
        attrs: &'a RequestAttributes,
    ) -> BoxFuture<'a, Result<Decision, ReviewError>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec: access_review_spec(user, attrs),
                ..SubjectAccessReview::default()
            };
            let status = self.create(&review).await?.status.unwrap_or_default();
            if let Some(e) = status.evaluation_error.as_deref().filter(|e| !e.is_empty()) {
                tracing::debug!(error = %e, "SubjectAccessReview evaluation error");
            }
            Ok(Decision {
                allowed: status.allowed,
                denied: status.denied.unwrap_or(false),
                reason: status.reason.unwrap_or_default(),
            })
        })
    }
}

/// Bounds on TokenReviews, so a flood of random bearer tokens (each a cache miss) cannot be
/// multiplied onto kube-apiserver.
#[derive(Debug, Clone)]
pub struct ReviewLimits {
    /// TokenReviews sent per second on average; 0: no rate limit.
    pub qps: f64,
    /// TokenReviews that may be sent at once after a quiet spell (the bucket's size).
    pub burst: u32,
    /// TokenReviews waiting for kube-apiserver at once; 0: no limit.
    pub max_inflight: usize,
    /// How long a review may wait for one of those slots before it is throttled.
    pub queue_wait: Duration,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        ReviewLimits {
            qps: 20.0,
            burst: 40,
            max_inflight: 8,
            queue_wait: Duration::from_secs(1),
        }
    }
}

/// [`Reviews`] with TokenReviews rate-limited (token bucket) and bounded in concurrency, and
/// every TokenReview's outcome counted (`result` = authenticated, unauthenticated, error,
/// throttled). A throttled review is [`ReviewError::Throttled`]: the authenticator does not
/// cache it, and the request is refused with 401 as kube-apiserver refuses one whose token
/// webhook could not answer. SubjectAccessReviews pass through: they are only asked for
/// users already authenticated, and cached.
pub struct LimitedReviews {
    inner: std::sync::Arc<dyn Reviews>,
    limits: ReviewLimits,
    bucket: std::sync::Mutex<TokenBucket>,
    slots: Option<tokio::sync::Semaphore>,
    counts: prometheus_client::metrics::family::Family<
        crate::metrics::ResultLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl LimitedReviews {
    pub fn new(
        inner: std::sync::Arc<dyn Reviews>,
        limits: ReviewLimits,
        counts: prometheus_client::metrics::family::Family<
            crate::metrics::ResultLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> LimitedReviews {
        LimitedReviews {
            inner,
            bucket: std::sync::Mutex::new(TokenBucket::new(limits.qps, limits.burst)),
            slots: (limits.max_inflight > 0)
                .then(|| tokio::sync::Semaphore::new(limits.max_inflight)),
            limits,
            counts,
        }
    }

    fn count(&self, result: &'static str) {
        self.counts
            .get_or_create(&crate::metrics::ResultLabels { result })
            .inc();
    }

    async fn limited_token_review(&self, token: &str) -> Result<Option<User>, ReviewError> {
        let allowed = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(tokio::time::Instant::now());
        if !allowed {
            self.count("throttled");
            tracing::debug!("TokenReview rate limit reached; token not reviewed");
            return Err(ReviewError::Throttled);
        }
        let _slot = match &self.slots {
            None => None,
            Some(slots) => {
                match tokio::time::timeout(self.limits.queue_wait, slots.acquire()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => {
                        self.count("throttled");
                        tracing::debug!(
                            "TokenReview concurrency limit reached; token not reviewed"
                        );
                        return Err(ReviewError::Throttled);
                    }
                }
            }
        };
        let result = self.inner.token_review(token).await;
        self.count(match &result {
            Ok(Some(_)) => "authenticated",
            Ok(None) => "unauthenticated",
            Err(_) => "error",
        });
        if let Err(e) = &result {
            tracing::debug!(error = %e, "TokenReview failed");
        }
        result
    }
}

impl Reviews for LimitedReviews {
    fn token_review<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ReviewError>> {
        Box::pin(self.limited_token_review(token))
    }

    fn access_review<'a>(
        &'a self,
        user: &'a User,
        attrs: &'a RequestAttributes,
    ) -> BoxFuture<'a, Result<Decision, ReviewError>> {
        self.inner.access_review(user, attrs)
    }
}

/// Classic token bucket: `rate` tokens a second up to `burst`; starts full.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: tokio::time::Instant::now(),
        }
    }

    fn take(&mut self, now: tokio::time::Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A counting stand-in for [`KubeReviews`]: only to prove what the caches save.

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct CountingReviews {
        pub tokens: Mutex<HashMap<String, User>>,
        /// Decisions by user name; anyone else is denied with reason "no RBAC rule".
        pub decisions: Mutex<HashMap<String, Decision>>,
        pub token_calls: AtomicUsize,
        pub access_calls: AtomicUsize,
        /// When set, every review fails like an unreachable API server.
        pub fail: std::sync::atomic::AtomicBool,
        /// When set, every review waits this long first.
        pub delay: Mutex<Option<Duration>>,
        pub last_spec: Mutex<Option<SubjectAccessReviewSpec>>,
    }

    impl CountingReviews {
        pub fn token_calls(&self) -> usize {
            self.token_calls.load(Ordering::SeqCst)
        }
        pub fn access_calls(&self) -> usize {
            self.access_calls.load(Ordering::SeqCst)
        }
        async fn wait(&self) -> Result<(), ReviewError> {
            let delay = *self.delay.lock().expect("lock");
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(ReviewError::Failed("connection refused".into()));
            }
            Ok(())
        }
    }

    impl Reviews for CountingReviews {
        fn token_review<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<Option<User>, ReviewError>> {
            Box::pin(async move {
                self.token_calls.fetch_add(1, Ordering::SeqCst);
                self.wait().await?;
                Ok(self.tokens.lock().expect("lock").get(token).cloned())
            })
        }

        fn access_review<'a>(
            &'a self,
            user: &'a User,
            attrs: &'a RequestAttributes,
        ) -> BoxFuture<'a, Result<Decision, ReviewError>> {
            Box::pin(async move {
                self.access_calls.fetch_add(1, Ordering::SeqCst);
                *self.last_spec.lock().expect("lock") = Some(access_review_spec(user, attrs));
                self.wait().await?;
                Ok(self
                    .decisions
                    .lock()
                    .expect("lock")
                    .get(&user.name)
                    .cloned()
                    .unwrap_or_else(|| Decision {
                        reason: "no RBAC rule".into(),
                        ..Decision::default()
                    }))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::attributes::ResourceAttributes as Attrs;
    use super::*;

    #[test]
    fn spec_carries_user_and_attributes_like_go() {
        let mut user = User::new(
            "system:serviceaccount:kube-system:hpa",
            vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ],
        );
        user.extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec!["p".into()],
        );
        let attrs = RequestAttributes::Resource(Attrs {
            verb: "get".into(),
            group: "custom.metrics.k8s.io".into(),
            version: "v1beta2".into(),
            resource: "pods".into(),
            subresource: "http_requests".into(),
            namespace: "default".into(),
            name: "*".into(),
        });
        let json = serde_json::to_value(access_review_spec(&user, &attrs)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "user": "system:serviceaccount:kube-system:hpa",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
                "resourceAttributes": {"namespace": "default", "verb": "get",
                    "group": "custom.metrics.k8s.io", "version": "v1beta2", "resource": "pods",
                    "subresource": "http_requests", "name": "*"}
            })
        );
        let non = RequestAttributes::NonResource {
            verb: "get".into(),
            path: "/apis".into(),
        };
        let json =
            serde_json::to_value(access_review_spec(&User::anonymous(), &non)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "user": "system:anonymous", "groups": ["system:unauthenticated"],
                "nonResourceAttributes": {"path": "/apis", "verb": "get"}
            })
        );
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10.0, 5);
        let now = tokio::time::Instant::now();
        assert_eq!((0..8).filter(|_| b.take(now)).count(), 5);
        // 10/s: one more every 100 ms.
        assert!(!b.take(now + Duration::from_millis(50)));
        assert!(b.take(now + Duration::from_millis(160)));
        // A long pause refills only up to the burst.
        let later = now + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| b.take(later)).count(), 5);
        let mut unlimited = TokenBucket::new(0.0, 1);
        assert!((0..1000).all(|_| unlimited.take(now)));
    }

    fn limited(
        inner: std::sync::Arc<testing::CountingReviews>,
        limits: ReviewLimits,
    ) -> (
        LimitedReviews,
        prometheus_client::metrics::family::Family<
            crate::metrics::ResultLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) {
        let counts = prometheus_client::metrics::family::Family::default();
        (LimitedReviews::new(inner, limits, counts.clone()), counts)
    }

    fn counted(
        counts: &prometheus_client::metrics::family::Family<
            crate::metrics::ResultLabels,
            prometheus_client::metrics::counter::Counter,
        >,
        result: &'static str,
    ) -> u64 {
        counts
            .get_or_create(&crate::metrics::ResultLabels { result })
            .get()
    }

    #[tokio::test]
    async fn a_flood_of_tokens_reaches_the_api_server_only_at_the_rate() {
        let inner = std::sync::Arc::new(testing::CountingReviews::default());
        inner
            .tokens
            .lock()
            .unwrap()
            .insert("good".into(), User::new("alice", vec![]));
        let (reviews, counts) = limited(
            inner.clone(),
            ReviewLimits {
                // One more every 100 s: none refills during the test.
                qps: 0.01,
                burst: 10,
                ..ReviewLimits::default()
            },
        );
        let mut throttled = 0;
        for i in 0..100 {
            match reviews.token_review(&format!("random-{i}")).await {
                Ok(None) => {}
                Err(ReviewError::Throttled) => throttled += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(inner.token_calls(), 10, "only the burst was sent");
        assert_eq!(throttled, 90);
        assert_eq!(counted(&counts, "unauthenticated"), 10);
        assert_eq!(counted(&counts, "throttled"), 90);
        // Throttled is an error (not cached, 401 for now), never an answer about the token.
        assert_eq!(
            reviews.token_review("good").await,
            Err(ReviewError::Throttled)
        );
        assert_eq!(inner.token_calls(), 10);
    }

    #[tokio::test]
    async fn concurrent_reviews_are_bounded_and_the_rest_wait_then_give_up() {
        let inner = std::sync::Arc::new(testing::CountingReviews::default());
        // Far longer than the queue wait, so no slot frees while the others wait.
        *inner.delay.lock().unwrap() = Some(Duration::from_secs(3));
        let (reviews, counts) = limited(
            inner.clone(),
            ReviewLimits {
                qps: 0.0,
                max_inflight: 2,
                queue_wait: Duration::from_millis(200),
                ..ReviewLimits::default()
            },
        );
        let reviews = std::sync::Arc::new(reviews);
        let mut tasks = Vec::new();
        for i in 0..5 {
            let r = reviews.clone();
            tasks.push(tokio::spawn(async move {
                r.token_review(&format!("t{i}")).await
            }));
        }
        let results: Vec<_> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(inner.token_calls(), 2);
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(ReviewError::Throttled)))
                .count(),
            3
        );
        assert_eq!(counted(&counts, "throttled"), 3);
        // SubjectAccessReviews are not limited.
        let attrs = RequestAttributes::NonResource {
            verb: "get".into(),
            path: "/apis".into(),
        };
        *inner.delay.lock().unwrap() = None;
        for _ in 0..10 {
            reviews
                .access_review(&User::anonymous(), &attrs)
                .await
                .unwrap();
        }
        assert_eq!(inner.access_calls(), 10);
    }

    #[test]
    fn retry_only_transient_failures() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            }))
        };
        assert!(retryable(&api(500)));
        assert!(retryable(&api(429)));
        assert!(retryable(&api(504)));
        assert!(!retryable(&api(403)));
        assert!(!retryable(&api(400)));
    }
}
