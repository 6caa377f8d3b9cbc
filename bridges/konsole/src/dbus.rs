//! Small helpers over zbus: method calls with a deadline (a hung Konsole or KWin must not
//! hang the bridge), bus-name owners, and the child objects of a path.

use std::time::Duration;

use zbus::zvariant::{DynamicDeserialize, DynamicType};
use zbus::Connection;

/// How long one method call may take.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    /// The name has no owner, or the object or method does not exist (any more).
    #[error("{service} {path} {interface}.{method}: {message}")]
    Missing {
        service: String,
        path: String,
        interface: String,
        method: String,
        message: String,
    },
    #[error("{service} {path} {interface}.{method}: {message}")]
    Failed {
        service: String,
        path: String,
        interface: String,
        method: String,
        message: String,
    },
    #[error("{service} {path} {interface}.{method} did not answer within {deadline:?}")]
    Timeout {
        service: String,
        path: String,
        interface: String,
        method: String,
        deadline: Duration,
    },
}

impl DbusError {
    /// True when the service, object or method is not there: a closed tab, a Konsole that
    /// exited.
    pub fn is_missing(&self) -> bool {
        matches!(self, DbusError::Missing { .. })
    }
}

const MISSING_ERRORS: &[&str] = &[
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.UnknownObject",
    "org.freedesktop.DBus.Error.UnknownMethod",
    "org.freedesktop.DBus.Error.UnknownInterface",
];

/// Calls `interface.method` on `service` `path` with `body` and reads the reply as `R`.
pub async fn call<B, R>(
    connection: &Connection,
    service: &str,
    path: &str,
    interface: &str,
    method: &str,
    body: &B,
) -> Result<R, DbusError>
where
    B: serde::Serialize + DynamicType,
    R: for<'d> DynamicDeserialize<'d>,
{
    let describe = |message: String, missing: bool| {
        let (service, path, interface, method) = (
            service.to_owned(),
            path.to_owned(),
            interface.to_owned(),
            method.to_owned(),
        );
        if missing {
            DbusError::Missing {
                service,
                path,
                interface,
                method,
                message,
            }
        } else {
            DbusError::Failed {
                service,
                path,
                interface,
                method,
                message,
            }
        }
    };
    let reply = tokio::time::timeout(
        CALL_DEADLINE,
        connection.call_method(Some(service), path, Some(interface), method, body),
    )
    .await
    .map_err(|_| DbusError::Timeout {
        service: service.to_owned(),
        path: path.to_owned(),
        interface: interface.to_owned(),
        method: method.to_owned(),
        deadline: CALL_DEADLINE,
    })?;
    let message = match reply {
        Ok(message) => message,
        Err(zbus::Error::MethodError(name, text, _)) => {
            let missing = MISSING_ERRORS.contains(&name.as_str());
            return Err(describe(
                format!("{name}: {}", text.unwrap_or_default()),
                missing,
            ));
        }
        Err(other) => return Err(describe(other.to_string(), false)),
    };
    message
        .body()
        .deserialize::<R>()
        .map_err(|error| describe(format!("unexpected reply: {error}"), false))
}

/// The unique name that owns `name`.
pub async fn owner(connection: &Connection, name: &str) -> Result<String, DbusError> {
    call(
        connection,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetNameOwner",
        &(name,),
    )
    .await
}

/// The pid of the process that owns `name`.
pub async fn owner_pid(connection: &Connection, name: &str) -> Result<u32, DbusError> {
    call(
        connection,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetConnectionUnixProcessID",
        &(name,),
    )
    .await
}

/// Every name on the bus.
pub async fn names(connection: &Connection) -> Result<Vec<String>, DbusError> {
    call(
        connection,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "ListNames",
        &(),
    )
    .await
}

/// The names of the child objects of `path` (`/Windows` → `["1", "2"]`).
pub async fn children(
    connection: &Connection,
    service: &str,
    path: &str,
) -> Result<Vec<String>, DbusError> {
    let xml: String = call(
        connection,
        service,
        path,
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
        &(),
    )
    .await?;
    Ok(child_nodes(&xml))
}

/// The `name` attributes of the `<node>` elements below the root of introspection XML: only
/// names that are valid object path elements (`[A-Za-z0-9_]`), with their closing quote.
pub fn child_nodes(xml: &str) -> Vec<String> {
    let mut names = Vec::new();
    // The root <node> has no name (or a path); children are `<node name="X"/>`.
    for part in xml.split("<node").skip(1) {
        let Some(rest) = part.trim_start().strip_prefix("name=") else {
            continue;
        };
        let quote = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => continue,
        };
        // An unterminated attribute names nothing (it used to name the rest of the document).
        if let Some((name, _)) = rest[1..].split_once(quote) {
            let element =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if element {
                names.push(name.to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_nodes_are_read_from_introspection() {
        let xml = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="org.freedesktop.DBus.Introspectable"><method name="Introspect"/></interface>
  <node name="1"/>
  <node name='12'/>
</node>"#;
        assert_eq!(child_nodes(xml), ["1", "12"]);
        assert_eq!(
            child_nodes(r#"<node name="/Windows"><node name="3"/></node>"#),
            ["3"]
        );
        assert!(child_nodes("<node></node>").is_empty());
        // Found by fuzzing: an unterminated attribute named the rest of the document.
        assert_eq!(
            child_nodes(r#"<node><node name="1><nnoe name='12'/></node>"#),
            Vec::<String>::new()
        );
        assert_eq!(
            child_nodes(r#"<node><node name="a/b"/><node name="x y"/><node name="Ok_2"/></node>"#),
            ["Ok_2"]
        );
    }
}
