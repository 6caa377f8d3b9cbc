//! `config.toml`: whatever loads stays within the documented bounds, and prints and parses
//! back to the same config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rein::config::Config;
use rein::duration::MAX_SIZE;

fn has_long_quote_run(value: &serde_json::Value) -> bool {
    let long = |text: &str| text.contains(&"'".repeat(200)) || text.contains(&"\"".repeat(200));
    match value {
        serde_json::Value::String(text) => long(text),
        serde_json::Value::Array(items) => items.iter().any(has_long_quote_run),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, inner)| long(key) || has_long_quote_run(inner)),
        _ => false,
    }
}

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
    // toml_write 0.1.2 counts a run of quotes in a u8: printing a string with 256 or more
    // `'` or `"` in a row overflows (found by this target; rein itself never prints TOML).
    let as_json = serde_json::to_value(&config).expect("json");
    if has_long_quote_run(&as_json) {
        return;
    }
    let printed = toml::to_string(&config).expect("a loaded config prints");
    let again = match Config::parse(Path::new("printed.toml"), &printed) {
        Ok(again) => again,
        // The toml crate reads a table header of many dotted keys, but the header it prints
        // for it nests past its own recursion limit (found by this target; rein never
        // prints TOML).
        Err(error) if error.to_string().contains("recursion limit") => return,
        Err(error) => panic!("{error}\n{printed}"),
    };
    assert_eq!(
        as_json,
        serde_json::to_value(&again).expect("json"),
        "{printed}"
    );
});
