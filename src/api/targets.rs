//! Who a notification is for, and device groups: the `targets` of a publish (`"all"`,
//! `"group:NAME"`, or a list of device ids and `group:NAME`s) and the group names a device may
//! belong to.
//!
//! A group ("topic", as ntfy calls it) is a name on devices: it exists while some device is in it.
//! The queue resolves a group target against the groups it holds for every device, so a publish to
//! a group no device is in is refused like one to an unknown device.

use beepmyphone_actors::model::DeviceId;
use beepmyphone_actors::queue::Targets;
use garde::Validate;
use serde::Deserialize;
use utoipa::ToSchema;

use super::ids::{is_device_id, DEVICE_ID};

/// Most explicit targets in one notification.
pub const MAX_TARGETS: usize = 1_000;
/// Most groups one device belongs to.
pub const MAX_GROUPS: usize = 32;
/// Schema pattern of a group name: 1–64 letters, digits, `-` or `_` (ntfy's topic names).
pub const GROUP_NAME: &str = "^[A-Za-z0-9_-]{1,64}$";
/// How a target names a group.
pub const GROUP_PREFIX: &str = "group:";

const GROUP_RULE: &str = "must be a group name: 1 to 64 letters, digits, - or _";
const TARGET_RULE: &str = "must be a device id (dev_…) or group:NAME";
const TARGETS_RULE: &str =
    "must be \"all\", \"group:NAME\" or a list of device ids and group:NAMEs";

/// Whether `name` is a valid group name (see [`GROUP_NAME`]).
pub fn is_group_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The rule of a device's `groups`: at most [`MAX_GROUPS`] valid names (repeats are allowed and
/// stored once).
pub fn group_list(groups: &Option<Vec<String>>, (): &()) -> garde::Result {
    let Some(groups) = groups else {
        return Ok(());
    };
    if groups.len() > MAX_GROUPS {
        return Err(garde::Error::new(format!(
            "must name at most {MAX_GROUPS} groups"
        )));
    }
    match groups.iter().find(|g| !is_group_name(g)) {
        Some(bad) => Err(garde::Error::new(format!("{bad:?} {GROUP_RULE}"))),
        None => Ok(()),
    }
}

/// The schema of a device's `groups`.
pub fn groups_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(GROUP_NAME)),
        )
        .max_items(Some(MAX_GROUPS))
        .description(Some(
            "Group names (1 to 64 letters, digits, - or _), at most 32; a publish to \
             `group:NAME` reaches every member",
        ))
        .build()
}

/// Who a notification is for: `"all"`, `"group:NAME"`, or a list of device ids and
/// `group:NAME`s.
#[derive(Debug, Clone)]
pub enum TargetsBody {
    /// A keyword: `all` or `group:NAME`.
    Keyword(String),
    /// Explicit targets (anything invalid in the list is reported by index).
    List(Vec<serde_json::Value>),
}

impl utoipa::PartialSchema for TargetsBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let group = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^group:[A-Za-z0-9_-]{1,64}$"))
        };
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["all"])),
            )
            .item(group())
            .item(
                ArrayBuilder::new()
                    .items(
                        OneOfBuilder::new()
                            .item(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .pattern(Some(DEVICE_ID)),
                            )
                            .item(group()),
                    )
                    .min_items(Some(1))
                    .max_items(Some(MAX_TARGETS)),
            )
            .description(Some(
                "`\"all\"` (the default), `\"group:NAME\"`, or a list of 1 to 1000 device ids and \
                 `group:NAME`s; a group reaches every device in it",
            ))
            .into()
    }
}

impl ToSchema for TargetsBody {}

impl<'de> Deserialize<'de> for TargetsBody {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(de)? {
            serde_json::Value::String(s) => Ok(Self::Keyword(s)),
            serde_json::Value::Array(items) => Ok(Self::List(items)),
            _ => Err(serde::de::Error::custom(TARGETS_RULE)),
        }
    }
}

/// A group target's name, if `raw` is `group:NAME` with a valid name.
fn group_target(raw: &str) -> Option<&str> {
    raw.strip_prefix(GROUP_PREFIX).filter(|g| is_group_name(g))
}

fn target_rule(value: &serde_json::Value) -> garde::Result {
    match value.as_str() {
        Some(raw) if is_device_id(raw) || group_target(raw).is_some() => Ok(()),
        _ => Err(garde::Error::new(TARGET_RULE)),
    }
}

impl Validate for TargetsBody {
    type Context = ();

