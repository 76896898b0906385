//! The templates a server offers for new containers: a name a create request may ask for, the
//! LXC template it runs and that template's arguments. The first is the default, used when a
//! request names none (the original tool's form POST).

use serde::{Deserialize, Serialize};

/// One template a server offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The name requests use.
    pub name: String,
    /// The LXC template `lxc-create -t` runs.
    pub lxc_template: String,
    /// Its arguments, after `--`.
    pub args: Vec<String>,
}

/// The templates a server offers, the first the default; names are unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates(Vec<Template>);

/// Longest template name.
const MAX_NAME: usize = 32;

impl Templates {
    /// The one template `lxc_template` with `args`, named after it.
    pub fn single(lxc_template: &str, args: Vec<String>) -> Self {
        Self(vec![Template {
            name: lxc_template.into(),
            lxc_template: lxc_template.into(),
            args,
        }])
    }

    /// `templates` in order, the first the default.
    ///
    /// # Errors
    /// A sentence: none given, a name repeated, or a name not of 1–32 lowercase letters,
    /// digits, `-` or `_`.
    pub fn new(templates: Vec<Template>) -> Result<Self, String> {
        if templates.is_empty() {
            return Err("at least one template is needed".into());
        }
        for (i, t) in templates.iter().enumerate() {
            let valid = !t.name.is_empty()
                && t.name.len() <= MAX_NAME
                && t.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid {
                return Err(format!(
                    "template name {:?}: use 1-{MAX_NAME} lowercase letters, digits, - or _",
                    t.name
                ));
            }
            if templates[..i].iter().any(|o| o.name == t.name) {
                return Err(format!("template {:?} is listed twice", t.name));
            }
        }
        Ok(Self(templates))
    }

    /// The default: the first.
    pub fn default_template(&self) -> &Template {
        &self.0[0]
    }

    /// Every name, the default first.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|t| t.name.as_str()).collect()
    }

    /// The template a request asks for: `asked`, or the default when it names none.
    ///
    /// # Errors
    /// A sentence naming the templates offered, when `asked` is not one of them.
    pub fn resolve(&self, asked: Option<&str>) -> Result<&Template, String> {
        let Some(name) = asked else {
            return Ok(self.default_template());
        };
        self.0.iter().find(|t| t.name == name).ok_or_else(|| {
            format!(
                "template {name:?} is not offered here; allowed: {}",
                self.names().join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, lxc: &str) -> Template {
        Template {
            name: name.into(),
            lxc_template: lxc.into(),
            args: vec![],
        }
    }

    #[test]
    fn the_first_is_the_default_and_others_resolve_by_name() {
        let ts = Templates::new(vec![t("busybox", "busybox"), t("alt", "busybox")]).unwrap();
        assert_eq!(ts.resolve(None).unwrap().name, "busybox");
        assert_eq!(ts.resolve(Some("alt")).unwrap().name, "alt");
        let err = ts.resolve(Some("ubuntu")).unwrap_err();
        assert!(
            err.contains("\"ubuntu\"") && err.contains("busybox, alt"),
            "{err}"
        );
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        assert!(Templates::new(vec![]).is_err());
        let twice = Templates::new(vec![t("a", "busybox"), t("a", "busybox")]).unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        for bad in ["", "Busybox", "a b", "x/y", &"a".repeat(33)] {
            assert!(Templates::new(vec![t(bad, "busybox")]).is_err(), "{bad:?}");
        }
    }
}
