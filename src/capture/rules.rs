//! What `capture` makes of a desktop notification: the filters of the capture config
//! ([`Rules`]) and the mapping of a [`Captured`] `Notify` call onto a relay publish ([`Publish`]).
//!
//! The mapping never produces a publish the relay refuses for its shape: every text is cut to the
//! relay's limits (`src/api/schemas.rs`) on a character boundary, control characters the relay
//! refuses are replaced, and an icon name that cannot be a tag is dropped.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Longest title the relay accepts, in characters (`PublishRequest::title`).
pub const MAX_TITLE_CHARS: usize = 256;
/// Longest body the relay accepts, in characters (`PublishRequest::body`).
pub const MAX_BODY_CHARS: usize = 4_096;
/// Longest app name the relay accepts, in characters (`PublishRequest::app`).
pub const MAX_APP_CHARS: usize = 64;
/// Longest tag the relay accepts, in characters (`PublishRequest::tags`).
pub const MAX_TAG_CHARS: usize = 32;
/// The app name used when a notification names none.
pub const FALLBACK_APP: &str = "desktop";
/// What ends a text that was cut to fit.
const ELLIPSIS: char = '…';

/// A notification's urgency (the `urgency` hint of the Desktop Notifications specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Hint byte 0.
    #[default]
    Low,
    /// Hint byte 1, and what a notification without the hint has.
    Normal,
    /// Hint byte 2.
    Critical,
}

impl Urgency {
    /// The urgency of a hint byte: 0 low, 1 normal, 2 critical; no hint, or a value the
    /// specification does not define, is normal.
    pub fn from_hint(hint: Option<u8>) -> Self {
        match hint {
            Some(0) => Self::Low,
            Some(2) => Self::Critical,
            _ => Self::Normal,
        }
    }

    /// The relay's priority name for it.
    pub fn priority(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::Critical => "critical",
        }
    }
}

/// The fields of one `Notify` call that the mapping reads, as the sender passed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// `app_name`.
    pub app_name: String,
    /// `app_icon`: an icon name, a file path or a URI, or empty.
    pub app_icon: String,
    /// `summary`: plain text.
    pub summary: String,
    /// `body`: text with the simple markup notification daemons accept.
    pub body: String,
    /// The `urgency` hint, if it was given as a byte (or another integer type).
    pub urgency: Option<u8>,
}

impl Captured {
    /// The app name the rules match and the publish carries: trimmed, without control
    /// characters, cut to the relay's limit; [`FALLBACK_APP`] if nothing is left.
    pub fn app(&self) -> String {
        let app = fit(&single_line(&self.app_name), MAX_APP_CHARS);
        if app.is_empty() {
            FALLBACK_APP.to_owned()
        } else {
            app
        }
    }

    /// The urgency the sender asked for.
    pub fn urgency(&self) -> Urgency {
        Urgency::from_hint(self.urgency)
    }
}

/// The body of `POST /api/v1/notifications` for one captured notification, as spooled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Publish {
    /// The summary (or, if it is empty, the app name).
    pub title: String,
    /// The body without markup.
    pub body: String,
    /// The sending application.
    pub app: String,
    /// `low`, `normal` or `critical`, from the urgency.
    pub priority: String,
    /// The icon name, if it makes a valid tag.
    pub tags: Vec<String>,
    /// The capture config's `targets`; absent means every device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// A key of this capture, so that a resend after a crash between the relay's 202 and the
    /// removal from the spool returns the first notification instead of a second one.
    pub idempotency_key: String,
}

/// The filters of the capture config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// App names never forwarded (lower case).
    skip_apps: Vec<String>,
    /// If not empty, the only app names forwarded (lower case).
    only_apps: Vec<String>,
    /// Notifications below this urgency are not forwarded.
    min_urgency: Urgency,
}

/// Why a notification is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its app is in `skip_apps`.
    SkippedApp,
    /// `only_apps` is set and does not name its app.
    NotOnlyApp,
    /// Its urgency is below `min_urgency`.
    BelowMinUrgency,
}

