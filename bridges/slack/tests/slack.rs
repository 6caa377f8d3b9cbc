//! The Slack bridge against the local Slack stand-in: posting, buttons, clicks, thread
//! replies, acknowledgements, redeliveries, reconnects, rate limits and bad credentials.

mod standin;

use std::time::Duration;

use chrono::Utc;
use rein::bridge::ledger::{Entry, Kind, Ledger, Stage};
use rein::bridge::{Channel, Inbound, PostRef, SendError, Target};
use rein::mailbox::{Ask, Mailbox, NewAsk, Resolution, ResolutionKind};
use rein::store::DataDir;
use rein_bridge_slack::config::Backoff;
use rein_bridge_slack::{PostedAsks, SlackChannel, SlackConfig};
use standin::{SlackStandin, APP_TOKEN, BOT_TOKEN, DEADLINE};
use tokio::sync::mpsc;

fn ask(id: &str, options: &[&str]) -> Ask {
    Ask {
        version: 1,
        id: id.into(),
        seq: 1,
        worker: "w1".into(),
        prompt: "Merge PR 12?".into(),
        reference: None,
        options: options.iter().map(|o| o.to_string()).collect(),
        created: Utc::now(),
        key: "k".into(),
    }
}

fn config(standin: &SlackStandin, bot_token: &str) -> SlackConfig {
    let mut config = SlackConfig::new(&standin.base_url(), APP_TOKEN, bot_token).expect("config");
    config.reconnect = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    config.ping_interval = Duration::from_secs(5);
    config
}

/// A channel connected to the stand-in (its socket said hello), and its inbound queue.
async fn connect(standin: &SlackStandin) -> (SlackChannel, mpsc::Receiver<Inbound>) {
    let (sender, receiver) = mpsc::channel(16);
    let channel = SlackChannel::start(&config(standin, BOT_TOKEN), sender, PostedAsks::new(None))
        .await
        .expect("start");
    standin
        .wait_for("the first socket connection", |r| r.connected.then_some(()))
        .await;
    (channel, receiver)
}

async fn next(receiver: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(DEADLINE, receiver.recv())
        .await
        .expect("an inbound message in time")
        .expect("the channel is alive")
}

fn actions(blocks: &serde_json::Value) -> Vec<serde_json::Value> {
    blocks
        .as_array()
        .expect("blocks")
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn an_ask_with_options_is_posted_with_a_button_per_option() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (mut channel, _inbound) = connect(&standin).await;
    let post = channel
        .post_ask(&ask("ab3x9k", &["yes", "no"]), "C1", false)
        .await
        .expect("posted");
    let posted = standin.record().posted[0].clone();
    assert_eq!(
        post,
        PostRef {
            route: "C1".into(),
            id: posted.ts.clone()
        }
    );
    assert!(
        posted.text.contains("Merge PR 12?") && posted.text.contains("ab3x9k"),
        "{}",
        posted.text
    );
    let buttons = actions(posted.blocks.as_ref().expect("blocks"));
    let values: Vec<&str> = buttons
        .iter()
        .map(|b| b["value"].as_str().expect("value"))
        .collect();
    assert_eq!(values, ["ab3x9k:yes", "ab3x9k:no"]);
    let labels: Vec<&str> = buttons
        .iter()
        .map(|b| b["text"]["text"].as_str().expect("label"))
        .collect();
    assert_eq!(labels, ["yes", "no"]);
    assert!(buttons
        .iter()
        .all(|b| b["action_id"].as_str().expect("id").contains("ab3x9k")));

    channel
        .post_ask(&ask("cd4y7m", &[]), "C1", true)
        .await
        .expect("posted");
    let posted = standin.record().posted[1].clone();
    assert!(
        actions(posted.blocks.as_ref().expect("blocks")).is_empty(),
        "free text has no buttons"
    );
    assert!(posted.text.starts_with("(sent again)"), "{}", posted.text);
}

