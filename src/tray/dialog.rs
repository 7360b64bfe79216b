//! Native dialogs of the menu-bar app (rfd: GTK on Linux, NSAlert on macOS): Connect's
//! confirmation and the errors of the Hosts actions, which must be seen, not only logged.
//!
//! Both calls block until the user answers, so they must run off the event loop's thread: rfd
//! shows the dialog on the main thread (macOS: dispatched to the main queue; Linux: an idle
//! callback of GTK's main context, which tao's loop iterates) and waits for it, which on the
//! main thread itself would wait forever.
//!
//! Test hook: with `RMCP_MUX_DIALOG_ANSWER` set, dialogs are answered without being shown. Its
//! value answers every question: `yes` or `no`; or `file:PATH` to read the answer from that file
//! at each dialog, where any other word (`ask`) shows the real dialog. With
//! `RMCP_MUX_DIALOG_LOG=FILE` as well, each answered dialog's kind, title, text and answer are
//! appended to FILE. The Xvfb end-to-end test (tools/tray-e2e.sh) answers the dialogs this way,
//! and lets one real dialog show to cancel it with the keyboard.

use std::io::Write;

use rfd::{MessageButtons, MessageDialog, MessageDialogResult, MessageLevel};
use tracing::{info, warn};

/// What the test hook answers, when it is set (see the module's documentation).
fn hooked(kind: &str, title: &str, text: &str) -> Option<bool> {
    let answer = std::env::var("RMCP_MUX_DIALOG_ANSWER").ok()?;
    let answer = match answer.strip_prefix("file:") {
        #[allow(clippy::disallowed_methods)] // a test's small answer file
        Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
        None => answer,
    };
    let yes = match answer.trim() {
        "yes" => true,
        "no" => false,
        _ => return None,
    };
    if let Some(log) = std::env::var_os("RMCP_MUX_DIALOG_LOG") {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| {
                let reply = if kind == "question" {
                    if yes {
                        "answered: yes\n"
                    } else {
                        "answered: no\n"
                    }
                } else {
                    ""
                };
                f.write_all(format!("{kind}: {title}\n{text}\n{reply}\n").as_bytes())
            });
        if let Err(e) = written {
            warn!(error = %e, "cannot write the dialog log");
        }
    }
    info!(
        kind,
        title, yes, "dialog answered by RMCP_MUX_DIALOG_ANSWER"
    );
    Some(yes)
}

/// A string GTK takes: rfd passes texts as C strings, which end at a NUL (and rfd panics on
/// one). Texts here quote files and errors, which may hold anything.
fn c_text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// Asks a question with `ok` and Cancel buttons; true when the user chose `ok`. Blocks: never
/// call it on the event loop's thread.
pub fn confirm(title: &str, text: &str, ok: &str) -> bool {
    if let Some(yes) = hooked("question", title, text) {
        return yes;
    }
    let answer = MessageDialog::new()
        .set_level(MessageLevel::Info)
        .set_title(c_text(title))
        .set_description(c_text(text))
        .set_buttons(MessageButtons::OkCancelCustom(
            ok.to_owned(),
            "Cancel".to_owned(),
        ))
        .show();
    info!(title, ?answer, "dialog answered");
    match answer {
        MessageDialogResult::Custom(b) => b == ok,
        MessageDialogResult::Ok | MessageDialogResult::Yes => true,
        _ => false,
    }
}

/// Shows an error until the user dismisses it. Blocks: never call it on the event loop's thread.
pub fn error(title: &str, text: &str) {
    warn!(title, text, "error dialog");
    show("error", MessageLevel::Error, title, text);
}

/// Shows a message until the user dismisses it (a Connect with nothing to change says why).
/// Blocks: never call it on the event loop's thread.
pub fn inform(title: &str, text: &str) {
    show("message", MessageLevel::Info, title, text);
}

/// A dialog with one OK button, unless the test hook takes it.
fn show(kind: &str, level: MessageLevel, title: &str, text: &str) {
    if hooked(kind, title, text).is_some() {
        return;
    }
    MessageDialog::new()
        .set_level(level)
        .set_title(c_text(title))
        .set_description(c_text(text))
        .set_buttons(MessageButtons::Ok)
        .show();
}
