//! What the bridge knows about Kubernetes objects: which resources exist (names, kinds,
//! scope) and which objects a label selector picks.
//!
//! Both are traits so that `--standalone` runs with a built-in table and no API server,
//! while a cluster connection fills them from API discovery and watch caches.

pub mod client;
pub mod mapper;
pub mod objects;
pub mod resource_objects;
pub mod resources;
pub mod watch_cache;
