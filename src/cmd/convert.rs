//! `convert FILE`: a prometheus-adapter config (its config.yaml, a ConfigMap holding one, or
//! the Helm chart's values) as our rules file. The TOML goes to stdout (or `--output`), notes
//! and problems to stderr. The result is compiled like `check` does, so a file that `check`
//! would reject is never written without saying so.
//!
//! `convert --helm-values VALUES [FILE]`: the prometheus-adapter chart's values as this
//! project's chart values (`crate::convert::helm`), the same way: YAML to stdout (or
//! `--output`) with the notes as comments, the notes and problems on stderr too.

use std::io::Read;
use std::path::Path;

use crate::convert::helm::{convert_values, RulesInput};
use crate::convert::{convert, Conversion};
use crate::rules::RuleSet;

/// The text of `file` (`-`: stdin) and how to name it.
fn read_source(file: &Path) -> Result<(String, String), String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        Ok((text, "stdin".to_string()))
    } else {
        std::fs::read_to_string(file)
            .map(|t| (t, file.display().to_string()))
            .map_err(|e| format!("{}: {e}", file.display()))
    }
}

/// `convert --helm-values VALUES [FILE]`. Exit codes as [`run`]'s: 0 when the values and
/// their rules are good; 1 when an input could not be read or converted, or the rules have
/// problems (the values are still written).
pub fn run_helm_values(
    values: &Path,
    rules_file: Option<&Path>,
    output: Option<&Path>,
    prometheus_url: Option<&str>,
) -> i32 {
    if values == Path::new("-") && rules_file == Some(Path::new("-")) {
        eprintln!("error: only one of --helm-values and FILE can be stdin (-)");
        return 1;
    }
    let (text, source) = match read_source(values) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let rules = match rules_file.map(read_source).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let input = rules
        .as_ref()
        .map(|(text, source)| RulesInput { text, source });
    let c = match convert_values(&text, &source, input, prometheus_url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {source}: {e}");
            return 1;
        }
    };
    for note in &c.notes {
        eprintln!("note: {note}");
    }
    let r = &c.rules.config;
    let (custom, external, resource) = (
        r.rules.len(),
        r.external_rules.len(),
        r.resource_rules.is_some(),
    );
    let what = format!(
        "converted the prometheus-adapter chart values in {source}: {custom} rule(s), \
         {external} external rule(s){}; {} note(s), also written as comments",
        if resource { " and resourceRules" } else { "" },
        c.notes.len()
    );
    if custom + external == 0 && !resource {
        eprintln!(
            "error: {source}: nothing to convert: no rules (rules.default false, and no custom, \
             external or resource rules), so the adapter served no metrics"
        );
        return 1;
    }
    let code = {
        match RuleSet::compile(r) {
            Ok(_) => {
                eprintln!("{what}");
                0
            }
            Err(problems) => {
                for p in &problems.0 {
                    eprintln!("problem: {p}");
                }
                eprintln!(
                    "{what}, but the rules have {} problem(s) that the bridge would refuse; fix \
                     them in the rules value before installing",
                    problems.0.len()
                );
                1
            }
        }
    };
    match write(output, &c.yaml) {
        Ok(()) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Returns the exit code: 0 when the result is a good rules file; 1 when the input could not
/// be read or converted, when it had no rules to convert, or when the result has problems
/// (it is still written, with the problems listed on stderr).
pub fn run(file: &Path, output: Option<&Path>, prometheus_url: Option<&str>) -> i32 {
    let (text, source) = match read_source(file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let conversion = match convert(&text, &source, prometheus_url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {source}: {e}");
            return 1;
        }
    };
    report(&source, &conversion)
        .and_then(|code| write(output, &conversion.toml).map(|()| code))
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            1
        })
}

/// Notes, problems and the summary on stderr; the exit code.
fn report(source: &str, c: &Conversion) -> Result<i32, String> {
    for note in &c.notes {
        eprintln!("note: {note}");
    }
    let (custom, external) = (c.config.rules.len(), c.config.external_rules.len());
    let resource = c.config.resource_rules.is_some();
    if custom + external == 0 && !resource {
        return Err(format!(
            "{source}: nothing to convert: no rules, externalRules or resourceRules"
        ));
    }
    let what = format!(
        "converted {custom} rule(s), {external} external rule(s){} from {source}",
        if resource { " and resourceRules" } else { "" }
    );
    if c.url_is_placeholder {
        eprintln!(
            "note: [prometheus] url is a placeholder; prometheus-adapter took it from --prometheus-url, \
             so set it in the file or pass --prometheus-url to `convert` or `serve`"
        );
    }
    match RuleSet::compile(&c.config) {
        Ok(_) => {
            eprintln!("{what}");
            Ok(0)
        }
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("problem: {p}");
            }
            eprintln!(
                "{what}, but the result has {} problem(s) that `kube-metrics-bridge check` will \
                 report; fix them before serving",
                problems.0.len()
            );
            Ok(1)
        }
    }
}

