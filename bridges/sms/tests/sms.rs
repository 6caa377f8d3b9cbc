//! The SMS bridge against the local Twilio stand-in: texting asks within their segments,
//! polling replies once per SID (across pages and restarts), the signed webhook, rate limits
//! and bad credentials.

mod standin;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rein::bridge::{Channel, Inbound, PostRef, SendError, Target};
use rein::mailbox::{Ask, Mailbox, NewAsk, Resolution, ResolutionKind};
use rein::store::DataDir;
use rein_bridge_sms::config::Webhook;
use rein_bridge_sms::reply::NoMailbox;
use rein_bridge_sms::{webhook, MemorySeen, SeenMessages, SmsChannel, SmsConfig};
use standin::{TwilioStandin, ACCOUNT_SID, AUTH_TOKEN, DEADLINE, OUR_NUMBER};
use tokio::sync::mpsc;

const PERSON: &str = "+15557654321";

fn ask(prompt: &str, options: &[&str]) -> Ask {
    Ask {
        version: 1,
        id: "ab3x9k".into(),
        seq: 1,
        worker: "w1".into(),
        prompt: prompt.into(),
        reference: None,
        options: options.iter().map(|o| o.to_string()).collect(),
        created: Utc::now(),
        key: "k".into(),
    }
}

fn config(standin: &TwilioStandin, poll: Option<Duration>) -> SmsConfig {
    let mut config =
        SmsConfig::new(&standin.base_url(), ACCOUNT_SID, AUTH_TOKEN, OUR_NUMBER).expect("config");
    config.poll_interval = poll;
    config
}

async fn start(config: SmsConfig, seen: Arc<MemorySeen>) -> (SmsChannel, mpsc::Receiver<Inbound>) {
    let (sender, receiver) = mpsc::channel(128);
    let channel = SmsChannel::start(config, sender, Box::new(seen), Box::new(NoMailbox))
        .await
        .expect("start");
    (channel, receiver)
}

async fn next(receiver: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(DEADLINE, receiver.recv())
        .await
        .expect("an inbound message in time")
        .expect("the channel is alive")
}

/// Waits for `polls` more list requests: anything those polls found has been passed on.
async fn polls(standin: &TwilioStandin, polls: usize) {
    let target = standin.record().list_requests + polls;
    standin
        .wait_for(&format!("{polls} more polls"), |r| {
            (r.list_requests >= target).then_some(())
        })
        .await;
}

#[tokio::test]
async fn an_ask_is_texted_code_first_within_its_segments() {
    let standin = TwilioStandin::start().await;
    let (mut channel, _inbound) = start(config(&standin, None), Arc::default()).await;

    let post = channel
        .post_ask(&ask("Merge PR 12?", &["yes", "no"]), PERSON, false)
        .await
        .expect("sent");
    let sent = standin.record().sent()[0].clone();
    assert_eq!(
        post,
        PostRef {
            route: PERSON.into(),
            id: sent.sid.clone()
        }
    );
    assert!(sent.sid.starts_with("SM"));
    assert_eq!((sent.to.as_str(), sent.from.as_str()), (PERSON, OUR_NUMBER));
    assert_eq!(sent.body, "[ab3x9k] w1: Merge PR 12? Reply yes/no");
    assert_eq!(sent.num_segments, 1);

    let long = "Deploy the release branch to production after the migration finished and the canary stayed green for an hour, then tell the on-call team in the channel. ".repeat(4);
    channel
        .post_ask(&ask(&long, &["yes", "no"]), PERSON, false)
        .await
        .expect("sent");
    let sent = standin.record().sent()[1].clone();
    assert_eq!(sent.num_segments, 2, "{}", sent.body);
    assert!(
        sent.body.starts_with("[ab3x9k] w1: Deploy the release"),
        "{}",
        sent.body
    );
    assert!(sent.body.ends_with("... Reply yes/no"), "{}", sent.body);

    channel
        .post_ask(&ask(&format!("Ship it 🚀? {long}"), &[]), PERSON, true)
        .await
        .expect("sent");
    let sent = standin.record().sent()[2].clone();
    assert!(
        sent.num_segments <= 2,
        "{} segments: {}",
        sent.num_segments,
        sent.body
    );
    assert!(
        sent.body.starts_with("[ab3x9k] (again) w1: Ship it 🚀?"),
        "{}",
        sent.body
    );
    assert!(
        sent.body.ends_with("… Reply: ab3x9k <your answer>"),
        "{}",
        sent.body
    );
}

