//! Host configs in JSON with comments (Claude Desktop and Code, Cursor, VS Code, Zed): any text
//! is read or refused with a syntax error, never a panic; an entry that is rewired to the
//! proxy reads back as the proxy, and putting it back gives the original text again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmcp_mux::hosts::{json, Format, Launch};

const FORMATS: [Format; 4] = [
    Format::McpServers,
    Format::ClaudeCode,
    Format::Vscode,
    Format::Zed,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = FORMATS[usize::from(pick) % FORMATS.len()];
    let _ = json::secret_values(text);
    let Ok(entries) = json::entries(text, format) else {
        return;
    };
    let args = vec!["--socket".to_owned(), "/run/s.sock".to_owned()];
    for e in entries {
        if !matches!(e.launch, Launch::Stdio(_)) {
            continue;
        }
        let Ok(Some(splice)) =
            json::rewire_splice(text, format, &e.key_path, "/bin/rmcp-mux-proxy", &args)
        else {
            continue;
        };
        let new = json::apply(text, std::slice::from_ref(&splice));
        let again = json::entries(&new, format).expect("a rewired file still parses");
        let moved = again
            .iter()
            .find(|a| a.key_path == e.key_path)
            .expect("the rewired entry is still there");
        match &moved.launch {
            Launch::Stdio(s) => {
                assert_eq!(s.command, "/bin/rmcp-mux-proxy");
                assert_eq!(s.args, args);
            }
            other => panic!("rewired entry reads as {other:?}"),
        }
        let back = json::restore(&new, &e.key_path, &splice.original, &splice.written)
            .expect("the rewired file parses")
            .expect("the rewired entry can be put back");
        assert_eq!(back, text, "rewire then restore changed the file");
    }
});
