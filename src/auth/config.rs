//! The delegated-authentication configuration kube-apiserver publishes in ConfigMap
//! `kube-system/extension-apiserver-authentication`.
//!
//! | key | meaning | when absent |
//! |---|---|---|
//! | `client-ca-file` | PEM CAs for plain client-certificate users (CN = user, O = groups) | no client-certificate authentication |
//! | `requestheader-client-ca-file` | PEM CAs that sign the front proxy's (kube-aggregator's) client certificate | no front-proxy authentication |
//! | `requestheader-allowed-names` | JSON list of CNs allowed to act as front proxy; `[]` = any | `[]` |
//! | `requestheader-username-headers` | JSON list; the first non-empty one names the user | `["X-Remote-User"]` |
//! | `requestheader-uid-headers` | JSON list; the first non-empty one is the uid | `[]` |
//! | `requestheader-group-headers` | JSON list; every value of every one is a group | `["X-Remote-Group"]` |
//! | `requestheader-extra-headers-prefix` | JSON list of prefixes; the rest of the name is an extra key | `["X-Remote-Extra-"]` |
//!
//! A key that is present is used as written: an explicit `[]` header list means none.
//! kube-apiserver always writes every header key, so the defaults matter only for
//! hand-made ConfigMaps.

use std::collections::BTreeMap;

use super::certs::{self, CaBundle};

pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
pub const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

pub const CLIENT_CA: &str = "client-ca-file";
pub const REQUESTHEADER_CA: &str = "requestheader-client-ca-file";
pub const ALLOWED_NAMES: &str = "requestheader-allowed-names";
pub const USERNAME_HEADERS: &str = "requestheader-username-headers";
pub const UID_HEADERS: &str = "requestheader-uid-headers";
pub const GROUP_HEADERS: &str = "requestheader-group-headers";
pub const EXTRA_HEADERS_PREFIX: &str = "requestheader-extra-headers-prefix";

/// A key of the ConfigMap that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: key {key:?}: {problem}")]
pub struct ConfigError {
    pub key: &'static str,
    pub problem: String,
}

/// What authentication trusts. `Default` trusts no certificate at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    pub client_ca: Option<CaBundle>,
    pub request_header: Option<RequestHeaderConfig>,
}

/// Front-proxy authentication: who may assert a user through headers, and which headers.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHeaderConfig {
    pub ca: CaBundle,
    /// Empty: any certificate the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_headers_prefix: Vec<String>,
}

impl AuthConfig {
    /// Reads the ConfigMap's `data`.
    pub fn from_configmap_data(data: &BTreeMap<String, String>) -> Result<AuthConfig, ConfigError> {
        let client_ca = ca(data, CLIENT_CA)?;
        // Header keys are checked even without a request-header CA, so a broken ConfigMap
        // is reported whole rather than when the CA appears.
        let allowed_names = strings(data, ALLOWED_NAMES, &[])?;
        let username_headers = headers(data, USERNAME_HEADERS, &["X-Remote-User"])?;
        let uid_headers = headers(data, UID_HEADERS, &[])?;
        let group_headers = headers(data, GROUP_HEADERS, &["X-Remote-Group"])?;
        let extra_headers_prefix = headers(data, EXTRA_HEADERS_PREFIX, &["X-Remote-Extra-"])?;
        let request_header = ca(data, REQUESTHEADER_CA)?.map(|ca| RequestHeaderConfig {
            ca,
            allowed_names,
            username_headers,
            uid_headers,
            group_headers,
            extra_headers_prefix,
        });
        Ok(AuthConfig {
            client_ca,
            request_header,
        })
    }

    /// The roots the TLS layer asks client certificates for: both CAs.
    pub fn client_roots(&self) -> Option<std::sync::Arc<rustls::RootCertStore>> {
        let bundles: Vec<&CaBundle> = self
            .client_ca
            .iter()
            .chain(self.request_header.as_ref().map(|r| &r.ca))
            .collect();
        certs::union_roots(&bundles)
    }