#[tokio::test]
async fn a_click_becomes_one_inbound_even_when_slack_delivers_it_again() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (mut channel, mut inbound) = connect(&standin).await;
    let post = channel
        .post_ask(&ask("ab3x9k", &["yes", "no"]), "C1", false)
        .await
        .expect("posted");
    let click = standin.click("U1", "C1", &post.id, "rein-answer:ab3x9k:0", "ab3x9k:yes");
    let envelope_id = standin.inject(click);
    let first = next(&mut inbound).await;
    assert_eq!(
        first,
        Inbound {
            identity: "slack:U1".into(),
            target: Target::Ask("ab3x9k".into()),
            text: "yes".into(),
            reply_to: post.clone(),
            message_id: first.message_id.clone(),
        }
    );
    standin
        .wait_for("the ack", |r| r.acks.contains(&envelope_id).then_some(()))
        .await;

    standin.redeliver(&envelope_id);
    standin
        .wait_for("the ack of the redelivery", |r| {
            (r.acks.iter().filter(|a| **a == envelope_id).count() == 2).then_some(())
        })
        .await;
    assert!(
        standin
            .record()
            .deliveries
            .contains(&(envelope_id.clone(), 1)),
        "redelivered with retry_attempt 1"
    );
    // The socket handles envelopes in order: had the redelivery produced a message, it would
    // come before this marker.
    let marker = standin.click("U2", "C1", &post.id, "rein-answer:ab3x9k:1", "ab3x9k:no");
    standin.inject(marker);
    let second = next(&mut inbound).await;
    assert_eq!(
        (second.identity.as_str(), second.text.as_str()),
        ("slack:U2", "no")
    );
    assert!(
        standin.record().protocol_errors.is_empty(),
        "{:?}",
        standin.record().protocol_errors
    );
}

#[tokio::test]
async fn a_thread_reply_under_an_ask_targets_that_post_and_bots_are_ignored() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (mut channel, mut inbound) = connect(&standin).await;
    let post = channel
        .post_ask(&ask("ab3x9k", &[]), "C1", false)
        .await
        .expect("posted");
    standin.inject(standin.message("U0BOT", "C1", "Got it", Some(&post.id), true));
    standin.inject(standin.message("U1", "C1", "unrelated", Some("1600000000.000001"), false));
    standin.inject(standin.message("U1", "C1", "top level chatter", None, false));
    standin.inject(standin.message("U1", "C1", "call it &lt;rein&gt;", Some(&post.id), false));
    let reply = next(&mut inbound).await;
    assert_eq!(reply.identity, "slack:U1");
    assert_eq!(reply.target, Target::Post(post.clone()));
    assert_eq!(reply.reply_to, post);
    assert_eq!(reply.text, "call it <rein>");
    standin
        .wait_for("four acks", |r| (r.acks.len() == 4).then_some(()))
        .await;

    channel
        .reply(&reply, "Got it: answered <rein>")
        .await
        .expect("replied");
    let answer = standin.record().posted.last().cloned().expect("a reply");
    assert_eq!(answer.thread_ts.as_deref(), Some(post.id.as_str()));
    assert_eq!(answer.text, "Got it: answered &lt;rein&gt;");
}

#[tokio::test]
async fn a_thread_reply_under_an_ask_of_an_earlier_run_is_found_in_the_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(dir.path());
    let ledger = Ledger::open(&data, "slack").expect("ledger");
    let earlier = PostRef {
        route: "C1".into(),
        id: "1600000000.000100".into(),
    };
    let mut entry = Entry::new(Kind::Ask, "ab3x9k", "C1");
    entry.stage = Stage::Sent;
    entry.post = Some(earlier.clone());
    ledger.put(&entry).expect("put");

    let standin = SlackStandin::start(&["C1"]).await;
    let (sender, mut inbound) = mpsc::channel(16);
    let _channel = SlackChannel::start(
        &config(&standin, BOT_TOKEN),
        sender,
        PostedAsks::new(Some(ledger)),
    )
    .await
    .expect("start");
    standin
        .wait_for("a connection", |r| r.connected.then_some(()))
        .await;
    standin.inject(standin.message(
        "U1",
        "C1",
        "not under an ask",
        Some("1600000000.000200"),
        false,
    ));
    standin.inject(standin.message("U1", "C1", "yes", Some(&earlier.id), false));
    let reply = next(&mut inbound).await;
    assert_eq!(
        (reply.target, reply.text.as_str()),
        (Target::Post(earlier), "yes")
    );
}

