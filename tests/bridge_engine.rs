//! The shared bridge engine against a real data dir, with a recording channel in place of a
//! service: delivery once per route across restarts, the crash window, allowlists, first
//! answer wins across bridges and the CLI, retries honouring Retry-After.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rein::bridge::config::BridgeSettings;
use rein::bridge::engine::{Changes, Engine};
use rein::bridge::ledger::{Entry, Kind, Ledger, Stage};
use rein::bridge::{Channel, Inbound, Link, PostRef, SendError, Target};
use rein::mailbox::{Ask, Mailbox, NewAsk, Resolution};
use rein::notes::Note;
use rein::store::DataDir;

#[derive(Default)]
struct Log {
    posts: Vec<(String, String, bool)>,
    resolved: Vec<(String, String)>,
    replies: Vec<(String, String)>,
    /// Outcomes to return for the next posts, before succeeding.
    failures: VecDeque<SendError>,
    /// Posts no longer in front of people (`still_posted` says false).
    gone: Vec<PostRef>,
    /// Posts `still_posted` was asked about.
    checked: Vec<PostRef>,
    /// Outcomes to return for the next resolution updates, before succeeding.
    resolve_failures: VecDeque<SendError>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Log>>);

impl Recorder {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().expect("log")
    }
}

impl Channel for Recorder {
    async fn post_ask(
        &mut self,
        ask: &Ask,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        let mut log = self.log();
        if let Some(failure) = log.failures.pop_front() {
            return Err(failure);
        }
        // A post of the same ask to the same route again gets an id of its own.
        let earlier = log
            .posts
            .iter()
            .filter(|(id, to, _)| *id == ask.id && to == route)
            .count();
        log.posts.push((ask.id.clone(), route.to_owned(), resent));
        let id = match earlier {
            0 => format!("msg-{}-{route}", ask.id),
            n => format!("msg-{}-{route}-{n}", ask.id),
        };
        Ok(PostRef {
            route: route.to_owned(),
            id,
        })
    }
    async fn still_posted(&mut self, _ask: &Ask, post: &PostRef) -> Result<bool, SendError> {
        let mut log = self.log();
        log.checked.push(post.clone());
        Ok(!log.gone.contains(post))
    }
    async fn post_note(
        &mut self,
        note: &Note,
        route: &str,
        resent: bool,
    ) -> Result<PostRef, SendError> {
        self.log()
            .posts
            .push((note.id.clone(), route.to_owned(), resent));
        Ok(PostRef {
            route: route.to_owned(),
            id: format!("note-{}", note.id),
        })
    }
    async fn resolved(
        &mut self,
        ask: &Ask,
        resolution: &Resolution,
        _post: &PostRef,
    ) -> Result<(), SendError> {
        if let Some(failure) = self.log().resolve_failures.pop_front() {
            return Err(failure);
        }
        self.log().resolved.push((
            ask.id.clone(),
            rein::bridge::describe_resolution(resolution),
        ));
        Ok(())
    }
    async fn reply(&mut self, to: &Inbound, text: &str) -> Result<(), SendError> {
        self.log()
            .replies
            .push((to.identity.clone(), text.to_owned()));
        Ok(())
    }
    async fn test(&mut self, route: &str) -> Result<String, SendError> {
        Ok(format!("test to {route}"))
    }
}

fn settings(name: &str, allow: &[&str], routes: &[&str]) -> BridgeSettings {
    BridgeSettings {
        name: name.to_owned(),
        allow: allow.iter().map(|s| s.to_string()).collect(),
        routes: routes.iter().map(|s| s.to_string()).collect(),
        worker_routes: Default::default(),
        rate_per_minute: 100,
        notes: true,
        secret_file: None,
        credential: None,
        channel: Default::default(),
    }
}

/// An engine over `data` with the recording channel and settings for `name`.
fn new_engine(
    recorder: Recorder,
    name: &str,
    allow: &[&str],
    routes: &[&str],
    data: &DataDir,
) -> Engine<Recorder> {
    Engine::new(recorder, settings(name, allow, routes), data.clone()).expect("engine")
}

fn file_ask(data: &DataDir, prompt: &str, options: &[&str]) -> Ask {
    Mailbox::new(data.clone())
        .file(&NewAsk {
            worker: "w1".into(),
            prompt: prompt.into(),
            reference: None,
            options: options.iter().map(|s| s.to_string()).collect(),
        })
        .expect("file")
        .0
}

