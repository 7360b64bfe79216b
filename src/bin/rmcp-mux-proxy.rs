//! `rmcp-mux-proxy`: what an MCP host runs as a server's command; all of it is in
//! `rmcp_mux::cli::proxy` and `rmcp_mux::proxy`.

fn main() -> std::process::ExitCode {
    rmcp_mux::cli::proxy::main()
}
