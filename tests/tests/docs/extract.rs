//! Command lines out of Markdown, for `docs.rs`.
//!
//! Three kinds of command line are taken from a document:
//! - **shell**: every simple command of a fenced ```` ```sh ````, `bash`, `shell` or
//!   `console` block (in `console`, only the `$ `-prompted lines), and `$ `-prompted lines
//!   of any other fenced block; continuation lines, `# comments`, quotes, `&&`/`||`/`;`/`|`,
//!   redirections and here-documents are handled the way a shell would, and leading
//!   `VAR=value` assignments and `sudo`/`env` are dropped;
//! - **synopsis**: a line of a ```` ```text ```` (or unlabelled) block that starts with a
//!   tool's name, with its indented continuation lines (`[--flag ARG | --other]` syntax);
//! - **inline**: a code span (it may run over a line break) that starts with a tool's name
//!   and has at least one argument (a bare `pcache-mkfs` is a mention, not a command).

/// The programs whose command lines are extracted from synopses and code spans.
pub const TOOLS: &[&str] = &[
    "pcache-mkfs",
    "pcache-fsck",
    "pcache-dump",
    "pcache-replay",
    "pcache-ublk",
];

/// Where a command line was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command of a shell block.
    Shell,
    /// A synopsis line of a text block.
    Synopsis,
    /// A code span in the prose.
    Inline,
}

/// One command line of a document.
#[derive(Debug, Clone)]
pub struct CmdLine {
    /// 1-based line number where it starts.
    pub line: usize,
    /// What kind of text it came from.
    pub origin: Origin,
    /// The fenced block it is in (its index in the document), if any.
    pub block: Option<usize>,
    /// The words, unquoted, program first.
    pub words: Vec<String>,
}

/// Every command line of `md`, in document order.
pub fn extract(md: &str) -> Vec<CmdLine> {
    let lines: Vec<&str> = md.lines().collect();
    let mut out = Vec::new();
    let mut para: Vec<(usize, &str)> = Vec::new();
    let mut block_no = 0;
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let Some((marker, lang)) = fence_open(t) else {
            if t.is_empty() {
                inline_spans(&para, &mut out);
                para.clear();
            } else {
                para.push((i + 1, lines[i]));
            }
            i += 1;
            continue;
        };
        inline_spans(&para, &mut out);
        para.clear();
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() {
            let t = lines[i].trim_start();
            if t.starts_with(&marker)
                && t.trim_start_matches(marker.as_bytes()[0] as char)
                    .trim()
                    .is_empty()
            {
                break;
            }
            body.push((i + 1, lines[i]));
            i += 1;
        }
        i += 1;
        match lang.as_str() {
            "sh" | "bash" | "shell" | "zsh" => shell_block(&body, false, block_no, &mut out),
            "console" | "shell-session" => shell_block(&body, true, block_no, &mut out),
            "" | "text" | "txt" | "plain" => text_block(&body, block_no, &mut out),
            _ => {} // toml, rust, json, ...: not command lines
        }
        block_no += 1;
    }
    inline_spans(&para, &mut out);
    out
}

/// ```` ```lang ```` or `~~~lang`: the fence marker and the language (first word).
fn fence_open(t: &str) -> Option<(String, String)> {
    for c in ['`', '~'] {
        let n = t.chars().take_while(|&x| x == c).count();
        if n >= 3 {
            let info = &t[n..];
            if c == '`' && info.contains('`') {
                return None;
            }
            let lang = info.split_whitespace().next().unwrap_or("").to_lowercase();
            return Some((c.to_string().repeat(n), lang));
        }
    }
    None
}

fn shell_block(body: &[(usize, &str)], console: bool, block: usize, out: &mut Vec<CmdLine>) {
    let mut i = 0;
    while i < body.len() {
        let (line_no, raw) = body[i];
        i += 1;
        let mut text = match raw.trim_start().strip_prefix("$ ") {
            Some(rest) => rest.to_string(),
            None if console => continue,
            None => raw.to_string(),
        };
        // Continuation lines.
        while text.ends_with('\\') && i < body.len() {
            text.pop();
            text.push(' ');
            text.push_str(body[i].1.trim_start());
            i += 1;
        }
        let lexed = lex(&text);
        for words in lexed.commands {
            push_command(words, line_no, Origin::Shell, Some(block), out);
        }
        // Here-document bodies are data, not commands.
        for delim in lexed.heredocs {
            while i < body.len() {
                i += 1;
                if body[i - 1].1.trim() == delim {
                    break;
                }
            }
        }
    }
}