#[tokio::test]
async fn received_texts_become_inbound_once_per_sid_and_history_is_skipped() {
    let standin = TwilioStandin::start().await;
    standin.receive(PERSON, "yes (an answer to something long gone)");
    let (_channel, mut inbound) = start(
        config(&standin, Some(Duration::from_millis(50))),
        Arc::default(),
    )
    .await;

    let coded = standin.receive(PERSON, "Ab3x9k no");
    let bare = standin.receive("+15559990000", "yes");
    let first = next(&mut inbound).await;
    assert_eq!(
        first,
        Inbound {
            identity: format!("sms:{PERSON}"),
            target: Target::Ask("ab3x9k".into()),
            text: "no".into(),
            reply_to: PostRef {
                route: PERSON.into(),
                id: coded.clone()
            },
            message_id: coded,
        }
    );
    let second = next(&mut inbound).await;
    assert_eq!(
        (second.identity.as_str(), &second.target),
        ("sms:+15559990000", &Target::Unspecified)
    );
    assert_eq!(
        (second.text.as_str(), second.message_id.as_str()),
        ("yes", bare.as_str())
    );

    standin.receive(PERSON, "STOP");
    polls(&standin, 3).await;
    assert!(
        inbound.try_recv().is_err(),
        "nothing twice, no history, no keyword"
    );
}

#[tokio::test]
async fn a_burst_longer_than_a_page_is_read_across_pages_in_order() {
    let standin = TwilioStandin::start().await;
    let (_channel, mut inbound) = start(
        config(&standin, Some(Duration::from_millis(50))),
        Arc::default(),
    )
    .await;
    // All at once, so one poll finds 60 new messages: more than a page of 50.
    let bodies: Vec<String> = (0..60).map(|n| format!("answer {n}")).collect();
    let sids = standin.receive_many(PERSON, &bodies);
    for (n, sid) in sids.iter().enumerate() {
        let message = next(&mut inbound).await;
        assert_eq!(
            (message.message_id.as_str(), message.text.clone()),
            (sid.as_str(), format!("answer {n}"))
        );
    }
    assert!(
        standin.record().later_pages >= 1,
        "the second page was read"
    );
    polls(&standin, 3).await;
    assert!(inbound.try_recv().is_err(), "each once");
}

#[tokio::test]
async fn a_restarted_bridge_skips_what_the_ledger_marked() {
    let standin = TwilioStandin::start().await;
    let seen = Arc::new(MemorySeen::default());
    let (channel, mut inbound) = start(
        config(&standin, Some(Duration::from_millis(50))),
        seen.clone(),
    )
    .await;
    let handled = standin.receive(PERSON, "ab3x9k yes");
    assert_eq!(next(&mut inbound).await.message_id, handled);
    seen.mark(&handled)
        .expect("the engine marks what it handled");
    drop(channel);

    let unhandled = standin.receive(PERSON, "cd4y7m no");
    let (_channel, mut inbound) = start(
        config(&standin, Some(Duration::from_millis(50))),
        seen.clone(),
    )
    .await;
    assert_eq!(
        next(&mut inbound).await.message_id,
        unhandled,
        "not taken as history: the baseline exists"
    );
    polls(&standin, 3).await;
    assert!(inbound.try_recv().is_err());
}

async fn post_webhook(
    url: &str,
    params: &[(&str, &str)],
    signature: Option<String>,
) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url).form(params);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    let response = request.send().await.expect("the webhook answers");
    (
        response.status().as_u16(),
        response.text().await.expect("a body"),
    )
}