    fn validate_into(
        &self,
        (): &(),
        parent: &mut dyn FnMut() -> garde::Path,
        report: &mut garde::Report,
    ) {
        match self {
            Self::Keyword(word) if word == "all" || group_target(word).is_some() => {}
            Self::Keyword(_) => report.append(parent(), garde::Error::new(TARGETS_RULE)),
            Self::List(items) => {
                if items.is_empty() {
                    report.append(
                        parent(),
                        garde::Error::new("must name at least one target, or be \"all\""),
                    );
                } else if items.len() > MAX_TARGETS {
                    report.append(
                        parent(),
                        garde::Error::new(format!("must name at most {MAX_TARGETS} targets")),
                    );
                }
                for (i, item) in items.iter().enumerate() {
                    if let Err(e) = target_rule(item) {
                        report.append(parent().join(i), e);
                    }
                }
            }
        }
    }
}

impl TargetsBody {
    /// Exactly these devices.
    pub fn devices(ids: impl IntoIterator<Item = String>) -> Self {
        Self::List(ids.into_iter().map(serde_json::Value::String).collect())
    }

    /// The group `name`.
    pub fn group(name: &str) -> Self {
        Self::Keyword(format!("{GROUP_PREFIX}{name}"))
    }

    /// The queue's targets (of a body that passed its rules: anything else is left out).
    pub(crate) fn into_targets(self) -> Targets {
        let listed = |raw: &[&str]| {
            let mut devices = Vec::new();
            let mut groups = Vec::new();
            for raw in raw {
                if let Some(group) = group_target(raw) {
                    groups.push(group.to_owned());
                } else if let Some(id) = DeviceId::parse(raw) {
                    devices.push(id);
                }
            }
            Targets::Listed { devices, groups }
        };
        match self {
            Self::Keyword(word) if word == "all" => Targets::All,
            Self::Keyword(word) => listed(&[word.as_str()]),
            Self::List(items) => {
                let raw: Vec<&str> = items.iter().filter_map(serde_json::Value::as_str).collect();
                listed(&raw)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> TargetsBody {
        serde_json::from_str(json).expect("targets")
    }

    fn errors(body: &TargetsBody) -> Vec<(String, String)> {
        body.validate()
            .err()
            .map(|report| {
                report
                    .iter()
                    .map(|(path, e)| (path.to_string(), e.message().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn group_names_follow_ntfy_topics() {
        assert!(is_group_name("alerts"));
        assert!(is_group_name("home_Automation-2"));
        assert!(is_group_name(&"x".repeat(64)));
        assert!(!is_group_name(""));
        assert!(!is_group_name(&"x".repeat(65)));
        assert!(!is_group_name("a b"));
        assert!(!is_group_name("a/b"));
        assert!(!is_group_name("é"));
    }

    #[test]
    fn a_group_list_is_bounded_and_names_the_bad_entry() {
        assert!(group_list(&None, &()).is_ok());
        assert!(group_list(&Some(vec![]), &()).is_ok());
        assert!(group_list(&Some(vec!["a".into(), "a".into()]), &()).is_ok());
        let bad = group_list(&Some(vec!["ok".into(), "no way".into()]), &()).unwrap_err();
        assert!(bad.message().contains("\"no way\""), "{}", bad.message());
        let many = Some((0..=MAX_GROUPS).map(|i| format!("g{i}")).collect());
        assert!(group_list(&many, &())
            .unwrap_err()
            .message()
            .contains("at most 32"));
    }

    #[test]
    fn every_form_of_targets_becomes_the_queues() {
        let id = "dev_01J00000000000000000000000";
        assert_eq!(parse(r#""all""#).into_targets(), Targets::All);
        assert_eq!(
            parse(r#""group:alerts""#).into_targets(),
            Targets::Listed {
                devices: vec![],
                groups: vec!["alerts".into()]
            }
        );
        let mixed = parse(&format!(r#"["{id}","group:ops"]"#));
        assert!(errors(&mixed).is_empty());
        assert_eq!(
            mixed.into_targets(),
            Targets::Listed {
                devices: vec![DeviceId::parse(id).expect("id")],
                groups: vec!["ops".into()]
            }
        );
        assert_eq!(
            TargetsBody::devices([id.to_owned()]).into_targets(),
            Targets::devices(vec![DeviceId::parse(id).expect("id")])
        );
        assert!(errors(&TargetsBody::group("ops")).is_empty());
    }

    #[test]
    fn bad_targets_are_reported_by_index() {
        assert_eq!(errors(&parse(r#""everyone""#))[0].1, TARGETS_RULE);
        assert_eq!(errors(&parse(r#""group:""#))[0].1, TARGETS_RULE);
        let list = errors(&parse(r#"["group:ok","group:bad name",5,"dev_x"]"#));
        let paths: Vec<&str> = list.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["[1]", "[2]", "[3]"]);
        assert!(errors(&parse("[]"))[0].1.contains("at least one"));
        assert!(serde_json::from_str::<TargetsBody>("5").is_err());
    }
}
