//! `check FILE`: every problem in a rules file, one line each, with rule and field; then the
//! warnings (things that load but are probably wrong, such as a resource rule's window that
//! disagrees with its query's range), which do not fail the check.

use std::path::Path;

use crate::rules::{load_file, LoadError, Overrides, RuleSet};

/// Returns the process exit code: 0 when the file is good (warnings or not), 1 when it has
/// problems.
pub fn run(path: &Path) -> i32 {
    match load_file(path, &Overrides::default()) {
        Ok(rules) => {
            for w in &rules.warnings {
                eprintln!("{}: warning: {w}", path.display());
            }
            println!("{}: ok ({})", path.display(), summary(&rules));
            0
        }
        Err(LoadError::File(e)) => {
            eprintln!("{e}");
            1
        }
        Err(LoadError::Problems(problems)) => {
            for p in &problems.0 {
                eprintln!("{}: {p}", path.display());
            }
            eprintln!("{}: {} problem(s)", path.display(), problems.0.len());
            1
        }
    }
}

fn summary(rules: &RuleSet) -> String {
    let mut s = format!(
        "{} custom rule(s), {} external rule(s)",
        rules.custom.len(),
        rules.external.len()
    );
    if rules.resource_rules.is_some() {
        s.push_str(", resource rules for cpu and memory");
    }
    if !rules.warnings.is_empty() {
        s.push_str(&format!(", {} warning(s)", rules.warnings.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_do_not_fail_the_check_and_are_counted() {
        let f = tempfile::NamedTempFile::new().expect("tmp");
        let text = crate::rules::resource_metrics::tests::EXAMPLE
            .replace("window = \"2m\"", "window = \"5m\"");
        std::fs::write(f.path(), &text).expect("write");
        assert_eq!(run(f.path()), 0);
        let rules = load_file(f.path(), &Overrides::default()).expect("loads");
        assert_eq!(
            summary(&rules),
            "0 custom rule(s), 0 external rule(s), resource rules for cpu and memory, 2 warning(s)"
        );
        std::fs::write(
            f.path(),
            text.replace("container_label = \"container\"", ""),
        )
        .expect("write");
        assert_eq!(run(f.path()), 1);
    }
}
