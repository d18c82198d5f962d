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

/// The usage of the command `about` with its own flags `local`.
pub fn render(about: &About, local: &[Spec]) -> String {
    let mut t = String::new();
    t.push_str("NAME:\n");
    t.push_str(&format!("\t{} - {}\n", about.path, about.short));
    t.push_str("\nUSAGE:\n");
    t.push_str(&format!(
        "\t{PROGRAM} {} {} [flags]\n",
        about.path, about.args
    ));
    if let Some(long) = about.long {
        t.push_str("\nDESCRIPTION:\n");
        for line in long.trim_matches(['\n', '\t', ' ']).split('\n') {
            t.push_str(&format!("\t{line}\n"));
        }
    }
    // cobra's own help flag: "help for <the command's last word>".
    let help = format!(
        "help for {}",
        about.path.rsplit(' ').next().unwrap_or(about.path)
    );
    let mut own: Vec<(Spec, &str)> = local.iter().map(|s| (*s, s.usage)).collect();
    own.push((HELP, &help));
    own.sort_by_key(|(s, _)| s.name);
    t.push_str("\nOPTIONS:\n");
    t.push_str(&flag_lines(&own));
    let mut global: Vec<(Spec, &str)> = GLOBAL.iter().map(|s| (*s, s.usage)).collect();
    global.sort_by_key(|(s, _)| s.name);
    t.push_str("\nGLOBAL OPTIONS:\n");
    t.push_str(&flag_lines(&global));
    t.push('\n');
    tabwriter(&t)
}

/// etcdFlagUsages: `  -s, --name` or `      --name`, `[=default]` for booleans, Go's `%q` of
/// string defaults, a tab, the usage.
fn flag_lines(specs: &[(Spec, &str)]) -> String {
    let mut o = String::new();
    for (s, usage) in specs {
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
