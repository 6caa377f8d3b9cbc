//! [`KonsoleChannel`]: the [`Channel`] the engine drives. An ask becomes a Konsole tab titled
//! `ask ID` running `rein answer --interactive ID` (or `rein worker attach WORKER`), in a
//! window KWin moves to the worker's desktop; a resolution closes the tab if it is still
//! open. Answers never pass through the bridge: the prompt in the tab writes them to the
//! mailbox itself, as `konsole:USER`.
//!
//! The session bus can go away (the user's dbus-daemon restarts) and take Konsole's and KWin's
//! names with it. A task watches the bridge's connection; when it closes, the [`Link`] goes
//! down (STATUS says "reconnecting"), the task connects again with a growing wait (at most
//! [`RECONNECT_MAX`]), and the next call uses the new connection, with KWin's reply object
//! served on it. The link is also raised whenever a Konsole or KWin appears on the bus; on
//! each the engine asks [`Channel::still_posted`] about pending asks, and a tab whose Konsole
//! is no longer on the bus is opened again in the Konsole there is now.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::watch;

use rein::bridge::engine::BridgeContext;
use rein::bridge::{Channel, Inbound, Link, PostRef, SendError};
use rein::mailbox::{Ask, Resolution};
use rein::notes::Note;
use rein::paths::Paths;
use zbus::Connection;

use crate::command::{check_shell_safe, tab_command, TabAction, IDENTITY_VARIABLE};
use crate::config::{check_route, check_service_name, KonsoleConfig};
use crate::dbus::DbusError;
use crate::konsole::{Konsole, KonsoleError, SERVICE_PREFIX};
use crate::kwin::{KWin, KWinError, Placed, Placement, KWIN_SERVICE};
use crate::process;

/// How long to wait for a signalled tab to close.
const SETTLE_DEADLINE: Duration = Duration::from_secs(5);
const SETTLE_STEP: Duration = Duration::from_millis(50);
/// How long to look for the new tab's window among several Konsole windows.
const WINDOW_DEADLINE: Duration = Duration::from_secs(1);
/// How long a new tab's shell may take to start the program typed into it.
const START_DEADLINE: Duration = Duration::from_secs(2);
/// How long an answer prompt gets to end by itself once its ask is resolved (it notices at
/// once, records its journal line and exits) before the bridge tells it to.
const PROMPT_GRACE: Duration = Duration::from_secs(2);
/// When no Konsole runs, try again after this long (or as soon as one appears on the bus).
const NO_KONSOLE_RETRY: Duration = Duration::from_secs(30);
/// The first wait before connecting to the session bus again, doubled after each failure.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between attempts to connect to the session bus again.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// The environment variable that names the Konsole when the config does not
/// (`contrib/desktop-session.sh` prints it).
pub const SERVICE_VARIABLE: &str = "REIN_KONSOLE_SERVICE";

/// A tab the bridge opened (or found already open for the same ask).
#[derive(Debug)]
pub struct OpenedTab {
    pub post: PostRef,
    pub service: String,
    pub session: u32,
    /// False when an earlier attempt's tab was found still running and reused.
    pub new: bool,
    /// Where KWin put the window; None when no desktop is configured for it.
    pub placed: Option<Result<Placed, String>>,
}

/// Why the program in a tab is not one to end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotOurs {
    /// Only the shell runs: the program has not started yet, or has ended.
    Idle,
    Other(String),
}

impl std::fmt::Display for NotOurs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotOurs::Idle => f.write_str("nothing runs in the tab's shell"),
            NotOurs::Other(why) => f.write_str(why),
        }
    }
}

/// What closing a tab came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The bridge ended the program in the tab and the tab closed.
    Closed,
    /// The tab (or its Konsole) was already gone.
    AlreadyGone,
    /// The tab is open but the bridge's program no longer runs in it (the person took the
    /// shell over, or it is someone else's process now): left alone.
    LeftOpen(String),
}

