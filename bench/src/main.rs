//! `retcd-bench`: see the library's [`retcd_bench::cli`].

// Every request allocates its messages, buffers and HTTP/2 frames, on many threads: glibc's
// malloc was ~12% of the generator's CPU, and the generator must stay cheap (perf/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