#[tokio::test]
async fn the_socket_reconnects_after_a_drop_and_a_disconnect_request() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (_channel, mut inbound) = connect(&standin).await;

    standin.drop_connection();
    standin
        .wait_for("a second connection", |r| {
            (r.connections == 2 && r.connected).then_some(())
        })
        .await;
    standin.inject(standin.click("U1", "C1", "1.0", "rein-answer:ab3x9k:0", "ab3x9k:yes"));
    assert_eq!(next(&mut inbound).await.text, "yes");

    standin.disconnect("refresh_requested");
    standin
        .wait_for("a third connection", |r| {
            (r.connections == 3 && r.connected).then_some(())
        })
        .await;
    standin.inject(standin.click("U1", "C1", "1.0", "rein-answer:ab3x9k:1", "ab3x9k:no"));
    assert_eq!(next(&mut inbound).await.text, "no");
    let calls = standin.record().calls.clone();
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "apps.connections.open")
            .count(),
        3,
        "a fresh URL each time: {calls:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_is_a_retry_after_the_servers_delay() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (mut channel, _inbound) = connect(&standin).await;
    standin.rate_limit(1, 7);
    let error = channel
        .post_ask(&ask("ab3x9k", &["yes"]), "C1", false)
        .await
        .expect_err("429");
    match error {
        SendError::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(7))),
        other => panic!("expected a retry, got {other:?}"),
    }
    channel
        .post_ask(&ask("ab3x9k", &["yes"]), "C1", false)
        .await
        .expect("posted after the limit");
}

#[tokio::test]
async fn resolving_updates_the_message_and_removes_the_buttons() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (mut channel, _inbound) = connect(&standin).await;
    let asked = ask("ab3x9k", &["yes", "no"]);
    let post = channel.post_ask(&asked, "C1", false).await.expect("posted");
    let resolution = Resolution {
        version: 1,
        ask: asked.id.clone(),
        kind: ResolutionKind::Answered,
        text: Some("yes".into()),
        by: "slack:U1".into(),
        at: Utc::now(),
        reason: None,
    };
    channel
        .resolved(&asked, &resolution, &post)
        .await
        .expect("updated");
    let updated = standin.record().updated[0].clone();
    assert_eq!(
        (updated.channel.as_str(), updated.ts.as_str()),
        ("C1", post.id.as_str())
    );
    assert!(
        updated
            .text
            .contains("answered: yes — by slack:U1 via slack"),
        "{}",
        updated.text
    );
    let blocks = updated.blocks.expect("blocks");
    assert!(actions(&blocks).is_empty(), "buttons gone: {blocks}");
    assert!(
        blocks
            .to_string()
            .contains("answered: yes — by slack:U1 via slack"),
        "{blocks}"
    );

    let gone = PostRef {
        route: "C1".into(),
        id: "1.000".into(),
    };
    let error = channel
        .resolved(&asked, &resolution, &gone)
        .await
        .expect_err("unknown message");
    assert!(
        matches!(&error, SendError::Fatal(e) if e.contains("message_not_found")),
        "{error:?}"
    );
}

