//! Codex's TOML host config: any text is read or refused with a syntax error, never a panic;
//! an entry rewired to the proxy reads back as the proxy, and putting it back gives the
//! original text again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmcp_mux::hosts::{codex, Launch};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = codex::secret_values(text);
    let Ok(entries) = codex::entries(text) else {
        return;
    };
    let args = vec!["--socket".to_owned(), "/run/s.sock".to_owned()];
    for e in entries {
        if !matches!(e.launch, Launch::Stdio(_)) {
            continue;
        }
        let Ok(Some(f)) = codex::rewire(text, &e.name, "/bin/rmcp-mux-proxy", &args) else {
            continue;
        };
        let mut new = text.to_owned();
        new.replace_range(f.start..f.start + f.original.len(), &f.written);
        let again = codex::entries(&new).expect("a rewired file still parses");
        let moved = again
            .iter()
            .find(|a| a.name == e.name)
            .expect("the rewired entry is still there");
        match &moved.launch {
            Launch::Stdio(s) => {
                assert_eq!(s.command, "/bin/rmcp-mux-proxy");
                assert_eq!(s.args, args);
            }
            other => panic!("rewired entry reads as {other:?}"),
        }
        let back = codex::restore(&new, &f).expect("the rewired lines are found again");
        assert_eq!(back, text, "rewire then restore changed the file");
    }
});