#[tokio::test]
async fn the_webhook_takes_signed_requests_only() {
    let standin = TwilioStandin::start().await;
    let public_url = "https://rein.example.org/twilio/sms";
    let mut config = config(&standin, None);
    config.webhook = Some(Webhook {
        bind: "127.0.0.1:0".parse().expect("addr"),
        url: public_url.into(),
    });
    let (channel, mut inbound) = start(config, Arc::default()).await;
    let local = format!(
        "http://{}/twilio/sms",
        channel.webhook_addr().expect("listening")
    );
    let message = |sid: &'static str, body: &'static str| {
        vec![
            ("MessageSid", sid),
            ("SmsSid", sid),
            ("AccountSid", ACCOUNT_SID),
            ("From", PERSON),
            ("To", OUR_NUMBER),
            ("Body", body),
            ("NumMedia", "0"),
        ]
    };
    let sign = |token: &str, params: &[(&str, &str)]| {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        webhook::signature(token, public_url, &owned)
    };

    let good = message("SM00000000000000000000000000000001", "ab3x9k yes");
    let (status, body) = post_webhook(&local, &good, Some(sign(AUTH_TOKEN, &good))).await;
    assert_eq!(status, 200);
    assert!(body.contains("<Response>"), "{body}");
    let received = next(&mut inbound).await;
    assert_eq!(
        (received.message_id.as_str(), received.text.as_str()),
        ("SM00000000000000000000000000000001", "yes")
    );

    let forged = message("SM00000000000000000000000000000002", "ab3x9k no");
    assert_eq!(
        post_webhook(&local, &forged, Some(sign("not-the-token", &forged)))
            .await
            .0,
        403
    );
    let tampered = message("SM00000000000000000000000000000002", "ab3x9k no");
    let signed_for_other_body = sign(
        AUTH_TOKEN,
        &message("SM00000000000000000000000000000002", "ab3x9k yes"),
    );
    assert_eq!(
        post_webhook(&local, &tampered, Some(signed_for_other_body))
            .await
            .0,
        403
    );
    assert_eq!(post_webhook(&local, &forged, None).await.0, 403);
    assert_eq!(
        post_webhook(&local, &forged, Some("garbage".into()))
            .await
            .0,
        403
    );
    // Twilio retrying the first one: answered, not passed on again.
    assert_eq!(
        post_webhook(&local, &good, Some(sign(AUTH_TOKEN, &good)))
            .await
            .0,
        200
    );

    let marker = message("SM00000000000000000000000000000003", "cd4y7m no");
    assert_eq!(
        post_webhook(&local, &marker, Some(sign(AUTH_TOKEN, &marker)))
            .await
            .0,
        200
    );
    let received = next(&mut inbound).await;
    assert_eq!(
        received.message_id, "SM00000000000000000000000000000003",
        "forged and repeated requests passed nothing on"
    );
}

#[tokio::test]
async fn a_rate_limit_is_a_retry_after_twilios_delay() {
    let standin = TwilioStandin::start().await;
    let (mut channel, _inbound) = start(config(&standin, None), Arc::default()).await;
    standin.rate_limit(1, 9);
    match channel
        .post_ask(&ask("Merge?", &["yes"]), PERSON, false)
        .await
    {
        Err(SendError::Retry { after, .. }) => assert_eq!(after, Some(Duration::from_secs(9))),
        other => panic!("expected a retry, got {other:?}"),
    }
    channel
        .post_ask(&ask("Merge?", &["yes"]), PERSON, false)
        .await
        .expect("sent after the limit");
}

#[tokio::test]
async fn bad_credentials_and_numbers_are_fatal() {
    let standin = TwilioStandin::start().await;
    let mut wrong = config(&standin, None);
    wrong.auth_token = "wrong".into();
    let (sender, _inbound) = mpsc::channel(4);
    let error = SmsChannel::start(
        wrong,
        sender,
        Box::new(MemorySeen::default()),
        Box::new(NoMailbox),
    )
    .await
    .err()
    .expect("bad credentials stop the start");
    assert!(format!("{error:#}").contains("20003"), "{error:#}");

    let (mut channel, _inbound) = start(config(&standin, None), Arc::default()).await;
    let error = channel.test("5551234").await.expect_err("not E.164");
    assert!(
        matches!(&error, SendError::Fatal(e) if e.contains("21211")),
        "{error:?}"
    );
    assert!(channel
        .test(PERSON)
        .await
        .expect("a test text")
        .contains(PERSON));
}