/// A data dir with one ask whose first send failed and waits `after` for its retry, the
/// recording channel and the engine (routes C1) that tried it. Bind `_temp` when taking it
/// apart: the data dir lives as long as it does.
struct SendWaiting {
    _temp: tempfile::TempDir,
    data: DataDir,
    ask: Ask,
    recorder: Recorder,
    engine: Engine<Recorder>,
}

async fn a_send_waiting(prompt: &str, after: Duration) -> SendWaiting {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let ask = file_ask(&data, prompt, &[]);
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    recorder.log().failures.push_back(SendError::Retry {
        after: Some(after),
        reason: "network down".into(),
    });
    assert!(engine.sync().await.expect("sync").is_some(), "a retry due");
    SendWaiting {
        _temp: temp,
        data,
        ask,
        recorder,
        engine,
    }
}

fn inbound(identity: &str, target: Target, text: &str, message_id: &str) -> Inbound {
    Inbound {
        identity: identity.into(),
        target,
        text: text.into(),
        reply_to: PostRef {
            route: "C1".into(),
            id: "thread".into(),
        },
        message_id: message_id.into(),
    }
}

#[tokio::test]
async fn delivers_once_per_route_across_restarts() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let ask = file_ask(&data, "merge?", &["yes", "no"]);
    let recorder = Recorder::default();
    let mut engine = new_engine(
        recorder.clone(),
        "slack",
        &["slack:U1"],
        &["C1", "C2"],
        &data,
    );
    engine.sync().await.expect("sync");
    engine.sync().await.expect("sync again");
    drop(engine);
    let mut restarted = new_engine(
        recorder.clone(),
        "slack",
        &["slack:U1"],
        &["C1", "C2"],
        &data,
    );
    restarted.sync().await.expect("sync after restart");
    let posts = recorder.log().posts.clone();
    assert_eq!(
        posts,
        vec![
            (ask.id.clone(), "C1".into(), false),
            (ask.id.clone(), "C2".into(), false)
        ]
    );
}

#[tokio::test]
async fn a_crash_between_send_and_ledger_write_resends_once_marked_as_a_repeat() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let ask = file_ask(&data, "deploy?", &[]);
    // What a bridge killed inside the channel call leaves behind: `sending`, no post.
    let ledger = Ledger::open(&data, "slack").expect("ledger");
    let mut entry = Entry::new(Kind::Ask, &ask.id, "C1");
    entry.attempts = 1;
    ledger.put(&entry).expect("put");
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    engine.sync().await.expect("sync");
    engine.sync().await.expect("sync");
    assert_eq!(
        recorder.log().posts,
        vec![(ask.id.clone(), "C1".into(), true)],
        "one resend, marked"
    );
    let entry = ledger
        .get(Kind::Ask, &ask.id, "C1")
        .expect("get")
        .expect("entry");
    assert_eq!((entry.stage, entry.attempts), (Stage::Sent, 2));
}

