//! Credentials carried in request headers: the front proxy's `X-Remote-*` user (believed only
//! after its certificate verified, see [`super::authenticator`]) and bearer tokens. Ports of
//! Go's `headerrequest.requestHeaderAuthRequestHandler` and `bearertoken.Authenticator`.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::config::RequestHeaderConfig;
use super::user::User;

/// The user the front proxy asserts, or `None` when no username header has a value (then
/// this authenticator has no opinion, as in Go).
pub fn request_header_user(headers: &HeaderMap, config: &RequestHeaderConfig) -> Option<User> {
    let name = first_value(headers, &config.username_headers)?;
    Some(User {
        name,
        uid: first_value(headers, &config.uid_headers).unwrap_or_default(),
        groups: all_values(headers, &config.group_headers),
        extra: extra(headers, &config.extra_headers_prefix),
    })
}

/// The first non-empty value among `names`, trying only each header's first value
/// (`http.Header.Get`).
fn first_value(headers: &HeaderMap, names: &[String]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| headers.get(n.as_str()))
        .map(|v| text(v.as_bytes()))
        .find(|v| !v.is_empty())
}

/// Every non-empty value of every header in `names`, in order. Values are not split at
/// commas: each `X-Remote-Group` line is one group.
fn all_values(headers: &HeaderMap, names: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| headers.get_all(n.as_str()).iter())
        .map(|v| text(v.as_bytes()))
        .filter(|v| !v.is_empty())
        .collect()
}

/// Headers starting with a prefix (any case): the rest of the name, lower-cased and then
/// %-decoded, is the key; every value (empty ones too) is appended.
fn extra(headers: &HeaderMap, prefixes: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for prefix in prefixes {
        for name in headers.keys() {
            let name = name.as_str();
            let Some(rest) = strip_prefix_ignore_case(name, prefix) else {
                continue;
            };
            let key = unescape_extra_key(&rest.to_ascii_lowercase());
            out.entry(key)
                .or_default()
                .extend(headers.get_all(name).iter().map(|v| text(v.as_bytes())));
        }
    }
    out
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Go's `url.PathUnescape`, falling back to the key as sent when it is malformed (a `%`
/// without two hex digits) or decodes to something that is not UTF-8.
fn unescape_extra_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match (hex_digit(bytes.get(i + 1)), hex_digit(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => return key.to_string(),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_string())
}

/// The headers kube-apiserver's aggregator sends to an aggregated server on behalf of `user`
/// (client-go's `transport.SetAuthProxyHeaders`): `X-Remote-User`, `X-Remote-Uid` when
/// known, one `X-Remote-Group` per group, and `X-Remote-Extra-<key>` per extra value, the
/// key percent-encoded outside RFC 3986's unreserved characters. A value that cannot be a
/// header (a control character) is left out rather than sent altered.
pub fn front_proxy_headers(user: &User) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut push = |name: String, value: &str| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.push((name, value));
        }
    };
    push("X-Remote-User".into(), &user.name);
    if !user.uid.is_empty() {
        push("X-Remote-Uid".into(), &user.uid);
    }
    for group in &user.groups {
        push("X-Remote-Group".into(), group);
    }
    for (key, values) in &user.extra {
        for value in values {
            push(format!("X-Remote-Extra-{}", escape_extra_key(key)), value);
        }
    }
    out
}

/// client-go's `headerKeyEscape`: every byte but ALPHA / DIGIT / `-` / `.` / `_` / `~` as
/// `%XX` (upper-case hex).
fn escape_extra_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex_digit(b: Option<&u8>) -> Option<u8> {
    // A hex digit's value always fits in a u8.
    (*b? as char).to_digit(16).map(|d| d as u8)
}