#[tokio::test]
async fn a_resolution_is_texted_unless_the_person_gave_it() {
    let standin = TwilioStandin::start().await;
    let (mut channel, _inbound) = start(config(&standin, None), Arc::default()).await;
    let asked = ask("Merge PR 12?", &["yes", "no"]);
    let post = channel.post_ask(&asked, PERSON, false).await.expect("sent");
    let resolution = |by: &str| Resolution {
        version: 1,
        ask: asked.id.clone(),
        kind: ResolutionKind::Answered,
        text: Some("yes".into()),
        by: by.into(),
        at: Utc::now(),
        reason: None,
    };
    channel
        .resolved(&asked, &resolution(&format!("sms:{PERSON}")), &post)
        .await
        .expect("nothing to send");
    assert_eq!(standin.record().sent().len(), 1);
    channel
        .resolved(&asked, &resolution("slack:U1"), &post)
        .await
        .expect("sent");
    let sent = standin.record().sent()[1].clone();
    assert_eq!(sent.body, "[ab3x9k] answered: yes — by slack:U1 via slack");
}

#[tokio::test]
async fn the_standin_rejects_what_twilio_rejects() {
    let standin = TwilioStandin::start().await;
    let url = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        standin.base_url()
    );
    let client = reqwest::Client::new();
    let response = client
        .post(&url)
        .form(&[("To", PERSON), ("From", OUR_NUMBER), ("Body", "hi")])
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 401, "no Basic auth");
    for (form, code) in [
        (vec![("From", OUR_NUMBER), ("Body", "hi")], 21604),
        (vec![("To", PERSON), ("Body", "hi")], 21603),
        (vec![("To", PERSON), ("From", OUR_NUMBER)], 21602),
        (
            vec![("To", PERSON), ("From", "+15550009999"), ("Body", "hi")],
            21606,
        ),
    ] {
        let response = client
            .post(&url)
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .form(&form)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status().as_u16(), 400);
        let error: serde_json::Value = response.json().await.expect("error JSON");
        assert_eq!(error["code"], code, "{form:?}");
        assert_eq!(error["status"], 400);
        assert!(error["message"].is_string() && error["more_info"].is_string());
    }
}

/// Writes a profile (config with `[bridges.sms]`, a 0600 secrets file, a data dir) for the
/// real `rein-bridge-sms` binary.
fn profile(
    dir: &std::path::Path,
    standin: &TwilioStandin,
) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let secrets = dir.join("sms.secrets");
    std::fs::write(&secrets, format!("auth_token = \"{AUTH_TOKEN}\"\n")).expect("secrets");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[bridges.sms]\nallow = [\"sms:{PERSON}\"]\nroutes = [\"{PERSON}\"]\nsecret_file = \"{}\"\nbase_url = \"{}\"\naccount_sid = \"{ACCOUNT_SID}\"\nfrom = \"{OUR_NUMBER}\"\npoll_interval = \"1s\"\n",
            secrets.display(),
            standin.base_url()
        ),
    )
    .expect("config");
    (config, dir.join("data"))
}

#[tokio::test]
async fn the_bridge_binary_texts_an_ask_and_turns_the_reply_into_the_answer() {
    let standin = TwilioStandin::start().await;
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
    let mut bridge = tokio::process::Command::new(env!("CARGO_BIN_EXE_rein-bridge-sms"))
        .env("REIN_CONFIG", &config)
        .env("REIN_DATA_DIR", &data)
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true)
        .spawn()
        .expect("the bridge starts");

    let code = format!("[{}]", asked.id);
    standin
        .wait_for("the ask texted", |r| {
            r.sent()
                .iter()
                .any(|m| m.to == PERSON && m.body.starts_with(&code))
                .then_some(())
        })
        .await;
    standin.receive("+15559990000", "yes");
    standin
        .wait_for("the refusal texted", |r| {
            r.sent()
                .iter()
                .any(|m| m.to == "+15559990000")
                .then_some(())
        })
        .await;
    assert!(
        mailbox.get(&asked.id).expect("ask").resolution.is_none(),
        "a stranger answers nothing"
    );

    standin.receive(PERSON, "Yes");
    standin
        .wait_for("the confirmation", |r| {
            r.sent()
                .iter()
                .any(|m| m.to == PERSON && m.body.contains("Got it"))
                .then_some(())
        })
        .await;
    let resolution = mailbox
        .get(&asked.id)
        .expect("ask")
        .resolution
        .expect("answered");
    assert_eq!(
        (resolution.text.as_deref(), resolution.by.as_str()),
        (Some("yes"), format!("sms:{PERSON}").as_str())
    );
    bridge.start_kill().expect("stop the bridge");
    let _ = bridge.wait().await;
}
