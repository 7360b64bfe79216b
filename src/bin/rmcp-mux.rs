//! `rmcp-mux`: the daemon, the menu-bar app and every subcommand; all of it is in
//! `rmcp_mux::cli`.

fn main() -> std::process::ExitCode {
    rmcp_mux::cli::main()
}