pub struct KonsoleChannel {
    connection: Connection,
    config: KonsoleConfig,
    /// `(NAME, value)` pairs the tab's command runs with.
    environment: Vec<(String, String)>,
    kwin: KWin,
    told_about_notes: bool,
    /// New connections from [`keep_connected`], after the one in use was lost.
    connections: watch::Receiver<Connection>,
    link: watch::Receiver<Link>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for KonsoleChannel {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Watches `connection` until it closes, then connects again, for as long as the channel
/// lives. Raises the link when a Konsole or KWin appears on the bus.
async fn keep_connected(
    mut connection: Connection,
    link: watch::Sender<Link>,
    connections: watch::Sender<Connection>,
) {
    loop {
        announce_arrivals(&connection, &link).await;
        let lost = "lost the session bus; reconnecting…";
        tracing::warn!("{lost}");
        let _ = link.send(Link::Down(lost.to_owned()));
        let backoff = rein::bridge::Backoff {
            initial: RECONNECT_FIRST,
            max: RECONNECT_MAX,
        };
        let mut failures = 0;
        connection = loop {
            match Connection::session().await {
                Ok(connection) => break connection,
                Err(error) => {
                    let wait = backoff.delay(failures);
                    failures += 1;
                    let _ = link.send(Link::Down(format!(
                        "{lost} (the last try, {wait:?} ago, failed: {error})"
                    )));
                    tokio::time::sleep(wait).await;
                }
            }
        };
        tracing::info!(
            "connected to the session bus again, as {}",
            connection
                .unique_name()
                .map(|name| name.to_string())
                .unwrap_or_default()
        );
        if connections.send(connection.clone()).is_err() {
            return; // the channel is gone
        }
        let _ = link.send(Link::Up);
    }
}

/// Returns when `connection` closes. Meanwhile raises `link` whenever a Konsole or KWin
/// takes its name on the bus, so that asks waiting for one are shown at once.
async fn announce_arrivals(connection: &Connection, link: &watch::Sender<Link>) {
    let arrivals = match zbus::fdo::DBusProxy::new(connection).await {
        Ok(bus) => bus.receive_name_owner_changed().await.ok(),
        Err(_) => None,
    };
    let Some(mut arrivals) = arrivals else {
        connection.closed().await;
        return;
    };
    loop {
        tokio::select! {
            () = connection.closed() => return,
            signal = arrivals.next() => {
                let Some(signal) = signal else {
                    connection.closed().await;
                    return;
                };
                let Ok(arrived) = signal.args() else {
                    continue;
                };
                let name = arrived.name().as_str();
                if arrived.new_owner().is_some()
                    && (name.starts_with(SERVICE_PREFIX) || name == KWIN_SERVICE)
                {
                    tracing::info!("{name} appeared on the session bus");
                    let _ = link.send(Link::Up);
                }
            }
        }
    }
}

/// The variables a tab's `rein` needs: who answers (the bridge's user, who is the person at
/// this desktop; `rein answer` accepts `konsole:$USER` only for its own `$USER`), and which
/// profile it answers in.
pub fn tab_environment(paths: &Paths, user: &str) -> Vec<(String, String)> {
    vec![
        (IDENTITY_VARIABLE.to_owned(), format!("konsole:{user}")),
        ("USER".to_owned(), user.to_owned()),
        (
            "REIN_DATA_DIR".to_owned(),
            paths.data_dir.display().to_string(),
        ),
        ("REIN_CONFIG".to_owned(), paths.config.display().to_string()),
        ("REIN_PROFILE".to_owned(), paths.profile.clone()),
    ]
}

fn retry(reason: impl std::fmt::Display) -> SendError {
    SendError::Retry {
        after: None,
        reason: reason.to_string(),
    }
}

impl From<KonsoleError> for SendError {
    fn from(error: KonsoleError) -> SendError {
        match error {
            KonsoleError::NoKonsole => SendError::Retry {
                after: Some(NO_KONSOLE_RETRY),
                reason: error.to_string(),
            },
            other => retry(other),
        }
    }
}

impl From<DbusError> for SendError {
    fn from(error: DbusError) -> SendError {
        retry(error)
    }
}

impl KonsoleChannel {
    /// The channel of `rein-bridge-konsole`: config from `[bridges.konsole]`, the profile
    /// from the environment, the session bus.
    pub async fn from_context(context: &BridgeContext) -> anyhow::Result<KonsoleChannel> {
        let mut config = KonsoleConfig::from_table(&context.settings.channel)?;
        for route in context.settings.all_routes() {
            check_route(&route)?;
        }
        if config.service.is_none() {
            if let Some(service) = std::env::var(SERVICE_VARIABLE)
                .ok()
                .filter(|s| !s.is_empty())
            {
                check_service_name(&service).with_context(|| format!("${SERVICE_VARIABLE}"))?;
                config.service = Some(service);
            }
        }
        // The same paths the engine was set up with, so the tab answers in this profile.
        let paths = Paths::from_env()?;
        let environment = tab_environment(&paths, &rein::mailbox::current_user());
        KonsoleChannel::connect(config, environment).await
    }

    /// Connects to the session bus. `environment` is checked here, so a bad value fails at
    /// start rather than at the first ask.
    pub async fn connect(
        config: KonsoleConfig,
        environment: Vec<(String, String)>,
    ) -> anyhow::Result<KonsoleChannel> {
        for (name, value) in &environment {
            check_shell_safe(name, value)?;
        }
        let connection = Connection::session().await.map_err(|error| {
            anyhow::anyhow!(
                "cannot connect to the session bus ({error}); the Konsole bridge must run in the desktop session (DBUS_SESSION_BUS_ADDRESS, or XDG_RUNTIME_DIR/bus)"
            )
        })?;
        let kwin = KWin::new(&connection).await?;
        let (link_sender, link) = watch::channel(Link::Up);
        let (connection_sender, connections) = watch::channel(connection.clone());
        let keeper = tokio::spawn(keep_connected(
            connection.clone(),
            link_sender,
            connection_sender,
        ));
        Ok(KonsoleChannel {
            connection,
            config,
            environment,
            kwin,
            told_about_notes: false,
            connections,
            link,
            keeper,
        })
    }

    /// Takes up the newest connection to the session bus, with KWin's reply object served
    /// on it; a temporary failure while the bus is away.
    async fn current_bus(&mut self) -> Result<(), SendError> {
        if let Link::Down(why) = &*self.link.borrow() {
            return Err(retry(why));
        }
        if self.connections.has_changed().unwrap_or(false) {
            let connection = self.connections.borrow_and_update().clone();
            self.kwin = KWin::new(&connection).await.map_err(|error| {
                retry(format!(
                    "cannot serve KWin's replies on the new bus connection: {error}"
                ))
            })?;
            self.connection = connection;
        }
        Ok(())
    }

    pub fn config(&self) -> &KonsoleConfig {
        &self.config
    }

    /// What a tab for `ask` runs.
    pub fn action_for(&self, ask: &Ask) -> TabAction {
        if self.config.attaches(&ask.worker) {
            TabAction::Attach {
                worker: ask.worker.clone(),
            }
        } else {
            TabAction::Answer {
                ask: ask.id.clone(),
            }
        }
    }

    async fn konsole(&self) -> Result<Konsole, KonsoleError> {
        Konsole::find(&self.connection, self.config.service.as_deref()).await
    }

    /// Opens a tab titled `title` running `action`, and moves the window to `desktop`.
    pub async fn open_tab(
        &mut self,
        route: &str,
        title: &str,
        action: &TabAction,
        desktop: Option<u32>,
    ) -> Result<OpenedTab, SendError> {
        let line = tab_command(&self.config.rein_bin, &self.environment, action)
            .map_err(|error| SendError::Fatal(error.to_string()))?;
        self.current_bus().await?;
        let konsole = self.konsole().await?;
        let window = konsole.window(self.config.window).await?;
        let (session, new) = match self.running_tab(&konsole, window, title, action).await? {
            Some(session) => (session, false),
            None => {
                let session = konsole.new_session(window).await?;
                if session == 0 {
                    return Err(retry(format!("{} did not open a tab", konsole.service())));
                }
                konsole.set_title(session, title).await?;
                konsole.run_command(session, &line).await?;
                (session, true)
            }
        };
        if let Err(error) = konsole.show_session(window, session).await {
            tracing::warn!("could not bring tab {session} to the front: {error}");
        }
        let placed = match desktop {
            None => None,
            Some(desktop) => Some(
                self.place(&konsole, title, desktop)
                    .await
                    .map_err(|error| error.to_string()),
            ),
        };
        Ok(OpenedTab {
            post: PostRef {
                route: route.to_owned(),
                id: format!("{}/{session}", konsole.service()),
            },
            service: konsole.service().to_owned(),
            session,
            new,
            placed,
        })
    }

    /// A tab of `window` titled `title` that still runs `action` (a resent ask whose first
    /// tab did open).
    async fn running_tab(
        &self,
        konsole: &Konsole,
        window: u32,
        title: &str,
        action: &TabAction,
    ) -> Result<Option<u32>, DbusError> {
        if *action == TabAction::Test {
            return Ok(None);
        }
        for session in konsole.sessions(window).await? {
            // A tab may close while we look.
            let found = match konsole.title(session).await {
                Ok(shown) if shown == title => self.our_program(konsole, session, action).await,
                Ok(_) => continue,
                Err(error) => Err(error),
            };
            match found {
                Ok(Ok(_)) => return Ok(Some(session)),
                Ok(Err(_)) => {}
                Err(error) if error.is_missing() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// The process group to signal when `session` runs `action` as this bridge started it:
    /// the tab's own program (the answer prompt, which replaced the tab's shell), or the
    /// foreground child of the tab's shell (`rein worker attach`); else why not.
    async fn our_program(
        &self,
        konsole: &Konsole,
        session: u32,
        action: &TabAction,
    ) -> Result<Result<u32, NotOurs>, DbusError> {
        let program = konsole.process_id(session).await?;
        let foreground = konsole.foreground_process_id(session).await?;
        if program <= 0 {
            return Ok(Err(NotOurs::Other("the tab's program has exited".into())));
        }
        let program = program as u32;
        let konsole_pid = konsole.pid().await?;
        if process::parent(program) != Some(konsole_pid) {
            return Ok(Err(NotOurs::Other(format!(
                "pid {program} is not a child of Konsole pid {konsole_pid} here (another pid namespace?)"
            ))));
        }
        let ours = |pid: u32| {
            let arguments = process::arguments(pid).unwrap_or_default();
            if process::runs(&arguments, &self.config.rein_bin, &action.rein_args()) {
                Ok(pid)
            } else {
                Err(NotOurs::Other(format!("pid {pid} runs {arguments:?}")))
            }
        };
        if foreground <= 0 || foreground as u32 == program {
            // Else the tab's program is the shell, before `exec` or with nothing started.
            return Ok(ours(program).map_err(|_| NotOurs::Idle));
        }
        let foreground = foreground as u32;
        if process::parent(foreground) != Some(program) {
            return Ok(Err(NotOurs::Other(format!(
                "pid {foreground} is not a child of the tab's shell"
            ))));
        }
        Ok(ours(foreground))
    }

    /// Moves the window showing `title` to `desktop`.
    async fn place(
        &mut self,
        konsole: &Konsole,
        title: &str,
        desktop: u32,
    ) -> Result<Placed, KWinError> {
        let pid = konsole.pid().await?;
        // Among several Konsole windows the title tells which has the new tab (once Konsole
        // has shown it, and only while the window has focus); else KWin matches by pid and
        // caption.
        let deadline = tokio::time::Instant::now() + WINDOW_DEADLINE;
        let window_id = loop {
            if let Some(id) = konsole.window_id(title).await? {
                break id;
            }
            if tokio::time::Instant::now() >= deadline {
                break 0;
            }
            tokio::time::sleep(SETTLE_STEP).await;
        };
        let placement = Placement {
            token: self.kwin.next_token(),
            window_id,
            pid,
            marker: title.to_owned(),
            desktop,
            reply_to: self.kwin.reply_to(),
        };
        self.kwin.place(&placement).await
    }

    /// Ends the bridge's program in the tab `post` names, which closes the tab.
    pub async fn close_tab(
        &mut self,
        post: &PostRef,
        action: &TabAction,
    ) -> Result<Closed, SendError> {
        let Some((service, session)) = tab_of(post) else {
            return Err(SendError::Fatal(format!(
                "{:?} does not name a Konsole tab",
                post.id
            )));
        };
        self.current_bus().await?;
        let konsole = Konsole::at(&self.connection, service);
        if !konsole.session_exists(session).await? {
            return Ok(Closed::AlreadyGone);
        }
        // An answer prompt ends by itself when its ask is resolved anywhere; signalling it
        // at the same moment could cut it short between recording an answer and journaling it.
        if matches!(action, TabAction::Answer { .. }) {
            let grace = tokio::time::Instant::now() + PROMPT_GRACE;
            while tokio::time::Instant::now() < grace {
                if !konsole.session_exists(session).await? {
                    return Ok(Closed::AlreadyGone);
                }
                tokio::time::sleep(SETTLE_STEP).await;
            }
        }
        // Just after the tab opened, its shell may not have started the program yet.
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        let group = loop {
            match self.our_program(&konsole, session, action).await {
                Ok(Ok(group)) => break group,
                Ok(Err(NotOurs::Idle)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(SETTLE_STEP).await
                }
                // The program may have ended, and the tab with it, while we looked.
                Ok(Err(_)) if !konsole.session_exists(session).await? => {
                    return Ok(Closed::AlreadyGone)
                }
                Ok(Err(why)) => return Ok(Closed::LeftOpen(why.to_string())),
                Err(error) if error.is_missing() => return Ok(Closed::AlreadyGone),
                Err(error) => return Err(error.into()),
            }
        };
        // The prompt exits normally on SIGTERM (after `…; exit`, the shell exits), and
        // Konsole closes the tab.
        if let Err(error) = process::signal_group(group, libc::SIGTERM) {
            return Ok(Closed::LeftOpen(format!(
                "cannot signal process group {group}: {error}"
            )));
        }
        let deadline = tokio::time::Instant::now() + SETTLE_DEADLINE;
        while konsole.session_exists(session).await? {
            if tokio::time::Instant::now() >= deadline {
                return Ok(Closed::LeftOpen(format!(
                    "the tab was still open {SETTLE_DEADLINE:?} after its program was told to end"
                )));
            }
            tokio::time::sleep(SETTLE_STEP).await;
        }
        Ok(Closed::Closed)
    }
}

/// The Konsole service and session number a tab's [`PostRef`] names.
fn tab_of(post: &PostRef) -> Option<(&str, u32)> {
    let (service, session) = post.id.rsplit_once('/')?;
    Some((service, session.parse().ok()?))
}

fn describe_placement(placed: &Option<Result<Placed, String>>) -> String {
    match placed {
        None => "no desktop configured; the window stays where it is".into(),
        Some(Ok(Placed::Moved { desktop })) => format!("the window is on desktop {desktop}"),
        Some(Ok(Placed::NoWindow)) => "KWin found no Konsole window to move".into(),
        Some(Ok(Placed::NoSuchDesktop { count })) => {
            format!("KWin has only {count} desktops; the window was not moved")
        }
        Some(Ok(Placed::ScriptError(error))) => format!("the KWin script failed: {error}"),
        Some(Err(error)) => format!("the window was not moved: {error}"),
    }
}

impl Channel for KonsoleChannel {
    async fn post_ask(
        &mut self,
        ask: &Ask,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        let action = self.action_for(ask);
        let desktop = self.config.desktop_for(&ask.worker, route);
        let title = format!("ask {}", ask.id);
        let opened = self.open_tab(route, &title, &action, desktop).await?;
        let placement = describe_placement(&opened.placed);
        let how = match (opened.new, resent) {
            (false, _) => "found its tab still open",
            (true, true) => "opened a new tab (an earlier attempt may have opened one too)",
            (true, false) => "opened",
        };
        match &opened.placed {
            Some(Ok(Placed::Moved { .. })) | None => {
                tracing::info!("ask {}: {how} {}; {placement}", ask.id, opened.post.id)
            }
            Some(_) => tracing::warn!("ask {}: {how} {}; {placement}", ask.id, opened.post.id),
        }
        Ok(opened.post)
    }

    async fn post_note(
        &mut self,
        note: &Note,
        route: &str,
        _resent: bool,
    ) -> Result<PostRef, SendError> {
        // Showing a note would mean typing its text into a shell; Konsole shows asks only.
        if !self.told_about_notes {
            tracing::info!("the Konsole bridge does not show notes; set notes = false in [bridges.konsole] to skip them");
            self.told_about_notes = true;
        }
        Ok(PostRef {
            route: route.to_owned(),
            id: format!("note:{}", note.id),
        })
    }

    async fn resolved(
        &mut self,
        ask: &Ask,
        resolution: &Resolution,
        post: &PostRef,
    ) -> Result<(), SendError> {
        let action = self.action_for(ask);
        let closed = self.close_tab(post, &action).await?;
        tracing::info!(
            "ask {} {}: tab {} {}",
            ask.id,
            rein::bridge::describe_resolution(resolution),
            post.id,
            match &closed {
                Closed::Closed => "closed".to_owned(),
                Closed::AlreadyGone => "was already closed".to_owned(),
                Closed::LeftOpen(why) => format!("left open ({why})"),
            }
        );
        Ok(())
    }

    async fn reply(&mut self, to: &Inbound, text: &str) -> Result<(), SendError> {
        // Nothing arrives inbound from Konsole: the tab answers through the mailbox itself.
        tracing::info!("konsole has no way to reply to {}: {text}", to.identity);
        Ok(())
    }

    fn link(&self) -> Option<watch::Receiver<Link>> {
        Some(self.link.clone())
    }

    /// A tab is still shown while its Konsole is on the bus. (A tab the person closed is not
    /// opened again; a Konsole that went away, with its bus or by itself, takes its tabs.)
    async fn still_posted(&mut self, _ask: &Ask, post: &PostRef) -> Result<bool, SendError> {
        let Some((service, _)) = tab_of(post) else {
            return Ok(true);
        };
        self.current_bus().await?;
        match crate::dbus::owner(&self.connection, service).await {
            Ok(_) => Ok(true),
            Err(error) if error.is_missing() => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn test(&mut self, route: &str) -> Result<String, SendError> {
        check_route(route).map_err(|error| SendError::Fatal(error.to_string()))?;
        let desktop = route.parse().ok().or(self.config.desktop);
        let opened = self
            .open_tab(route, "rein bridge test", &TabAction::Test, desktop)
            .await?;
        Ok(format!(
            "opened tab {} (session {} of {}) running a 5-second test line; {}",
            opened.post.id,
            opened.session,
            opened.service,
            describe_placement(&opened.placed)
        ))
    }
}
