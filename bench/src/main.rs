//! `retcd-bench`: see the library's [`retcd_bench::cli`].

fn main() {
    let mut out = std::io::stdout().lock();
    if let Err(e) = retcd_bench::cli::main_with(std::env::args(), &mut out) {
        let msg = e.to_string();
        // clap's own --help/--version output arrives as an "error" to print as is.
        if msg.starts_with("Usage:") || msg.contains("\nUsage:") || !msg.contains("error") {
            eprint!("{msg}");
        } else {
            eprintln!("{msg}");
        }
        std::process::exit(1);
    }
}
