//! Colour, as Terraform uses it: `+` green, `~` yellow, `-` red. Only on a terminal, and never
//! when `NO_COLOR` is set (no-color.org) or the terminal is `dumb`.

use std::io::IsTerminal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

const GREEN: &str = "32";
const YELLOW: &str = "33";
const RED: &str = "31";

impl Style {
    /// No colour.
    pub fn plain() -> Style {
        Style { color: false }
    }

    /// Colour if standard output is a terminal that wants it.
    pub fn for_stdout() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Style {
            color: !no_color && !dumb && std::io::stdout().is_terminal(),
        }
    }

    fn paint(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// A step's mark: `+`, `~`, `-/+`, `=`, `>`.
    pub fn mark(self, mark: &str) -> String {
        match mark {
            "+" => self.paint(GREEN, mark),
            "~" => self.paint(YELLOW, mark),
            "-/+" => format!("{}{}", self.paint(RED, "-/"), self.paint(GREEN, "+")),
            _ => mark.to_string(),
        }
    }

    /// A diff line, coloured by its first mark.
    pub fn diff_line(self, line: &str) -> String {
        match line.split_whitespace().next() {
            Some("+") => self.paint(GREEN, line),
            Some("-") => self.paint(RED, line),
            Some("~") => self.paint(YELLOW, line),
            _ => line.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_coloured_only_with_colour() {
        let c = Style { color: true };
        assert_eq!(c.mark("+"), "\x1b[32m+\x1b[0m");
        assert_eq!(c.diff_line("- gone"), "\x1b[31m- gone\x1b[0m");
        assert_eq!(c.diff_line("  kept"), "  kept");
        assert_eq!(Style::plain().mark("-/+"), "-/+");
    }
}
