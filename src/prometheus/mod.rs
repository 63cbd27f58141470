//! Talking to Prometheus (or any engine with its HTTP API: Thanos, Mimir, VictoriaMetrics):
//! the client with its deadline, and the value cache in front of it.

pub mod auth;
pub mod backends;
pub mod breaker;
pub mod cache;
pub mod client;
pub mod series;
pub mod sigv4;

pub use backends::Backends;
pub use cache::{QueryCache, RuleQuery};
pub use client::{PrometheusClient, PrometheusError, QueryAnswer, QueryResult, Sample};
pub use series::SeriesSet;