fn text_block(body: &[(usize, &str)], block: usize, out: &mut Vec<CmdLine>) {
    let mut i = 0;
    while i < body.len() {
        let (line_no, raw) = body[i];
        i += 1;
        if let Some(rest) = raw.trim_start().strip_prefix("$ ") {
            for words in lex(rest).commands {
                push_command(words, line_no, Origin::Shell, Some(block), out);
            }
            continue;
        }
        if raw.starts_with(char::is_whitespace) || !starts_with_tool(raw) {
            continue;
        }
        let mut text = raw.to_string();
        while i < body.len() && body[i].1.starts_with(char::is_whitespace) {
            text.push(' ');
            text.push_str(body[i].1.trim());
            i += 1;
        }
        let spaced = text
            .replace('[', " [ ")
            .replace(']', " ] ")
            .replace('|', " | ");
        let words = spaced.split_whitespace().map(str::to_string).collect();
        out.push(CmdLine {
            line: line_no,
            origin: Origin::Synopsis,
            block: Some(block),
            words,
        });
    }
}

fn starts_with_tool(s: &str) -> bool {
    let first = s.split_whitespace().next().unwrap_or("");
    TOOLS.contains(&first) || s.trim_start().starts_with("cargo xtask ")
}

/// The code spans of one paragraph that are tool command lines.
fn inline_spans(para: &[(usize, &str)], out: &mut Vec<CmdLine>) {
    if para.is_empty() {
        return;
    }
    let mut text = String::new();
    let mut starts = Vec::new(); // byte offset where each line starts
    for (_, l) in para {
        starts.push(text.len());
        text.push_str(l);
        text.push('\n');
    }
    let line_of = |off: usize| para[starts.partition_point(|&s| s <= off) - 1].0;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'`' {
            i += 1;
            continue;
        }
        let n = b[i..].iter().take_while(|&&c| c == b'`').count();
        let open = i;
        i += n;
        // The closing run of exactly n backticks.
        let mut j = i;
        let close = loop {
            if j >= b.len() {
                break None;
            }
            if b[j] == b'`' {
                let m = b[j..].iter().take_while(|&&c| c == b'`').count();
                if m == n {
                    break Some(j);
                }
                j += m;
            } else {
                j += 1;
            }
        };
        let Some(close) = close else { continue };
        let span = text[i..close].replace('\n', " ");
        i = close + n;
        if !starts_with_tool(span.trim()) {
            continue;
        }
        for words in lex(span.trim()).commands {
            // A list of names (`pcache-mkfs pcache-fsck`) is not a command line.
            if words.len() >= 2 && !words.iter().all(|w| TOOLS.contains(&w.as_str())) {
                push_command(words, line_of(open), Origin::Inline, None, out);
            }
        }
    }
}

/// Drops leading assignments and `sudo`/`env`, then records the command.
fn push_command(
    mut words: Vec<String>,
    line: usize,
    origin: Origin,
    block: Option<usize>,
    out: &mut Vec<CmdLine>,
) {
    loop {
        let Some(first) = words.first() else { return };
        let is_assignment = first.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if is_assignment || matches!(first.as_str(), "sudo" | "env" | "time" | "exec") {
            words.remove(0);
        } else {
            break;
        }
    }
    out.push(CmdLine {
        line,
        origin,
        block,
        words,
    });
}

/// One logical shell line, split.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lexed {
    /// The simple commands, each as its words.
    pub commands: Vec<Vec<String>>,
    /// The delimiters of the here-documents it opens, in order.
    pub heredocs: Vec<String>,
}

