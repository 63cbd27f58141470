//! How a call to a backend proves who it is: a bearer token, basic auth, an OAuth2 client
//! credentials token, or an AWS SigV4 signature. TLS client certificates live with the HTTP
//! client ([`super::client`]).
//!
//! Secrets come only from files (mounted Secrets) and are re-read when the file changes (its
//! modification time, size or inode; a Secret volume update swaps a symlink, which changes
//! all three), so a rotated password or key is used from the next call on, without a restart.
//! Nothing here logs a secret; errors name the file, never its content.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use super::client::PrometheusError;
use super::sigv4;
use crate::config::{BackendConfig, OAuth2Config, SigV4Config};

/// A file holding one secret, read again whenever it changes.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
    what: &'static str,
    cached: Mutex<Option<(FileStamp, String)>>,
}

/// What tells that a file changed without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// The file's stamp, following symlinks (a Secret volume's files are symlinks).
    pub fn of(path: &Path) -> std::io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        })
    }
}

impl SecretFile {
    /// `what` names the field in errors, e.g. `basic_auth.password_file`.
    pub fn new(path: &Path, what: &'static str) -> Self {
        SecretFile {
            path: path.to_path_buf(),
            what,
            cached: Mutex::new(None),
        }
    }

    /// The content without surrounding whitespace (a trailing newline is common in Secrets).
    pub fn read(&self) -> Result<String, PrometheusError> {
        let unreadable = |e: std::io::Error| {
            PrometheusError::Unavailable(format!(
                "reading {} {}: {e}",
                self.what,
                self.path.display()
            ))
        };
        let now = FileStamp::of(&self.path).map_err(unreadable)?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, secret)) = cached.as_ref() {
            if *at == now {
                return Ok(secret.clone());
            }
        }
        let secret = std::fs::read_to_string(&self.path)
            .map_err(unreadable)?
            .trim()
            .to_string();
        *cached = Some((now, secret.clone()));
        Ok(secret)
    }
}

/// The credentials of one backend.
#[derive(Debug)]
pub enum Auth {
    None,
    Bearer(SecretFile),
    Basic {
        username: String,
        password: SecretFile,
    },
    OAuth2(OAuth2),
    SigV4(SigV4),
}

impl Auth {
    /// At most one of the modes is set (checked when the rules load).
    pub fn new(cfg: &BackendConfig) -> Auth {
        if let Some(basic) = &cfg.basic_auth {
            Auth::Basic {
                username: basic.username.clone(),
                password: SecretFile::new(&basic.password_file, "basic_auth.password_file"),
            }
        } else if let Some(oauth2) = &cfg.oauth2 {
            Auth::OAuth2(OAuth2::new(oauth2))
        } else if let Some(sigv4) = &cfg.sigv4 {
            Auth::SigV4(SigV4::new(sigv4))
        } else if let Some(path) = &cfg.bearer_token_file {
            Auth::Bearer(SecretFile::new(path, "bearer_token_file"))
        } else {
            Auth::None
        }
    }

    /// Adds the credentials to a built request (SigV4 signs its final URL and body).
    pub async fn authorize(
        &self,
        http: &reqwest::Client,
        request: &mut reqwest::Request,
    ) -> Result<(), PrometheusError> {
        let header = match self {
            Auth::None => return Ok(()),
            Auth::Bearer(token) => format!("Bearer {}", token.read()?),
            Auth::Basic { username, password } => {
                use base64::Engine;
                let pair = format!("{username}:{}", password.read()?);
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Auth::OAuth2(oauth2) => format!("Bearer {}", oauth2.token(http).await?),
            Auth::SigV4(signer) => return signer.sign(request),
        };
        let mut value = HeaderValue::from_str(&header).map_err(|_| {
            PrometheusError::Unavailable(
                "the credential read from its file is not a valid header value".into(),
            )
        })?;
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
        Ok(())
    }

    /// The backend refused the credentials (401): a cached OAuth2 token is dropped so that
    /// the next call fetches a new one.
    pub fn rejected(&self) {
        if let Auth::OAuth2(oauth2) = self {
            oauth2.forget();
        }
    }
}

/// OAuth2 client credentials: one token, fetched when missing or about to expire, shared by
/// every call; concurrent callers wait for the one fetch.
#[derive(Debug)]
pub struct OAuth2 {
    config: OAuth2Config,
    secret: SecretFile,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// A token without `expires_in` is fetched again after this long.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<f64>,
}

impl OAuth2 {
    fn new(config: &OAuth2Config) -> Self {
        OAuth2 {
            config: config.clone(),
            secret: SecretFile::new(&config.client_secret_file, "oauth2.client_secret_file"),
            token: tokio::sync::Mutex::new(None),
        }
    }

    fn forget(&self) {
        if let Ok(mut token) = self.token.try_lock() {
            *token = None;
        }
    }

