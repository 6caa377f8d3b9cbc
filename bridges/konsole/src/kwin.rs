//! Moving a window to a virtual desktop through KWin's scripting over D-Bus.
//!
//! KWin offers no D-Bus method to move a window; it runs JavaScript instead:
//! `/Scripting org.kde.kwin.Scripting.loadScript(path, name)` returns a script number, and
//! `org.kde.kwin.Script.run` on its object starts it — `/N` in KWin 5, `/Scripting/ScriptN`
//! in KWin 6. The script API differs between the two: KWin 5 lists windows with
//! `workspace.clientList()` and moves one with `client.desktop = N` (1-based); KWin 6 has
//! `workspace.windowList()` and `window.desktops = [workspace.desktops[N - 1]]`. The version
//! comes from `/KWin org.kde.KWin.supportInformation` ("KWin version: 5.27.5").
//!
//! A script cannot return a value, so it reports with `callDBus` to this process: the method
//! `Placed(token, outcome, desktop)` of [`REPLY_INTERFACE`] at [`REPLY_PATH`] on the bridge's
//! own connection. Replies are accepted only from the connection that owns `org.kde.KWin`.
//! Every run is bounded by a deadline and the script is unloaded afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use zbus::Connection;

use crate::dbus::{self, DbusError};

pub const KWIN_SERVICE: &str = "org.kde.KWin";
/// Where KWin scripts report back, on the bridge's connection.
pub const REPLY_PATH: &str = "/org/rein/KonsoleBridge";
pub const REPLY_INTERFACE: &str = "org.rein.KonsoleBridge1";
/// How long a script may take to report.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(5);

/// Which scripting API the running KWin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KWinApi {
    /// KWin 5: `workspace.clientList()`, `client.desktop = N`, scripts at `/N`.
    V5,
    /// KWin 6: `workspace.windowList()`, `window.desktops = [...]`, scripts at
    /// `/Scripting/ScriptN`.
    V6,
}

impl KWinApi {
    /// From `supportInformation`'s "KWin version: X.Y.Z" line; None when absent.
    pub fn from_support_information(text: &str) -> Option<KWinApi> {
        let version = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("KWin version:"))?;
        let major: u32 = version.trim().split('.').next()?.parse().ok()?;
        Some(if major >= 6 { KWinApi::V6 } else { KWinApi::V5 })
    }

    /// The script object paths to try, this version's first.
    fn script_paths(self, number: i32) -> [String; 2] {
        let v5 = format!("/{number}");
        let v6 = format!("/Scripting/Script{number}");
        match self {
            KWinApi::V5 => [v5, v6],
            KWinApi::V6 => [v6, v5],
        }
    }
}

/// Which window to move where, and whom to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Matches the reply to this run.
    pub token: String,
    /// The X11 window id, when known (0: unknown, e.g. on Wayland).
    pub window_id: u64,
    /// The pid of the window's process: the fallback match.
    pub pid: u32,
    /// Text the window's caption contains (the tab title), to pick among the pid's windows.
    pub marker: String,
    /// 1-based.
    pub desktop: u32,
    /// The unique bus name of the connection that serves [`REPLY_PATH`].
    pub reply_to: String,
}

/// What the script found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// The window is on `desktop` now.
    Moved { desktop: u32 },
    /// No window matched.
    NoWindow,
    /// KWin has only `count` desktops.
    NoSuchDesktop { count: u32 },
    /// The script failed.
    ScriptError(String),
}

impl Placed {
    /// The outcome a script reported through `Placed(token, outcome, value)`.
    pub fn from_reply(outcome: &str, value: &str) -> Placed {
        let number = value.parse().unwrap_or(0);
        match outcome {
            "moved" => Placed::Moved { desktop: number },
            "no-window" => Placed::NoWindow,
            "no-desktop" => Placed::NoSuchDesktop { count: number },
            _ => Placed::ScriptError(format!("{outcome}: {value}")),
        }
    }
}

