//! `convert`: any text as a prometheus-adapter YAML config (file, ConfigMap or Helm values).
//! Invariants: no panic, and a conversion's TOML reads back (through the same
//! `config::parse` the server uses) as exactly the config `convert` built, which then compiles
//! or fails with problems, never panics.
#![no_main]

use std::path::Path;

use kube_metrics_bridge::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kube_metrics_bridge_fuzz::let_caught_panics_unwind();
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = kube_metrics_bridge::convert::convert(yaml, "fuzz.yaml", None) else {
        return;
    };
    let parsed = kube_metrics_bridge::config::parse(&c.toml, Path::new("out.toml"))
        .unwrap_or_else(|e| panic!("converted TOML does not read back: {e}\n{}", c.toml));
    assert_eq!(parsed, c.config, "{}", c.toml);
    let _ = RuleSet::compile(&c.config);
});
