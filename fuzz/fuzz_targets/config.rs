//! mux.toml: any text is a config or an error naming where it went wrong, never a panic; a
//! config that validates names its servers' sockets inside the socket length limit.
#![no_main]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use rmcp_mux::config::{self, Config, Env};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = Env {
        home: PathBuf::from("/home/fuzz"),
        vars: HashMap::from([
            ("HOME".to_owned(), "/home/fuzz".to_owned()),
            ("TOKEN".to_owned(), "s3cret".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]),
    };
    let path = Path::new("/home/fuzz/.config/rmcp-mux/mux.toml");
    match Config::from_toml_with(text, path, &env) {
        Ok(cfg) => {
            for s in &cfg.servers {
                assert!(
                    s.socket.as_os_str().len() <= config::MAX_SOCKET_PATH,
                    "socket path over the limit"
                );
                let _ = cfg
                    .server(&s.name)
                    .expect("a listed server is found by name");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = config::find_control_socket(text, path, &env);
    let _ = config::expand(text, Path::new("/home/fuzz"), |v| env.vars.get(v).cloned());
});
