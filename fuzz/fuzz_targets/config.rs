//! `config.toml`: whatever loads stays within the documented bounds, and prints and parses
//! back to the same config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rein::config::Config;
use rein::duration::MAX_SIZE;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(Path::new("config.toml"), text) else {
        return;
    };
    assert!(config.sensors.output_cap <= MAX_SIZE);
    assert!(config.workers.memory_max.is_none_or(|max| max <= MAX_SIZE));
    assert!(config
        .workers
        .cpu_quota
        .is_none_or(|quota| (1..=100_000).contains(&quota)));
    let printed = toml::to_string(&config).expect("a loaded config prints");
    let again = Config::parse(Path::new("printed.toml"), &printed)
        .unwrap_or_else(|error| panic!("{error}\n{printed}"));
    assert_eq!(
        serde_json::to_value(&config).expect("json"),
        serde_json::to_value(&again).expect("json"),
        "{printed}"
    );
});
