//! systemd's service notification protocol (sd_notify(3)), as etcd speaks it under a
//! `Type=notify` unit: `READY=1` once the member serves clients, `STOPPING=1` when it begins to
//! stop. The manager's socket is `$NOTIFY_SOCKET`: a path, or an abstract name written with a
//! leading `@`. Without it (not started by systemd) nothing is sent.
//!
//! Called by the binary's main thread only; each call opens its own socket, as
//! `sd_notify` does.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The manager's socket, from the environment.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `READY=1`) to the service manager, if one asked for notifications.
/// Returns whether it was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), &path)?;
        }
    }
    Ok(true)
}
