//! rein's Konsole bridge: each ask opens a Konsole tab titled `ask ID` that runs
//! `rein answer --interactive ID` — the prompt shows the question, its ref and options, reads
//! the answer and records it as `konsole:$USER` — and KWin moves the Konsole window to the
//! virtual desktop configured for the asking worker. When the ask is answered anywhere else
//! (Slack, SMS, `rein answer`), the prompt ends by itself and the tab closes; a tab still
//! running the bridge's program at that point is ended by the bridge.
//!
//! # In a tab
//! The prompt is the tab's own program (no shell runs in the tab), so however it ends, the
//! tab closes:
//! - type one of the options (or any answer when the ask has none) and Enter: the ask is
//!   answered as `konsole:$USER`; an answer that is not an option is refused and the prompt
//!   asks again;
//! - Ctrl+C or Ctrl+D, or closing the tab: the prompt says "ask ID stays pending" and ends;
//!   the ask stays pending for any other channel or `rein answer`, and the bridge does not
//!   open the tab again;
//! - the ask answered or withdrawn anywhere else: the prompt says so and ends.
//!
//! # Loops
//! Each open loop (`rein loop add`) shows as a tab titled `loop NAME` running `rein worker
//! attach NAME`, in one Konsole window per virtual desktop, on the loop's desktop (`--desktop`,
//! else `desktop` below). Each such window is a Konsole of its own run as a user unit
//! (`rein-konsole-desktop-N.service`), so it outlives the bridge. The bridge looks when it
//! starts and whenever a loop changes: open tabs are adopted, never duplicated; after `rein
//! loop move` the tab moves to the other desktop's window; a tab a person closed is opened
//! again (closing it never stops the loop). `rein loop show NAME` does the same for one loop
//! without the bridge running.
//!
//! # When the session bus goes away
//! If the user's dbus-daemon stops or restarts, the bridge notices at once that its connection
//! closed: its STATUS (`systemctl --user status`) reads "reconnecting: lost the session bus…"
//! and `rein bridge ls` shows it as `reconnecting`, while it connects again (every few
//! seconds at most). Once connected — STATUS "connected; …" — it looks at each pending ask:
//! a tab whose Konsole is no longer on the bus is opened again in the Konsole that is there
//! now (as soon as one appears), on the configured desktop; a tab still open is left as it
//! is, so no ask gets two tabs. The same happens for a Konsole that quit while the bridge was
//! stopped, when the bridge starts.
//!
//! # Setting up
//! 1. A KDE session (Konsole and KWin, X11 or Wayland) with the bridge on its session bus:
//!    `rein bridge start konsole` runs it as a user unit, which shares the user's bus.
//! 2. Virtual desktops: System Settings → Virtual Desktops, or `kwinrc`:
//!    ```ini
//!    [Desktops]
//!    Number=4
//!    Rows=1
//!    ```
//!    The KWin D-Bus object `/VirtualDesktopManager` (`count`, `createDesktop(u, s)`) shows
//!    and adds them too.
//! 3. Keep one Konsole window open: asks open tabs in it (the lowest-numbered window, or
//!    `window`). Without a Konsole the bridge retries every 30 seconds.
//!
//! Headless (CI, containers): `contrib/desktop-session.sh start DIR` starts Xvfb, KWin with
//! four desktops and a Konsole on the user manager's session bus, and prints
//! `DISPLAY` and `REIN_KONSOLE_SERVICE`.
//!
//! # Configuration
//! ```toml
//! [bridges.konsole]
//! allow = ["konsole:ana"]         # required by every bridge; answers come as konsole:$USER
//! routes = ["desktop"]            # "desktop" (use the keys below) or a desktop number, "2"
//! desktop = 2                     # where asks go by default (1-based); unset: don't move
//! worker_desktops = { w1 = 3 }    # per worker; wins over a numeric route
//! attach_workers = ["w9"]         # asks of these open `rein worker attach w9` instead
//! # service = "org.kde.konsole-1234"   # default: $REIN_KONSOLE_SERVICE, else the first
//! #                                    # org.kde.konsole* on the bus, looked up per ask
//! # window = 1                         # Konsole's /Windows/N; default: the lowest
//! # rein_bin = "/usr/local/bin/rein"   # default: $REIN_BIN, else rein beside this binary,
//! #                                    # else on PATH
//! notes = false                   # Konsole shows asks only; notes are skipped
//! ```
//!
//! # How it works (see the modules for the D-Bus details)
//! - [`konsole`]: `/Windows/N newSession` opens the tab, `/Sessions/N setTitle` /
//!   `setTabTitleFormat` name it, `runCommand` types the command line.
//! - [`command`]: that line is built only from the rein path, the bridge's own environment
//!   (`REIN_ANSWER_IDENTITY`, `REIN_DATA_DIR`, `REIN_CONFIG`, `REIN_PROFILE`) and an id
//!   checked against rein's id pattern. No text of an ask is ever typed into a shell.
//! - [`kwin`]: the window is moved by a generated KWin script (KWin 5 and KWin 6 dialects)
//!   loaded through `/Scripting`, which reports back over D-Bus.
//! - [`process`]: before ending a tab's program the bridge checks in `/proc` that it is the
//!   one it started; Konsole has no D-Bus call to close a tab, and a tab closes when its
//!   program exits: the answer prompt is the tab's program (`exec`), `rein worker attach`
//!   runs in the tab's shell followed by `; exit`.
//! - [`loop_tabs`]: the loops' tabs and their windows.
//! - [`KonsoleChannel`]: the [`rein::bridge::Channel`] the engine drives. A tab is
//!   `PostRef { route, id: "org.kde.konsole-PID/SESSION" }`.

pub mod command;
pub mod config;
pub mod dbus;
pub mod konsole;
pub mod kwin;
pub mod loop_tabs;
pub mod process;

mod channel;

pub use channel::{tab_environment, Closed, KonsoleChannel, OpenedTab, SERVICE_VARIABLE};
pub use config::KonsoleConfig;
