//! The names Kubernetes and the metrics APIs accept: one validator each, shared by the request
//! parser, the label selector parser and discovery.

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`: one dot-free part of an RFC 1123 name, any length.
fn is_dns_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// A lowercase RFC 1123 label, at most 63 characters (namespaces).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_part(s)
}

/// A lowercase RFC 1123 subdomain as Kubernetes checks it: dot-separated parts, at most 253
/// characters in all (no per-part limit, as in apimachinery's `IsDNS1123Subdomain`). Object
/// names and label key prefixes.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_part)
}

/// A metric name that can travel as one URL path segment, as the metrics APIs route it (no
/// `/`, `%`, `?` or `#`, not `.` or `..`, printable), at most 1024 bytes. What a rule's
/// `name.as` makes of a series name must be one to be listed.
pub fn is_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 1024
        && name != "."
        && name != ".."
        && !name.contains(['/', '%', '?', '#'])
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_label("a") && is_dns_label("web-0") && is_dns_label(&"a".repeat(63)));
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        assert!(is_dns_subdomain("example.com") && is_dns_subdomain("web-0"));
        assert!(
            is_dns_subdomain(&"a".repeat(253)),
            "no per-part limit, as in Kubernetes"
        );
        for bad in ["", ".a", "a.", "a..b", "A.b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad:?}");
        }
    }
}
