//! The Konsole bridge: the line typed into a tab always reads back (as a shell splits it) as
//! exactly the expected words, whatever the configured binary, environment and ids; KWin's
//! version, replies and introspection XML are read without surprises; strings reach a KWin
//! script only as JSON string literals. Input: JSON with any of the fields below.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rein_bridge_konsole::command::{tab_command, TabAction};
use rein_bridge_konsole::dbus::child_nodes;
use rein_bridge_konsole::kwin::{placement_script, KWinApi, Placed, Placement};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Input {
    rein_bin: String,
    env: Vec<(String, String)>,
    action: String,
    id: String,
    support: String,
    xml: String,
    outcome: String,
    value: String,
    marker: String,
    token: String,
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Input>(data) else {
        return;
    };
    let action = match input.action.as_str() {
        "attach" => TabAction::Attach {
            worker: input.id.clone(),
        },
        "test" => TabAction::Test,
        _ => TabAction::Answer {
            ask: input.id.clone(),
        },
    };
    if let Ok(line) = tab_command(Path::new(&input.rein_bin), &input.env, &action) {
        // The answer prompt is the tab's own program (`exec`), so any way it ends closes the
        // tab; anything else is followed by `; exit`.
        let (command, head) = match action {
            TabAction::Answer { .. } => (line.as_str(), vec!["exec".to_owned()]),
            _ => (
                line.strip_suffix("; exit")
                    .expect("the tab closes after the command"),
                Vec::new(),
            ),
        };
        let words = shell_words::split(command).expect("the line splits as a shell would");
        if action == TabAction::Test {
            assert!(words.starts_with(&["echo".to_owned()]));
        } else {
            rein::store::validate_id("id", &input.id).expect("only a valid id gets a line");
            let mut expected = head;
            expected.push("env".to_owned());
            expected.extend(
                input
                    .env
                    .iter()
                    .map(|(name, value)| format!("{name}={value}")),
            );
            expected.push(input.rein_bin.clone());
            expected.extend(action.rein_args());
            assert_eq!(words, expected, "{line:?}");
        }
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }

    if let Some(api) = KWinApi::from_support_information(&input.support) {
        let placement = Placement {
            token: input.token.clone(),
            window_id: 7,
            pid: 42,
            marker: input.marker.clone(),
            desktop: 2,
            reply_to: ":1.42".into(),
        };
        let script = placement_script(api, &placement);
        for text in [&input.token, &input.marker] {
            let literal = serde_json::Value::from(text.as_str()).to_string();
            assert!(
                script.contains(&literal),
                "{text:?} is not quoted in the script"
            );
        }
    }
    match Placed::from_reply(&input.outcome, &input.value) {
        Placed::Moved { desktop } => assert_eq!(desktop, input.value.parse().unwrap_or(0)),
        Placed::NoSuchDesktop { count } => assert_eq!(count, input.value.parse().unwrap_or(0)),
        Placed::NoWindow => assert_eq!(input.outcome, "no-window"),
        Placed::ScriptError(text) => assert!(text.starts_with(&input.outcome)),
    }
    for name in child_nodes(&input.xml) {
        // Each becomes an object path element.
        assert!(!name.is_empty(), "{:?}", input.xml);
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name:?} from {:?}",
            input.xml
        );
    }
});