#[tokio::test]
async fn only_allowlisted_people_answer() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let ask = file_ask(&data, "pay the invoice?", &["yes", "no"]);
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    engine.sync().await.expect("sync");
    engine
        .handle(inbound(
            "slack:U666",
            Target::Ask(ask.id.clone()),
            "yes",
            "m1",
        ))
        .await
        .expect("handle");
    assert!(
        Mailbox::new(data.clone())
            .get(&ask.id)
            .expect("get")
            .is_pending(),
        "nothing answered"
    );
    assert!(recorder.log().replies[0]
        .1
        .contains("not on this fleet's list"));
    assert!(std::fs::read_to_string(data.journal())
        .expect("journal")
        .contains("refused an answer from slack:U666"));
    engine
        .handle(inbound(
            "slack:U1",
            Target::Post(PostRef {
                route: "C1".into(),
                id: format!("msg-{}-C1", ask.id),
            }),
            "maybe",
            "m2",
        ))
        .await
        .expect("handle");
    assert!(recorder.log().replies[1]
        .1
        .contains("reply one of: yes, no"));
    engine
        .handle(inbound(
            "slack:U1",
            Target::Post(PostRef {
                route: "C1".into(),
                id: format!("msg-{}-C1", ask.id),
            }),
            "yes",
            "m3",
        ))
        .await
        .expect("handle");
    let resolution = Mailbox::new(data.clone())
        .resolution(&ask.id)
        .expect("read")
        .expect("answered");
    assert_eq!(
        (resolution.text.as_deref(), resolution.by.as_str()),
        (Some("yes"), "slack:U1")
    );
    // A bare code is not an answer.
    let other = file_ask(&data, "second question?", &[]);
    engine
        .handle(inbound(
            "slack:U1",
            Target::Ask(other.id.clone()),
            "  ",
            "m2b",
        ))
        .await
        .expect("handle");
    assert!(recorder
        .log()
        .replies
        .last()
        .expect("reply")
        .1
        .contains("Put your answer after the code"));
    assert!(Mailbox::new(data.clone())
        .get(&other.id)
        .expect("get")
        .is_pending());
    // The same message delivered again answers nothing twice.
    engine
        .handle(inbound("slack:U1", Target::Ask(ask.id.clone()), "no", "m3"))
        .await
        .expect("handle");
    assert_eq!(recorder.log().replies.len(), 4);
    engine.sync().await.expect("sync");
    assert_eq!(
        recorder.log().resolved,
        vec![(
            ask.id.clone(),
            "answered: yes — by slack:U1 via slack".to_owned()
        )]
    );
}

#[tokio::test]
async fn first_answer_wins_across_two_bridges_and_the_cli() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let ask = file_ask(&data, "ship it?", &[]);
    let slack = Recorder::default();
    let sms = Recorder::default();
    let mut slack_engine = new_engine(slack.clone(), "slack", &["slack:U1"], &["C1"], &data);
    let mut sms_engine = new_engine(
        sms.clone(),
        "sms",
        &["sms:+15550001"],
        &["+15550001"],
        &data,
    );
    slack_engine.sync().await.expect("sync");
    sms_engine.sync().await.expect("sync");
    let cli = Mailbox::new(data.clone())
        .answer(&ask.id, "from the cli", "cli:ana")
        .expect("answer");
    assert!(matches!(cli, rein::mailbox::AnswerOutcome::Accepted(_)));
    slack_engine
        .handle(inbound(
            "slack:U1",
            Target::Ask(ask.id.clone()),
            "from slack",
            "s1",
        ))
        .await
        .expect("handle");
    sms_engine
        .handle(inbound(
            "sms:+15550001",
            Target::Unspecified,
            "from sms",
            "t1",
        ))
        .await
        .expect("handle");
    let resolution = Mailbox::new(data.clone())
        .resolution(&ask.id)
        .expect("read")
        .expect("answered");
    assert_eq!(resolution.by, "cli:ana");
    assert!(
        slack.log().replies[0]
            .1
            .contains("already answered \"from the cli\" by cli:ana"),
        "{:?}",
        slack.log().replies
    );
    // The SMS sender named no ask and has none pending any more.
    assert!(
        sms.log().replies[0].1.contains("no pending ask"),
        "{:?}",
        sms.log().replies
    );
    slack_engine.sync().await.expect("sync");
    sms_engine.sync().await.expect("sync");
    let expected = "answered: from the cli — by cli:ana via cli".to_owned();
    assert_eq!(
        slack.log().resolved,
        vec![(ask.id.clone(), expected.clone())]
    );
    assert_eq!(sms.log().resolved, vec![(ask.id.clone(), expected)]);
}

#[tokio::test]
async fn unspecified_replies_pick_the_only_ask_or_list_them() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let first = file_ask(&data, "first?", &[]);
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "sms", &["sms:+1555"], &["C1"], &data);
    let second = file_ask(&data, "second?", &[]);
    engine
        .handle(inbound("sms:+1555", Target::Unspecified, "hm", "a"))
        .await
        .expect("handle");
    let listed = recorder.log().replies[0].1.clone();
    assert!(
        listed.contains(&format!("[{}] first?", first.id))
            && listed.contains(&format!("[{}] second?", second.id)),
        "{listed}"
    );
    Mailbox::new(data.clone())
        .withdraw(&first.id, "cli:ana")
        .expect("withdraw");
    engine
        .handle(inbound("sms:+1555", Target::Unspecified, "ok", "b"))
        .await
        .expect("handle");
    let resolution = Mailbox::new(data.clone())
        .resolution(&second.id)
        .expect("read")
        .expect("answered");
    assert_eq!(resolution.text.as_deref(), Some("ok"));
}