impl Skip {
    /// A few words for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::SkippedApp => "its app is in skip_apps",
            Self::NotOnlyApp => "its app is not in only_apps",
            Self::BelowMinUrgency => "its urgency is below min_urgency",
        }
    }
}

impl Rules {
    /// Rules from the config's lists (compared without regard to case or surrounding blanks).
    pub fn new(skip_apps: &[String], only_apps: &[String], min_urgency: Urgency) -> Self {
        let fold = |apps: &[String]| {
            apps.iter()
                .map(|app| app.trim().to_lowercase())
                .filter(|app| !app.is_empty())
                .collect()
        };
        Self {
            skip_apps: fold(skip_apps),
            only_apps: fold(only_apps),
            min_urgency,
        }
    }

    /// Whether `captured` is forwarded; the reason if not.
    pub fn check(&self, captured: &Captured) -> Result<(), Skip> {
        let app = captured.app().to_lowercase();
        if self.skip_apps.contains(&app) {
            return Err(Skip::SkippedApp);
        }
        if !self.only_apps.is_empty() && !self.only_apps.contains(&app) {
            return Err(Skip::NotOnlyApp);
        }
        if captured.urgency() < self.min_urgency {
            return Err(Skip::BelowMinUrgency);
        }
        Ok(())
    }
}

/// The publish for `captured`, for `targets` (none: every device).
pub fn to_publish(captured: &Captured, targets: Option<&[String]>, key: String) -> Publish {
    let app = captured.app();
    let title = fit(&single_line(&captured.summary), MAX_TITLE_CHARS);
    let title = if title.is_empty() { app.clone() } else { title };
    Publish {
        title,
        body: fit(&multi_line(&strip_markup(&captured.body)), MAX_BODY_CHARS),
        app,
        priority: captured.urgency().priority().to_owned(),
        tags: icon_tag(&captured.app_icon).into_iter().collect(),
        targets: targets.map(<[String]>::to_vec),
        idempotency_key: key,
    }
}

/// The icon as a tag: an icon name (not a path or URI) cleaned to the relay's tag rule (1–32
/// characters, no control characters); `None` if nothing usable is left.
pub fn icon_tag(icon: &str) -> Option<String> {
    let icon = icon.trim();
    if icon.is_empty() || icon.contains('/') || icon.contains(':') {
        return None; // a path (`/usr/share/…`, `./x.png`) or a URI (`file://…`)
    }
    let tag = fit_cut(&single_line(icon), MAX_TAG_CHARS);
    (!tag.is_empty()).then_some(tag)
}

/// `text` without the markup notification daemons accept (`<b>`, `<i>`, `<u>`, `<a href>`,
/// `<img>`, closing tags too) and with the XML entities decoded. What is not one of those tags
/// stays as written (`a < b`, `<3`, `<script>`).
pub fn strip_markup(text: &str) -> String {
    static TAGS: OnceLock<Option<Regex>> = OnceLock::new();
    static ENTITIES: OnceLock<Option<Regex>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| Regex::new(r"(?i)</?(?:b|i|u|a|img)(?:\s[^<>]*)?/?>").ok());
    let entities = ENTITIES.get_or_init(|| {
        Regex::new(r"&(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});").ok()
    });
    // The patterns are constants: they always compile, and if not, the text is kept as it is.
    let stripped = match tags {
        Some(tags) => tags.replace_all(text, ""),
        None => text.into(),
    };
    match entities {
        Some(entities) => entities
            .replace_all(&stripped, |caps: &regex::Captures<'_>| {
                decode_entity(&caps[0])
            })
            .into_owned(),
        None => stripped.into_owned(),
    }
}

/// One entity (`&amp;`, `&#233;`, `&#xE9;`) as text; one that names no character stays as is.
fn decode_entity(entity: &str) -> String {
    let inner = &entity[1..entity.len() - 1];
    let named = match inner {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    };
    let numeric = || {
        let code = match inner.strip_prefix("#x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => inner.strip_prefix('#')?.parse().ok()?,
        };
        char::from_u32(code)
    };
    named
        .or_else(numeric)
        .map_or_else(|| entity.to_owned(), String::from)
}