    async fn token(&self, http: &reqwest::Client) -> Result<String, PrometheusError> {
        let mut token = self.token.lock().await;
        if let Some((value, refresh_at)) = token.as_ref() {
            if Instant::now() < *refresh_at {
                return Ok(value.clone());
            }
        }
        let (value, lifetime) = self.fetch(http).await?;
        // Refresh before it expires: at 3/4 of its life, at most a minute early.
        let margin = (lifetime / 4).min(Duration::from_secs(60));
        *token = Some((value.clone(), Instant::now() + lifetime - margin));
        Ok(value)
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<(String, Duration), PrometheusError> {
        let failed = |why: String| {
            PrometheusError::Unavailable(format!(
                "oauth2 token from {}: {why}",
                self.config.token_url
            ))
        };
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        let scopes = self.config.scopes.join(" ");
        if !scopes.is_empty() {
            form.push(("scope", &scopes));
        }
        for (k, v) in &self.config.endpoint_params {
            form.push((k, v));
        }
        // RFC 6749 §2.3.1: the client authenticates with HTTP basic auth, id and secret
        // form-urlencoded first.
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = http
            .post(&self.config.token_url)
            .basic_auth(
                encode(&self.config.client_id),
                Some(encode(&self.secret.read()?)),
            )
            .form(&form)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            // The endpoint's error code (e.g. invalid_client), not the whole body.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(failed(format!("HTTP {status} {code}")));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("not a token answer: {e}")))?;
        if let Some(kind) = &answer.token_type {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(failed(format!("token_type {kind:?} is not bearer")));
            }
        }
        let lifetime = answer
            .expires_in
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(1e9)))
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok((answer.access_token, lifetime))
    }
}

/// AWS SigV4 with credentials from files.
#[derive(Debug)]
pub struct SigV4 {
    region: String,
    service: String,
    access_key_id: SecretFile,
    secret_access_key: SecretFile,
    session_token: Option<SecretFile>,
}

impl SigV4 {
    fn new(config: &SigV4Config) -> Self {
        SigV4 {
            region: config.region.clone(),
            service: config.service.clone(),
            access_key_id: SecretFile::new(&config.access_key_id_file, "sigv4.access_key_id_file"),
            secret_access_key: SecretFile::new(
                &config.secret_access_key_file,
                "sigv4.secret_access_key_file",
            ),
            session_token: config
                .session_token_file
                .as_deref()
                .map(|p| SecretFile::new(p, "sigv4.session_token_file")),
        }
    }

    fn sign(&self, request: &mut reqwest::Request) -> Result<(), PrometheusError> {
        let credentials = sigv4::Credentials {
            access_key_id: self.access_key_id.read()?,
            secret_access_key: self.secret_access_key.read()?,
            session_token: self
                .session_token
                .as_ref()
                .map(SecretFile::read)
                .transpose()?,
        };
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let headers: Vec<(&str, &str)> = content_type
            .as_deref()
            .map(|v| ("content-type", v))
            .into_iter()
            .collect();
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        let added = sigv4::sign(
            &sigv4::Request {
                method: request.method().as_str(),
                url: request.url(),
                headers: &headers,
                body,
                sign_body: false,
            },
            &credentials,
            &self.region,
            &self.service,
            SystemTime::now(),
        );
        for (name, value) in added {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                PrometheusError::Unavailable(
                    "a sigv4 credential read from its file is not a valid header value".into(),
                )
            })?;
            value.set_sensitive(true);
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, "one\n").expect("write");
        let secret = SecretFile::new(&path, "basic_auth.password_file");
        assert_eq!(secret.read().expect("read"), "one");
        // A Secret volume update: a new file swapped in under the same name.
        let next = dir.path().join("password.new");
        std::fs::write(&next, "second").expect("write");
        std::fs::rename(&next, &path).expect("swap");
        assert_eq!(secret.read().expect("read"), "second");
        std::fs::remove_file(&path).expect("remove");
        let err = secret.read().expect_err("gone").to_string();
        assert!(err.contains("basic_auth.password_file"), "{err}");
        assert!(!err.contains("second"), "no secret in errors: {err}");
    }

    #[tokio::test]
    async fn basic_auth_header_from_the_file() {
        // reqwest is built without a default provider; the binary installs ring's.
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").expect("write");
        let auth = Auth::Basic {
            username: "bridge".into(),
            password: SecretFile::new(&path, "basic_auth.password_file"),
        };
        let http = reqwest::Client::new();
        let mut request = http
            .get("http://127.0.0.1:9/api/v1/query")
            .build()
            .expect("request");
        auth.authorize(&http, &mut request)
            .await
            .expect("authorize");
        let value = request.headers().get(AUTHORIZATION).expect("header");
        assert!(value.is_sensitive());
        // base64("bridge:s3cret")
        assert_eq!(value, "Basic YnJpZGdlOnMzY3JldA==");
    }

    #[tokio::test]
    async fn sigv4_signs_the_final_request() {
        // reqwest is built without a default provider; the binary installs ring's.
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        for (file, text) in [
            ("id", "AKIDEXAMPLE\n"),
            ("secret", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n"),
            ("token", "tok\n"),
        ] {
            std::fs::write(dir.path().join(file), text).expect("write");
        }
        let auth = Auth::SigV4(SigV4::new(&SigV4Config {
            region: "eu-west-1".into(),
            service: "aps".into(),
            access_key_id_file: dir.path().join("id"),
            secret_access_key_file: dir.path().join("secret"),
            session_token_file: Some(dir.path().join("token")),
        }));
        let http = reqwest::Client::new();
        let mut request = http
            .post("https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/query")
            .form(&[("query", "up")])
            .build()
            .expect("request");
        auth.authorize(&http, &mut request).await.expect("sign");
        let header = |n: &str| {
            request
                .headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let authorization = header("authorization");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && authorization.contains("/eu-west-1/aps/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="),
            "{authorization}"
        );
        assert_eq!(header("x-amz-security-token"), "tok");
        assert_eq!(header("x-amz-date").len(), 16);
    }
}
