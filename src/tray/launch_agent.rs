//! The macOS launch-at-login entry of the menu-bar app: a LaunchAgent plist that starts this
//! executable as `--tray --config FILE` with the servers' PATH and the home folder as working
//! folder (launchd gives neither), attributed to the app's bundle id (Login Items shows it as
//! rmcp-mux on macOS 13+). Rendering is pure, so the plist's contents are tested on any
//! system; `login` writes it.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};

/// One LaunchAgent entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// launchd's label (also the plist's file name).
    pub label: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// PATH for the app (and so for its servers).
    pub path: String,
    /// The working folder (the user's home).
    pub working_dir: PathBuf,
    /// The bundle the entry is attributed to.
    pub bundle_id: String,
}

/// Why a plist cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentError {
    /// XML 1.0 cannot carry this character at all (a control character).
    #[error("{what} contains a character a plist cannot hold ({ch:?})")]
    Unrepresentable {
        /// Which value.
        what: String,
        /// The character.
        ch: char,
    },
}

fn escape(what: &str, s: &str) -> Result<String, AgentError> {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                return Err(AgentError::Unrepresentable {
                    what: what.to_owned(),
                    ch: c,
                })
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn string(what: &str, s: &str) -> Result<String, AgentError> {
    Ok(format!("<string>{}</string>", escape(what, s)?))
}

impl Agent {
    /// The plist's text; every value escaped.
    ///
    /// # Errors
    /// A value with a character XML cannot hold.
    pub fn render(&self) -> Result<String, AgentError> {
        let program = self.program.to_string_lossy();
        let mut args = vec![format!("      {}", string("the program", &program)?)];
        for a in &self.args {
            args.push(format!("      {}", string("an argument", a)?));
        }
        let wd = self.working_dir.to_string_lossy();
        Ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\">\n\
             <dict>\n  \
               <key>Label</key>\n  \
               {label}\n  \
               <key>AssociatedBundleIdentifiers</key>\n  \
               <array>\n    {bundle}\n  </array>\n  \
               <key>ProgramArguments</key>\n  \
               <array>\n{args}\n  </array>\n  \
               <key>EnvironmentVariables</key>\n  \
               <dict>\n    <key>PATH</key>\n    {path}\n  </dict>\n  \
               <key>WorkingDirectory</key>\n  \
               {wd}\n  \
               <key>RunAtLoad</key>\n  \
               <true/>\n  \
               <key>ProcessType</key>\n  \
               <string>Interactive</string>\n\
             </dict>\n\
             </plist>\n",
            label = string("the label", &self.label)?,
            bundle = string("the bundle id", &self.bundle_id)?,
            args = args.join("\n"),
            path = string("PATH", &self.path)?,
            wd = string("the working folder", &wd)?,
        ))
    }
}

/// Whether an existing entry's text runs `config` (so that it is this app's entry to keep
/// up to date, not one another config's app wrote under the same name).
pub fn runs_config(existing: &str, config: &Path) -> bool {
    escape("", &config.to_string_lossy())
        .map(|c| existing.contains(&format!("<string>{c}</string>")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        Agent {
            label: "rmcp-mux".into(),
            program: "/Applications/R&D/rmcp-mux.app/Contents/MacOS/rmcp-mux".into(),
            args: vec![
                "--tray".into(),
                "--config".into(),
                "/Users/me/a <b> & \"c\"/mux.toml".into(),
            ],
            path: "/opt/homebrew/bin:/usr/bin:/bin".into(),
            working_dir: "/Users/me".into(),
            bundle_id: "dev.rmcp-mux.tray".into(),
        }
    }

    #[test]
    fn the_entry_carries_path_working_folder_bundle_id_and_escaped_arguments() {
        let text = agent().render().unwrap();
        assert!(text.contains(
            "<string>/Applications/R&amp;D/rmcp-mux.app/Contents/MacOS/rmcp-mux</string>"
        ));
        assert!(
            text.contains("<string>/Users/me/a &lt;b&gt; &amp; &quot;c&quot;/mux.toml</string>")
        );
        assert!(text.contains(
            "<key>EnvironmentVariables</key>\n  <dict>\n    <key>PATH</key>\n    <string>/opt/homebrew/bin:/usr/bin:/bin</string>"
        ));
        assert!(text.contains("<key>WorkingDirectory</key>\n  <string>/Users/me</string>"));
        assert!(text.contains(
            "<key>AssociatedBundleIdentifiers</key>\n  <array>\n    <string>dev.rmcp-mux.tray</string>"
        ));
        assert!(!text.contains("R&D"), "a raw & breaks the plist");
        // Every argument in its own <string>, in order, after the program.
        let args: Vec<&str> = text
            .split("<key>ProgramArguments</key>")
            .nth(1)
            .unwrap()
            .split("</array>")
            .next()
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("<string>"))
            .collect();
        assert_eq!(args.len(), 4);
        assert_eq!(args[1], "<string>--tray</string>");
        assert!(runs_config(
            &text,
            Path::new("/Users/me/a <b> & \"c\"/mux.toml")
        ));
        assert!(!runs_config(&text, Path::new("/Users/me/other.toml")));
    }

    #[test]
    fn a_control_character_is_refused() {
        let mut a = agent();
        a.args[2] = "/Users/me/a\u{1}b.toml".into();
        assert_eq!(
            a.render(),
            Err(AgentError::Unrepresentable {
                what: "an argument".into(),
                ch: '\u{1}'
            })
        );
    }
}