#[tokio::test]
async fn retries_honour_retry_after_and_fatal_errors_are_journaled() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let ask = file_ask(&data, "rate limited?", &[]);
    let recorder = Recorder::default();
    recorder.log().failures.push_back(SendError::Retry {
        after: Some(Duration::from_secs(30)),
        reason: "429".into(),
    });
    let mut engine = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    let next = engine
        .sync()
        .await
        .expect("sync")
        .expect("a retry is scheduled");
    let wait = (next - chrono::Utc::now()).num_seconds();
    assert!(
        (28..=30).contains(&wait),
        "Retry-After 30s honoured: {wait}"
    );
    assert!(recorder.log().posts.is_empty());
    assert!(
        engine.sync().await.expect("sync").is_some(),
        "not before its time"
    );
    assert!(recorder.log().posts.is_empty());
    // Make the retry due now, as the clock would (through the engine's own ledger: the
    // running bridge is its only writer).
    let mut entry = engine
        .ledger()
        .get(Kind::Ask, &ask.id, "C1")
        .expect("get")
        .expect("entry");
    entry.retry_at = Some(chrono::Utc::now());
    engine.ledger().put(&entry).expect("put");
    assert!(engine.sync().await.expect("sync").is_none());
    assert_eq!(
        recorder.log().posts,
        vec![(ask.id.clone(), "C1".into(), false)],
        "a known failure is not a repeat"
    );

    let other = file_ask(&data, "bad channel?", &[]);
    recorder
        .log()
        .failures
        .push_back(SendError::Fatal("channel_not_found".into()));
    engine.sync().await.expect("sync");
    let entry = engine
        .ledger()
        .get(Kind::Ask, &other.id, "C1")
        .expect("get")
        .expect("entry");
    assert_eq!(entry.stage, Stage::Failed);
    assert!(std::fs::read_to_string(data.journal())
        .expect("journal")
        .contains("channel_not_found"));
}

#[tokio::test]
async fn notes_are_relayed_once() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let recorder = Recorder::default();
    let mut engine = new_engine(
        recorder.clone(),
        "email",
        &["email:a@b.c"],
        &["a@b.c"],
        &data,
    );
    let note = rein::notes::notify(&data, "w1", "build is red").expect("notify");
    engine.sync().await.expect("sync");
    engine.sync().await.expect("sync");
    assert_eq!(recorder.log().posts, vec![(note.id, "a@b.c".into(), false)]);
}