/// One line: control characters (newlines too) become spaces, runs of blanks stay; trimmed.
fn single_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.trim().to_owned()
}

/// Several lines: control characters other than newline, carriage return and tab are dropped;
/// trimmed.
fn multi_line(text: &str) -> String {
    let kept: String = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .collect();
    kept.trim().to_owned()
}

/// `text` cut to at most `max` characters, the last one then an ellipsis.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push(ELLIPSIS);
    cut
}

/// `text` cut to at most `max` characters, without an ellipsis (for tags, which are names).
fn fit_cut(text: &str, max: usize) -> String {
    let cut: String = text.chars().take(max).collect();
    cut.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(app: &str, summary: &str, body: &str) -> Captured {
        Captured {
            app_name: app.into(),
            summary: summary.into(),
            body: body.into(),
            ..Captured::default()
        }
    }

    #[test]
    fn a_notification_maps_onto_a_publish() {
        let c = Captured {
            app_name: "  Thunderbird ".into(),
            app_icon: "mail-unread".into(),
            summary: "New mail".into(),
            body: "From <b>Ann</b>: lunch?".into(),
            urgency: Some(2),
        };
        let targets = vec!["dev_01J0000000000000000000000A".to_owned()];
        let p = to_publish(&c, Some(&targets), "cap-1".into());
        assert_eq!(
            p,
            Publish {
                title: "New mail".into(),
                body: "From Ann: lunch?".into(),
                app: "Thunderbird".into(),
                priority: "critical".into(),
                tags: vec!["mail-unread".into()],
                targets: Some(targets),
                idempotency_key: "cap-1".into(),
            }
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["idempotencyKey"], "cap-1");
        let untargeted = to_publish(&c, None, "cap-2".into());
        let json = serde_json::to_value(&untargeted).unwrap();
        assert!(json.get("targets").is_none(), "{json}");
    }

    #[test]
    fn urgency_maps_onto_priority() {
        assert_eq!(Urgency::from_hint(Some(0)).priority(), "low");
        assert_eq!(Urgency::from_hint(Some(1)).priority(), "normal");
        assert_eq!(Urgency::from_hint(Some(2)).priority(), "critical");
        assert_eq!(Urgency::from_hint(None).priority(), "normal");
        assert_eq!(Urgency::from_hint(Some(7)).priority(), "normal");
        assert!(Urgency::Low < Urgency::Normal && Urgency::Normal < Urgency::Critical);
    }

    #[test]
    fn an_empty_app_or_summary_falls_back() {
        let p = to_publish(&captured(" \n ", "", "text"), None, "k".into());
        assert_eq!(p.app, FALLBACK_APP);
        assert_eq!(p.title, FALLBACK_APP);
        let p = to_publish(&captured("Chat", "  ", ""), None, "k".into());
        assert_eq!((p.title.as_str(), p.body.as_str()), ("Chat", ""));
    }

    #[test]
    fn markup_is_stripped_and_text_kept() {
        assert_eq!(
            strip_markup(
                r#"<b>bold</b> <i>it</i> <U>under</U> <a href="https://x.example/?a=1&amp;b=2">link</a>"#
            ),
            "bold it under link"
        );
        assert_eq!(
            strip_markup(r#"pic: <img src="/tmp/a.png" alt="a"/> done"#),
            "pic:  done"
        );
        assert_eq!(strip_markup("a < b && c > d"), "a < b && c > d");
        assert_eq!(
            strip_markup("<3 <script>x</script>"),
            "<3 <script>x</script>"
        );
        assert_eq!(
            strip_markup(
                "Tom &amp; Jerry &lt;b&gt; &quot;q&quot; &apos;s&apos; &#233; &#xE9; &bogus;"
            ),
            "Tom & Jerry <b> \"q\" 's' é é &bogus;"
        );
        assert_eq!(
            strip_markup("&#xD800;"),
            "&#xD800;",
            "a surrogate names no character"
        );
    }

    #[test]
    fn control_characters_become_what_the_relay_accepts() {
        let p = to_publish(
            &captured(
                "a\u{7}pp",
                "two\nlines\ttab",
                "line 1\nline 2\t\u{1b}[0m\u{0}",
            ),
            None,
            "k".into(),
        );
        assert_eq!(p.app, "a pp");
        assert_eq!(p.title, "two lines tab");
        assert_eq!(p.body, "line 1\nline 2\t[0m");
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let summary = "é".repeat(300);
        let body = "ü".repeat(5_000);
        let app = "ß".repeat(80);
        let p = to_publish(&captured(&app, &summary, &body), None, "k".into());
        assert_eq!(p.title.chars().count(), MAX_TITLE_CHARS);
        assert!(p.title.ends_with(ELLIPSIS));
        assert_eq!(p.body.chars().count(), MAX_BODY_CHARS);
        assert_eq!(p.app.chars().count(), MAX_APP_CHARS);
        let exact = "x".repeat(MAX_TITLE_CHARS);
        assert_eq!(
            to_publish(&captured("a", &exact, ""), None, "k".into()).title,
            exact
        );
    }

    #[test]
    fn icon_names_become_tags_and_paths_do_not() {
        assert_eq!(
            icon_tag("dialog-information").as_deref(),
            Some("dialog-information")
        );
        assert_eq!(icon_tag(" firefox \n").as_deref(), Some("firefox"));
        assert_eq!(icon_tag(""), None);
        assert_eq!(icon_tag("/usr/share/icons/a.png"), None);
        assert_eq!(icon_tag("file:///tmp/a.png"), None);
        assert_eq!(icon_tag("icons/a.png"), None);
        assert_eq!(icon_tag("\u{1}\u{2}"), None);
        let long = icon_tag(&"n".repeat(40)).unwrap();
        assert_eq!(long.chars().count(), MAX_TAG_CHARS);
    }

    #[test]
    fn rules_skip_only_and_min_urgency() {
        let rules = Rules::new(&["Spammy".into(), " ".into()], &[], Urgency::Low);
        assert_eq!(
            rules.check(&captured("spammy", "x", "")),
            Err(Skip::SkippedApp)
        );
        assert_eq!(
            rules.check(&captured(" SPAMMY ", "x", "")),
            Err(Skip::SkippedApp)
        );
        assert_eq!(rules.check(&captured("chat", "x", "")), Ok(()));

        let only = Rules::new(&[], &["Chat".into(), "Mail".into()], Urgency::Low);
        assert_eq!(only.check(&captured("chat", "x", "")), Ok(()));
        assert_eq!(
            only.check(&captured("browser", "x", "")),
            Err(Skip::NotOnlyApp)
        );
        // An unnamed app is "desktop", which only_apps may name.
        let desktop = Rules::new(&[], &["Desktop".into()], Urgency::Low);
        assert_eq!(desktop.check(&captured("", "x", "")), Ok(()));

        let both = Rules::new(&["chat".into()], &["chat".into()], Urgency::Low);
        assert_eq!(
            both.check(&captured("chat", "x", "")),
            Err(Skip::SkippedApp)
        );

        let normal = Rules::new(&[], &[], Urgency::Normal);
        let mut low = captured("chat", "x", "");
        low.urgency = Some(0);
        assert_eq!(normal.check(&low), Err(Skip::BelowMinUrgency));
        low.urgency = None;
        assert_eq!(normal.check(&low), Ok(()), "no hint is normal");
        let critical = Rules::new(&[], &[], Urgency::Critical);
        assert_eq!(critical.check(&low), Err(Skip::BelowMinUrgency));
        low.urgency = Some(2);
        assert_eq!(critical.check(&low), Ok(()));
    }

    #[test]
    fn urgency_names_parse_from_the_config() {
        #[derive(Deserialize)]
        struct T {
            u: Urgency,
        }
        let t: T = serde_json::from_str(r#"{"u":"critical"}"#).unwrap();
        assert_eq!(t.u, Urgency::Critical);
        assert!(serde_json::from_str::<T>(r#"{"u":"high"}"#).is_err());
    }
}
