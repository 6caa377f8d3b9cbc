//! Konsole over D-Bus (checked against Konsole 22.12).
//!
//! Every Konsole process owns `org.kde.konsole-PID` on the session bus. Its windows are
//! `/Windows/N` (`org.kde.konsole.Window`: `newSession(profile, directory)` opens a tab and
//! returns its session number, `sessionList`), its tabs `/Sessions/N`
//! (`org.kde.konsole.Session`: `runCommand`, `setTitle`, `setTabTitleFormat`, `processId` of
//! the shell, `foregroundProcessId`), and the Qt main windows `/konsole/MainWindow_K`
//! (`org.kde.KMainWindow.winId`, the X11 window id, and the `windowTitle` property). The
//! window title and `currentSession` follow the focused tab: on an unfocused window (one on
//! another desktop) `setCurrentSession` was seen to change neither. Session numbers only
//! grow within one Konsole process, so `service/number` names a tab for good.
//! Konsole has no D-Bus method to close a tab: a tab closes when its shell exits.

use zbus::Connection;

use crate::dbus::{self, DbusError};

pub const SERVICE_PREFIX: &str = "org.kde.konsole";
const WINDOW_INTERFACE: &str = "org.kde.konsole.Window";
const SESSION_INTERFACE: &str = "org.kde.konsole.Session";

#[derive(Debug, thiserror::Error)]
pub enum KonsoleError {
    #[error("no Konsole on the session bus (no org.kde.konsole* name); start konsole in the desktop session, or set service in [bridges.konsole]")]
    NoKonsole,
    #[error("Konsole {0} has no window to open a tab in")]
    NoWindow(String),
    #[error(transparent)]
    Dbus(#[from] DbusError),
}

/// One Konsole process.
#[derive(Clone)]
pub struct Konsole {
    connection: Connection,
    service: String,
}

impl Konsole {
    /// The Konsole named `service`, else the first `org.kde.konsole*` name on the bus.
    pub async fn find(
        connection: &Connection,
        service: Option<&str>,
    ) -> Result<Konsole, KonsoleError> {
        let service = match service {
            Some(service) => {
                // Fails with a "missing" error when nobody owns the name.
                dbus::owner(connection, service).await?;
                service.to_owned()
            }
            None => {
                let mut names: Vec<String> = dbus::names(connection)
                    .await?
                    .into_iter()
                    .filter(|name| name.starts_with(SERVICE_PREFIX))
                    .collect();
                names.sort();
                names.into_iter().next().ok_or(KonsoleError::NoKonsole)?
            }
        };
        Ok(Konsole::at(connection, &service))
    }

