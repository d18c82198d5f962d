//! `retcd-bench`: see the library's [`retcd_bench::cli`].

// Every request allocates its messages, buffers and HTTP/2 frames, on many threads: glibc's
// malloc was ~12% of the generator's CPU, and the generator must stay cheap (perf/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut out = std::io::stdout().lock();
    if let Err(e) = retcd_bench::cli::main_with(std::env::args(), &mut out) {
        // clap's usage errors end with their own newline; ours do not.
        let msg = e.to_string();
        eprint!("{msg}");
        if !msg.ends_with('\n') {
            eprintln!();
        }
        std::process::exit(1);
    }
}
