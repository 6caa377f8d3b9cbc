//! The real agent CLIs (installed by `contrib/agents.sh`) configured the way a user would:
//! a rein profile whose runner is the CLI, reaching the scripted model server through
//! `runner.home_template` (the provider settings) and a secret API key.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::model_server::{ModelServer, API_KEY};
use super::{user_manager, Rein};

/// The four CLIs the presets cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cli {
    Claude,
    Codex,
    Opencode,
    Pi,
}

impl Cli {
    pub fn name(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
            Cli::Opencode => "opencode",
            Cli::Pi => "pi",
        }
    }
}

pub fn agents_bin() -> PathBuf {
    let prefix = std::env::var_os("REIN_AGENTS_PREFIX").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/agents"),
        PathBuf::from,
    );
    let bin = prefix.join("node_modules/.bin");
    assert!(
        bin.join("claude").exists(),
        "the agent CLIs are not installed at {}: run `contrib/agents.sh install` first",
        bin.display()
    );
    bin
}
/// A profile whose runner is `cli`, reaching `server` through a settings template and a
/// secret API key, as a user would set it up.
pub fn profile(cli: Cli, server: &ModelServer, judge: bool) -> Rein {
    user_manager::ensure();
    let rein = Rein::new();
    let template = rein.temp.path().join("agent-home");
    let base = server.base_url();
    let write = |relative: &str, text: String| {
        let path = template.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("template dir");
        std::fs::write(path, text).expect("template file");
    };
    let (key_variable, extra_env) = match cli {
        Cli::Claude => (
            "ANTHROPIC_API_KEY",
            format!(
                "ANTHROPIC_BASE_URL = \"{base}\"\nCLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\"\n"
            ),
        ),
        Cli::Codex => {
            write(
                ".codex/config.toml",
                format!(
                    "model = \"offline-model\"\nmodel_provider = \"offline\"\n\
                     [model_providers.offline]\nname = \"offline\"\nbase_url = \"{base}/v1\"\n\
                     env_key = \"OFFLINE_API_KEY\"\nwire_api = \"responses\"\n"
                ),
            );
            ("OFFLINE_API_KEY", String::new())
        }
        Cli::Opencode => {
            let config = json!({
                "provider": {"offline": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Offline",
                    "options": {"baseURL": format!("{base}/v1"), "apiKey": "{env:OFFLINE_API_KEY}"},
                    "models": {"offline-model": {"name": "Offline model", "tool_call": true}},
                }},
                "model": "offline/offline-model",
                "small_model": "offline/offline-model",
            });
            write(".config/opencode/opencode.json", config.to_string());
            (
                "OFFLINE_API_KEY",
                "OPENCODE_DISABLE_MODELS_FETCH = \"1\"\n".to_owned(),
            )
        }
        Cli::Pi => {
            let models = json!({"providers": {"offline": {
                "baseUrl": format!("{base}/v1"),
                "api": "openai-completions",
                "apiKey": "OFFLINE_API_KEY",
                "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
                "models": [{"id": "offline-model", "name": "Offline model"}],
            }}});
            write(".pi/agent/models.json", models.to_string());
            write(
                ".pi/agent/settings.json",
                json!({"defaultProvider": "offline", "defaultModel": "offline-model"}).to_string(),
            );
            ("OFFLINE_API_KEY", "PI_OFFLINE = \"1\"\n".to_owned())
        }
    };
    std::fs::create_dir_all(&template).expect("template");
    let key = rein.temp.path().join("model.key");
    std::fs::write(&key, format!("{API_KEY}\n")).expect("key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let judge = if judge {
        "[judge]\nmode = \"llm\"\ntimeout = \"3m\"\n"
    } else {
        ""
    };
    rein.write_config(&format!(
        "[runner]\npreset = \"{}\"\nhome_template = \"{}\"\n\
         [runner.env]\nPATH = \"{}:/usr/local/bin:/usr/bin:/bin\"\n{extra_env}\
         [runner.secrets]\n{key_variable} = \"file:{}\"\n\
         [workers]\nrestart = \"no\"\n{judge}",
        cli.name(),
        template.display(),
        agents_bin().display(),
        key.display(),
    ));
    rein
}
