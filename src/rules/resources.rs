//! Which Kubernetes resource a series label names: `resources.overrides` (label -> resource)
//! and `resources.template` (e.g. `kube_<<.Group>>_<<.Resource>>`), as in prometheus-adapter.

use std::collections::BTreeMap;

use regex::Regex;

use super::template::{Template, TemplateKind};
use crate::kube::resources::{GroupResource, ResourceInfo, ResourceMapper, StaticMapper};

#[derive(Debug, Clone)]
pub struct ResourceAssociation {
    /// label -> (group, resource) as written; normalized through the mapper when used, since
    /// the resources a cluster has can change while the rules stay.
    overrides: BTreeMap<String, (String, String)>,
    /// The template, and regexes that read it back: the group lazily (prometheus-adapter's
    /// reading) and greedily (so `kube_networking_k8s_io_ingress` finds its dotted group).
    template: Option<(Template, Vec<Regex>)>,
}

impl ResourceAssociation {
    /// Problems come back as (field, message) pairs so the caller can name the rule.
    pub fn new(
        overrides: &BTreeMap<String, crate::config::GroupResourceConfig>,
        template: Option<&str>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        for (label, gr) in overrides {
            let field = format!("resources.overrides.{label}");
            if !crate::promql::is_label_name(label) {
                problems.push((
                    field.clone(),
                    format!("{label:?} is not a Prometheus label name"),
                ));
            }
            if gr.resource.trim().is_empty() {
                problems.push((
                    format!("{field}.resource"),
                    "must name a resource, e.g. \"pod\"".into(),
                ));
            }
        }
        let template = match template {
            None => None,
            Some(src) => match Template::compile(src, TemplateKind::ResourceName)
                .and_then(|t| t.resource_label_regex().map(|re| (t, readings(re))))
            {
                Ok(pair) => Some(pair),
                Err(e) => {
                    problems.push(("resources.template".into(), e.to_string()));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ResourceAssociation {
            overrides: overrides
                .iter()
                .map(|(label, gr)| (label.clone(), (gr.group.clone(), gr.resource.clone())))
                .collect(),
            template,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.overrides.is_empty() && self.template.is_none()
    }

    /// The resource a series label stands for, if any and if the cluster has it.
    pub fn resource_for_label(
        &self,
        label: &str,
        mapper: &dyn ResourceMapper,
    ) -> Option<ResourceInfo> {
        if let Some((group, resource)) = self.overrides.get(label) {
            return lookup(mapper, group, resource);
        }
        let (_, regexes) = self.template.as_ref()?;
        regexes.iter().find_map(|regex| {
            let caps = regex.captures(label)?;
            let resource = caps.name("resource")?.as_str();
            let group = caps.name("group").map(|g| g.as_str()).unwrap_or("");
            // The template writes `.` and `-` in groups as `_`; try the group as written and
            // with `_` read back as `.`.
            lookup(mapper, group, resource)
                .or_else(|| lookup(mapper, &group.replace('_', "."), resource))
        })
    }

    /// The label that names objects of `resource`: an override, else the rendered template.
    pub fn label_for_resource(
        &self,
        resource: &ResourceInfo,
        mapper: &dyn ResourceMapper,
    ) -> Option<String> {
        for (label, (group, res)) in &self.overrides {
            if lookup(mapper, group, res)
                .is_some_and(|info| info.group_resource == resource.group_resource)
            {
                return Some(label.clone());
            }
        }
        let (template, _) = self.template.as_ref()?;
        let group = resource.group_resource.group.replace(['.', '-'], "_");
        let label = template.render_resource(&group, &resource.singular);
        crate::promql::is_label_name(&label).then_some(label)
    }

    /// Every label that names objects of `resource`: each override that maps to it (in label
    /// order), then the rendered template if it is not one of them. Resource rules match a
    /// node through any of its labels, where prometheus-adapter took one of them at random
    /// (Go map order; prometheus-adapter#398).
    pub fn labels_for_resource(
        &self,
        resource: &ResourceInfo,
        mapper: &dyn ResourceMapper,
    ) -> Vec<String> {
        let mut labels = self.override_labels_for_resource(resource, mapper);
        if let Some(label) = self.template_label_for_resource(resource) {
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
        labels
    }

    /// The overrides' labels that map to `resource`, in label order.
    pub fn override_labels_for_resource(
        &self,
        resource: &ResourceInfo,
        mapper: &dyn ResourceMapper,
    ) -> Vec<String> {
        self.overrides
            .iter()
            .filter(|(_, (group, res))| {
                lookup(mapper, group, res)
                    .is_some_and(|info| info.group_resource == resource.group_resource)
            })
            .map(|(label, _)| label.clone())
            .collect()
    }

    /// The template rendered for `resource`, if there is a template and the result is a
    /// label name.
    pub fn template_label_for_resource(&self, resource: &ResourceInfo) -> Option<String> {
        let (template, _) = self.template.as_ref()?;
        let group = resource.group_resource.group.replace(['.', '-'], "_");
        let label = template.render_resource(&group, &resource.singular);
        crate::promql::is_label_name(&label).then_some(label)
    }

    /// The label for namespaces, known without a cluster (namespaces are always there).
    pub fn namespace_label(&self) -> Option<String> {
        let builtin = StaticMapper::builtin();
        let namespaces = builtin.lookup("namespaces")?;
        self.label_for_resource(&namespaces, &builtin)
    }
}

fn readings(lazy: Regex) -> Vec<Regex> {
    let greedy = lazy.as_str().replace("(?P<group>.+?)", "(?P<group>.+)");
    match Regex::new(&greedy) {
        Ok(g) if g.as_str() != lazy.as_str() => vec![lazy, g],
        _ => vec![lazy],
    }
}

fn lookup(mapper: &dyn ResourceMapper, group: &str, resource: &str) -> Option<ResourceInfo> {
    let name = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let info = mapper.lookup(&name)?;
    // A bare name must resolve within the group the rule asked for.
    (group.is_empty()
        || info.group_resource.group == group
        || GroupResource::new(group, resource) == info.group_resource)
        .then_some(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupResourceConfig;

    fn overrides(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, GroupResourceConfig> {
        pairs
            .iter()
            .map(|(l, g, r)| {
                (
                    l.to_string(),
                    GroupResourceConfig {
                        group: g.to_string(),
                        resource: r.to_string(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn overrides_map_both_ways() {
        let mapper = StaticMapper::builtin();
        let a = ResourceAssociation::new(
            &overrides(&[("namespace", "", "namespace"), ("pod", "", "pod")]),
            None,
        )
        .expect("ok");
        let pods = a.resource_for_label("pod", &mapper).expect("pod label");
        assert_eq!(pods.group_resource.to_string(), "pods");
        assert!(a.resource_for_label("container", &mapper).is_none());
        assert_eq!(a.label_for_resource(&pods, &mapper).as_deref(), Some("pod"));
        assert_eq!(a.namespace_label().as_deref(), Some("namespace"));
    }

    #[test]
    fn template_maps_both_ways() {
        let mapper = StaticMapper::builtin();
        let a = ResourceAssociation::new(&BTreeMap::new(), Some("kube_<<.Group>>_<<.Resource>>"))
            .expect("ok");
        let dep = a
            .resource_for_label("kube_apps_deployment", &mapper)
            .expect("deployment");
        assert_eq!(dep.group_resource.to_string(), "deployments.apps");
        assert_eq!(
            a.label_for_resource(&dep, &mapper).as_deref(),
            Some("kube_apps_deployment")
        );
        let ing = mapper
            .lookup("ingresses.networking.k8s.io")
            .expect("ingress");
        assert_eq!(
            a.label_for_resource(&ing, &mapper).as_deref(),
            Some("kube_networking_k8s_io_ingress")
        );
        assert_eq!(
            a.resource_for_label("kube_networking_k8s_io_ingress", &mapper)
                .map(|i| i.group_resource.to_string())
                .as_deref(),
            Some("ingresses.networking.k8s.io")
        );
        assert!(a.resource_for_label("kube_apps_widget", &mapper).is_none());

        let bare = ResourceAssociation::new(&BTreeMap::new(), Some("<<.Resource>>")).expect("ok");
        assert_eq!(
            bare.resource_for_label("pod", &mapper)
                .map(|i| i.group_resource.to_string())
                .as_deref(),
            Some("pods")
        );
        assert_eq!(bare.namespace_label().as_deref(), Some("namespace"));
    }

    #[test]
    fn every_label_of_a_resource() {
        let mapper = StaticMapper::builtin();
        let nodes = mapper.lookup("nodes").expect("nodes");
        let a = ResourceAssociation::new(
            &overrides(&[
                ("node", "", "node"),
                ("instance", "", "nodes"),
                ("pod", "", "pod"),
            ]),
            Some("<<.Resource>>"),
        )
        .expect("ok");
        assert_eq!(
            a.labels_for_resource(&nodes, &mapper),
            vec!["instance".to_string(), "node".to_string()],
            "overrides in label order; the template's `node` is already there"
        );
        let only_template =
            ResourceAssociation::new(&BTreeMap::new(), Some("kube_<<.Resource>>")).expect("ok");
        assert_eq!(
            only_template.labels_for_resource(&nodes, &mapper),
            vec!["kube_node".to_string()]
        );
        let none = ResourceAssociation::new(&overrides(&[("pod", "", "pod")]), None).expect("ok");
        assert!(none.labels_for_resource(&nodes, &mapper).is_empty());
    }

    #[test]
    fn problems_name_fields() {
        let err = ResourceAssociation::new(&overrides(&[("bad-label", "", "")]), Some("<<.Nope>>"))
            .expect_err("bad");
        let fields: Vec<_> = err.iter().map(|(f, _)| f.as_str()).collect();
        assert!(
            fields.contains(&"resources.overrides.bad-label"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"resources.overrides.bad-label.resource"),
            "{fields:?}"
        );
        assert!(fields.contains(&"resources.template"), "{fields:?}");
    }
}