#[tokio::test]
async fn bad_tokens_and_unknown_channels_are_fatal() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (sender, _inbound) = mpsc::channel(4);
    let mut channel = SlackChannel::start(
        &config(&standin, "xoxb-wrong"),
        sender,
        PostedAsks::new(None),
    )
    .await
    .expect("the app token is fine");
    let error = channel
        .post_ask(&ask("ab3x9k", &["yes"]), "C1", false)
        .await
        .expect_err("bad bot token");
    assert!(
        matches!(&error, SendError::Fatal(e) if e.contains("invalid_auth")),
        "{error:?}"
    );

    let (mut channel, _inbound) = connect(&standin).await;
    let error = channel.test("C404").await.expect_err("unknown channel");
    assert!(
        matches!(&error, SendError::Fatal(e) if e.contains("channel_not_found")),
        "{error:?}"
    );
    assert!(channel
        .test("C1")
        .await
        .expect("test message")
        .contains("C1"));

    let mut bad_app = config(&standin, BOT_TOKEN);
    bad_app.app_token = "xapp-wrong".into();
    let (sender, _inbound) = mpsc::channel(4);
    let error = SlackChannel::start(&bad_app, sender, PostedAsks::new(None))
        .await
        .err()
        .expect("a bad app token stops the start");
    assert!(format!("{error:#}").contains("invalid_auth"), "{error:#}");
}

/// Writes a profile (config with `[bridges.slack]`, a 0600 secrets file, a data dir) for the
/// real `rein-bridge-slack` binary.
fn profile(
    dir: &std::path::Path,
    standin: &SlackStandin,
) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let secrets = dir.join("slack.secrets");
    std::fs::write(
        &secrets,
        format!("app_token = \"{APP_TOKEN}\"\nbot_token = \"{BOT_TOKEN}\"\n"),
    )
    .expect("secrets");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[bridges.slack]\nallow = [\"slack:U1\"]\nroutes = [\"C1\"]\nsecret_file = \"{}\"\nbase_url = \"{}\"\n",
            secrets.display(),
            standin.base_url()
        ),
    )
    .expect("config");
    (config, dir.join("data"))
}

