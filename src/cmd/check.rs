//! `check FILE`: every problem in a rules file, one line each, with rule and field.

use std::path::Path;

use crate::rules::{load_file, LoadError, Overrides};

/// Returns the process exit code: 0 when the file is good, 1 when it has problems.
pub fn run(path: &Path) -> i32 {
    match load_file(path, &Overrides::default()) {
        Ok(rules) => {
            println!(
                "{}: ok ({} custom rule(s), {} external rule(s))",
                path.display(),
                rules.custom.len(),
                rules.external.len()
            );
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