/// Header bytes as text; anything that is not UTF-8 is replaced, never rejected.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The token of `Authorization: Bearer <token>` (scheme in any case), as Go's
/// `bearertoken.Authenticator` reads it: the value trimmed, split at single spaces into at
/// most three parts, the second being the token. `None` when there is no usable token, in
/// which case token authentication has no opinion.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    let value = std::str::from_utf8(value.as_bytes()).ok()?.trim();
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::certs::{testing::TestCa, CaBundle};
    use super::*;

    fn config() -> RequestHeaderConfig {
        RequestHeaderConfig {
            ca: CaBundle::from_pem(&TestCa::new("ca").pem).expect("ca"),
            allowed_names: vec![],
            username_headers: vec!["X-Remote-User".into(), "X-Other-User".into()],
            uid_headers: vec!["X-Remote-Uid".into()],
            group_headers: vec!["X-Remote-Group".into(), "X-Other-Group".into()],
            extra_headers_prefix: vec!["X-Remote-Extra-".into()],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn user_groups_uid_and_extra() {
        let h = headers(&[
            ("x-remote-user", "alice"),
            ("X-REMOTE-GROUP", "dev"),
            ("x-remote-group", "ops, sre"),
            ("x-remote-group", ""),
            ("x-other-group", "auditors"),
            ("x-remote-uid", "u-1"),
            ("X-Remote-Extra-Scopes", "view"),
            ("x-remote-extra-scopes", "edit"),
            (
                "x-remote-extra-authentication.kubernetes.io%2fpod-name",
                "hpa-0",
            ),
            ("X-Remote-Extra-Acme.com%2FProject", "metrics"),
            ("x-remote-extra-bad%zzkey", "kept"),
            ("x-remote-extra-empty", ""),
            ("x-unrelated", "x"),
        ]);
        let u = request_header_user(&h, &config()).expect("user");
        assert_eq!(u.name, "alice");
        assert_eq!(u.uid, "u-1");
        assert_eq!(
            u.groups,
            ["dev", "ops, sre", "auditors"],
            "every line, no comma split, empty skipped"
        );
        let want: BTreeMap<String, Vec<String>> = [
            ("scopes", vec!["view", "edit"]),
            ("authentication.kubernetes.io/pod-name", vec!["hpa-0"]),
            ("acme.com/project", vec!["metrics"]),
            ("bad%zzkey", vec!["kept"]),
            ("empty", vec![""]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        assert_eq!(u.extra, want);
    }

    #[test]
    fn first_non_empty_username_header_wins() {
        let h = headers(&[("x-remote-user", ""), ("x-other-user", "bob")]);
        assert_eq!(
            request_header_user(&h, &config()).map(|u| u.name),
            Some("bob".into())
        );
        let none = headers(&[("x-remote-group", "dev")]);
        assert_eq!(
            request_header_user(&none, &config()),
            None,
            "no user, no opinion"
        );
    }

    #[test]
    fn percent_decoding_of_extra_keys() {
        assert_eq!(unescape_extra_key("a%2fb"), "a/b");
        assert_eq!(
            unescape_extra_key("%41"),
            "A",
            "decoded after lower-casing, as in Go"
        );
        assert_eq!(unescape_extra_key("50%"), "50%");
        assert_eq!(unescape_extra_key("x%4"), "x%4");
        assert_eq!(unescape_extra_key("%ff"), "%ff", "not UTF-8: kept as sent");
        assert_eq!(unescape_extra_key("%+1"), "%+1");
    }

    #[test]
    fn front_proxy_headers_round_trip_through_the_authenticator() {
        let mut user = User::new(
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ],
        );
        user.uid = "1234".into();
        user.extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec!["JTI=abc".into()],
        );
        user.extra
            .insert("scopes".into(), vec!["a b".into(), "c".into()]);
        let sent = front_proxy_headers(&user);
        // Header names travel lower-cased (HTTP/2 requires it); %2f decodes as %2F does.
        assert!(sent.iter().any(|(k, v)| k.as_str()
            == "x-remote-extra-authentication.kubernetes.io%2fcredential-id"
            && v == "JTI=abc"));
        let mut map = HeaderMap::new();
        for (k, v) in sent {
            map.append(k, v);
        }
        assert_eq!(request_header_user(&map, &config()), Some(user));
        assert_eq!(escape_extra_key("a/b c%"), "a%2Fb%20c%25");
    }

    #[test]
    fn bearer_tokens() {
        let t = |v: &str| bearer_token(&headers(&[("authorization", v)]));
        assert_eq!(t("Bearer abc.def"), Some("abc.def".into()));
        assert_eq!(t("bearer abc"), Some("abc".into()));
        assert_eq!(t("  BEARER abc  "), Some("abc".into()));
        assert_eq!(t("Bearer abc trailing"), Some("abc".into()));
        assert_eq!(
            t("Bearer  abc"),
            None,
            "an extra space leaves an empty token"
        );
        assert_eq!(t("Bearer"), None);
        assert_eq!(t("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