/// Splits a shell line the way `sh` would, far enough for documentation: quotes,
/// backslashes, comments, `$(...)`/backquotes (kept as written, so they read as
/// placeholders), command separators, redirections (dropped, with their targets) and
/// here-documents (their delimiters are returned).
pub fn lex(s: &str) -> Lexed {
    let mut out = Lexed::default();
    let mut cmd: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    // What the next complete word is: an argument, a redirection target or a
    // here-document delimiter.
    #[derive(PartialEq)]
    enum Next {
        Arg,
        Target,
        Delim,
    }
    let mut next = Next::Arg;
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let end_word = |word: &mut String,
                    in_word: &mut bool,
                    cmd: &mut Vec<String>,
                    next: &mut Next,
                    out: &mut Lexed| {
        if *in_word {
            match next {
                Next::Arg => cmd.push(std::mem::take(word)),
                Next::Target => word.clear(),
                Next::Delim => out.heredocs.push(std::mem::take(word)),
            }
            *next = Next::Arg;
        }
        *in_word = false;
    };
    while i < c.len() {
        let ch = c[i];
        match ch {
            ' ' | '\t' => end_word(&mut word, &mut in_word, &mut cmd, &mut next, &mut out),
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                i += 1;
                while i < c.len() && c[i] != '\'' {
                    word.push(c[i]);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' && i + 1 < c.len() && "\"\\$`".contains(c[i + 1]) {
                        i += 1;
                    }
                    word.push(c[i]);
                    i += 1;
                }
            }
            '\\' => {
                in_word = true;
                if i + 1 < c.len() {
                    i += 1;
                    word.push(c[i]);
                }
            }
            '$' if c.get(i + 1) == Some(&'(') => {
                in_word = true;
                let mut depth = 0;
                while i < c.len() {
                    word.push(c[i]);
                    match c[i] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            '`' => {
                in_word = true;
                word.push_str("$(");
                i += 1;
                while i < c.len() && c[i] != '`' {
                    word.push(c[i]);
                    i += 1;
                }
                word.push(')');
            }
            ';' | '&' | '|' | '(' | ')' => {
                if ch == '&' && c.get(i + 1) == Some(&'>') {
                    // `&>file`
                    end_word(&mut word, &mut in_word, &mut cmd, &mut next, &mut out);
                    i += 1;
                    next = Next::Target;
                } else {
                    end_word(&mut word, &mut in_word, &mut cmd, &mut next, &mut out);
                    if !cmd.is_empty() {
                        out.commands.push(std::mem::take(&mut cmd));
                    }
                    if matches!(c.get(i + 1), Some('&' | '|')) && c[i + 1] == ch {
                        i += 1;
                    }
                }
            }
            '<' | '>' => {
                // A file-descriptor number right before belongs to the redirection.
                if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                end_word(&mut word, &mut in_word, &mut cmd, &mut next, &mut out);
                if ch == '<' && c.get(i + 1) == Some(&'<') {
                    i += 1;
                    if c.get(i + 1) == Some(&'-') {
                        i += 1;
                    }
                    next = Next::Delim;
                } else {
                    while matches!(c.get(i + 1), Some('>' | '|')) {
                        i += 1;
                    }
                    if c.get(i + 1) == Some(&'&') {
                        // `>&2`, `2>&1`: a descriptor, not a file.
                        i += 1;
                        while matches!(c.get(i + 1), Some(d) if d.is_ascii_digit() || *d == '-') {
                            i += 1;
                        }
                    } else {
                        next = Next::Target;
                    }
                }
            }
            _ => {
                in_word = true;
                word.push(ch);
            }
        }
        i += 1;
    }
    end_word(&mut word, &mut in_word, &mut cmd, &mut next, &mut out);
    if !cmd.is_empty() {
        out.commands.push(cmd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Vec<String>> {
        lex(s).commands
    }

    #[test]
    fn lexing_follows_the_shell() {
        assert_eq!(
            words(r#"pcache-fsck "/dev/my dax" --json   # a 'comment' && not"#),
            [["pcache-fsck", "/dev/my dax", "--json"]]
        );
        assert_eq!(
            words("a x&&b 'y z'|| c;d | e 2>&1 > out.txt"),
            [
                vec!["a", "x"],
                vec!["b", "y z"],
                vec!["c"],
                vec!["d"],
                vec!["e"]
            ]
        );
        assert_eq!(words(r"echo a\ b it\'s"), [["echo", "a b", "it's"]]);
        assert_eq!(
            words("kill -TERM $(cat pid) `x`"),
            [["kill", "-TERM", "$(cat pid)", "$(x)"]]
        );
        let l = lex("cat > /etc/x.conf <<'EOF'");
        assert_eq!(l.commands, [["cat"]]);
        assert_eq!(l.heredocs, ["EOF"]);
        assert_eq!(words("a=#b c"), [["a=#b", "c"]]);
    }

    #[test]
    fn blocks_spans_and_synopses_are_found() {
        let md = "Intro `pcache-mkfs` and `pcache-dump --keys\nIMG` here, `pcache-mkfs pcache-fsck`.\n\n\
            ```sh\n\
            RUST_LOG=debug sudo pcache-fsck \\\n    --json /dev/x   # check\n\
            cat > f <<EOF\npcache-mkfs --bogus\nEOF\n\
            ```\n\
            ```console\n$ pcache-ublk list\nID PATH\n```\n\
            ```text\npcache-dump [--json]\n    [--keys] DEVICE\nnot a command\n```\n\
            ```toml\npcache-mkfs = 1\n```\n";
        let got: Vec<(usize, Origin, Option<usize>, String)> = extract(md)
            .into_iter()
            .map(|c| (c.line, c.origin, c.block, c.words.join(" ")))
            .collect();
        assert_eq!(
            got,
            [
                (
                    1,
                    Origin::Inline,
                    None,
                    "pcache-dump --keys IMG".to_string()
                ),
                (
                    5,
                    Origin::Shell,
                    Some(0),
                    "pcache-fsck --json /dev/x".into()
                ),
                (7, Origin::Shell, Some(0), "cat".into()),
                (12, Origin::Shell, Some(1), "pcache-ublk list".into()),
                (
                    16,
                    Origin::Synopsis,
                    Some(2),
                    "pcache-dump [ --json ] [ --keys ] DEVICE".into()
                ),
            ]
        );
    }
}
