//! etcdctl's usage text (etcdctl/ctlv3/help.go's template, flags listed as its
//! `etcdFlagUsages` lists them, aligned by Go's text/tabwriter with tabs), printed to stdout on
//! `-h`/`--help` and after a flag error.

use super::flags::{GLOBAL, HELP, Kind, Spec};

/// What the usage of a command says about it.
pub struct About {
    /// The command's words (`get`, `lease grant`).
    pub path: &'static str,
    /// cobra's `Use` after the command's name.
    pub args: &'static str,
    pub short: &'static str,
    pub long: Option<&'static str>,
}

/// The program name in usage lines.
pub const PROGRAM: &str = "retcdctl";

/// What a help text shows besides the command's own words and flags.
#[derive(Default)]
pub struct Extra<'a> {
    /// Persistent flags of a parent (endpoint's `--cluster`), listed with the global ones.
    pub inherited: &'a [Spec],
    /// The runnable commands below a group or the root: the path below it and the Short.
    pub children: Vec<(String, &'static str)>,
    /// The root's help (VERSION, every flag under OPTIONS).
    pub root: bool,
    /// cobra's DisableFlagsInUseLine (`completion bash`).
    pub no_flags_in_use_line: bool,
    /// No `-h, --help` line (the root's help shown by `help <unknown topic>`).
    pub omit_help_flag: bool,
}

/// The usage of the command `about` with its own flags `local`.
pub fn render(about: &About, local: &[Spec]) -> String {
    render_with(about, local, &Extra::default())
}

/// etcdctl's help template for any command, group or the root.
pub fn render_with(about: &About, local: &[Spec], extra: &Extra) -> String {
    let mut t = String::new();
    t.push_str("NAME:\n");
    let name = if extra.root { PROGRAM } else { about.path };
    t.push_str(&format!("\t{name} - {}\n", about.short));
    t.push_str("\nUSAGE:\n");
    let words: Vec<&str> = [PROGRAM, about.path, about.args]
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect();
    let flags = if extra.no_flags_in_use_line {
        ""
    } else {
        " [flags]"
    };
    t.push_str(&format!("\t{}{flags}\n", words.join(" ")));
    if extra.root {
        t.push_str(&format!("\nVERSION:\n\t{}\n", super::VERSION));
    }
    if !extra.children.is_empty() {
        t.push_str(&format!("\nAPI VERSION:\n\t{}\n", super::API_VERSION));
        t.push_str("\n\nCOMMANDS:\n");
        for (path, short) in &extra.children {
            t.push_str(&format!("\t{path}\t{short}\n"));
        }
    }
    if let Some(long) = about.long {
        t.push_str("\nDESCRIPTION:\n");
        for line in long.trim_matches(['\n', '\t', ' ']).split('\n') {
            t.push_str(&format!("\t{line}\n"));
        }
    }
    // cobra's own help flag: "help for <the command's last word>".
    let help = format!(
        "help for {}",
        if extra.root {
            PROGRAM
        } else {
            about.path.rsplit(' ').next().unwrap_or(about.path)
        }
    );
    let mut own: Vec<(Spec, &str)> = local.iter().map(|s| (*s, s.usage)).collect();
    if !extra.omit_help_flag {
        own.push((HELP, &help));
    }
    let mut global: Vec<(Spec, &str)> = GLOBAL
        .iter()
        .chain(extra.inherited)
        .map(|s| (*s, s.usage))
        .collect();
    if extra.root {
        own.append(&mut global);
    }
    own.sort_by_key(|(s, _)| s.name);
    t.push_str("\nOPTIONS:\n");
    t.push_str(&flag_lines(&own));
    if !global.is_empty() {
        global.sort_by_key(|(s, _)| s.name);
        t.push_str("\nGLOBAL OPTIONS:\n");
        t.push_str(&flag_lines(&global));
    }
    t.push('\n');
    tabwriter(&t)
}

