//! What the command-line tools print on standard output.

use std::io::Write;

/// One line on standard output; a closed output (`| head`) is no reason to stop (`println!`
/// panics on it: a listener printing into a closed pipe failed every request it took).
pub fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
