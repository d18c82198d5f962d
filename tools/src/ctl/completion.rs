//! `completion bash|zsh|fish|powershell`: scripts that complete retcdctl's command words and
//! flags, with the help texts of Debian etcdctl's cobra (its scripts are cobra's Go templates;
//! these are retcdctl's own). The words come from the command table, so a new command is
//! completed without touching this file.

use super::flags::{GLOBAL, Kind, Spec, spec};
use super::print::Printed;
use super::usage::{About, PROGRAM};
use super::{Cmd, Command, commands};

const NO_DESCRIPTIONS: &[Spec] = &[spec(
    "no-descriptions",
    Kind::Bool,
    "false",
    "disable completion descriptions",
)];

const fn shell(path: &'static str, short: &'static str, long: &'static str, run: Command) -> Cmd {
    Cmd {
        about: About {
            path,
            args: "",
            short,
            long: Some(long),
        },
        flags: NO_DESCRIPTIONS,
        run,
    }
}

pub const COMMANDS: &[Cmd] = &[
    shell(
        "completion bash",
        "Generate the autocompletion script for bash",
        "Generate the autocompletion script for the bash shell.

This script depends on the 'bash-completion' package.
If it is not installed already, you can install it via your OS's package manager.

To load completions in your current shell session:

\tsource <(retcdctl completion bash)

To load completions for every new session, execute once:

#### Linux:

\tretcdctl completion bash > /etc/bash_completion.d/retcdctl

#### macOS:

\tretcdctl completion bash > $(brew --prefix)/etc/bash_completion.d/retcdctl

You will need to start a new shell for this setup to take effect.",
        |_, _| Ok(Printed::Out(bash().into_bytes())),
    ),
    shell(
        "completion fish",
        "Generate the autocompletion script for fish",
        "Generate the autocompletion script for the fish shell.

To load completions in your current shell session:

\tretcdctl completion fish | source

To load completions for every new session, execute once:

\tretcdctl completion fish > ~/.config/fish/completions/retcdctl.fish

You will need to start a new shell for this setup to take effect.",
        |_, _| Ok(Printed::Out(fish().into_bytes())),
    ),
    shell(
        "completion powershell",
        "Generate the autocompletion script for powershell",
        "Generate the autocompletion script for powershell.

To load completions in your current shell session:

\tretcdctl completion powershell | Out-String | Invoke-Expression

To load completions for every new session, add the output of the above command
to your powershell profile.",
        |_, _| Ok(Printed::Out(powershell().into_bytes())),
    ),
    shell(
        "completion zsh",
        "Generate the autocompletion script for zsh",
        "Generate the autocompletion script for the zsh shell.

If shell completion is not already enabled in your environment you will need
to enable it.  You can execute the following once:

\techo \"autoload -U compinit; compinit\" >> ~/.zshrc

To load completions in your current shell session:

\tsource <(retcdctl completion zsh); compdef _retcdctl retcdctl

To load completions for every new session, execute once:

#### Linux:

\tretcdctl completion zsh > \"${fpath[1]}/_retcdctl\"

#### macOS:

\tretcdctl completion zsh > $(brew --prefix)/share/zsh/site-functions/_retcdctl

You will need to start a new shell for this setup to take effect.",
        |_, _| Ok(Printed::Out(zsh().into_bytes())),
    ),
];

/// The top-level words, each group's sub-words, and every flag (`--name`).
struct Words {
    tops: Vec<String>,
    subs: Vec<(String, Vec<String>)>,
    flags: Vec<String>,
}

fn words() -> Words {
    let mut tops: Vec<String> = Vec::new();
    let mut subs: Vec<(String, Vec<String>)> = Vec::new();
    for c in commands() {
        let mut w = c.about.path.split(' ');
        let top = w.next().unwrap_or_default().to_string();
        if !tops.contains(&top) {
            tops.push(top.clone());
        }
        if let Some(sub) = w.next() {
            match subs.iter_mut().find(|(t, _)| *t == top) {
                Some((_, v)) => v.push(sub.to_string()),
                None => subs.push((top, vec![sub.to_string()])),
            }
        }
    }
    tops.push("help".into());
    tops.sort();
    let mut flags: Vec<String> = commands()
        .flat_map(|c| c.flags.iter())
        .chain(GLOBAL.iter())
        .map(|s| format!("--{}", s.name))
        .collect();
    flags.push("--help".into());
    flags.sort();
    flags.dedup();
    Words { tops, subs, flags }
}

