//! kube-apiserver's audit log as the benchmarks read it: how many requests each server's user
//! made, and of what kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Requests per user, per `verb resource`.
pub type Audit = BTreeMap<String, BTreeMap<String, u64>>;

/// Writes `dir/audit-policy.yaml`, which logs the requests of `users` (metadata only) and
/// nothing else; returns kube-apiserver's flags for it and the log the requests go to.
pub fn apiserver_flags(dir: &Path, users: &[&str]) -> (Vec<String>, PathBuf) {
    let policy = dir.join("audit-policy.yaml");
    let log = dir.join("audit.log");
    let quoted: Vec<String> = users.iter().map(|u| format!("\"{u}\"")).collect();
    std::fs::write(
        &policy,
        format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
             rules:\n- level: Metadata\n  users: [{}]\n- level: None\n",
            quoted.join(", ")
        ),
    )
    .expect("audit policy");
    let flags = vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
    ];
    (flags, log)
}

/// Counts the audit log's events per user from where the last call stopped.
pub struct AuditLog {
    path: PathBuf,
    offset: u64,
}

impl AuditLog {
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog { path, offset: 0 }
    }

    /// Requests since the last call: per user, per `verb resource`. A watch is counted when
    /// it starts (it may never end), anything else when it ends.
    pub fn take(&mut self) -> Audit {
        use std::io::{Read, Seek, SeekFrom};
        let mut out = Audit::new();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return out;
        };
        let _ = file.seek(SeekFrom::Start(self.offset));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        // Only whole lines; a partly written last line is read next time.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        for line in text[..complete].lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let stage = if event["verb"] == "watch" {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            };
            if event["stage"] != stage {
                continue;
            }
            let user = event["user"]["username"].as_str().unwrap_or("?").to_owned();
            let what = format!(
                "{} {}",
                event["verb"].as_str().unwrap_or("?"),
                event["objectRef"]["resource"]
                    .as_str()
                    .or(event["requestURI"].as_str())
                    .unwrap_or("?")
            );
            *out.entry(user).or_default().entry(what).or_default() += 1;
        }
        out
    }
}