/// A channel that lost its connection: STATUS says so; when it is back up, what waited for a
/// retry is retried at once, and a pending ask whose post went away with the connection is
/// posted again (as it is when the engine starts), but nothing still shown is.
#[tokio::test]
async fn a_link_back_up_retries_now_and_reposts_what_went_away() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let shown = file_ask(&data, "still shown?", &[]);
    let lost = file_ask(&data, "lost with the bus?", &[]);
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "konsole", &["konsole:u"], &["1"], &data);
    engine.sync().await.expect("sync");
    assert_eq!(recorder.log().posts.len(), 2);
    // What the engine has recorded by now (a Ledger sees only its own writes after its first
    // look, so the engine's).
    let post_of = |engine: &Engine<Recorder>, id: &str| {
        engine
            .ledger()
            .get(Kind::Ask, id, "1")
            .expect("get")
            .and_then(|entry| entry.post)
            .expect("posted")
    };
    recorder.log().gone.push(post_of(&engine, &lost.id));
    assert!(
        engine.status().starts_with("delivered 2"),
        "{}",
        engine.status()
    );

    engine.link_changed(Link::Down("lost the session bus; reconnecting…".into()));
    assert!(
        engine
            .status()
            .starts_with("reconnecting: lost the session bus; reconnecting…; delivered 2"),
        "{}",
        engine.status()
    );
    recorder.log().failures.push_back(SendError::Retry {
        after: Some(Duration::from_secs(300)),
        reason: "reconnecting".into(),
    });
    let waiting = file_ask(&data, "filed while the link was down?", &[]);
    let checked = recorder.log().checked.len();
    engine.sync().await.expect("sync");
    assert_eq!(recorder.log().posts.len(), 2, "retried only after 300 s");
    assert_eq!(
        recorder.log().checked.len(),
        checked,
        "posts are checked on Up, not on every sync"
    );

    engine.link_changed(Link::Up);
    engine.sync().await.expect("sync");
    assert!(
        engine.status().starts_with("connected; "),
        "{}",
        engine.status()
    );
    let posted: Vec<String> = recorder.log().posts[2..]
        .iter()
        .map(|(id, _, _)| id.clone())
        .collect();
    let mut expected = vec![lost.id.clone(), waiting.id.clone()];
    expected.sort();
    let mut posted_sorted = posted.clone();
    posted_sorted.sort();
    assert_eq!(posted_sorted, expected, "{posted:?}");
    assert_ne!(
        post_of(&engine, &lost.id),
        recorder.log().gone[0],
        "the new post is recorded"
    );
    assert_eq!(
        post_of(&engine, &shown.id).id,
        format!("msg-{}-1", shown.id)
    );

    // A restarted engine checks too; an answered ask is not asked about.
    Mailbox::new(data.clone())
        .answer(&shown.id, "done", "cli:u")
        .expect("answer");
    recorder.log().gone.push(post_of(&engine, &waiting.id));
    recorder.log().checked.clear();
    drop(engine);
    let mut restarted = new_engine(recorder.clone(), "konsole", &["konsole:u"], &["1"], &data);
    restarted.sync().await.expect("sync");
    let log = recorder.log();
    assert_eq!(log.checked.len(), 2, "{:?}", log.checked);
    assert_eq!(
        log.posts.last().map(|(id, _, _)| id.as_str()),
        Some(waiting.id.as_str())
    );
    assert_eq!(log.posts.len(), 5);
}

/// Issue 8, item 6: strangers cannot make the bridge send a paid message each: a refusal goes
/// out at most once a day per sender (across restarts), and within the channel's rate limit.
#[tokio::test]
async fn refusals_are_once_a_day_per_sender_within_the_rate_limit() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let ask = file_ask(&data, "pay?", &["yes", "no"]);
    let recorder = Recorder::default();
    let mut settings = settings("sms", &["sms:+15550001"], &["+15550001"]);
    settings.rate_per_minute = 5;
    let mut engine = Engine::new(recorder.clone(), settings.clone(), data.clone()).expect("engine");
    engine.sync().await.expect("sync");
    for n in 0..3 {
        engine
            .handle(inbound(
                "sms:+15559999",
                Target::Ask(ask.id.clone()),
                "yes",
                &format!("again-{n}"),
            ))
            .await
            .expect("handle");
    }
    assert_eq!(
        recorder.log().replies.len(),
        1,
        "one refusal for one sender"
    );
    drop(engine);
    let mut engine = Engine::new(recorder.clone(), settings, data.clone()).expect("engine");
    engine
        .handle(inbound(
            "sms:+15559999",
            Target::Ask(ask.id.clone()),
            "yes",
            "after-restart",
        ))
        .await
        .expect("handle");
    assert_eq!(recorder.log().replies.len(), 1, "still one after a restart");
    let started = tokio::time::Instant::now();
    for n in 0..55 {
        engine
            .handle(inbound(
                &format!("sms:+1555100{n:04}"),
                Target::Ask(ask.id.clone()),
                "yes",
                &format!("stranger-{n}"),
            ))
            .await
            .expect("handle");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals never wait for the rate limit"
    );
    // The first sender's refusal, then at most five in this engine's minute.
    let refusals = recorder.log().replies.len() - 1;
    assert!(
        refusals <= 5,
        "{refusals} refusals to 55 strangers with rate_per_minute = 5"
    );
    assert!(Mailbox::new(data.clone())
        .get(&ask.id)
        .expect("get")
        .is_pending());
    let journal = std::fs::read_to_string(data.journal()).expect("journal");
    assert_eq!(
        journal.matches("not in the allowlist").count(),
        59,
        "each is journaled"
    );
}

