//! Which series a rule keeps and what it calls them: `series_filters` and `name.matches` /
//! `name.as`, with prometheus-adapter's meaning.

use regex::Regex;

/// One `series_filters` entry: keep series whose name matches (`is`) or does not (`is_not`).
#[derive(Debug, Clone)]
pub struct SeriesFilter {
    regex: Regex,
    keep_if_match: bool,
}

impl SeriesFilter {
    pub fn new(is: Option<&str>, is_not: Option<&str>) -> Result<Self, String> {
        let (pattern, keep_if_match) = match (is, is_not) {
            (Some(_), Some(_)) => return Err("set either `is` or `is_not`, not both".into()),
            (None, None) => return Err("set one of `is` or `is_not`".into()),
            (Some(p), None) => (p, true),
            (None, Some(p)) => (p, false),
        };
        let regex = Regex::new(pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
        Ok(SeriesFilter {
            regex,
            keep_if_match,
        })
    }

    pub fn keeps(&self, series_name: &str) -> bool {
        self.regex.is_match(series_name) == self.keep_if_match
    }
}

/// `name.matches` and `name.as`: turns a series name into the metric name clients ask for.
#[derive(Debug, Clone)]
pub struct MetricNamer {
    matches: Regex,
    as_template: String,
}

impl MetricNamer {
    /// Defaults as in prometheus-adapter: `matches` is `.*`; without `as`, a pattern with no
    /// capture group names the metric `$0` (the whole match) and one with a single group `$1`.
    pub fn new(matches: Option<&str>, as_template: Option<&str>) -> Result<Self, NamingError> {
        let pattern = matches.unwrap_or(".*");
        let matches = Regex::new(pattern)
            .map_err(|e| NamingError::Matches(format!("invalid regex {pattern:?}: {e}")))?;
        let groups = matches.captures_len() - 1;
        let as_template = match as_template {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => match groups {
                0 => "$0".to_string(),
                1 => "$1".to_string(),
                n => {
                    return Err(NamingError::As(format!(
                    "`matches` {pattern:?} has {n} capture groups, so `as` must say which to use"
                )))
                }
            },
        };
        check_references(&matches, &as_template).map_err(NamingError::As)?;
        Ok(MetricNamer {
            matches,
            as_template,
        })
    }

    /// The series passes the name filter (prometheus-adapter also filters on `matches`).
    pub fn keeps(&self, series_name: &str) -> bool {
        self.matches.is_match(series_name)
    }

    /// The metric name for a series, or None when the pattern does not match.
    pub fn metric_name(&self, series_name: &str) -> Option<String> {
        let caps = self.matches.captures(series_name)?;
        let mut out = String::new();
        caps.expand(&self.as_template, &mut out);
        Some(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("{0}")]
    Matches(String),
    #[error("{0}")]
    As(String),
}

/// Every `$n`, `${n}`, `$name` and `${name}` in `as` must name a group of `matches`; the
/// regex crate (like Go) would silently expand an unknown one to nothing.
fn check_references(regex: &Regex, template: &str) -> Result<(), String> {
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
            match template[i + 2..].find('}') {
                Some(end) => (&template[i + 2..i + 2 + end], i + 3 + end),
                None => return Err(format!("unterminated `${{` in `as` {template:?}")),
            }
        } else {
            let len = template[i + 1..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&template[i + 1..i + 1 + len], i + 1 + len)
        };
        if name.is_empty() {
            return Err(format!(
                "`$` without a group name in `as` {template:?} (write `$$` for a literal `$`)"
            ));
        }
        let known = match name.parse::<usize>() {
            Ok(n) => n < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|g| g == name),
        };
        if !known {
            return Err(format!(
                "`as` {template:?} refers to group `{name}`, which `matches` {:?} does not have \
                 (write `${{1}}_x` rather than `$1_x`)",
                regex.as_str()
            ));
        }
        i = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_as_uses_whole_match_or_single_group() {
        let whole = MetricNamer::new(None, None).expect("ok");
        assert_eq!(
            whole.metric_name("http_requests_total").as_deref(),
            Some("http_requests_total")
        );
        let one = MetricNamer::new(Some("^(.*)_total$"), None).expect("ok");
        assert_eq!(
            one.metric_name("http_requests_total").as_deref(),
            Some("http_requests")
        );
        assert_eq!(one.metric_name("http_requests"), None);
        assert!(!one.keeps("up"));
    }

    #[test]
    fn two_groups_need_as() {
        let err = MetricNamer::new(Some("^(a)(b)$"), None).expect_err("needs as");
        assert!(matches!(err, NamingError::As(_)));
        let ok = MetricNamer::new(Some("^(.*)_(total)$"), Some("${1}_per_second")).expect("ok");
        assert_eq!(ok.metric_name("x_total").as_deref(), Some("x_per_second"));
    }

    #[test]
    fn as_referring_to_unknown_group_is_an_error() {
        let err = MetricNamer::new(Some("^(.*)_total$"), Some("$1_per_second"))
            .expect_err("$1_per_second is group `1_per_second`");
        assert!(err.to_string().contains("1_per_second"), "{err}");
        assert!(MetricNamer::new(Some("^(?P<base>.*)_total$"), Some("${base}_rate")).is_ok());
        assert!(MetricNamer::new(Some("^(.*)$"), Some("$2")).is_err());
        assert!(MetricNamer::new(Some("^(.*)$"), Some("cost_$$_${1}")).is_ok());
    }

    #[test]
    fn bad_regex_is_reported() {
        assert!(matches!(
            MetricNamer::new(Some("("), None),
            Err(NamingError::Matches(_))
        ));
        assert!(SeriesFilter::new(Some("("), None).is_err());
    }

    #[test]
    fn filters() {
        let not_bucket = SeriesFilter::new(None, Some("_bucket$")).expect("ok");
        assert!(not_bucket.keeps("latency_sum"));
        assert!(!not_bucket.keeps("latency_bucket"));
        let only_total = SeriesFilter::new(Some("_total$"), None).expect("ok");
        assert!(only_total.keeps("a_total"));
        assert!(SeriesFilter::new(Some("a"), Some("b")).is_err());
        assert!(SeriesFilter::new(None, None).is_err());
    }
}
