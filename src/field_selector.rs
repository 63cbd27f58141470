//! `fieldSelector` of the Resource Metrics API. Its kinds register no field conversion, so
//! kube-apiserver (and metrics-server) accept only `metadata.name` and `metadata.namespace`,
//! with `=`, `==` and `!=`, and answer anything else with a 400 naming the two fields.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Namespace,
}

impl Field {
    fn as_str(self) -> &'static str {
        match self {
            Field::Name => "metadata.name",
            Field::Namespace => "metadata.namespace",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub field: Field,
    /// `!=` when false.
    pub equals: bool,
    pub value: String,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    #[error("{0:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"")]
    UnknownField(String),
    #[error("invalid field selector {0:?}: expected <field>=<value>, <field>==<value> or <field>!=<value>")]
    Syntax(String),
}

/// Parses `metadata.name=web-1,metadata.namespace!=kube-system`. Values may be empty
/// (`metadata.namespace=` selects cluster-scoped objects), as in apimachinery.
pub fn parse(text: &str) -> Result<FieldSelector, FieldSelectorError> {
    let mut requirements = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (key, equals, value) = if let Some((k, v)) = term.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, true, v)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, true, v)
        } else {
            return Err(FieldSelectorError::Syntax(term.to_string()));
        };
        // No name or namespace holds `=` or `!`; refusing them keeps the grammar unambiguous.
        if value.contains(['=', '!']) {
            return Err(FieldSelectorError::Syntax(term.to_string()));
        }
        let field = match key.trim() {
            "metadata.name" => Field::Name,
            "metadata.namespace" => Field::Namespace,
            other => return Err(FieldSelectorError::UnknownField(other.to_string())),
        };
        requirements.push(Requirement {
            field,
            equals,
            value: value.trim().to_string(),
        });
    }
    Ok(FieldSelector { requirements })
}

impl FieldSelector {
    /// `metadata.name=<name>`: what a get by name selects.
    pub fn name(name: &str) -> Self {
        FieldSelector {
            requirements: vec![Requirement {
                field: Field::Name,
                equals: true,
                value: name.to_string(),
            }],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object named `name` in `namespace` ("" for cluster-scoped) is selected.
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.requirements.iter().all(|r| {
            let actual = match r.field {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (actual == r.value) == r.equals
        })
    }

    /// On a get by name the selector may only repeat that name (kube-apiserver's rule).
    pub fn allows_get_of(&self, name: &str) -> bool {
        self.requirements
            .iter()
            .all(|r| r.field == Field::Name && r.equals && r.value == name)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if r.equals { "=" } else { "!=" };
            write!(f, "{}{op}{}", r.field.as_str(), r.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_namespaces() {
        let s = parse("metadata.name=web-1,metadata.namespace!=kube-system").expect("parses");
        assert!(s.matches("default", "web-1"));
        assert!(!s.matches("kube-system", "web-1"));
        assert!(!s.matches("default", "web-2"));
        assert_eq!(
            s.to_string(),
            "metadata.name=web-1,metadata.namespace!=kube-system"
        );
        assert_eq!(
            parse("metadata.name==a").expect("parses").to_string(),
            "metadata.name=a"
        );
        assert!(parse("").expect("empty").is_empty());
        assert!(parse("metadata.namespace=")
            .expect("parses")
            .matches("", "node-a"));
    }

    #[test]
    fn unknown_fields_are_named_as_kube_apiserver_does() {
        assert_eq!(
            parse("spec.nodeName=node-a").unwrap_err().to_string(),
            r#""spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        assert!(matches!(
            parse("metadata.name"),
            Err(FieldSelectorError::Syntax(_))
        ));
    }

    #[test]
    fn get_by_name_allows_only_the_same_name() {
        assert!(parse("").expect("empty").allows_get_of("a"));
        assert!(parse("metadata.name=a").expect("ok").allows_get_of("a"));
        assert!(!parse("metadata.name=b").expect("ok").allows_get_of("a"));
        assert!(!parse("metadata.namespace=x")
            .expect("ok")
            .allows_get_of("a"));
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips(text in ".{0,64}") {
            if let Ok(s) = parse(&text) {
                let again = parse(&s.to_string()).expect("its own output parses");
                prop_assert_eq!(again, s);
            }
        }
    }
}