/// etcdFlagUsages: `  -s, --name` or `      --name`, `[=default]` for booleans, Go's `%q` of
/// string defaults, a tab, the usage.
fn flag_lines(specs: &[(Spec, &str)]) -> String {
    let mut o = String::new();
    for (s, usage) in specs.iter().filter(|(s, _)| !s.hidden) {
        match s.short {
            Some(c) => o.push_str(&format!("  -{c}, --{}", s.name)),
            None => o.push_str(&format!("      --{}", s.name)),
        }
        let value = match s.kind {
            Kind::Str => super::print::go_quote(s.default.as_bytes()),
            Kind::List => format!("[{}]", s.default),
            _ => s.default.to_string(),
        };
        if s.kind == Kind::Bool {
            o.push_str(&format!("[={value}]"));
        } else {
            o.push_str(&format!("={value}"));
        }
        o.push_str(&format!("\t{usage}\n"));
    }
    o
}

/// Go's text/tabwriter with minwidth 0, tabwidth 8, padding 1 and tabs as padding: each
/// tab-terminated cell is padded with tabs to its column's width, a column being a run of
/// consecutive lines that have a cell at that position.
pub fn tabwriter(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    // cells(l): the tab-terminated cells of line l (all but its last piece).
    let cells = |l: usize| lines[l].len() - 1;
    let mut widths = vec![Vec::new(); lines.len()];
    let columns = (0..lines.len()).map(cells).max().unwrap_or(0);
    for c in 0..columns {
        let mut l = 0;
        while l < lines.len() {
            if cells(l) <= c {
                l += 1;
                continue;
            }
            let start = l;
            while l < lines.len() && cells(l) > c {
                l += 1;
            }
            let width = (start..l)
                .map(|i| lines[i][c].chars().count() + 1)
                .max()
                .unwrap_or(0);
            let width = width.div_ceil(8) * 8;
            for w in &mut widths[start..l] {
                w.push(width);
            }
        }
    }
    let mut out = String::new();
    for (l, pieces) in lines.iter().enumerate() {
        for (c, piece) in pieces.iter().enumerate() {
            out.push_str(piece);
            if c + 1 < pieces.len() {
                let n = widths[l][c] - piece.chars().count();
                out.push_str(&"\t".repeat(n.div_ceil(8)));
            }
        }
        if l + 1 < lines.len() {
            out.push('\n');
        }
    }
    out
}

/// A command's words, `Use` arguments and Short, without a Long text.
pub const fn about(path: &'static str, args: &'static str, short: &'static str) -> About {
    About {
        path,
        args,
        short,
        long: None,
    }
}

/// cobra's default usage (not etcdctl's template) with pflag's FlagUsages, as a command built
/// outside etcdctl's root prints it on a flag error: txn's get/put/del lines.
pub fn cobra_default_usage(use_line: &str, local: &[Spec]) -> String {
    let help = format!(
        "help for {}",
        use_line.split(' ').next().unwrap_or(use_line)
    );
    let mut flags: Vec<(Spec, &str)> = local
        .iter()
        .filter(|s| !s.hidden)
        .map(|s| (*s, s.usage))
        .collect();
    flags.push((HELP, &help));
    flags.sort_by_key(|(s, _)| s.name);
    let lefts: Vec<String> = flags
        .iter()
        .map(|(s, _)| {
            let mut l = match s.short {
                Some(c) => format!("  -{c}, --{}", s.name),
                None => format!("      --{}", s.name),
            };
            let kind = match s.kind {
                Kind::Bool => "",
                Kind::Str => "string",
                Kind::List => "strings",
                Kind::Int => "int",
                Kind::Duration => "duration",
            };
            if !kind.is_empty() {
                l.push(' ');
                l.push_str(kind);
            }
            l
        })
        .collect();
    let width = lefts.iter().map(String::len).max().unwrap_or(0);
    let mut t = format!("Usage:\n   {use_line} [flags]\n\nFlags:\n");
    for ((s, usage), left) in flags.iter().zip(&lefts) {
        let default = match s.kind {
            Kind::Str if !s.default.is_empty() => {
                format!(
                    " (default {})",
                    super::print::go_quote(s.default.as_bytes())
                )
            }
            Kind::Int if s.default != "0" => format!(" (default {})", s.default),
            Kind::Bool if s.default != "false" => format!(" (default {})", s.default),
            _ => String::new(),
        };
        t.push_str(&format!(
            "{left}{}   {usage}{default}\n",
            " ".repeat(width - left.len())
        ));
    }
    t.push('\n');
    t
}
