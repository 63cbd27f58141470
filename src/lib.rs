//! kube-metrics-bridge: the Kubernetes Custom and External Metrics APIs, answered from
//! templated PromQL rules.
//!
//! A request flows one way through these modules:
//!
//! - [`server`] / [`tls`]: TLS accept loop (HTTP/1.1 and HTTP/2), reloading certificates.
//! - [`api`]: routes, content negotiation, discovery documents, Status errors, OpenAPI.
//! - [`auth`]: who sent a request (front proxy, client certificate, token) and may they
//!   (SubjectAccessReview).
//! - [`request`]: path and query string -> a typed request; names and selectors validated.
//! - [`bridge`]: the request answered: rule lookup, objects, query, values, response.
//! - [`rules`]: the rules file compiled (naming, resource association, query templates).
//! - [`query`]: the PromQL for one request, with [`promql`] escaping and [`selector`] parsing.
//! - [`prometheus`]: the Prometheus HTTP client and the moka value cache in front of it.
//! - [`response`]: `MetricValueList` and friends as JSON or Kubernetes protobuf, values as
//!   canonical [`quantity`] strings.
//!
//! Beside the request path: [`discovery`] relists series into the registry requests read,
//! [`reload`] hot-reloads the rules file, [`kube`] knows resources and objects, [`config`]
//! reads the file, [`metrics`] and [`telemetry`] report on the bridge itself, [`cli`] and
//! [`cmd`] are the command line, and [`convert`] turns prometheus-adapter configs into rules files.

pub mod api;
pub mod auth;
pub mod backoff;
pub mod bridge;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod convert;
pub mod discovery;
pub mod field_selector;
pub mod http_client;
pub mod kube;
pub mod metrics;
pub mod names;
pub mod not_found;
pub mod prometheus;
pub mod promql;
pub mod quantity;
pub mod query;
pub mod reload;
pub mod request;
pub mod resource_answer;
pub mod response;
pub mod rules;
pub mod selector;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
