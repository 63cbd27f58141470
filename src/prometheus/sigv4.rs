//! AWS Signature Version 4 for calls to Amazon Managed Service for Prometheus (service
//! `aps`), as AWS's signing documentation and its published test suite define it.
//!
//! Written on `ring` (HMAC-SHA256 and SHA-256, already here for TLS) rather than the
//! `aws-sigv4` crate, which brings the Smithy runtime for what is, for our two requests (a GET
//! with a query string or a POST with a form body), a hundred lines. The tests run the
//! signer over vectors of AWS's SigV4 test suite.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::{digest, hmac};

/// Credentials, as read from their files.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token, not even in a debug log.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What is signed of a request.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a reqwest::Url,
    /// Headers to sign besides `host` and the ones the signature adds (name, value).
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Also send and sign `x-amz-content-sha256` (S3 needs it; other services accept it).
    pub sign_body: bool,
}

/// Headers to add to the request: `x-amz-date`, maybe `x-amz-content-sha256` and
/// `x-amz-security-token`, and `authorization`.
pub fn sign(
    request: &Request<'_>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    at: SystemTime,
) -> Vec<(&'static str, String)> {
    let (amz_date, date) = amz_timestamp(at);
    let payload_hash = hex(digest::digest(&digest::SHA256, request.body).as_ref());
    let mut added: Vec<(&'static str, String)> = vec![("x-amz-date", amz_date.clone())];
    if request.sign_body {
        added.push(("x-amz-content-sha256", payload_hash.clone()));
    }
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token", token.clone()));
    }

    // Canonical headers: lowercase names, values trimmed with inner runs of spaces folded,
    // sorted by name, repeated names joined with commas.
    let mut headers: Vec<(String, String)> = vec![("host".into(), host_header(request.url))];
    headers.extend(
        request
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), fold_spaces(v))),
    );
    headers.extend(added.iter().map(|(n, v)| (n.to_string(), v.clone())));
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical_headers = String::new();
    let mut signed_headers: Vec<&str> = Vec::new();
    for (name, value) in &headers {
        if signed_headers.last() == Some(&name.as_str()) {
            canonical_headers.pop(); // the newline: append to the previous line
            canonical_headers.push(',');
        } else {
            canonical_headers.push_str(name);
            canonical_headers.push(':');
            signed_headers.push(name);
        }
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let signed_headers = signed_headers.join(";");

    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        request.method,
        canonical_path(request.url),
        canonical_query(request.url),
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let mut key = hmac_sha256(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    added.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    added
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `20150830T123600Z` and `20150830`.
fn amz_timestamp(at: SystemTime) -> (String, String) {
    let at = UNIX_EPOCH
        + std::time::Duration::from_secs(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let full: String = humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let date = full[..8].to_string();
    (full, date)
}

/// The `Host` header reqwest sends: the host, and the port when it is not the scheme's.
fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn fold_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - _ . ~`) as `%XX`, and `/` too unless
/// it is kept as the path separator.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path as sent, encoded once more (every AWS service but S3 signs it so).
fn canonical_path(url: &reqwest::Url) -> String {
    match url.path() {
        "" => "/".into(),
        path => uri_encode(path, true),
    }
}

/// Parameters decoded, then each name and value encoded, sorted by name and value.
fn canonical_query(url: &reqwest::Url) -> String {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials, region, service and time every vector of the suite uses.
    fn suite_credentials(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_string),
        }
    }

    fn suite_time() -> SystemTime {
        humantime::parse_rfc3339("2015-08-30T12:36:00Z").expect("time")
    }

    struct Vector {
        name: &'static str,
        method: &'static str,
        url: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
        sign_body: bool,
        token: Option<&'static str>,
        /// `SignedHeaders=...` and `Signature=...` of the suite's `header-signed-request.txt`.
        signed_headers: &'static str,
        signature: &'static str,
    }

    /// From AWS's SigV4 test suite (aws-c-auth's `aws-signing-test-suite/v4`, as vendored in
    /// smithy-rs): each case's `request.txt` and `context.json` as input, and the
    /// `Authorization` header of its `header-signed-request.txt` as the expected output.
    const VECTORS: &[Vector] = &[
        Vector {
            name: "get-vanilla",
            method: "GET",
            url: "https://example.amazonaws.com/",
            headers: &[],
            body: "",
            sign_body: false,
            token: None,
            signed_headers: "host;x-amz-date",
            signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
        Vector {
            name: "get-vanilla-query-unreserved",
            method: "GET",
            url: "https://example.amazonaws.com/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            headers: &[],
            body: "",
            sign_body: false,
            token: None,
            signed_headers: "host;x-amz-date",
            signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        },
        Vector {
            name: "get-vanilla-query-order-encoded",
            method: "GET",
            url: "https://example.amazonaws.com/?Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
            headers: &[],
            body: "",
            sign_body: false,
            token: None,
            signed_headers: "host;x-amz-date",
            signature: "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        },
        Vector {
            name: "get-vanilla-utf8-query",
            method: "GET",
            url: "https://example.amazonaws.com/?\u{1234}=bar",
            headers: &[],
            body: "",
            sign_body: false,
            token: None,
            signed_headers: "host;x-amz-date",
            signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        },
        Vector {
            name: "get-unreserved",
            method: "GET",
            url: "https://example.amazonaws.com/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            headers: &[],
            body: "",
            sign_body: false,
            token: None,
            signed_headers: "host;x-amz-date",
            signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        },
        Vector {
            name: "get-header-value-trim",
            method: "GET",
            url: "https://example.amazonaws.com/",
            headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
            body: "",
            sign_body: false,
            token: None,
            signed_headers: "host;my-header1;my-header2;x-amz-date",
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        },
        Vector {
            name: "get-vanilla-with-session-token",
            method: "GET",
            url: "https://example.amazonaws.com/",
            headers: &[],
            body: "",
            sign_body: false,
            token: Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
            signed_headers: "host;x-amz-date;x-amz-security-token",
            signature: "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        },
        Vector {
            name: "post-vanilla-query",
            method: "POST",
            url: "https://example.amazonaws.com/?Param1=value1",
            headers: &[],
            body: "",
            sign_body: false,
            token: None,
            signed_headers: "host;x-amz-date",
            signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        },
        Vector {
            name: "post-x-www-form-urlencoded",
            method: "POST",
            url: "https://example.amazonaws.com/",
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", "13"),
            ],
            body: "Param1=value1",
            sign_body: true,
            token: None,
            signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        },
        Vector {
            name: "post-x-www-form-urlencoded-parameters",
            method: "POST",
            url: "https://example.amazonaws.com/",
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
                ("Content-Length", "13"),
            ],
            body: "Param1=value1",
            sign_body: true,
            token: None,
            signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            signature: "328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422",
        },
    ];

    #[test]
    fn aws_test_suite_vectors() {
        for v in VECTORS {
            let url = reqwest::Url::parse(v.url).expect("url");
            let added = sign(
                &Request {
                    method: v.method,
                    url: &url,
                    headers: v.headers,
                    body: v.body.as_bytes(),
                    sign_body: v.sign_body,
                },
                &suite_credentials(v.token),
                "us-east-1",
                "service",
                suite_time(),
            );
            let authorization = &added.last().expect("authorization").1;
            assert_eq!(
                authorization,
                &format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={}, Signature={}",
                    v.signed_headers, v.signature
                ),
                "{}",
                v.name
            );
            assert_eq!(added[0], ("x-amz-date", "20150830T123600Z".to_string()));
            if let Some(token) = v.token {
                assert!(added.contains(&("x-amz-security-token", token.to_string())));
            }
        }
    }

    #[test]
    fn timestamps_are_utc_and_whole_seconds() {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(951_782_400_999); // 2000-02-29
        assert_eq!(
            amz_timestamp(at),
            ("20000229T000000Z".into(), "20000229".into())
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let text = format!("{:?}", suite_credentials(Some("tok")));
        assert!(!text.contains("wJalr") && !text.contains("tok"), "{text}");
    }

    #[test]
    fn host_carries_a_non_default_port() {
        let url = reqwest::Url::parse("http://127.0.0.1:9090/api/v1/query").expect("url");
        assert_eq!(host_header(&url), "127.0.0.1:9090");
        let url =
            reqwest::Url::parse("https://aps-workspaces.us-east-1.amazonaws.com/x").expect("url");
        assert_eq!(host_header(&url), "aps-workspaces.us-east-1.amazonaws.com");
    }
}
