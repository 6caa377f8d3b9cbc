//! Loops as Konsole tabs: each open loop's session shows as a tab titled `loop NAME` running
//! `rein worker attach NAME`, in one Konsole window per virtual desktop, on the loop's
//! desktop (`rein loop add --desktop`, `rein loop move`; else the bridge's `desktop`).
//!
//! - The window for desktop N is a Konsole of its own, run as a transient user unit
//!   (`rein-konsole-desktop-N.service`, or `rein.PROFILE.konsole-desktop-N.service`), so it
//!   outlives the bridge; its bus name is `org.kde.konsole-MAINPID`. KWin moves it to its
//!   desktop when it opens.
//! - Tabs are found by title in every Konsole on the bus, so a restarted bridge (or `rein
//!   loop show`) adopts the tabs that are open and never opens a second one; a loop's tab
//!   found in another desktop's window (after `rein loop move`) is ended there and opened in
//!   the right one.
//! - A tab a person closes ends only `rein worker attach`: the session keeps running. The
//!   bridge opens it again at its next look (its start, a change under `loops/`), and `rein
//!   loop show NAME` at once.
//!
//! The running bridge looks when it starts and whenever a file under `loops/` changes
//! (inotify, no polling).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use zbus::Connection;

use rein::fleet::loops::{self, LoopRecord};
use rein::fleet::UnitNames;
use rein::paths::Paths;
use rein::systemd::{Manager, ServiceSpec, ServiceType, TransientUnit};

use crate::command::{tab_command, TabAction};
use crate::dbus;
use crate::konsole::{Konsole, SERVICE_PREFIX};
use crate::kwin::{KWin, Placed, Placement};
use crate::process;

/// How long a new Konsole window may take to appear on the bus.
const WINDOW_DEADLINE: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_millis(50);
/// Variables a Konsole needs to reach the display and the session bus.
const DESKTOP_VARIABLES: &[&str] = &[
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_SESSION_TYPE",
    "DBUS_SESSION_BUS_ADDRESS",
    "HOME",
    "USER",
    "LANG",
    "PATH",
];

/// The title of a loop's tab.
pub fn tab_title(name: &str) -> String {
    format!("loop {name}")
}

/// What showing a loop's tab came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub name: String,
    pub desktop: u32,
    /// `org.kde.konsole-PID/SESSION`.
    pub tab: String,
    /// `opened`, `adopted`, or `moved` (ended in another desktop's window, opened here).
    pub how: &'static str,
}

pub struct LoopTabs {
    connection: Connection,
    manager: Manager,
    kwin: KWin,
    paths: Paths,
    rein_bin: PathBuf,
    environment: Vec<(String, String)>,
    default_desktop: Option<u32>,
}

impl LoopTabs {
    pub async fn connect(
        paths: Paths,
        rein_bin: PathBuf,
        default_desktop: Option<u32>,
    ) -> anyhow::Result<LoopTabs> {
        let connection = Connection::session()
            .await
            .context("cannot connect to the session bus for loop tabs")?;
        let kwin = KWin::new(&connection).await?;
        let manager = Manager::connect().await?;
        let environment = crate::channel::tab_environment(&paths, &rein::mailbox::current_user());
        Ok(LoopTabs {
            connection,
            manager,
            kwin,
            paths,
            rein_bin,
            environment,
            default_desktop,
        })
    }

    fn desktop_of(&self, record: &LoopRecord) -> u32 {
        record.desktop.or(self.default_desktop).unwrap_or(1)
    }

    /// Every open loop gets its tab; returns what was done for each.
    pub async fn reconcile(&mut self) -> anyhow::Result<Vec<Shown>> {
        let mut shown = Vec::new();
        for record in loops::records(&self.paths)? {
            if record.closed.is_some() {
                continue;
            }
            match self.show_record(&record).await {
                Ok(done) => shown.push(done),
                Err(error) => tracing::warn!("loop {}: no tab: {error:#}", record.name),
            }
        }
        Ok(shown)
    }