/// Issue 8, item 12: a failed "answered elsewhere" update is retried from the ledger (the
/// engine schedules it), closed entries are pruned so the ledger does not grow with history,
/// and a late reply to a pruned post still finds its ask.
#[tokio::test]
async fn failed_updates_are_retried_and_closed_entries_pruned() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let ask = file_ask(&data, "release?", &["yes", "no"]);
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    engine.sync().await.expect("sync");
    Mailbox::new(data.clone())
        .answer(&ask.id, "yes", "cli:ana")
        .expect("answer");
    recorder.log().resolve_failures.push_back(SendError::Retry {
        after: Some(Duration::from_millis(200)),
        reason: "network down".into(),
    });
    let next = engine.sync().await.expect("sync");
    assert!(recorder.log().resolved.is_empty());
    let due = next.expect("the failed update is scheduled for a retry");
    assert!(
        due <= chrono::Utc::now() + chrono::Duration::seconds(1),
        "{due}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.sync().await.expect("sync");
    assert_eq!(recorder.log().resolved.len(), 1, "retried and posted");
    let ledger = Ledger::open(&data, "slack").expect("ledger");
    assert!(
        ledger.entries().expect("entries").is_empty(),
        "closed: pruned"
    );
    assert_eq!(ledger.pruned().expect("pruned"), 1);
    let late = inbound(
        "slack:U1",
        Target::Post(PostRef {
            route: "C1".into(),
            id: format!("msg-{}-C1", ask.id),
        }),
        "no",
        "late",
    );
    engine.handle(late).await.expect("handle");
    assert!(
        recorder
            .log()
            .replies
            .last()
            .expect("reply")
            .1
            .contains("already answered"),
        "{:?}",
        recorder.log().replies
    );
}

/// Issue 8, item 12: notes' entries are pruned once delivered, and delivered notes are not
/// sent again.
#[tokio::test]
async fn delivered_notes_are_pruned_and_not_sent_again() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    engine.sync().await.expect("sync");
    for n in 0..3 {
        rein::notes::notify(&data, "w1", &format!("note {n}")).expect("notify");
    }
    engine.sync().await.expect("sync");
    engine.sync().await.expect("sync again");
    assert_eq!(recorder.log().posts.len(), 3);
    let ledger = Ledger::open(&data, "slack").expect("ledger");
    assert!(ledger.entries().expect("entries").is_empty());
    assert!(ledger.notes_done().expect("cursor").is_some());
    drop(engine);
    let mut restarted = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    restarted.sync().await.expect("sync");
    assert_eq!(recorder.log().posts.len(), 3, "nothing sent twice");
}

/// Once the engine has read its ledger, a sync reads none of the entry files again, so its
/// work per event does not grow with the asks it has sent: here the files turn unreadable
/// under it, and a new ask is still delivered, an answer still posted, the rest left alone.
#[tokio::test]
async fn a_sync_does_not_read_the_ledger_entry_files_again() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let asks: Vec<Ask> = (0..3)
        .map(|n| file_ask(&data, &format!("question {n}?"), &[]))
        .collect();
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    engine.sync().await.expect("sync");
    assert_eq!(recorder.log().posts.len(), 3);
    let dir = data.bridge("slack").expect("bridge dir").join("ledger");
    for (_, path) in rein::store::list(&dir, ".json").expect("ledger dir") {
        std::fs::write(&path, "not an entry").expect("overwrite");
    }
    assert!(
        Ledger::open(&data, "slack")
            .expect("ledger")
            .entries()
            .is_err(),
        "the entry files are unreadable now"
    );

    let new = file_ask(&data, "one more?", &[]);
    Mailbox::new(data.clone())
        .answer(&asks[0].id, "yes", "cli:ana")
        .expect("answer");
    assert_eq!(engine.sync().await.expect("sync"), None);
    assert_eq!(
        recorder.log().posts[3..],
        [(new.id.clone(), "C1".to_owned(), false)],
        "only the new ask is sent"
    );
    assert_eq!(
        recorder.log().resolved,
        [(
            asks[0].id.clone(),
            "answered: yes — by cli:ana via cli".to_owned()
        )]
    );
}

/// An ask answered (here on the command line) while its send waits for a retry needs no
/// send any more: its entry is settled, and the engine does not keep waking for it.
#[tokio::test]
async fn an_ask_resolved_while_its_send_waits_is_not_retried() {
    let SendWaiting {
        data,
        ask,
        recorder,
        mut engine,
        _temp,
    } = a_send_waiting("deploy?", Duration::from_millis(100)).await;
    Mailbox::new(data.clone())
        .answer(&ask.id, "yes", "cli:ana")
        .expect("answer");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        engine.sync().await.expect("sync"),
        None,
        "nothing is due any more"
    );
    assert!(
        recorder.log().posts.is_empty(),
        "{:?}",
        recorder.log().posts
    );
    assert!(
        engine.status().ends_with(" 0 pending"),
        "{}",
        engine.status()
    );
    assert!(engine.ledger().entries().expect("entries").is_empty());
}

