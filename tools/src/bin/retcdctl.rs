//! `retcdctl`: etcdctl v3's command-line client for retcd (and etcd). See `retcd_tools::ctl`.

fn main() {
    // SAFETY: restoring the default action of SIGPIPE before any thread starts: like etcdctl
    // (a Go program), `retcdctl watch k | head -1` must end when its reader goes away, and
    // Rust's runtime sets SIGPIPE to be ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(retcd_tools::ctl::run(retcd_tools::ctl::rawarg::args()));
}
