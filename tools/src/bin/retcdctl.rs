//! `retcdctl`: etcdctl v3's command-line client for retcd (and etcd). See `retcd_tools::ctl`.

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(retcd_tools::ctl::run(argv));
}