/// An event names the asks it is about: the engine looks at those alone, not at every
/// pending ask, so an event costs the same however many wait. What it does for them is what
/// a full look does: a new ask is delivered, an answered one is posted where it was and its
/// entry leaves the ledger. An ask no event named waits for a full look (at start, after
/// lost events, when the link comes back).
#[tokio::test]
async fn a_change_is_handled_for_the_asks_it_names_alone() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = DataDir::new(temp.path());
    let recorder = Recorder::default();
    let mut engine = new_engine(recorder.clone(), "slack", &["slack:U1"], &["C1"], &data);
    engine.sync().await.expect("first look");
    let named = file_ask(&data, "named?", &[]);
    let unnamed = file_ask(&data, "unnamed?", &[]);
    let about = |id: &str| Changes {
        asks: [id.to_owned()].into(),
        ..Changes::default()
    };
    engine
        .sync_changes(about(&named.id))
        .await
        .expect("sync the named ask");
    assert_eq!(
        recorder.log().posts,
        [(named.id.clone(), "C1".to_owned(), false)],
        "the named ask alone is delivered"
    );
    Mailbox::new(data.clone())
        .answer(&named.id, "yes", "cli:ana")
        .expect("answer");
    engine
        .sync_changes(about(&named.id))
        .await
        .expect("sync the answer");
    assert_eq!(
        recorder.log().resolved.len(),
        1,
        "{:?}",
        recorder.log().resolved
    );
    assert_eq!(recorder.log().resolved[0].0, named.id);
    assert!(
        engine
            .ledger()
            .entries_of(Kind::Ask, &named.id)
            .expect("entries")
            .is_empty(),
        "the closed entry is pruned"
    );
    engine
        .sync_changes(Changes {
            everything: true,
            ..Changes::default()
        })
        .await
        .expect("a full look");
    assert_eq!(
        recorder.log().posts,
        [
            (named.id.clone(), "C1".to_owned(), false),
            (unnamed.id.clone(), "C1".to_owned(), false)
        ]
    );
}

/// A retry that falls due is handled for the items due alone: the send is tried again, and no
/// other pending ask is looked at (one filed without an event stays unsent until a full look).
#[tokio::test]
async fn a_retry_due_is_handled_for_the_items_due_alone() {
    let SendWaiting {
        data,
        ask: first,
        recorder,
        mut engine,
        _temp,
    } = a_send_waiting("first?", Duration::from_millis(100)).await;
    let unnamed = file_ask(&data, "unnamed?", &[]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(engine.sync_due().await.expect("sync due"), None);
    assert_eq!(
        recorder.log().posts,
        [(first.id.clone(), "C1".to_owned(), false)],
        "the retried ask alone"
    );
    engine.sync().await.expect("a full look");
    assert_eq!(
        recorder.log().posts,
        [
            (first.id.clone(), "C1".to_owned(), false),
            (unnamed.id.clone(), "C1".to_owned(), false)
        ]
    );
}

/// An ask that is gone from the mailbox altogether (its file removed by hand) while its send
/// waits for a retry: its entry leaves the ledger, and no retry stays due (one would wake the
/// engine again at once, for ever).
#[tokio::test]
async fn an_ask_gone_while_its_send_waits_leaves_the_ledger() {
    for full in [false, true] {
        let SendWaiting {
            data,
            ask,
            recorder,
            mut engine,
            _temp,
        } = a_send_waiting("gone?", Duration::from_millis(50)).await;
        std::fs::remove_file(data.asks().join(format!("{}.json", ask.id))).expect("rm");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let next = if full {
            engine.sync().await
        } else {
            engine.sync_due().await
        };
        assert_eq!(next.expect("sync"), None, "full look: {full}");
        assert!(
            engine.ledger().entries().expect("entries").is_empty(),
            "full look: {full}"
        );
        assert!(recorder.log().posts.is_empty());
    }
}