    pub async fn show(&mut self, name: &str) -> anyhow::Result<Shown> {
        let record = loops::read(&self.paths, name)?;
        self.show_record(&record).await
    }

    async fn show_record(&mut self, record: &LoopRecord) -> anyhow::Result<Shown> {
        let desktop = self.desktop_of(record);
        let title = tab_title(&record.name);
        let (window_konsole, fresh) = self.window(desktop).await?;
        let mut adopted = None;
        let mut moved = false;
        for (konsole, session) in self.tabs_titled(&title).await? {
            if konsole.service() == window_konsole.service() && adopted.is_none() {
                adopted = Some(session);
                continue;
            }
            // Another desktop's window (the loop moved), or a second tab: end it.
            moved |= konsole.service() != window_konsole.service();
            end_tab(&konsole, session).await;
        }
        let (session, how) = match adopted {
            Some(session) => (session, "adopted"),
            None => {
                let session = match fresh {
                    Some(session) => session,
                    None => {
                        let window = window_konsole.window(None).await?;
                        window_konsole.new_session(window).await?
                    }
                };
                let line = tab_command(
                    &self.rein_bin,
                    &self.environment,
                    &TabAction::Attach {
                        worker: record.name.clone(),
                    },
                )?;
                window_konsole.set_title(session, &title).await?;
                window_konsole.run_command(session, &line).await?;
                (session, if moved { "moved" } else { "opened" })
            }
        };
        if how != "adopted" {
            tracing::info!(
                "loop {}: {how} its tab {}/{session} on desktop {desktop}",
                record.name,
                window_konsole.service()
            );
        }
        Ok(Shown {
            name: record.name.clone(),
            desktop,
            tab: format!("{}/{session}", window_konsole.service()),
            how,
        })
    }

    /// Every tab titled `title` in every Konsole on the bus.
    async fn tabs_titled(&self, title: &str) -> anyhow::Result<Vec<(Konsole, u32)>> {
        let mut found = Vec::new();
        for service in dbus::names(&self.connection).await? {
            if !service.starts_with(SERVICE_PREFIX) {
                continue;
            }
            let konsole = Konsole::at(&self.connection, &service);
            let Ok(windows) = konsole.windows().await else {
                continue;
            };
            for window in windows {
                for session in konsole.sessions(window).await.unwrap_or_default() {
                    if konsole.title(session).await.ok().as_deref() == Some(title) {
                        found.push((konsole.clone(), session));
                    }
                }
            }
        }
        Ok(found)
    }