    /// The Konsole named `service`, without checking that it runs.
    pub fn at(connection: &Connection, service: &str) -> Konsole {
        Konsole {
            connection: connection.clone(),
            service: service.to_owned(),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The pid of the Konsole process.
    pub async fn pid(&self) -> Result<u32, DbusError> {
        dbus::owner_pid(&self.connection, &self.service).await
    }

    /// The window numbers, lowest first.
    pub async fn windows(&self) -> Result<Vec<u32>, KonsoleError> {
        let children = match dbus::children(&self.connection, &self.service, "/Windows").await {
            Err(error) if error.is_missing() => Vec::new(),
            other => other?,
        };
        let mut windows: Vec<u32> = children
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        windows.sort_unstable();
        Ok(windows)
    }

    /// `window` if given, else the lowest-numbered window.
    pub async fn window(&self, window: Option<u32>) -> Result<u32, KonsoleError> {
        let windows = self.windows().await?;
        match window {
            Some(wanted) if windows.contains(&wanted) => Ok(wanted),
            Some(wanted) => Err(KonsoleError::NoWindow(format!(
                "{} (window {wanted} is not among {windows:?})",
                self.service
            ))),
            None => windows
                .first()
                .copied()
                .ok_or_else(|| KonsoleError::NoWindow(self.service.clone())),
        }
    }

    async fn call<B, R>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> Result<R, DbusError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        dbus::call(
            &self.connection,
            &self.service,
            path,
            interface,
            method,
            body,
        )
        .await
    }

    /// The tabs of `window`.
    pub async fn sessions(&self, window: u32) -> Result<Vec<u32>, DbusError> {
        let list: Vec<String> = self
            .call(
                &format!("/Windows/{window}"),
                WINDOW_INTERFACE,
                "sessionList",
                &(),
            )
            .await?;
        Ok(list.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Opens a tab with the default profile.
    pub async fn new_session(&self, window: u32) -> Result<u32, DbusError> {
        let number: i32 = self
            .call(
                &format!("/Windows/{window}"),
                WINDOW_INTERFACE,
                "newSession",
                &("", ""),
            )
            .await?;
        Ok(number.max(0) as u32)
    }

    /// Brings the tab to the front of its window (the window's title follows it).
    pub async fn show_session(&self, window: u32, session: u32) -> Result<(), DbusError> {
        self.call(
            &format!("/Windows/{window}"),
            WINDOW_INTERFACE,
            "setCurrentSession",
            &(session as i32,),
        )
        .await
    }

    /// Names the tab, and keeps the name when the program in it sets its own title.
    pub async fn set_title(&self, session: u32, title: &str) -> Result<(), DbusError> {
        let path = format!("/Sessions/{session}");
        // Tab title formats expand `%` escapes; titles rein sets never contain `%`.
        let title = title.replace('%', "");
        for context in [0i32, 1] {
            self.call::<_, ()>(
                &path,
                SESSION_INTERFACE,
                "setTabTitleFormat",
                &(context, title.as_str()),
            )
            .await?;
        }
        self.call(
            &path,
            SESSION_INTERFACE,
            "setTitle",
            &(1i32, title.as_str()),
        )
        .await
    }

    /// The title shown on the tab.
    pub async fn title(&self, session: u32) -> Result<String, DbusError> {
        self.call(
            &format!("/Sessions/{session}"),
            SESSION_INTERFACE,
            "title",
            &(1i32,),
        )
        .await
    }

    /// Types `line` and Enter into the tab's shell. Only ever pass a line from
    /// [`crate::command::tab_command`].
    pub async fn run_command(&self, session: u32, line: &str) -> Result<(), DbusError> {
        self.call(
            &format!("/Sessions/{session}"),
            SESSION_INTERFACE,
            "runCommand",
            &(line,),
        )
        .await
    }

    /// The pid of the tab's shell (0 once it has exited).
    pub async fn process_id(&self, session: u32) -> Result<i32, DbusError> {
        self.call(
            &format!("/Sessions/{session}"),
            SESSION_INTERFACE,
            "processId",
            &(),
        )
        .await
    }

    /// The foreground process group of the tab's terminal (the shell's own when idle).
    pub async fn foreground_process_id(&self, session: u32) -> Result<i32, DbusError> {
        self.call(
            &format!("/Sessions/{session}"),
            SESSION_INTERFACE,
            "foregroundProcessId",
            &(),
        )
        .await
    }

    /// True while the tab is open.
    pub async fn session_exists(&self, session: u32) -> Result<bool, DbusError> {
        match self.process_id(session).await {
            Ok(_) => Ok(true),
            Err(error) if error.is_missing() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The X11 id of Konsole's main window: the only one, or else the one whose title holds
    /// `marker`. A window's title follows its focused tab, so among several windows this
    /// finds the right one only while it has focus. None when unknown, or on Wayland.
    pub async fn window_id(&self, marker: &str) -> Result<Option<u64>, DbusError> {
        let children = match dbus::children(&self.connection, &self.service, "/konsole").await {
            Err(error) if error.is_missing() => return Ok(None),
            other => other?,
        };
        let windows: Vec<String> = children
            .iter()
            .filter(|c| c.starts_with("MainWindow_"))
            .map(|c| format!("/konsole/{c}"))
            .collect();
        if let [only] = windows.as_slice() {
            return self.win_id(only).await;
        }
        for path in &windows {
            let title: zbus::zvariant::OwnedValue = self
                .call(
                    path,
                    "org.freedesktop.DBus.Properties",
                    "Get",
                    &("org.qtproject.Qt.QWidget", "windowTitle"),
                )
                .await?;
            if String::try_from(title).unwrap_or_default().contains(marker) {
                return self.win_id(path).await;
            }
        }
        Ok(None)
    }

    async fn win_id(&self, main_window: &str) -> Result<Option<u64>, DbusError> {
        let id: i64 = self
            .call(main_window, "org.kde.KMainWindow", "winId", &())
            .await?;
        Ok(u64::try_from(id).ok().filter(|id| *id != 0))
    }
}