    /// One line per difference from `old`, for the log (CAs by subject and fingerprint;
    /// nothing here is secret).
    pub fn changes_from(&self, old: &AuthConfig) -> Vec<String> {
        let mut out = Vec::new();
        let ca_text =
            |c: Option<&CaBundle>| c.map_or_else(|| "none".to_string(), CaBundle::describe);
        if self.client_ca != old.client_ca {
            out.push(format!(
                "{CLIENT_CA}: {} -> {}",
                ca_text(old.client_ca.as_ref()),
                ca_text(self.client_ca.as_ref())
            ));
        }
        let (new_rh, old_rh) = (self.request_header.as_ref(), old.request_header.as_ref());
        if new_rh.map(|r| &r.ca) != old_rh.map(|r| &r.ca) {
            out.push(format!(
                "{REQUESTHEADER_CA}: {} -> {}",
                ca_text(old_rh.map(|r| &r.ca)),
                ca_text(new_rh.map(|r| &r.ca))
            ));
        }
        type Field = fn(&RequestHeaderConfig) -> &Vec<String>;
        let fields: [(&str, Field); 5] = [
            (ALLOWED_NAMES, |r| &r.allowed_names),
            (USERNAME_HEADERS, |r| &r.username_headers),
            (UID_HEADERS, |r| &r.uid_headers),
            (GROUP_HEADERS, |r| &r.group_headers),
            (EXTRA_HEADERS_PREFIX, |r| &r.extra_headers_prefix),
        ];
        for (key, get) in fields {
            let (a, b) = (old_rh.map(get), new_rh.map(get));
            if a != b {
                out.push(format!("{key}: {a:?} -> {b:?}"));
            }
        }
        out
    }
}

fn ca(data: &BTreeMap<String, String>, key: &'static str) -> Result<Option<CaBundle>, ConfigError> {
    match data.get(key) {
        None => Ok(None),
        Some(pem) => CaBundle::from_pem(pem)
            .map(Some)
            .map_err(|problem| ConfigError { key, problem }),
    }
}

/// A JSON list of strings (Go's `deserializeStrings`: an empty value is an empty list).
fn strings(
    data: &BTreeMap<String, String>,
    key: &'static str,
    default: &[&str],
) -> Result<Vec<String>, ConfigError> {
    match data.get(key) {
        None => Ok(default.iter().map(|s| s.to_string()).collect()),
        Some(text) if text.trim().is_empty() => Ok(Vec::new()),
        Some(text) => serde_json::from_str::<Vec<String>>(text).map_err(|e| ConfigError {
            key,
            problem: format!("not a JSON list of strings ({e}): {text:?}"),
        }),
    }
}