    /// The Konsole window of `desktop`, started (and moved there) if it does not run; with
    /// the session of its first tab when it was just started.
    async fn window(&mut self, desktop: u32) -> anyhow::Result<(Konsole, Option<u32>)> {
        let unit = UnitNames::new(&self.paths).konsole_window(desktop);
        if let Some(state) = self.manager.service_state(&unit).await? {
            if state.main_pid != 0 {
                let service = format!("{SERVICE_PREFIX}-{}", state.main_pid);
                if dbus::owner(&self.connection, &service).await.is_ok() {
                    return Ok((Konsole::at(&self.connection, &service), None));
                }
            }
        }
        self.manager
            .remove(&unit, rein::systemd::DEFAULT_STOP_GRACE)
            .await?;
        let program = find_program("konsole")
            .ok_or_else(|| anyhow::anyhow!("konsole is not on PATH; install Konsole"))?;
        let environment = DESKTOP_VARIABLES
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
            .collect();
        let spec = ServiceSpec {
            name: unit.clone(),
            description: format!("Konsole window of rein's loops on desktop {desktop}"),
            exec: vec![
                program.display().to_string(),
                "--separate".to_owned(),
                "--workdir".to_owned(),
                std::env::var("HOME").unwrap_or_else(|_| "/".to_owned()),
            ],
            service_type: ServiceType::Exec,
            environment,
            collect_inactive_or_failed: true,
            ..ServiceSpec::default()
        };
        self.manager
            .start_transient(&TransientUnit::service(&spec)?)
            .await?;
        let deadline = tokio::time::Instant::now() + WINDOW_DEADLINE;
        let konsole = loop {
            let pid = self
                .manager
                .service_state(&unit)
                .await?
                .map_or(0, |s| s.main_pid);
            if pid != 0 {
                let konsole = Konsole::at(&self.connection, &format!("{SERVICE_PREFIX}-{pid}"));
                if let Ok(window) = konsole.window(None).await {
                    if !konsole
                        .sessions(window)
                        .await
                        .unwrap_or_default()
                        .is_empty()
                    {
                        break konsole;
                    }
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the Konsole window for desktop {desktop} ({unit}) did not appear within {WINDOW_DEADLINE:?}"
            );
            tokio::time::sleep(STEP).await;
        };
        let window = konsole.window(None).await?;
        let first = konsole.sessions(window).await?.first().copied();
        match self.place(&konsole, desktop).await {
            Ok(Placed::Moved { .. }) => {}
            Ok(other) => tracing::warn!("the window for desktop {desktop}: {other:?}"),
            Err(error) => tracing::warn!("the window for desktop {desktop} was not moved: {error}"),
        }
        Ok((konsole, first))
    }

    async fn place(&mut self, konsole: &Konsole, desktop: u32) -> anyhow::Result<Placed> {
        let pid = konsole.pid().await?;
        // KWin manages the window a moment after the process shows it.
        let deadline = tokio::time::Instant::now() + WINDOW_DEADLINE;
        loop {
            let window_id = konsole.window_id("").await?.unwrap_or(0);
            let placement = Placement {
                token: self.kwin.next_token(),
                window_id,
                pid,
                marker: String::new(),
                desktop,
                reply_to: self.kwin.reply_to(),
            };
            let placed = self.kwin.place(&placement).await?;
            if placed != Placed::NoWindow || tokio::time::Instant::now() >= deadline {
                return Ok(placed);
            }
            tokio::time::sleep(STEP * 4).await;
        }
    }
}

/// Ends `rein worker attach` in a tab (the tab closes; the session keeps running).
async fn end_tab(konsole: &Konsole, session: u32) {
    let group = match konsole.foreground_process_id(session).await {
        Ok(pid) if pid > 1 => pid as u32,
        _ => match konsole.process_id(session).await {
            Ok(pid) if pid > 1 => pid as u32,
            _ => return,
        },
    };
    if let Err(error) = process::signal_group(group, libc::SIGTERM) {
        tracing::warn!(
            "cannot end the tab {}/{session}: {error}",
            konsole.service()
        );
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The bridge's look at loops: now, then after every change under `loops/`, for as long as
/// the bridge runs. Failures are logged and looked at again at the next change.
pub async fn watch(paths: Paths, rein_bin: PathBuf, default_desktop: Option<u32>) {
    let mut tabs = match LoopTabs::connect(paths.clone(), rein_bin, default_desktop).await {
        Ok(tabs) => tabs,
        Err(error) => {
            tracing::warn!("loop tabs are off: {error:#}");
            return;
        }
    };
    let dir: PathBuf = paths.data().loops();
    // Watching starts before the first look, so a change made meanwhile is not missed.
    let mut watcher = match rein::store::watch::Watcher::new(std::slice::from_ref(&dir)) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!("loop tabs: cannot watch {}: {error}", dir.display());
            return;
        }
    };
    // The blocking wait lives on a thread of its own, not on the runtime's blocking pool: a
    // runtime waits for its blocking tasks when it shuts down, and this one never ends, so
    // the bridge would not exit (after `--test`, or on SIGTERM).
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
    std::thread::spawn(move || {
        while watcher.wait(None).is_ok() && !wake_tx.is_closed() {
            let _ = wake_tx.try_send(());
        }
    });
    loop {
        if let Err(error) = tabs.reconcile().await {
            tracing::warn!("loop tabs: {error:#}");
        }
        match wake_rx.recv().await {
            Some(()) => {}
            None => {
                tracing::warn!("loop tabs: cannot watch {} any more", dir.display());
                return;
            }
        }
    }
}