fn bridge_command(config: &std::path::Path, data: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rein-bridge-slack"));
    command
        .env("REIN_CONFIG", config)
        .env("REIN_DATA_DIR", data)
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_bridge_binary_relays_an_ask_and_an_allowed_click_back_to_the_mailbox() {
    let standin = SlackStandin::start(&["C1"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, data) = profile(dir.path(), &standin);
    let mailbox = Mailbox::new(DataDir::new(&data));
    let (asked, _) = mailbox
        .file(&NewAsk {
            worker: "w1".into(),
            prompt: "Merge PR 12?".into(),
            reference: None,
            options: vec!["yes".into(), "no".into()],
        })
        .expect("filed");
    let mut bridge = bridge_command(&config, &data)
        .spawn()
        .expect("the bridge starts");

    let post = standin
        .wait_for("the ask in C1", |r| {
            r.posted
                .iter()
                .find(|m| m.text.contains(&asked.id))
                .map(|m| m.ts.clone())
        })
        .await;
    let value = format!("{}:yes", asked.id);
    let action = format!("rein-answer:{}:0", asked.id);
    standin.inject(standin.click("U9", "C1", &post, &action, &value));
    standin
        .wait_for("the refusal, for U9's eyes only", |r| {
            r.ephemeral
                .iter()
                .any(|m| m.user == "U9" && m.text.contains("not on"))
                .then_some(())
        })
        .await;
    assert!(
        standin
            .record()
            .posted
            .iter()
            .all(|m| !m.text.contains("not on")),
        "no public refusal"
    );
    assert!(
        mailbox.get(&asked.id).expect("ask").resolution.is_none(),
        "U9 is not allowed"
    );

    standin.inject(standin.click("U1", "C1", &post, &action, &value));
    let update = standin
        .wait_for("the message updated", |r| {
            r.updated.iter().find(|u| u.ts == post).cloned()
        })
        .await;
    assert!(
        update
            .text
            .contains("answered: yes — by slack:U1 via slack"),
        "{}",
        update.text
    );
    let resolution = mailbox
        .get(&asked.id)
        .expect("ask")
        .resolution
        .expect("answered");
    assert_eq!(
        (resolution.text.as_deref(), resolution.by.as_str()),
        (Some("yes"), "slack:U1")
    );
    bridge.start_kill().expect("stop the bridge");
    let _ = bridge.wait().await;
}

#[tokio::test]
async fn the_bridge_binary_test_flag_posts_to_every_route() {
    let standin = SlackStandin::start(&["C1"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, data) = profile(dir.path(), &standin);
    let output = tokio::time::timeout(
        DEADLINE,
        bridge_command(&config, &data).arg("--test").output(),
    )
    .await
    .expect("--test finishes in time")
    .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("C1: sent: posted to C1"), "{stdout}");
    assert!(standin
        .record()
        .posted
        .iter()
        .any(|m| m.text.contains("test message")));
}

/// Issue 8, item 5: a prompt cannot ping the channel or disguise a link in the notification
/// text (Slack's `&`, `<`, `>` escaping applies to `text` too), and a refusal is ephemeral.
#[tokio::test]
async fn prompts_cannot_ping_or_disguise_links_and_refusals_are_private() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (mut channel, _inbound) = connect(&standin).await;
    let mut hostile = ask("ab3x9k", &["yes", "no"]);
    hostile.prompt = "<!channel> merge <https://evil.example|PR 12> & deploy?".into();
    let post = channel
        .post_ask(&hostile, "C1", false)
        .await
        .expect("posted");
    let posted = standin.record().posted[0].clone();
    assert!(
        !posted.text.contains('<') && !posted.text.contains('>'),
        "{}",
        posted.text
    );
    assert!(
        posted.text.contains("&lt;!channel&gt;") && posted.text.contains("&amp; deploy"),
        "{}",
        posted.text
    );
    let resolution = Resolution {
        version: 1,
        ask: "ab3x9k".into(),
        kind: ResolutionKind::Answered,
        text: Some("yes".into()),
        by: "cli:ana".into(),
        at: Utc::now(),
        reason: None,
    };
    channel
        .resolved(&hostile, &resolution, &post)
        .await
        .expect("updated");
    let updated = standin.record().updated[0].clone();
    assert!(
        !updated.text.contains("<!channel>") && updated.text.contains("&lt;!channel&gt;"),
        "{}",
        updated.text
    );

    let stranger = Inbound {
        identity: "slack:U666".into(),
        target: Target::Post(post.clone()),
        text: "yes".into(),
        reply_to: post.clone(),
        message_id: "m1".into(),
    };
    channel
        .refuse(&stranger, "Sorry, you may not answer.")
        .await
        .expect("refused");
    let record = standin.record();
    assert_eq!(record.posted.len(), 1, "no public reply");
    assert_eq!(record.ephemeral.len(), 1);
    assert_eq!(record.ephemeral[0].user, "U666");
    assert_eq!(
        record.ephemeral[0].thread_ts.as_deref(),
        Some(post.id.as_str())
    );
}

/// Issue 8, item 12: a second instance of the bridge on the same ledger (the template unit and
/// `rein bridge start`, say) exits 5 naming the first, and sends nothing.
#[tokio::test]
async fn a_second_bridge_on_the_same_ledger_is_refused() {
    let standin = SlackStandin::start(&["C1"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, data) = profile(dir.path(), &standin);
    let mailbox = Mailbox::new(DataDir::new(&data));
    let (asked, _) = mailbox
        .file(&NewAsk {
            worker: "w1".into(),
            prompt: "Merge PR 12?".into(),
            reference: None,
            options: vec![],
        })
        .expect("filed");
    let mut first = bridge_command(&config, &data).spawn().expect("first");
    standin
        .wait_for("the ask posted once", |r| {
            r.posted
                .iter()
                .any(|m| m.text.contains(&asked.id))
                .then_some(())
        })
        .await;
    let second = tokio::time::timeout(DEADLINE, bridge_command(&config, &data).output())
        .await
        .expect("the second exits in time")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(5), "{stderr}");
    let pid = first.id().expect("pid");
    assert!(
        stderr.contains("already runs") && stderr.contains(&format!("pid {pid}")),
        "{stderr}"
    );
    assert_eq!(
        standin
            .record()
            .posted
            .iter()
            .filter(|m| m.text.contains(&asked.id))
            .count(),
        1
    );
    first.start_kill().expect("stop the bridge");
    let _ = first.wait().await;
}

/// Issue 8, items 21 and 24: a misspelled key in `[bridges.slack]` is a usage error (exit 2)
/// naming the key, before anything connects.
#[tokio::test]
async fn a_misspelled_key_exits_2() {
    let standin = SlackStandin::start(&["C1"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, data) = profile(dir.path(), &standin);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}bse_url = \"x\"\n")).expect("config");
    let output = tokio::time::timeout(DEADLINE, bridge_command(&config, &data).output())
        .await
        .expect("exits in time")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bse_url"), "{stderr}");
    // A missing secret is a configuration mistake too.
    std::fs::write(&config, text).expect("config");
    std::fs::write(
        dir.path().join("slack.secrets"),
        format!("app_token = \"{APP_TOKEN}\"\n"),
    )
    .expect("secrets");
    let output = tokio::time::timeout(DEADLINE, bridge_command(&config, &data).output())
        .await
        .expect("exits in time")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bot_token"), "{stderr}");
    assert!(standin.record().calls.is_empty(), "nothing was called");
}