/// A JSON list of header names (or prefixes): trimmed, none empty (Go's `trimHeaders`), and
/// each a valid HTTP header name.
fn headers(
    data: &BTreeMap<String, String>,
    key: &'static str,
    default: &[&str],
) -> Result<Vec<String>, ConfigError> {
    strings(data, key, default)?
        .into_iter()
        .map(|h| {
            let h = h.trim().to_string();
            if h.is_empty() {
                return Err(ConfigError {
                    key,
                    problem: "empty header name".into(),
                });
            }
            http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| ConfigError {
                key,
                problem: format!("{h:?} is not a valid header name"),
            })?;
            Ok(h)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::certs::testing::{configmap_data as data, TestCa};
    use super::*;

    #[test]
    fn full_configmap() {
        let client = TestCa::new("client-ca");
        let proxy = TestCa::new("front-proxy-ca");
        let c = AuthConfig::from_configmap_data(&data(&[
            (CLIENT_CA, &client.pem),
            (REQUESTHEADER_CA, &proxy.pem),
            (ALLOWED_NAMES, r#"["front-proxy-client"]"#),
            (USERNAME_HEADERS, r#"["X-Remote-User"]"#),
            (GROUP_HEADERS, r#"["X-Remote-Group"]"#),
            (EXTRA_HEADERS_PREFIX, r#"["X-Remote-Extra-"]"#),
            (UID_HEADERS, r#"[]"#),
        ]))
        .expect("parses");
        assert!(c.client_ca.is_some());
        let rh = c.request_header.as_ref().expect("front proxy");
        assert_eq!(rh.allowed_names, ["front-proxy-client"]);
        assert_eq!(rh.username_headers, ["X-Remote-User"]);
        assert!(rh.uid_headers.is_empty());
        assert_eq!(c.client_roots().map(|r| r.len()), Some(2));
    }

    #[test]
    fn missing_keys_take_defaults_or_disable() {
        let none = AuthConfig::from_configmap_data(&BTreeMap::new()).expect("empty is valid");
        assert_eq!(none, AuthConfig::default());
        assert!(none.client_roots().is_none());

        let proxy = TestCa::new("front-proxy-ca");
        let c = AuthConfig::from_configmap_data(&data(&[(REQUESTHEADER_CA, &proxy.pem)]))
            .expect("only the CA");
        assert!(c.client_ca.is_none());
        let rh = c.request_header.expect("front proxy");
        assert!(rh.allowed_names.is_empty(), "absent allowed names: any CN");
        assert_eq!(rh.username_headers, ["X-Remote-User"]);
        assert_eq!(rh.group_headers, ["X-Remote-Group"]);
        assert_eq!(rh.extra_headers_prefix, ["X-Remote-Extra-"]);
        assert!(rh.uid_headers.is_empty());

        let explicit_empty = AuthConfig::from_configmap_data(&data(&[
            (REQUESTHEADER_CA, &proxy.pem),
            (USERNAME_HEADERS, "[]"),
            (ALLOWED_NAMES, ""),
        ]))
        .expect("explicit empty lists");
        let rh = explicit_empty.request_header.expect("front proxy");
        assert!(rh.username_headers.is_empty());
        assert!(rh.allowed_names.is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        let proxy = TestCa::new("front-proxy-ca");
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![(ALLOWED_NAMES, "front-proxy-client")],
                ALLOWED_NAMES,
                "JSON",
            ),
            (vec![(GROUP_HEADERS, r#"{"a":1}"#)], GROUP_HEADERS, "JSON"),
            (
                vec![(USERNAME_HEADERS, r#"["X-Remote-User", 7]"#)],
                USERNAME_HEADERS,
                "JSON",
            ),
            (
                vec![(USERNAME_HEADERS, r#"["  "]"#)],
                USERNAME_HEADERS,
                "empty header",
            ),
            (
                vec![(EXTRA_HEADERS_PREFIX, r#"["X Remote"]"#)],
                EXTRA_HEADERS_PREFIX,
                "valid header",
            ),
            (vec![(CLIENT_CA, "garbage")], CLIENT_CA, "no PEM"),
            (
                vec![(
                    REQUESTHEADER_CA,
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                )],
                REQUESTHEADER_CA,
                "",
            ),
        ];
        for (pairs, key, words) in cases {
            let mut d = data(&pairs);
            d.entry(REQUESTHEADER_CA.into())
                .or_insert(proxy.pem.clone());
            let err = AuthConfig::from_configmap_data(&d).expect_err(key);
            assert_eq!(err.key, key, "{err}");
            let text = err.to_string();
            assert!(text.contains(key) && text.contains(words), "{text}");
            assert!(
                text.contains("kube-system/extension-apiserver-authentication"),
                "{text}"
            );
        }
    }

    #[test]
    fn changes_are_described_without_secrets() {
        let proxy = TestCa::new("front-proxy-ca");
        let rotated = TestCa::new("front-proxy-ca-2");
        let old =
            AuthConfig::from_configmap_data(&data(&[(REQUESTHEADER_CA, &proxy.pem)])).expect("old");
        let new = AuthConfig::from_configmap_data(&data(&[
            (REQUESTHEADER_CA, &format!("{}{}", proxy.pem, rotated.pem)),
            (ALLOWED_NAMES, r#"["front-proxy-client"]"#),
        ]))
        .expect("new");
        let changes = new.changes_from(&old);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            changes[0].starts_with(REQUESTHEADER_CA) && changes[0].contains("CN=front-proxy-ca-2")
        );
        assert!(
            changes[1].contains(r#"Some([]) -> Some(["front-proxy-client"])"#),
            "{}",
            changes[1]
        );
        assert!(new.changes_from(&new).is_empty());
    }
}