fn bash() -> String {
    let w = words();
    let mut cases = String::new();
    for (top, subs) in &w.subs {
        cases.push_str(&format!(
            "            {top}) words=\"{}\" ;;\n",
            subs.join(" ")
        ));
    }
    format!(
        "# bash completion for {PROGRAM}\n\
         _{PROGRAM}() {{\n\
         \x20   local cur=\"${{COMP_WORDS[COMP_CWORD]}}\" words=\"{tops}\"\n\
         \x20   if [[ \"$cur\" == -* ]]; then\n\
         \x20       COMPREPLY=($(compgen -W \"{flags}\" -- \"$cur\"))\n\
         \x20       return\n\
         \x20   fi\n\
         \x20   if [[ $COMP_CWORD -ge 2 ]]; then\n\
         \x20       case \"${{COMP_WORDS[1]}}\" in\n\
         {cases}\
         \x20           *) words=\"\" ;;\n\
         \x20       esac\n\
         \x20       [[ $COMP_CWORD -gt 2 ]] && words=\"\"\n\
         \x20   fi\n\
         \x20   COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n\
         }}\n\
         complete -o default -F _{PROGRAM} {PROGRAM}\n",
        tops = w.tops.join(" "),
        flags = w.flags.join(" "),
    )
}

fn zsh() -> String {
    let w = words();
    let mut cases = String::new();
    for (top, subs) in &w.subs {
        cases.push_str(&format!(
            "        {top}) compadd -- {} ;;\n",
            subs.join(" ")
        ));
    }
    format!(
        "#compdef {PROGRAM}\n\
         # zsh completion for {PROGRAM}\n\
         _{PROGRAM}() {{\n\
         \x20   if [[ $PREFIX == -* ]]; then\n\
         \x20       compadd -- {flags}\n\
         \x20   elif (( CURRENT == 2 )); then\n\
         \x20       compadd -- {tops}\n\
         \x20   elif (( CURRENT == 3 )); then\n\
         \x20       case $words[2] in\n\
         {cases}\
         \x20       esac\n\
         \x20   fi\n\
         }}\n\
         if [ \"$funcstack[1]\" = \"_{PROGRAM}\" ]; then\n\
         \x20   _{PROGRAM} \"$@\"\n\
         else\n\
         \x20   compdef _{PROGRAM} {PROGRAM}\n\
         fi\n",
        tops = w.tops.join(" "),
        flags = w.flags.join(" "),
    )
}

fn fish() -> String {
    let w = words();
    let mut o = format!("# fish completion for {PROGRAM}\n");
    for top in &w.tops {
        o.push_str(&format!(
            "complete -c {PROGRAM} -f -n __fish_use_subcommand -a {top}\n"
        ));
    }
    for (top, subs) in &w.subs {
        o.push_str(&format!(
            "complete -c {PROGRAM} -f -n '__fish_seen_subcommand_from {top}' -a '{}'\n",
            subs.join(" ")
        ));
    }
    for f in &w.flags {
        o.push_str(&format!("complete -c {PROGRAM} -l {}\n", &f[2..]));
    }
    o
}

fn powershell() -> String {
    let w = words();
    let all: Vec<String> = w
        .tops
        .iter()
        .chain(w.subs.iter().flat_map(|(_, s)| s.iter()))
        .chain(w.flags.iter())
        .map(|x| format!("'{x}'"))
        .collect();
    format!(
        "# powershell completion for {PROGRAM}\n\
         Register-ArgumentCompleter -Native -CommandName '{PROGRAM}' -ScriptBlock {{\n\
         \x20   param($wordToComplete, $commandAst, $cursorPosition)\n\
         \x20   @({}) | Select-Object -Unique | Where-Object {{ $_ -like \"$wordToComplete*\" }} |\n\
         \x20       ForEach-Object {{ [System.Management.Automation.CompletionResult]::new($_) }}\n\
         }}\n",
        all.join(", ")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn scripts_name_every_command_and_flag() {
        let b = super::bash();
        for w in [
            "lease",
            "keep-alive",
            "--endpoints",
            "--write-out",
            "--prefix",
        ] {
            assert!(b.contains(w), "{w}");
        }
        assert!(super::zsh().starts_with("#compdef retcdctl"));
    }
}
