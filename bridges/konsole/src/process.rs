//! Reading `/proc` to make sure a pid Konsole reports is the program the bridge started
//! before signalling it: a pid from another pid namespace, or one reused since, is left alone.

use std::path::Path;

/// The parent pid of `pid`, from `/proc/PID/stat`.
pub fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything; fields after the
    // last ')' are: state, ppid, ...
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The arguments of `pid`, from `/proc/PID/cmdline`.
pub fn arguments(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // a zombie or a kernel thread
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

/// True when `arguments` are `rein_bin ARGS…` run directly, or through an interpreter
/// (`/bin/sh rein_bin ARGS…` for a script).
pub fn runs(arguments: &[String], rein_bin: &Path, args: &[String]) -> bool {
    let Some(rein) = rein_bin.to_str() else {
        return false;
    };
    let starts_at = arguments.iter().take(2).position(|a| a == rein);
    match starts_at {
        Some(index) => arguments[index + 1..] == *args,
        None => false,
    }
}

/// Sends `signal` to the process group `group`.
pub fn signal_group(group: u32, signal: i32) -> std::io::Result<()> {
    let group =
        i32::try_from(group).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    if group <= 1 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill has no memory-safety preconditions; a negative pid names a process group.
    let result = unsafe { libc::kill(-group, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn the_started_program_is_recognised() {
        let rein = Path::new("/usr/bin/rein");
        let args = strings(&["answer", "--interactive", "k3x9ab"]);
        assert!(runs(
            &strings(&["/usr/bin/rein", "answer", "--interactive", "k3x9ab"]),
            rein,
            &args
        ));
        assert!(runs(
            &strings(&[
                "/bin/sh",
                "/usr/bin/rein",
                "answer",
                "--interactive",
                "k3x9ab"
            ]),
            rein,
            &args
        ));
        for other in [
            &["/usr/bin/rein", "answer", "--interactive", "other"][..],
            &["/usr/bin/rein", "answer", "--interactive", "k3x9ab", "x"],
            &["sleep", "30"],
            &["/bin/sh", "-c", "/usr/bin/rein answer --interactive k3x9ab"],
            &[],
        ] {
            assert!(!runs(&strings(other), rein, &args), "{other:?}");
        }
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let me = std::process::id();
        let parent = parent(me).expect("parent");
        assert_eq!(parent, std::os::unix::process::parent_id());
        let arguments = arguments(me).expect("arguments");
        let exe = std::env::args().next().expect("argv0");
        assert_eq!(arguments.first(), Some(&exe));
        assert_eq!(super::parent(u32::MAX), None);
        assert!(signal_group(0, 0).is_err() && signal_group(1, 0).is_err());
    }
}
