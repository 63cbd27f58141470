//! Who made a request, as Kubernetes' `user.Info` describes it.

use std::collections::BTreeMap;

/// The user of anonymous requests (`user.Anonymous`).
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of anonymous requests (`user.AllUnauthenticated`).
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// Added to every authenticated user (`user.AllAuthenticated`).
pub const AUTHENTICATED: &str = "system:authenticated";
/// Allowed everything without a SubjectAccessReview (`user.SystemPrivilegedGroup`).
pub const MASTERS: &str = "system:masters";

/// An authenticated (or anonymous) user: what a SubjectAccessReview is asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    /// Empty when the authenticator gave none.
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    pub fn new(name: impl Into<String>, groups: Vec<String>) -> User {
        User {
            name: name.into(),
            groups,
            ..User::default()
        }
    }

    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> User {
        User::new(ANONYMOUS, vec![UNAUTHENTICATED.to_string()])
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Adds `system:authenticated` as `group.AuthenticatedGroupAdder` does: not to
    /// `system:anonymous`, and not when the user already names either the authenticated or
    /// the unauthenticated group.
    pub fn with_authenticated_group(mut self) -> User {
        if !self.is_anonymous() && !self.in_group(AUTHENTICATED) && !self.in_group(UNAUTHENTICATED)
        {
            self.groups.push(AUTHENTICATED.to_string());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_group_is_added_like_the_go_adder() {
        let u = User::new("alice", vec!["dev".into()]).with_authenticated_group();
        assert_eq!(u.groups, ["dev", AUTHENTICATED]);
        let twice = u.clone().with_authenticated_group();
        assert_eq!(twice.groups, u.groups, "not added twice");
        assert_eq!(
            User::anonymous().with_authenticated_group(),
            User::anonymous()
        );
        let odd = User::new("bob", vec![UNAUTHENTICATED.into()]).with_authenticated_group();
        assert_eq!(
            odd.groups,
            [UNAUTHENTICATED],
            "an unauthenticated group is kept as is"
        );
    }
}