/// Issue 8, item 18: the bridge binary parses its arguments with clap: `--help` helps and
/// starts nothing; an unknown argument is a usage error.
#[tokio::test]
async fn help_is_help_not_a_start() {
    let standin = SlackStandin::start(&["C1"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, data) = profile(dir.path(), &standin);
    let output = tokio::time::timeout(
        DEADLINE,
        bridge_command(&config, &data).arg("--help").output(),
    )
    .await
    .expect("in time")
    .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("--test") && stdout.contains("rein-bridge-slack"),
        "{stdout}"
    );
    let output = tokio::time::timeout(
        DEADLINE,
        bridge_command(&config, &data).arg("--tset").output(),
    )
    .await
    .expect("in time")
    .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(standin.record().calls.is_empty(), "nothing was started");
}

/// Issue 8, item 18: a bridge that cannot reach Slack says why (the cause, not just "error
/// sending request"), and its link is down, so STATUS and `rein bridge ls` say reconnecting.
#[tokio::test]
async fn an_unreachable_slack_is_reported_with_its_cause_and_a_down_link() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base_url = format!("http://{}/api", closed.local_addr().expect("addr"));
    drop(closed);
    let config = SlackConfig::new(&base_url, APP_TOKEN, BOT_TOKEN).expect("config");
    let (sender, _receiver) = mpsc::channel(16);
    let mut channel = SlackChannel::start(&config, sender, PostedAsks::new(None))
        .await
        .expect("starts and keeps trying");
    let link = channel.link().expect("slack has a link");
    assert!(
        matches!(&*link.borrow(), rein::bridge::Link::Down(_)),
        "{:?}",
        *link.borrow()
    );
    let Err(SendError::Retry { reason, .. }) = channel.test("C1").await else {
        panic!("an unreachable Slack is a retry");
    };
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
}

/// Issue 8, item 18: the link is up once the socket said hello.
#[tokio::test]
async fn the_link_is_up_once_connected() {
    let standin = SlackStandin::start(&["C1"]).await;
    let (channel, _inbound) = connect(&standin).await;
    let mut link = channel.link().expect("slack has a link");
    tokio::time::timeout(
        DEADLINE,
        link.wait_for(|now| *now == rein::bridge::Link::Up),
    )
    .await
    .expect("up in time")
    .expect("link alive");
}