/// The script that moves the window of `placement`, in the dialect of `api`.
pub fn placement_script(api: KWinApi, placement: &Placement) -> String {
    // serde_json writes valid JavaScript string literals: quotes and backslashes escaped.
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let reply = format!(
        "function reply(outcome, value) {{\n        callDBus({}, {}, {}, \"Placed\", {}, String(outcome), String(value));\n    }}",
        quote(&placement.reply_to),
        quote(REPLY_PATH),
        quote(REPLY_INTERFACE),
        quote(&placement.token),
    );
    let (list, count, moved) = match api {
        KWinApi::V5 => (
            "workspace.clientList()",
            "workspace.desktops",
            format!(
                "target.desktop = {desktop};\n        reply(\"moved\", target.desktop);",
                desktop = placement.desktop
            ),
        ),
        KWinApi::V6 => (
            "workspace.windowList()",
            "workspace.desktops.length",
            format!(
                "target.desktops = [workspace.desktops[{index}]];\n        var now = target.desktops.length === 1 ? target.desktops[0] : null;\n        var number = 0;\n        for (var d = 0; now !== null && d < workspace.desktops.length; d++) {{\n            if (workspace.desktops[d].id === now.id) {{ number = d + 1; }}\n        }}\n        reply(\"moved\", number);",
                index = placement.desktop - 1
            ),
        ),
    };
    let version = match api {
        KWinApi::V5 => 5,
        KWinApi::V6 => 6,
    };
    format!(
        r#"// rein Konsole bridge: move one window to virtual desktop {desktop} (KWin {version} API).
(function () {{
    var wanted = {{ windowId: {window_id}, pid: {pid}, marker: {marker}, desktop: {desktop} }};
    {reply}
    // The window with the X11 id; else the pid's window whose caption has the marker; else
    // the pid's only window.
    function pick(windows) {{
        var ofPid = [];
        for (var i = 0; i < windows.length; i++) {{
            var w = windows[i];
            if (wanted.windowId !== 0 && Number(w.windowId) === wanted.windowId) {{ return w; }}
            if (Number(w.pid) === wanted.pid) {{ ofPid.push(w); }}
        }}
        for (var j = 0; j < ofPid.length; j++) {{
            if (String(ofPid[j].caption).indexOf(wanted.marker) !== -1) {{ return ofPid[j]; }}
        }}
        return ofPid.length === 1 ? ofPid[0] : null;
    }}
    try {{
        var count = {count};
        if (wanted.desktop > count) {{ reply("no-desktop", count); return; }}
        var target = pick({list});
        if (target === null) {{ reply("no-window", 0); return; }}
        {moved}
    }} catch (error) {{
        reply("error", error);
    }}
}})();
"#,
        desktop = placement.desktop,
        window_id = placement.window_id,
        pid = placement.pid,
        marker = quote(&placement.marker),
    )
}

type Pending = Arc<Mutex<HashMap<String, (String, oneshot::Sender<Placed>)>>>;

/// The object scripts call back: hands each reply to the run waiting for its token.
struct Replies {
    pending: Pending,
}

#[zbus::interface(name = "org.rein.KonsoleBridge1")]
impl Replies {
    fn placed(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        token: String,
        outcome: String,
        value: String,
    ) {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        match pending.get(&token) {
            Some((kwin, _)) if *kwin == sender => {
                if let Some((_, reply)) = pending.remove(&token) {
                    let _ = reply.send(Placed::from_reply(&outcome, &value));
                }
            }
            _ => {
                tracing::warn!("ignored a placement reply from {sender} for unknown run {token:?}")
            }
        }
    }
}