fn write(output: Option<&Path>, toml: &str) -> Result<(), String> {
    match output {
        None => {
            print!("{toml}");
            Ok(())
        }
        Some(path) => {
            std::fs::write(path, toml).map_err(|e| format!("writing {}: {e}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    #[test]
    fn good_config_exits_zero_and_writes_a_file_check_accepts() {
        let input = file(
            "rules:\n- seriesQuery: 'http_requests_total{namespace!=\"\",pod!=\"\"}'\n  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}\n  name: {matches: '^(.*)_total$', as: '${1}_per_second'}\n  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)'\n",
        );
        let out = tempfile::NamedTempFile::new().expect("tmp");
        assert_eq!(run(input.path(), Some(out.path()), None), 0);
        assert_eq!(crate::cmd::check::run(out.path()), 0);
    }

    #[test]
    fn resource_rules_alone_convert() {
        let rule = "{containerQuery: 'sum by (<<.GroupBy>>) (rate(c{<<.LabelMatchers>>,container!=\"\"}[3m]))', nodeQuery: 'sum by (<<.GroupBy>>) (rate(n{<<.LabelMatchers>>}[3m]))', containerLabel: container, resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}, node: {resource: node}}}}";
        let input = file(&format!(
            "resourceRules:\n  window: 3m\n  cpu: {rule}\n  memory: {rule}\n"
        ));
        let out = tempfile::NamedTempFile::new().expect("tmp");
        assert_eq!(run(input.path(), Some(out.path()), None), 0);
        assert_eq!(crate::cmd::check::run(out.path()), 0);
        // Incomplete resourceRules are written, but they are problems.
        let input = file("resourceRules:\n  window: 3m\n");
        assert_eq!(run(input.path(), Some(out.path()), None), 1);
        let written = std::fs::read_to_string(out.path()).expect("read");
        assert!(
            written.contains("[resource_rules]\nwindow = '3m'"),
            "{written}"
        );
        assert_eq!(crate::cmd::check::run(out.path()), 1);
        // Nothing at all is still an error.
        let input = file("rules: []\n");
        assert_eq!(run(input.path(), Some(out.path()), None), 1);
    }

    #[test]
    fn problems_are_exit_one_but_the_file_is_written() {
        let input = file("rules:\n- seriesQuery: 'x{pod!=\"\"}'\n  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>})'\n");
        let out = tempfile::NamedTempFile::new().expect("tmp");
        assert_eq!(
            run(input.path(), Some(out.path()), Some("http://p:9090")),
            1
        );
        let written = std::fs::read_to_string(out.path()).expect("read");
        assert!(written.contains("[[rules]]"), "{written}");
    }

    #[test]
    fn helm_values_exit_codes_and_output() {
        let out = tempfile::NamedTempFile::new().expect("tmp");
        let values = file("replicas: 3\nprometheus: {url: http://p.monitoring.svc}\n");
        assert_eq!(
            run_helm_values(values.path(), None, Some(out.path()), None),
            0
        );
        let written = std::fs::read_to_string(out.path()).expect("read");
        let v: yaml_serde::Value = yaml_serde::from_str(&written).expect("YAML");
        assert_eq!(v["replicaCount"], yaml_serde::Value::from(3));
        assert_eq!(
            v["prometheus"]["url"].as_str(),
            Some("http://p.monitoring.svc:9090")
        );
        // A rule the bridge would refuse: written, exit 1.
        let bad = file(
            "rules:\n  default: false\n  custom:\n  - seriesQuery: 'x{namespace!=\"\",pod!=\"\"}'\n    resources: {template: '<<.Resource>>'}\n    metricsQuery: sum(<<.Sereis>>)\n",
        );
        std::fs::write(out.path(), "").expect("truncate");
        assert_eq!(run_helm_values(bad.path(), None, Some(out.path()), None), 1);
        assert!(std::fs::read_to_string(out.path())
            .expect("read")
            .contains("<<.Sereis>>"));
        // No rules at all, rules.existing without the ConfigMap, unreadable files: exit 1.
        std::fs::write(out.path(), "").expect("truncate");
        let none = file("rules: {default: false}\n");
        assert_eq!(
            run_helm_values(none.path(), None, Some(out.path()), None),
            1
        );
        assert_eq!(std::fs::read_to_string(out.path()).expect("read"), "");
        let existing = file("rules: {existing: my-rules}\n");
        assert_eq!(run_helm_values(existing.path(), None, None, None), 1);
        let config = file("externalRules:\n- seriesQuery: 'q{namespace!=\"\"}'\n  resources: {overrides: {namespace: {resource: namespace}}}\n  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)\n");
        assert_eq!(
            run_helm_values(existing.path(), Some(config.path()), Some(out.path()), None),
            0
        );
        assert_eq!(
            run_helm_values(Path::new("/nonexistent/values.yaml"), None, None, None),
            1
        );
        assert_eq!(
            run_helm_values(Path::new("-"), Some(Path::new("-")), None, None),
            1
        );
    }

    #[test]
    fn unreadable_or_unknown_keys_exit_one() {
        assert_eq!(run(Path::new("/nonexistent/adapter.yaml"), None, None), 1);
        let input = file("rules:\n- seriesQuery: x\n  metricsQuerry: y\n");
        assert_eq!(run(input.path(), None, None), 1);
    }
}
