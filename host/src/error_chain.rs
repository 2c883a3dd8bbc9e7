//! An error with its causes, as one line.

/// `e` and each of its sources, `: `-separated. hyper's errors say little at the top
/// ("client error (Connect)"); the causes say what happened.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
