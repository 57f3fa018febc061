//! `beepmyphone listen --exec CMD`: runs a command for each notification that arrives, with its
//! fields in environment variables (as `ntfy subscribe TOPIC COMMAND` does), so a computer can act
//! on what it receives.
//!
//! The command runs through `sh -c`, one at a time and in the order notifications arrive; `listen`
//! acknowledges a notification once its command has finished, whatever its exit status (a failure
//! is reported on stderr), so a notification whose command was cut short by a crash is sent again
//! and run again. Its standard output and error are `listen`'s.

use serde_json::Value;

/// The environment of a command, from the notification as the device receives it: `BEEP_ID`,
/// `BEEP_TITLE`, `BEEP_BODY`, `BEEP_APP`, `BEEP_PRIORITY`, `BEEP_TAGS` (comma-separated),
/// `BEEP_CLICK_URL`, `BEEP_CREATED_AT` (RFC 3339) and `BEEP_RAW` (the whole JSON).
pub fn environment(item: &Value) -> Vec<(&'static str, String)> {
    let text = |field: &str| item[field].as_str().unwrap_or("").to_owned();
    let tags = item["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        ("BEEP_ID", text("id")),
        ("BEEP_TITLE", text("title")),
        ("BEEP_BODY", text("body")),
        ("BEEP_APP", text("app")),
        ("BEEP_PRIORITY", text("priority")),
        ("BEEP_TAGS", tags),
        ("BEEP_CLICK_URL", text("clickUrl")),
        ("BEEP_CREATED_AT", text("createdAt")),
        ("BEEP_RAW", item.to_string()),
    ]
}

/// Runs `command` for `item` and waits for it; a command that cannot start or fails is reported
/// on stderr and does not stop `listen`.
pub async fn run(command: &str, item: &Value) {
    let id = item["id"].as_str().unwrap_or("?");
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(environment(item))
        .stdin(std::process::Stdio::null())
        .status()
        .await;
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("beepmyphone: --exec for {id} ended with {status}"),
        Err(e) => eprintln!("beepmyphone: --exec for {id} could not start: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_its_variable_and_missing_ones_are_empty() {
        let item = serde_json::json!({"id": "ntf_1", "title": "Door", "body": "open\nnow",
            "priority": "high", "tags": ["home", "door"], "createdAt": "2026-12-03T10:00:00Z"});
        let env: std::collections::HashMap<_, _> = environment(&item).into_iter().collect();
        assert_eq!(env["BEEP_TITLE"], "Door");
        assert_eq!(env["BEEP_BODY"], "open\nnow");
        assert_eq!(env["BEEP_TAGS"], "home,door");
        assert_eq!(env["BEEP_CLICK_URL"], "");
        assert_eq!(env["BEEP_APP"], "");
        assert!(env["BEEP_RAW"].contains("\"ntf_1\""));
    }
}
