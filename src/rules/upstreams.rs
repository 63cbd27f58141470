//! `[[upstreams]]` checked: each a name, an `https` URL, group versions the bridge knows,
//! a client certificate with its key, and deadlines that make sense. What loads but will
//! probably not work (no client certificate, no verification) is a warning.

use std::collections::HashSet;
use std::time::Duration;

use super::backends::{is_backend_name, problem};
use super::Problem;
use crate::config::{UpstreamConfig, UPSTREAM_APIS};

/// The upstreams of a file, or problems with each field that is wrong.
pub fn compile(
    upstreams: &[UpstreamConfig],
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Vec<UpstreamConfig> {
    let mut names = HashSet::new();
    for (i, u) in upstreams.iter().enumerate() {
        let place = format!("upstreams[{i}]");
        let mut push = |field: &str, message: &str| problems.push(problem(&place, field, message));
        if !is_backend_name(&u.name) {
            push(
                "name",
                "is required: lowercase letters, digits and '-', at most 63 (logs and metrics use it)",
            );
        } else if !names.insert(u.name.as_str()) {
            push("name", &format!("{:?} is used by another upstream", u.name));
        }
        match reqwest::Url::parse(&u.url) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => {}
            Ok(_) => push(
                "url",
                "must be https://host[:port]: the caller's identity goes to the upstream in \
                 headers it believes only over TLS from a front-proxy client certificate",
            ),
            Err(e) => push("url", &format!("{:?} is not a URL: {e}", u.url)),
        }
        if u.apis.is_empty() {
            push("apis", "is empty: list the group versions it may answer");
        }
        for api in &u.apis {
            if !UPSTREAM_APIS.contains(&api.as_str()) {
                push(
                    "apis",
                    &format!("{api:?} is not one of {}", UPSTREAM_APIS.join(", ")),
                );
            }
        }
        if u.timeout.is_zero() {
            push("timeout", "must be more than 0s");
        }
        if u.discovery_interval < Duration::from_secs(1) {
            push("discovery_interval", "must be at least 1s");
        }
        if u.client_cert_file.is_some() != u.client_key_file.is_some() {
            push(
                "client_cert_file",
                "client_cert_file and client_key_file go together",
            );
        }
        if u.client_cert_file.is_none() {
            warnings.push(problem(
                &place,
                "client_cert_file",
                "not set: without a front-proxy client certificate the upstream cannot believe \
                 the caller's identity and will see anonymous requests (most refuse them)",
            ));
        }
        if u.insecure_skip_verify {
            warnings.push(problem(
                &place,
                "insecure_skip_verify",
                "the upstream's serving certificate is not verified: anyone who can answer \
                 on its address receives the callers' identities; set ca_file instead",
            ));
        }
    }
    upstreams.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> (Vec<String>, Vec<String>) {
        let file = crate::config::parse(text, std::path::Path::new("t.toml")).expect("parses");
        let (mut problems, mut warnings) = (Vec::new(), Vec::new());
        compile(&file.upstreams, &mut problems, &mut warnings);
        let strings = |v: Vec<Problem>| v.iter().map(ToString::to_string).collect();
        (strings(problems), strings(warnings))
    }

    #[test]
    fn a_complete_upstream_loads_without_warnings() {
        let (problems, warnings) = check(
            "[[upstreams]]\nname = \"old-adapter\"\nurl = \"https://adapter.monitoring.svc\"\n\
             ca_file = \"/ca.crt\"\nclient_cert_file = \"/c.crt\"\nclient_key_file = \"/c.key\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn every_wrong_field_is_named() {
        let (problems, warnings) = check(
            "[[upstreams]]\nname = \"A\"\nurl = \"http://adapter\"\napis = [\"metrics.k8s.io/v1beta1\"]\n\
             timeout = \"0s\"\ndiscovery_interval = \"10ms\"\nclient_key_file = \"/k\"\ninsecure_skip_verify = true\n\
             [[upstreams]]\nname = \"b\"\nurl = \"not a url\"\napis = []\n\
             [[upstreams]]\nname = \"b\"\nurl = \"https://b\"\n",
        );
        let joined = problems.join("\n");
        for want in [
            "upstreams[0].name: is required",
            "upstreams[0].url: must be https://",
            "upstreams[0].apis: \"metrics.k8s.io/v1beta1\" is not one of",
            "upstreams[0].timeout: must be more than 0s",
            "upstreams[0].discovery_interval: must be at least 1s",
            "upstreams[0].client_cert_file: client_cert_file and client_key_file go together",
            "upstreams[1].url: \"not a url\" is not a URL",
            "upstreams[1].apis: is empty",
            "upstreams[2].name: \"b\" is used by another upstream",
        ] {
            assert!(joined.contains(want), "{want} missing from:\n{joined}");
        }
        let warned = warnings.join("\n");
        assert!(
            warned.contains("upstreams[0].insecure_skip_verify"),
            "{warned}"
        );
        assert!(
            warned.contains("upstreams[1].client_cert_file: not set"),
            "{warned}"
        );
    }
}