/// KWin over D-Bus, for one bridge connection.
pub struct KWin {
    connection: Connection,
    pending: Pending,
    api: Option<KWinApi>,
    runs: AtomicU64,
    script_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KWinError {
    #[error(transparent)]
    Dbus(#[from] DbusError),
    #[error("KWin refused to load the script {0} (loadScript returned -1)")]
    NotLoaded(String),
    #[error("the KWin script did not report within {0:?}; see KWin's log")]
    NoReply(Duration),
    #[error("cannot write the KWin script {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl KWin {
    /// Serves [`REPLY_PATH`] on `connection`.
    pub async fn new(connection: &Connection) -> zbus::Result<KWin> {
        let pending: Pending = Arc::default();
        connection
            .object_server()
            .at(
                REPLY_PATH,
                Replies {
                    pending: pending.clone(),
                },
            )
            .await?;
        let script_dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        Ok(KWin {
            connection: connection.clone(),
            pending,
            api: None,
            runs: AtomicU64::new(0),
            script_dir,
        })
    }

    /// The scripting API of the running KWin (asked once, then remembered).
    pub async fn api(&mut self) -> Result<KWinApi, KWinError> {
        if let Some(api) = self.api {
            return Ok(api);
        }
        let info: String = dbus::call(
            &self.connection,
            KWIN_SERVICE,
            "/KWin",
            "org.kde.KWin",
            "supportInformation",
            &(),
        )
        .await?;
        let api = KWinApi::from_support_information(&info).unwrap_or_else(|| {
            tracing::warn!("KWin's supportInformation names no version; assuming the KWin 6 API");
            KWinApi::V6
        });
        self.api = Some(api);
        Ok(api)
    }

    /// A token no earlier run of this process used, also unique among bridges on one KWin.
    pub fn next_token(&self) -> String {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{}-{run}-{nanos}", std::process::id())
    }

    /// The unique name scripts reply to.
    pub fn reply_to(&self) -> String {
        self.connection
            .unique_name()
            .map(|name| name.to_string())
            .unwrap_or_default()
    }

    /// Runs the placement script and returns what it reported.
    pub async fn place(&mut self, placement: &Placement) -> Result<Placed, KWinError> {
        let api = self.api().await?;
        let kwin = dbus::owner(&self.connection, KWIN_SERVICE).await?;
        let name = format!("rein-konsole-{}", placement.token);
        let path = self.script_dir.join(format!("{name}.js"));
        write_private(&path, &placement_script(api, placement)).map_err(|source| {
            KWinError::Write {
                path: path.clone(),
                source,
            }
        })?;
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(placement.token.clone(), (kwin, sender));
        }
        let outcome = self.load_and_run(api, &path, &name, receiver).await;
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&placement.token);
        }
        let unloaded: Result<bool, DbusError> = dbus::call(
            &self.connection,
            KWIN_SERVICE,
            "/Scripting",
            "org.kde.kwin.Scripting",
            "unloadScript",
            &(name.as_str(),),
        )
        .await;
        if let Err(error) = unloaded {
            tracing::warn!("could not unload KWin script {name}: {error}");
        }
        let _ = std::fs::remove_file(&path);
        outcome
    }

    async fn load_and_run(
        &self,
        api: KWinApi,
        path: &std::path::Path,
        name: &str,
        receiver: oneshot::Receiver<Placed>,
    ) -> Result<Placed, KWinError> {
        let file = path.to_string_lossy();
        let number: i32 = dbus::call(
            &self.connection,
            KWIN_SERVICE,
            "/Scripting",
            "org.kde.kwin.Scripting",
            "loadScript",
            &(file.as_ref(), name),
        )
        .await?;
        if number < 0 {
            return Err(KWinError::NotLoaded(name.to_owned()));
        }
        let mut last_error = None;
        for object in api.script_paths(number) {
            let run: Result<(), DbusError> = dbus::call(
                &self.connection,
                KWIN_SERVICE,
                &object,
                "org.kde.kwin.Script",
                "run",
                &(),
            )
            .await;
            match run {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        if let Some(error) = last_error {
            return Err(error.into());
        }
        match tokio::time::timeout(SCRIPT_DEADLINE, receiver).await {
            Ok(Ok(placed)) => Ok(placed),
            _ => Err(KWinError::NoReply(SCRIPT_DEADLINE)),
        }
    }
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        Placement {
            token: "77-0-5".into(),
            window_id: 10485767,
            pid: 4242,
            marker: "ask k3x9ab".into(),
            desktop: 3,
            reply_to: ":1.42".into(),
        }
    }

    #[test]
    fn the_version_comes_from_support_information() {
        let text = "KWin Support Information:\n\nVersion\n=======\nKWin version: 5.27.5\nQt Version: 5.15.8\n";
        assert_eq!(KWinApi::from_support_information(text), Some(KWinApi::V5));
        let text = "Version\n=======\nKWin version: 6.0.3\n";
        assert_eq!(KWinApi::from_support_information(text), Some(KWinApi::V6));
        assert_eq!(KWinApi::from_support_information("Qt Version: 6.6\n"), None);
        assert_eq!(KWinApi::V5.script_paths(3), ["/3", "/Scripting/Script3"]);
        assert_eq!(KWinApi::V6.script_paths(3), ["/Scripting/Script3", "/3"]);
    }

    #[test]
    fn kwin6_script_uses_window_list_and_desktop_objects() {
        let script = placement_script(KWinApi::V6, &placement());
        for expected in [
            "(KWin 6 API)",
            "var wanted = { windowId: 10485767, pid: 4242, marker: \"ask k3x9ab\", desktop: 3 };",
            "callDBus(\":1.42\", \"/org/rein/KonsoleBridge\", \"org.rein.KonsoleBridge1\", \"Placed\", \"77-0-5\", String(outcome), String(value));",
            "var count = workspace.desktops.length;",
            "var target = pick(workspace.windowList());",
            // Desktop 3 is the third VirtualDesktop object.
            "target.desktops = [workspace.desktops[2]];",
            "if (workspace.desktops[d].id === now.id) { number = d + 1; }",
            "reply(\"moved\", number);",
        ] {
            assert!(script.contains(expected), "missing {expected:?} in:\n{script}");
        }
        for kwin5_only in [
            "clientList",
            "target.desktop =",
            "var count = workspace.desktops;",
        ] {
            assert!(
                !script.contains(kwin5_only),
                "KWin 5 API {kwin5_only:?} in:\n{script}"
            );
        }
    }

    #[test]
    fn kwin5_script_uses_client_list_and_desktop_numbers() {
        let script = placement_script(KWinApi::V5, &placement());
        for expected in [
            "(KWin 5 API)",
            "var count = workspace.desktops;",
            "var target = pick(workspace.clientList());",
            "target.desktop = 3;",
            "reply(\"moved\", target.desktop);",
        ] {
            assert!(
                script.contains(expected),
                "missing {expected:?} in:\n{script}"
            );
        }
        assert!(!script.contains("windowList"), "{script}");
    }

    #[test]
    fn strings_are_escaped_into_the_script() {
        let mut placement = placement();
        placement.marker = "ask \"x\"\\ </script>\n".into();
        let script = placement_script(KWinApi::V6, &placement);
        assert!(
            script.contains(r#"marker: "ask \"x\"\\ </script>\n""#),
            "{script}"
        );
    }

    /// Runs `script` after `model` (a stand-in for KWin's globals) in node, if installed;
    /// the model prints what the script did.
    fn run_in_node(model: &str, script: &str, report: &str) -> Option<String> {
        let program = format!(
            "var calls = [];\nfunction callDBus() {{ calls.push(Array.prototype.slice.call(arguments)); }}\n{model}\n{script}\n{report}\n"
        );
        let output = std::process::Command::new("node")
            .arg("-e")
            .arg(program)
            .output()
            .ok()?;
        assert!(
            output.status.success(),
            "node failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    // Shaped like KWin 6: desktops are objects, windows have a `desktops` list.
    const KWIN6_MODEL: &str = r#"
var d = [{ id: "d1" }, { id: "d2" }, { id: "d3" }, { id: "d4" }];
var other = { windowId: 5, pid: 7, caption: "other", desktops: [d[0]] };
var konsole = { windowId: 10485767, pid: 4242, caption: "ask k3x9ab — Konsole", desktops: [d[0]] };
var workspace = { desktops: d, windowList: function () { return [other, konsole]; } };
"#;
    const KWIN6_REPORT: &str = r#"console.log(JSON.stringify([calls, konsole.desktops.map(function (x) { return x.id; })]));"#;

    #[test]
    fn scripts_behave_on_a_model_kwin() {
        let Some(moved) = run_in_node(
            KWIN6_MODEL,
            &placement_script(KWinApi::V6, &placement()),
            KWIN6_REPORT,
        ) else {
            eprintln!("node is not installed; the generated scripts were not run");
            return;
        };
        assert_eq!(
            moved,
            r#"[[[":1.42","/org/rein/KonsoleBridge","org.rein.KonsoleBridge1","Placed","77-0-5","moved","3"]],["d3"]]"#
        );
        // Without the X11 id (Wayland), the pid's window whose caption has the marker.
        let mut by_pid = placement();
        by_pid.window_id = 0;
        let moved = run_in_node(
            KWIN6_MODEL,
            &placement_script(KWinApi::V6, &by_pid),
            KWIN6_REPORT,
        );
        assert_eq!(
            moved
                .as_deref()
                .and_then(|m| m.rsplit_once(','))
                .map(|(_, d)| d),
            Some(r#"["d3"]]"#)
        );
        let mut nobody = by_pid.clone();
        nobody.pid = 99;
        let missing = run_in_node(
            KWIN6_MODEL,
            &placement_script(KWinApi::V6, &nobody),
            KWIN6_REPORT,
        );
        assert!(
            missing
                .as_deref()
                .is_some_and(|m| m.contains(r#""no-window","0"]],["d1"]"#)),
            "{missing:?}"
        );
        let mut far = placement();
        far.desktop = 9;
        let far = run_in_node(
            KWIN6_MODEL,
            &placement_script(KWinApi::V6, &far),
            KWIN6_REPORT,
        );
        assert!(
            far.as_deref()
                .is_some_and(|m| m.contains(r#""no-desktop","4"]],["d1"]"#)),
            "{far:?}"
        );

        // Shaped like KWin 5: desktops are numbers.
        let kwin5 = r#"
var other = { windowId: 5, pid: 7, caption: "other", desktop: 1 };
var konsole = { windowId: 10485767, pid: 4242, caption: "ask k3x9ab — Konsole", desktop: 1 };
var workspace = { desktops: 4, clientList: function () { return [other, konsole]; } };
"#;
        let moved = run_in_node(
            kwin5,
            &placement_script(KWinApi::V5, &placement()),
            "console.log(JSON.stringify([calls, konsole.desktop, other.desktop]));",
        );
        assert_eq!(
            moved.as_deref(),
            Some(
                r#"[[[":1.42","/org/rein/KonsoleBridge","org.rein.KonsoleBridge1","Placed","77-0-5","moved","3"]],3,1]"#
            )
        );
    }

    #[test]
    fn replies_are_read() {
        assert_eq!(
            Placed::from_reply("moved", "3"),
            Placed::Moved { desktop: 3 }
        );
        assert_eq!(Placed::from_reply("no-window", "0"), Placed::NoWindow);
        assert_eq!(
            Placed::from_reply("no-desktop", "4"),
            Placed::NoSuchDesktop { count: 4 }
        );
        assert!(matches!(
            Placed::from_reply("error", "TypeError: x"),
            Placed::ScriptError(_)
        ));
    }
}
